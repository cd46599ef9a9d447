"""SASS of forward builds (needs ptxas and cuobjdump, i.e. the GPU machine's toolkit; no GPU needed):
compile with the CuTe DSL for ``--arch`` keeping the PTX, assemble it with ``ptxas``, disassemble the
cubin with ``cuobjdump -sass``, and count the opcodes of the kernel and of its hottest loop (the
largest backward-branching block). Writes ``<out>/<name>.sass`` and ``<out>/sass-summary.json``.

    python3 tools/sass_dump.py --out DIR [--arch sm_90a sm_120a] [--codegen tree_reduce=1]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import tempfile

# (name, head_dim, causal): the table rows a plain call takes
BUILDS = (("d128", 128, False), ("d128-causal", 128, True), ("d64", 64, False), ("d96", 96, False))


def _opcode(line: str) -> str | None:
    m = re.match(r"\s*/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", line)
    return m.group(2) if m else None


def _hot_loop(lines: list[str]) -> list[str]:
    """The lines of the largest block that a later branch jumps back to (the main loop)."""
    addr = {}
    for i, line in enumerate(lines):
        m = re.match(r"\s*/\*([0-9a-f]+)\*/", line)
        if m:
            addr[int(m.group(1), 16)] = i
    best = []
    for i, line in enumerate(lines):
        m = re.search(r"\bBRA\b.*?(0x[0-9a-f]+)", line)
        if m:
            target = addr.get(int(m.group(1), 16))
            if target is not None and target < i and i - target > len(best):
                best = lines[target : i + 1]
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", nargs="+", default=["sm_90a", "sm_120a"])
    ap.add_argument(
        "--codegen", nargs="*", default=[], help="fa4_sm120.configs.FwdCodegen fields, NAME=number"
    )
    args = ap.parse_args()
    if not (shutil.which("ptxas") and shutil.which("cuobjdump")):
        print("sass_dump: ptxas and cuobjdump are needed (the GPU machine's toolkit); nothing done")
        return 0
    import dataclasses

    from fa4_sm120.compile import compile_fwd, ptxas
    from fa4_sm120.configs import FwdCodegen
    from fa4_sm120.tiles import fwd_config

    types = {f.name: f.type for f in dataclasses.fields(FwdCodegen)}
    fields = {}
    for item in args.codegen:
        name, value = item.split("=")
        fields[name] = (
            float(value)
            if "float" in str(types[name])
            else bool(int(value))
            if "bool" in str(types[name])
            else int(value)
        )
    codegen = FwdCodegen(**fields)
    os.makedirs(args.out, exist_ok=True)
    summary = {}
    for arch in args.arch:
        for name, d, causal in BUILDS:
            cfg = dataclasses.replace(fwd_config("sm120", "bfloat16", d, d, causal=causal), codegen=codegen)
            tmp = tempfile.mkdtemp()
            compile_fwd(cfg, tvm_ffi=False, gpu_arch=arch, dump_dir=tmp)
            ptx = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".ptx"))
            cubin = os.path.join(tmp, "k.cubin")
            r = ptxas(ptx, arch, out=cubin)
            if r.returncode != 0:
                raise RuntimeError(f"ptxas -arch={arch}: {r.stderr.strip()[-300:]}")
            sass = subprocess.run(
                ["cuobjdump", "-sass", cubin], capture_output=True, text=True, check=True
            ).stdout
            tag = f"{name}-{arch}" + "".join(f"-{k}" for k in args.codegen)
            with open(os.path.join(args.out, f"{tag}.sass"), "w") as f:
                f.write(sass)
            lines = sass.splitlines()
            loop = _hot_loop(lines)
            count = lambda ls: collections.Counter(op for op in map(_opcode, ls) if op)  # noqa: E731
            predicated = sum(1 for ln in loop if re.match(r"\s*/\*[0-9a-f]+\*/\s+@", ln))
            summary[tag] = {
                "tile": f"{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}",
                "kernel": dict(count(lines).most_common()),
                "hot_loop": dict(count(loop).most_common()),
                "hot_loop_instructions": sum(count(loop).values()),
                "hot_loop_predicated": predicated,
            }
            print(tag, summary[tag]["tile"], "hot loop:", summary[tag]["hot_loop_instructions"], "instructions,",
                  predicated, "predicated;", list(summary[tag]["hot_loop"].items())[:12], flush=True)  # fmt: skip
            shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(args.out, "sass-summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
