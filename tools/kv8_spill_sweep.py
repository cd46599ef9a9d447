"""Registers and spill stores of the forward over an FP8 K/V cache in every combination of what an FP8
call can set, compiled for ``sm_120a`` on the CPU (``ptxas -arch=sm_120a -v``; no GPU): the layout
(``flash_attn_with_kvcache`` contiguous, paged or with cache slots; ``flash_attn_varlen_func`` with
cu_seqlens, or over a paged cache; ``--layouts``: some of them), the mask (none, causal, a window, both), the softcap, a sink or
split keys, pack-GQA 1 or 4, for the tile rows the calls take (``--rows``: ``decode``, at most 16 query
rows per tile; ``chunk``, 17-64; ``long``, prefill), as :func:`fa4_torch.plan.fwd_config` builds them.
``tests/sm120/test_fwd_kv8_compile.py`` compiles a sample (what CI runs); this is the whole space, for
the tables' rows or a candidate (``--codegen NAME=VALUE``, fields of
:class:`fa4_sm120.configs.FwdCodegen`; ``--kv8-tile-n N``, key tiles of at most N) before it becomes
the rule. Prints one line per build and, last, the builds that spill.

    python3 tools/kv8_spill_sweep.py --head-dim 64 -j 2
    python3 tools/kv8_spill_sweep.py --head-dim 128 --rows long --codegen kv8_one_buffer=1
    python3 tools/kv8_spill_sweep.py --head-dim 192 --kv8-tile-n 32
    python3 tools/kv8_spill_sweep.py --head-dim 96 --layouts paged varlen-paged   # what pages change
    python3 tools/kv8_spill_sweep.py --head-dim 192 --head-dim-v 128
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys

LAYOUTS = {
    "cache": dict(seqused_k=True),
    "paged": dict(paged_kv=True, seqused_k=True),
    "slots": dict(kv_batch_idx=True, seqused_k=True),
    "varlen": dict(varlen_q=True, varlen_k=True),
    "varlen-paged": dict(varlen_q=True, paged_kv=True, seqused_k=True),
}
MASKS = {
    "none": (False, False),
    "causal": (True, False),
    "local": (False, True),
    "causal+local": (True, True),
}
EXTRAS = {
    "-": {},
    "sink": dict(sink=True),
    "split": dict(split_kv=True),
}  # a split call's sink is the combine's
ROWS = {"decode": dict(small_m=True, decode=True), "chunk": dict(small_m=True), "long": {}}


def _build(args):
    head_dim, head_dim_v, dtype, row, layout, mask, softcap, extra, pack, codegen, tile_n = args
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
    import torch

    from fa4_sm120.compile import compile_fwd
    from fa4_torch.plan import FwdKey, fwd_config
    from sm120_resources import sweep_build

    causal, local = MASKS[mask]
    key = FwdKey(
        getattr(torch, dtype), head_dim, head_dim_v, causal, local, pack > 1, pack, softcap=softcap, kv8=True,
        **LAYOUTS[layout], **EXTRAS[extra], **ROWS[row],
    )  # fmt: skip
    cfg = fwd_config(key, "sm120")
    if tile_n:
        cfg = dataclasses.replace(cfg, tile_n=min(cfg.tile_n, tile_n))
    if codegen:
        cfg = dataclasses.replace(cfg, codegen=dataclasses.replace(cfg.codegen, **codegen))
    name = "+".join(
        [row, layout, mask] + (["softcap"] if softcap else []) + ([extra] if extra != "-" else [])
    )
    name += f" pack{pack}"
    return sweep_build(
        name, compile_fwd, cfg, f"{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads} {cfg.smem_bytes} B"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head-dim", type=int, required=True)
    ap.add_argument("--head-dim-v", type=int, default=0, help="V's head dim (default: --head-dim)")
    ap.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16", help="q's dtype")
    ap.add_argument("--rows", nargs="+", choices=tuple(ROWS), default=list(ROWS))
    ap.add_argument("--layouts", nargs="+", choices=tuple(LAYOUTS), default=list(LAYOUTS))
    ap.add_argument("--codegen", nargs="*", default=[], help="FwdCodegen fields, NAME=number")
    ap.add_argument("--kv8-tile-n", type=int, default=0, help="key tiles of at most this (a candidate)")
    ap.add_argument("-j", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    os.environ.setdefault("CUTE_DSL_ARCH", "sm_120a")
    from fa4_sm120.configs import codegen_fields

    codegen = codegen_fields(args.codegen)
    jobs = [
        (
            args.head_dim,
            args.head_dim_v or args.head_dim,
            args.dtype,
            row,
            layout,
            mask,
            softcap,
            extra,
            pack,
            codegen,
            args.kv8_tile_n,
        )
        for row, layout, mask, softcap, extra, pack in itertools.product(
            args.rows, args.layouts, MASKS, (False, True), EXTRAS, (1, 4)
        )
    ]
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
    from sm120_resources import run_sweep

    return run_sweep(_build, jobs, args.j)


if __name__ == "__main__":
    raise SystemExit(main())
