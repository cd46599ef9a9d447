"""Tile sweep for the backward tile table: time candidate rows ``tile_m,tile_n,threads,warps_n[,flags]``
per head dim (``d`` or ``d:dv``), causal and not, on the backward grid (docs/benchmarks.md), beside the
current table row. Flags: ``v`` dQ reductions as ``red.global.add.v2.f32``, ``e`` early Q/dO loads,
``l`` longest key blocks first for causal calls, ``s`` S and dP on the transposed warp grid, ``k`` S and
dP with every warp along the keys, ``r`` V's fragments of dP in registers (``BwdTile.vector_dq_red`` /
``early_loads`` / ``longest_first`` / ``sdp_transposed`` / ``sdp_keys`` / ``v_in_regs``); a flag left
out is off.

Each candidate replaces the table's row of ``(d, dv)`` in this process (``fa4_sm120.bwd_tiles``) and
the whole backward (preprocess, main kernel, postprocess) is timed through ``torch.autograd.grad``
on a kept graph, as ``bench_bwd.py`` does. The best candidates are timed a second time in reverse
order; keep a row only if it wins by >= 2% in both passes. Candidates that the kernel cannot
implement (shared memory over the SM120 cap, tiles the warps cannot split) are reported and skipped.
Check the ``sm_120a`` registers/spills of a winner with ``ptxas`` (``tests/sm120`` prints them).

``--emulate-sm120``: each candidate launches with the dynamic shared memory that lets the H100/H200
run no more CTAs per SM than SM120 would (``fa4_sm120.occupancy.emulated_launch_smem`` from its
``sm_120a`` registers), because compat mode otherwise co-schedules two of the 4-warp 82 KB CTAs that
SM120 runs one at a time.

    python benchmarks/tune_bwd.py --head-dim 64 128 --cands 64,64,128,1 64,64,256,2 --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_core.errors import UnsupportedConfigError  # noqa: E402
from fa4_sm120 import bwd_tiles  # noqa: E402
from fa4_sm120.bwd import compile_bwd  # noqa: E402
from fa4_sm120.occupancy import ctas_per_sm, emulated_launch_smem  # noqa: E402
from fa4_torch import flash_attn_func, launch_bwd  # noqa: E402

SHAPES = [(4, 1024, 16, 16), (4, 1024, 32, 8), (2, 4096, 16, 16), (2, 4096, 32, 8), (1, 8192, 32, 8)]


_ORIGINAL_CONFIG = bwd_tiles.bwd_config


def _use_row(dims, cand, emulate: bool) -> None:
    """Put the candidate in the table's row of ``dims = (d, dv)`` (and, emulating SM120, its launch
    shared memory in every config the table gives)."""
    table = [r for r in bwd_tiles.BWD_TABLE if (r.head_dim, r.head_dim_v) != dims]
    base = next(r for r in bwd_tiles.BWD_TABLE if (r.head_dim, r.head_dim_v) == dims)
    table.append(bwd_tiles.with_candidate(base, *cand))
    bwd_tiles.BWD_TABLE = tuple(table)
    bwd_tiles.bwd_config = _ORIGINAL_CONFIG
    if emulate:
        launch = {}

        def emulated(family, dtype, d, dv, **kw):
            cfg = _ORIGINAL_CONFIG(family, dtype, d, dv, **kw)
            if cfg not in launch:
                regs = C.sm120_regs(compile_bwd, cfg)
                launch[cfg] = emulated_launch_smem(cfg.smem_bytes, regs, cfg.num_threads)
                occ = ctas_per_sm(cfg.smem_bytes, regs, cfg.num_threads)
                print(f"  {cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}: sm_120a {regs} regs, {occ} CTA/SM "
                      f"-> launch smem {launch[cfg]} B")  # fmt: skip
            return dataclasses.replace(cfg, launch_smem=launch[cfg])

        bwd_tiles.bwd_config = emulated
    launch_bwd.reset_caches()


def time_candidate(dims, causal: bool, cand, emulate: bool = False) -> list[float]:
    _use_row(dims, cand, emulate)
    d, dv = dims
    out = []
    for b, s, hq, hkv in SHAPES:
        q = torch.randn(b, s, hq, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(b, s, hkv, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(b, s, hkv, dv, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        dout = torch.randn(b, s, hq, dv, device="cuda", dtype=torch.bfloat16)
        o = flash_attn_func(q, k, v, causal=causal)[0]
        ms = C.bench_ms(
            lambda o=o, q=q, k=k, v=v, dout=dout: torch.autograd.grad(o, (q, k, v), dout, retain_graph=True)
        )
        out.append(2.5 * C.attn_flops(b, hq, s, s, d, dv, causal=causal) / ms / 1e9)
    return out


def parse_cand(text: str):
    """``"64,64,128,1"`` -> ``(64, 64, 128, 1, "")``; ``"32,128,256,4,vel"`` -> ``(..., "vel")``
    (``v``: vector dQ reductions, ``e``: early Q/dO loads, ``l``: longest first)."""
    parts = text.split(",")
    flags = parts[4] if len(parts) == 5 else ""
    if len(parts) not in (4, 5) or set(flags) - set(bwd_tiles.CANDIDATE_FLAGS):
        raise SystemExit(f"--cands {text!r}: want tile_m,tile_n,threads,warps_n[,flags of v/e/l/s/k/r]")
    return (*map(int, parts[:4]), flags)


def cand_name(cand) -> str:
    return "x".join(map(str, cand[:4])) + (f"-{cand[4]}" if cand[4] else "")


def parse_dims(text: str):
    """``"128"`` -> ``(128, 128)``; ``"192:128"`` -> ``(192, 128)``."""
    d, _, dv = text.partition(":")
    return int(d), int(dv or d)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-dim", nargs="+", default=["128"], help="d or d:dv")
    ap.add_argument(
        "--cands", nargs="+", required=True, help="tile_m,tile_n,threads,warps_n[,flags v/e/l/s/k/r]"
    )
    ap.add_argument("--out", default=None)
    ap.add_argument("--emulate-sm120", action="store_true", help="launch with SM120's CTAs per SM")
    ap.add_argument("--causal", choices=["no", "yes", "both"], default="both")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("tune_bwd: no CUDA GPU here; nothing measured")
        return 0
    cands = [parse_cand(c) for c in a.cands]
    C.bench_ms(lambda: torch.randn(4096, 4096, device="cuda") @ torch.randn(4096, 4096, device="cuda"))
    original = bwd_tiles.BWD_TABLE
    results = {}
    for dims in map(parse_dims, a.head_dim):
        d = dims[0] if dims[0] == dims[1] else f"{dims[0]}_{dims[1]}"
        for causal in {"no": (False,), "yes": (True,), "both": (False, True)}[a.causal]:
            key = f"d{d}-causal{causal}"
            res = results[key] = {}
            for order in ("forward", "reverse"):
                for cand in cands if order == "forward" else cands[::-1]:
                    name = cand_name(cand)
                    try:
                        t = time_candidate(dims, causal, cand, a.emulate_sm120)
                    except UnsupportedConfigError as e:
                        print(f"{key} {name}: rejected: {e}")
                        continue
                    finally:
                        bwd_tiles.BWD_TABLE = original
                        bwd_tiles.bwd_config = _ORIGINAL_CONFIG
                    res.setdefault(name, []).append(sum(t) / len(t))
                    print(
                        f"{key} {name} ({order}): "
                        + " ".join(f"{x:.0f}" for x in t)
                        + f" | mean {sum(t) / len(t):.1f}",
                        flush=True,
                    )
            ranking = sorted(res.items(), key=lambda kv: -min(kv[1]))
            print(f"== {key}: " + ", ".join(f"{n} {min(v):.1f}" for n, v in ranking))
    launch_bwd.reset_caches()
    if a.out:
        name = "tune-bwd-emulated-sm120.json" if a.emulate_sm120 else "tune-bwd.json"
        C.write_results(
            os.path.join(a.out, name),
            {"env": C.environment(), "emulate_sm120": a.emulate_sm120, "shapes": SHAPES, "results": results},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
