"""Tile sweep for the forward tile table: time candidate (tile_m, tile_n, threads) per head dim and
causal on the anchor shapes, beside the current table row, and print a ranking.

Each candidate is compiled directly from an :class:`fa4_sm120.fwd.FwdConfig` (bypassing the table);
candidates that do not fit the SM120 shared-memory cap are rejected by ``can_implement``. Report the
``sm_120a`` registers/spills of the winners with ``ptxas`` separately (``tests/sm120`` does it).

    python benchmarks/tune_tiles.py --head-dim 128 --cands 128,64,128 128,64,256 256,64,256 --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_core.errors import UnsupportedConfigError  # noqa: E402
from fa4_sm120.compile import compile_fwd  # noqa: E402
from fa4_sm120.fwd import FwdConfig  # noqa: E402
from fa4_sm120.occupancy import ctas_per_sm, emulated_launch_smem  # noqa: E402

SHAPES = [(8, 512, 16, 16), (4, 1024, 16, 16), (2, 2048, 32, 8), (1, 4096, 16, 16), (1, 8192, 32, 8)]


def run(head_dim, causal, cands, dtype=torch.bfloat16, emulate=False):
    results = {}
    for tm, tn, th in cands:
        times = []
        try:
            fns = {}
            for b, s, hq, hkv in SHAPES:
                r = hq // hkv
                key = r
                if key not in fns:
                    cfg = FwdConfig(
                        "bfloat16",
                        head_dim,
                        head_dim,
                        tm,
                        tn,
                        th,
                        is_causal=causal,
                        pack_gqa=r > 1,
                        qhead_per_kvhead=r,
                    )
                    if emulate:
                        regs = C.sm120_regs(compile_fwd, cfg)
                        launch = emulated_launch_smem(cfg.smem_bytes, regs, th)
                        occ = ctas_per_sm(cfg.smem_bytes, regs, th)
                        print(
                            f"  {tm}x{tn}x{th} r{r}: sm_120a {regs} regs, {occ} CTA/SM -> launch smem {launch} B"
                        )
                        cfg = dataclasses.replace(cfg, launch_smem=launch)
                    fns[key] = compile_fwd(cfg)
                q = torch.randn(b, s, hq, head_dim, device="cuda", dtype=dtype)
                k = torch.randn(b, s, hkv, head_dim, device="cuda", dtype=dtype)
                v = torch.randn_like(k)
                o = torch.empty_like(q)
                lse = torch.empty(b, hq, s, device="cuda", dtype=torch.float32)
                fn = fns[key]
                ms = C.bench_ms(
                    lambda fn=fn, q=q, k=k, v=v, o=o, lse=lse: fn(
                        q, k, v, o, lse, 1.0 / math.sqrt(head_dim), -1, -1
                    )
                )
                times.append(C.attn_flops(b, hq, s, s, head_dim, causal=causal) / ms / 1e9)
        except UnsupportedConfigError as e:
            print(f"  {tm}x{tn}x{th}: rejected: {e}")
            continue
        results[f"{tm}x{tn}x{th}"] = times
        print(
            f"d{head_dim} causal={causal} {tm}x{tn}x{th}: "
            + " ".join(f"{t:.0f}" for t in times)
            + f" | mean {sum(times) / len(times):.1f}",
            flush=True,
        )
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--head-dim", type=int, nargs="+", default=[128])
    ap.add_argument("--cands", nargs="+", required=True, help="tile_m,tile_n,threads")
    ap.add_argument("--out", default=None)
    ap.add_argument("--emulate-sm120", action="store_true", help="launch with SM120's CTAs per SM")
    a = ap.parse_args()
    cands = [tuple(map(int, c.split(","))) for c in a.cands]
    C.bench_ms(
        lambda: torch.randn(4096, 4096, device="cuda") @ torch.randn(4096, 4096, device="cuda")
    )  # clocks up
    allres = {}
    for d in a.head_dim:
        for causal in (False, True):
            allres[f"d{d}-causal{causal}"] = run(d, causal, cands, emulate=a.emulate_sm120)
    if a.out:
        name = "tune-emulated-sm120.json" if a.emulate_sm120 else "tune.json"
        C.write_results(
            os.path.join(a.out, name),
            {"env": C.environment(), "emulate_sm120": a.emulate_sm120, "results": allres},
        )


if __name__ == "__main__":
    main()
