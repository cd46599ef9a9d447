"""SASS of forward builds (ptxas and a disassembler; no GPU): compile the 16-bit (``--family fwd``),
8-bit (``--family q8``) or FP8-cache decode (``--family kv8``: the d128 decode row of a batch of
32/8-head decode steps with split keys, contiguous and paged) forward rows with the CuTe DSL for each
``--arch`` keeping the PTX, assemble
it with ``ptxas`` (registers and spill stores from ``ptxas -v``), disassemble the cubin with
``cuobjdump -sass`` or, where no cuobjdump is on PATH, ``nvdisasm -c`` (``pip install
nvidia-cuda-nvdisasm`` provides it, e.g. at ``<site-packages>/nvidia/cu13/bin/nvdisasm``), and count
the opcodes of the kernel and of its hot loop: the smallest block that a later branch jumps back to
and that holds MMAs (the key loop of the unmasked blocks; the masked blocks' loops hold the same work
plus the mask). Writes ``<out>/<name>-<arch>.sass`` and ``<out>/sass-summary.json``; prints one line
per build.

    python3 tools/sass_dump.py --out DIR [--arch sm_90a sm_120a] [--codegen tree_reduce=1]
    python3 tools/sass_dump.py --family q8 --out DIR [--arch sm_120a]
    python3 tools/sass_dump.py --family kv8 --out DIR --arch sm_120a
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import re
import shutil
import subprocess
import tempfile

# (name, head_dim, causal, Q·Kᵀ format or "kv8"[, paged]): the table rows a plain call takes (kv8: a
# decode step over an FP8 cache with cache_seqlens, pack-GQA 4 and split keys; paged "tiles": in pages
# that hold whole key tiles)
BUILDS = {
    "fwd": (
        ("d128", 128, False, None),
        ("d128-causal", 128, True, None),
        ("d64", 64, False, None),
        ("d96", 96, False, None),
    ),
    "kv8": (
        ("kv8-d128-decode", 128, False, "kv8", False),
        ("kv8-d128-decode-paged", 128, False, "kv8", True),
        ("kv8-d128-decode-page-tiles", 128, False, "kv8", "tiles"),  # pages of whole key tiles
    ),
    "q8": (
        ("q8-d128-int8", 128, False, "int8"),
        ("q8-d128-int8-causal", 128, True, "int8"),
        ("q8-d128-fp8", 128, False, "fp8"),
        ("q8-d64-int8", 64, False, "int8"),
        ("q8-d256-int8", 256, False, "int8"),
    ),
}
ADDR = re.compile(r"\s*/\*([0-9a-f]+)\*/")
LABEL = re.compile(r"\s*([.\w$]+):\s*$")  # nvdisasm's branch targets, e.g. ".L_x_5:"
BRANCH = re.compile(r"\bBRA\b.*?(?:(0x[0-9a-f]+)|`\(([^)]+)\))")  # BRA 0x7370 / BRA `(.L_x_5)


def _opcode(line: str) -> str | None:
    m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
    return m.group(2) if m else None


def _loops(lines: list[str]) -> list[tuple[int, int]]:
    """``(first, last)`` line indices of every block that a later branch jumps back to; a branch
    target is a hex address (cuobjdump) or a label, the line index of the instruction after it
    (nvdisasm)."""
    target, pending = {}, []
    for i, line in enumerate(lines):
        m = ADDR.match(line)
        if m:
            target[int(m.group(1), 16)] = i
            for label in pending:
                target[label] = i
            pending = []
        elif m := LABEL.match(line):
            pending.append(m.group(1))
    loops = []
    for i, line in enumerate(lines):
        m = BRANCH.search(line) if ADDR.match(line) else None
        if m:
            t = target.get(int(m.group(1), 16) if m.group(1) else m.group(2))
            if t is not None and t < i:
                loops.append((t, i))
    return loops


def _hot_loop(lines: list[str]) -> list[str]:
    """The lines of the smallest loop holding MMAs (the largest loop where none does)."""
    loops = [lines[a : b + 1] for a, b in _loops(lines)]
    mma = [ls for ls in loops if any("MMA" in (_opcode(ln) or "") for ln in ls)]
    if mma:
        return min(mma, key=len)
    return max(loops, key=len, default=[])


def _disassembler() -> list[str] | None:
    if shutil.which("cuobjdump"):
        return ["cuobjdump", "-sass"]
    if shutil.which("nvdisasm"):
        return ["nvdisasm", "-c"]
    return None


def _count(lines: list[str]) -> collections.Counter:
    return collections.Counter(op for op in map(_opcode, lines) if op)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--family",
        choices=sorted(BUILDS),
        default="fwd",
        help="16-bit (fwd), 8-bit (q8) or FP8-cache decode (kv8) rows",
    )
    ap.add_argument("--arch", nargs="+", default=["sm_90a", "sm_120a"])
    ap.add_argument(
        "--codegen", nargs="*", default=[], help="fa4_sm120.configs.FwdCodegen fields, NAME=number"
    )
    args = ap.parse_args()
    disasm = _disassembler()
    if not (shutil.which("ptxas") and disasm):
        print("sass_dump: ptxas and cuobjdump or nvdisasm are needed; nothing done")
        return 1
    # the target is each compile's gpu_arch; this only keeps the DSL from looking for a GPU
    os.environ.setdefault("CUTE_DSL_ARCH", args.arch[0])
    from fa4_sm120.compile import compile_fwd, ptxas, ptxas_resources
    from fa4_sm120.configs import KV8_DTYPES, codegen_fields
    from fa4_sm120.fwd_q8 import FlashAttentionForwardQ8Sm120
    from fa4_sm120.tiles import fwd_config, q8_fwd_config

    fields = codegen_fields(args.codegen)
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    for arch in args.arch:
        for name, d, causal, qk, *paged in BUILDS[args.family]:
            if qk == "kv8":
                cfg = fwd_config(
                    "sm120", "bfloat16", d, d, causal=causal, pack_gqa=True, qhead_per_kvhead=4, split_kv=True,
                    small_m=True, kv_dtype=KV8_DTYPES[0], decode=True,
                )  # fmt: skip
                cfg = dataclasses.replace(
                    cfg, has_seqused_k=True, paged_kv=bool(paged[0]), pages_hold_tiles=paged[0] == "tiles"
                )
            elif qk is None:
                cfg = fwd_config("sm120", "bfloat16", d, d, causal=causal)
            else:
                cfg = q8_fwd_config("bfloat16", d, causal=causal, qk=qk, pv_accum="fp32")
            cfg = dataclasses.replace(cfg, codegen=dataclasses.replace(cfg.codegen, **fields))
            with tempfile.TemporaryDirectory() as tmp:
                if qk in (None, "kv8"):  # the 16-bit-MMA forward
                    compile_fwd(cfg, tvm_ffi=False, gpu_arch=arch, dump_dir=tmp)
                else:
                    FlashAttentionForwardQ8Sm120.compile(cfg, tvm_ffi=False, gpu_arch=arch, dump_dir=tmp)
                ptx = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".ptx"))
                regs, spill, err = ptxas_resources(ptx, arch)
                cubin = os.path.join(tmp, "k.cubin")
                r = ptxas(ptx, arch, out=cubin)
                if err is not None or r.returncode != 0:
                    raise RuntimeError(f"ptxas -arch={arch}: {err or r.stderr.strip()[-300:]}")
                sass = subprocess.run([*disasm, cubin], capture_output=True, text=True, check=True).stdout
            tag = f"{name}-{arch}" + "".join(f"-{k}" for k in args.codegen)
            with open(os.path.join(args.out, f"{tag}.sass"), "w") as f:
                f.write(sass)
            lines = sass.splitlines()
            loop = _hot_loop(lines)
            hot = _count(loop)
            summary[tag] = {
                "tile": f"{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}",
                "registers": regs,
                "spill_store_bytes": spill,
                "kernel": dict(_count(lines).most_common()),
                "hot_loop": dict(hot.most_common()),  # most frequent first
                "hot_loop_instructions": sum(hot.values()),
                "hot_loop_predicated": sum(1 for ln in loop if re.match(r"\s*/\*[0-9a-f]+\*/\s+@", ln)),
            }
            top = ", ".join(f"{op} {n}" for op, n in hot.most_common(12))
            label = name + "".join(f"-{k}" for k in args.codegen)
            print(f"{label} {arch}: {regs} regs, {spill} B spill; hot loop {sum(hot.values())} instructions "
                  f"({top})", flush=True)  # fmt: skip
    with open(os.path.join(args.out, "sass-summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
