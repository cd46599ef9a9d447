"""Registers and spill stores of a backward tile in every combination of its feature flags, compiled for
``sm_120a`` on the CPU (``ptxas -arch=sm_120a -v``; no GPU). ``bwd_tiles.BWD_FEATURE_SETS`` (what CI
compiles) is a sample: this is the whole space (2^9 = 512 builds, about 2-3 s each), for a table row or
a sweep candidate before it becomes one. Prints one line per build and, last, the builds that spill.

    python3 tools/bwd_spill_sweep.py --head-dim 64                      # the rows the table picks
    python3 tools/bwd_spill_sweep.py --head-dim 128 --cand 32,128,256,4,velkr --pin deterministic=0 -j 2

``--pin NAME=0|1`` fixes a flag (repeatable); ``--dtype float16`` compiles fp16 (its registers differ).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from concurrent.futures import ProcessPoolExecutor


def _build(args):
    head_dim, dtype, cand, feat = args
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
    from fa4_sm120 import bwd_tiles
    from fa4_sm120.bwd import compile_bwd
    from sm120_resources import build_resources

    if cand:
        tm, tn, th, wn, flags = cand
        row = bwd_tiles.with_candidate(
            bwd_tiles.select_bwd_tile("sm120", head_dim, head_dim), tm, tn, th, wn, flags
        )
        table = tuple(r for r in bwd_tiles.BWD_TABLE if r.head_dim != head_dim or r.head_dim_v != head_dim)
        bwd_tiles.BWD_TABLE = (row, *table)  # this worker process only
    cfg = bwd_tiles.bwd_config("sm120", dtype, head_dim, head_dim, **feat)
    name = "+".join(k for k, v in feat.items() if v) or "plain"
    try:
        regs, spill = build_resources(compile_bwd, cfg)
    except Exception as e:  # a flag combination the kernel refuses: reported, not counted
        return name, None, f"{type(e).__name__}: {str(e)[:120]}"
    tile = f"{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}" + (
        f" sdp{cfg.sdp_wm}x{cfg.sdp_wn}" if cfg.sdp_warps_n else ""
    )
    return name, regs, spill, tile + (" vregs" if cfg.v_in_regs else "")


def main(argv=None) -> int:
    from fa4_sm120.bwd_tiles import FEATURES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head-dim", type=int, required=True)
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
    ap.add_argument(
        "--cand", help="tile_m,tile_n,threads,mma_warps_n,flags (tune_bwd.py's form) in place of the table"
    )
    ap.add_argument("--pin", action="append", default=[], metavar="NAME=0|1")
    ap.add_argument("-j", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    pins = {}
    for p in args.pin:
        name, _, value = p.partition("=")
        if name not in FEATURES or value not in ("0", "1"):
            ap.error(f"--pin {p!r}: want NAME=0|1 with NAME one of {FEATURES}")
        pins[name] = value == "1"
    cand = None
    if args.cand:
        *nums, flags = args.cand.split(",")
        cand = (*map(int, nums), flags)
    combos = [
        dict(zip(FEATURES, bits))
        for bits in itertools.product((False, True), repeat=len(FEATURES))
        if all(dict(zip(FEATURES, bits))[k] == v for k, v in pins.items())
    ]
    spilling = []
    with ProcessPoolExecutor(args.j) as ex:
        for name, regs, spill, *tile in ex.map(
            _build, [(args.head_dim, args.dtype, cand, f) for f in combos]
        ):
            print(f"{name:70s} {regs} registers, {spill} B spill stores {' '.join(tile)}", flush=True)
            if regs is not None and spill:
                spilling.append(f"{name} {spill} B")
    print(
        f"\n{len(spilling)} of {len(combos)} builds spill"
        + (":\n  " + "\n  ".join(spilling) if spilling else "")
    )
    return 1 if spilling else 0


if __name__ == "__main__":
    raise SystemExit(main())
