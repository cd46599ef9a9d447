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
import sys

MASKS = ("none", "causal", "local")
FLAGS = ("softcap", "sink", "seqused")


def _build(args):
    head_dim, cand, mask, qk, acc, flags = args
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
    from fa4_sm120.fwd_q8 import FlashAttentionForwardQ8Sm120
    from fa4_sm120.tiles import q8_fwd_config
    from sm120_resources import sweep_build

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
    tile = f"{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads} stages {cfg.num_stages}"
    return sweep_build(name, FlashAttentionForwardQ8Sm120.compile, cfg, tile)


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
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
    from sm120_resources import run_sweep

    return run_sweep(_build, jobs, args.j)


if __name__ == "__main__":
    raise SystemExit(main())
