"""Registers and spill stores of the forward over an FP8 K/V cache in every combination of what an FP8
call can set, compiled for ``sm_120a`` on the CPU (``ptxas -arch=sm_120a -v``; no GPU): the layout
(``flash_attn_with_kvcache`` contiguous, paged or with cache slots; ``flash_attn_varlen_func`` with
cu_seqlens, or over a paged cache; each paged layout once in pages that split key tiles and once in
pages that hold whole ones, ``page-tiles``; ``--layouts``: some of them), the mask (none, causal, a window,
both), the softcap, a sink or split keys, pack-GQA 1 or 4, for the tile rows the calls take
(``--rows``: ``decode``, at most 16 query rows per tile; ``chunk``, 17-64; ``long``, prefill), as
:func:`fa4_torch.plan.fwd_config` builds them. ``tests/sm120/test_fwd_kv8_compile.py`` compiles a
sample (what CI runs); this is the whole space, for the tables' rows or a candidate (``--codegen
NAME=VALUE``, fields of :class:`fa4_sm120.configs.FwdCodegen`; ``--kv8-tile-n N``, key tiles of at
most N) before it becomes the rule, and with ``--all`` for every head-dim pair and q dtype (once per
release: ``nox -s kv8-sweep``). Each distinct config is built once (a head dim's decode and chunk
rows may share one). Prints one line per build and, last, the builds that spill; exits 1 if any
does.

    python3 tools/kv8_spill_sweep.py --head-dim 64 -j 2
    python3 tools/kv8_spill_sweep.py --head-dim 128 --rows long --codegen kv8_one_buffer=1
    python3 tools/kv8_spill_sweep.py --head-dim 192 --kv8-tile-n 32
    python3 tools/kv8_spill_sweep.py --head-dim 96 --layouts paged varlen-paged page-tiles varlen-page-tiles
    python3 tools/kv8_spill_sweep.py --head-dim 192 --head-dim-v 128
    python3 tools/kv8_spill_sweep.py --all -j 16
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
    # pages of 128 rows: whole key tiles of any row in one page (FwdCodegen.page_tiles)
    "page-tiles": dict(paged_kv=True, seqused_k=True, page_align=128),
    "varlen-page-tiles": dict(varlen_q=True, paged_kv=True, seqused_k=True, page_align=128),
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


def _config(head_dim, head_dim_v, dtype, row, layout, mask, softcap, extra, pack, codegen, tile_n):
    """The config :func:`fa4_torch.plan.fwd_config` builds for one FP8 call of this kind (with the
    candidate's fields and key tile, if any)."""
    import torch

    from fa4_torch.plan import FwdKey, fwd_config

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
    return cfg


def _build(job):
    name, cfg = job
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
    from fa4_sm120.compile import compile_fwd
    from sm120_resources import sweep_build

    return sweep_build(
        name, compile_fwd, cfg, f"{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads} {cfg.smem_bytes} B"
    )


def jobs(pairs, dtypes, rows, layouts, codegen=None, tile_n=0) -> list:
    """``(name, config)`` of every combination, each distinct config once (the first name that builds
    it: the decode and chunk rows of a head dim may share one tile)."""
    out = {}
    for (d, dv), dtype, row, layout, mask, softcap, extra, pack in itertools.product(
        pairs, dtypes, rows, layouts, MASKS, (False, True), EXTRAS, (1, 4)
    ):
        cfg = _config(d, dv, dtype, row, layout, mask, softcap, extra, pack, codegen, tile_n)
        name = "+".join(
            [row, layout, mask] + (["softcap"] if softcap else []) + ([extra] if extra != "-" else [])
        )
        q = {"bfloat16": "bf16", "float16": "fp16"}[dtype]
        many = len(pairs) * len(dtypes) > 1
        prefix = f"d{d}" + (f"/{dv}" if dv != d else "") + f" {q} " if many else ""
        out.setdefault(cfg, f"{prefix}{name} pack{pack}")
    return [(name, cfg) for cfg, name in out.items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--head-dim", type=int, help="K's head dim (or --all)")
    ap.add_argument("--head-dim-v", type=int, default=0, help="V's head dim (default: --head-dim)")
    ap.add_argument(
        "--all", action="store_true", help="every head-dim pair an FP8 cache takes, both q dtypes"
    )
    ap.add_argument("--dtype", choices=("bfloat16", "float16"), default="bfloat16", help="q's dtype")
    ap.add_argument("--rows", nargs="+", choices=tuple(ROWS), default=list(ROWS))
    ap.add_argument("--layouts", nargs="+", choices=tuple(LAYOUTS), default=list(LAYOUTS))
    ap.add_argument("--codegen", nargs="*", default=[], help="FwdCodegen fields, NAME=number")
    ap.add_argument("--kv8-tile-n", type=int, default=0, help="key tiles of at most this (a candidate)")
    ap.add_argument("-j", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args(argv)
    if args.all == (args.head_dim is not None):
        ap.error("give --head-dim or --all")
    os.environ.setdefault("CUTE_DSL_ARCH", "sm_120a")
    from fa4_sm120.configs import codegen_fields
    from fa4_sm120.limits import HEAD_DIMS
    from fa4_torch.validate import KV8_MAX_HEAD_DIM

    if args.all:
        dims = [d for d in HEAD_DIMS if d <= KV8_MAX_HEAD_DIM]
        pairs, dtypes = list(itertools.product(dims, dims)), ["bfloat16", "float16"]
    else:
        pairs, dtypes = [(args.head_dim, args.head_dim_v or args.head_dim)], [args.dtype]
    todo = jobs(pairs, dtypes, args.rows, args.layouts, codegen_fields(args.codegen), args.kv8_tile_n)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))
    from sm120_resources import run_sweep

    return run_sweep(_build, todo, args.j)


if __name__ == "__main__":
    raise SystemExit(main())
