"""Registers and spill stores of the 8-bit forward in every combination of its feature flags, compiled
for ``sm_120a`` on the CPU (``ptxas -arch=sm_120a -v``; no GPU): causal / window / neither, the
softcap, sinks, the varlen form's per-sequence lengths, INT8 or FP8 Q·Kᵀ, fp32 or fp16 P·V accumulation
(3 x 2^5 = 96 builds per head dim, 3-5 s each). ``tests/sm120/test_q8_compile.py`` compiles a sample
(what CI runs); this is the whole space, for the table's row (with its stage rule) or a candidate
before it becomes one. Prints one line per build and, last, the builds that spill.

    python3 tools/q8_spill_sweep.py --head-dim 128
    python3 tools/q8_spill_sweep.py --head-dim 128 --cand 64,32,128,2,3 -j 2

``--cand tile_m,tile_n,threads,num_stages,min_ctas_per_sm`` replaces the row (the stage rule is then
not applied: every build has the candidate's stages).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor

MASKS = ("none", "causal", "local")
FLAGS = ("softcap", "sink", "seqused")


def _build(args):
    head_dim, cand, mask, qk, acc, flags = args
    from fa4_sm120.compile import ptxas_resources
    from fa4_sm120.fwd_q8 import FlashAttentionForwardQ8Sm120
    from fa4_sm120.tiles import q8_fwd_config

    cfg = q8_fwd_config(
        "bfloat16", head_dim, causal=mask == "causal", local=mask == "local", qk=qk, pv_accum=acc, **flags
    )
    if cand:
        tm, tn, th, st, ctas = cand
        cfg = dataclasses.replace(
            cfg, tile_m=tm, tile_n=tn, num_threads=th, num_stages=st,
            codegen=dataclasses.replace(cfg.codegen, min_ctas_per_sm=ctas),
        )  # fmt: skip
    name = "+".join([mask, qk, f"pv_{acc}"] + [k for k, v in flags.items() if v])
    try:
        with tempfile.TemporaryDirectory() as d:
            FlashAttentionForwardQ8Sm120.compile(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=d)
            ptx = next(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".ptx"))
            res = ptxas_resources(ptx)
    except Exception as e:  # a combination the kernel refuses: reported, not counted
        return name, None, f"{type(e).__name__}: {str(e)[:120]}", ""
    if res is None:
        return name, None, "no ptxas on PATH", ""
    regs, spill, err = res
    tile = f"{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads} stages {cfg.num_stages}"
    return name, regs, spill if err is None else err, tile


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head-dim", type=int, required=True)
    ap.add_argument("--cand", help="tile_m,tile_n,threads,num_stages,min_ctas_per_sm in place of the row")
    ap.add_argument("-j", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    os.environ.setdefault("CUTE_DSL_ARCH", "sm_120a")
    cand = tuple(int(x) for x in args.cand.split(",")) if args.cand else None
    jobs = [
        (args.head_dim, cand, mask, qk, acc, dict(zip(FLAGS, bits, strict=True)))
        for mask, qk, acc, bits in itertools.product(
            MASKS, ("int8", "fp8"), ("fp32", "fp16"), itertools.product((False, True), repeat=len(FLAGS))
        )
    ]
    spilled = []
    with ProcessPoolExecutor(max_workers=args.j) as ex:
        for name, regs, spill, tile in ex.map(_build, jobs):
            print(f"{name:<45} {tile:<22} regs {regs}  spill {spill}", flush=True)
            if regs is None or spill:
                spilled.append((name, spill))
    print(f"\n{len(jobs)} builds; {len(spilled)} spill or fail:")
    for name, spill in spilled:
        print(f"  {name}: {spill}")
    return 1 if spilled else 0


if __name__ == "__main__":
    raise SystemExit(main())
