"""``fa4 info [--shape B,SQ,SK,HQ,HKV,D[,DV]] [--causal] [--dtype bf16|fp16]``: versions, the GPU and its
compute capability, the dispatch family (:mod:`fa4_torch.dispatch`, ``FA4_ARCH`` honoured); for a shape,
what the API would run for that dense call (:mod:`fa4_torch.plan`: the small-m rule, pack-GQA, the
kernel's :class:`~fa4_sm120.configs.FwdConfig`), the forward tile-table row, its shared memory against
the family's cap, the grid, and the backward row."""

from __future__ import annotations

import argparse

from fa4_torch.cli.common import (
    DTYPES,
    Shape,
    dispatch,
    dist_version,
    find_gpu,
    fmt_bytes,
    no_gpu_reason,
    parse_shape,
    torch_dtype,
)

__all__ = ["add_parser", "run", "describe_shape"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("info", help="versions, GPU, dispatch family; tile row and config for a shape")
    s.add_argument(
        "--shape", type=parse_shape, metavar="B,SQ,SK,HQ,HKV,D[,DV]", help="a flash_attn_func call shape"
    )
    s.add_argument("--causal", action="store_true", help="a causal call")
    s.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import platform

    import torch

    print("versions")
    rows = [
        ["python", platform.python_version()],
        ["torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none: CPU build'})"],
        ["nvidia-cutlass-dsl", dist_version("nvidia-cutlass-dsl")],
        ["fa4-core", dist_version("fa4-core", "fa4_core")],
        ["fa4-sm120", dist_version("fa4-sm120", "fa4_sm120")],
        ["fa4-torch", dist_version("fa4-torch", "fa4_torch")],
    ]
    for name, ver in rows:
        print(f"  {name:<20}{ver}")
    gpu = find_gpu(args)
    print("device")
    if gpu is None:
        print(f"  no CUDA GPU ({no_gpu_reason(args)})")
    else:
        print(f"  GPU {gpu.index}: {gpu.name}, compute capability {gpu.capability[0]}.{gpu.capability[1]}")
    from fa4_core.errors import UnsupportedArchError

    try:
        d = dispatch(gpu)
    except UnsupportedArchError as e:
        print(f"dispatch\n  unsupported: {e}")
        return 1
    print("dispatch")
    print(f"  family   {d.family} ({d.why})")
    print(f"  target   {d.target}")
    if gpu is None:
        print("  (without a GPU a call cannot run; this is what the compile-only paths build)")
    if args.shape is None:
        print("  pass --shape B,SQ,SK,HQ,HKV,D[,DV] for the tile row and config of a call")
        return 0
    sms = 0 if gpu is None else torch.cuda.get_device_properties(gpu.index).multi_processor_count
    return describe_shape(args.shape, DTYPES[args.dtype], args.causal, d.family, sms)


def describe_shape(shape: Shape, dtype: str, causal: bool, family: str, num_sms: int = 0) -> int:
    """Print what a dense call of ``shape`` runs on a GPU of ``family`` with ``num_sms`` SMs (0: not
    known); 1 when it is unsupported or its shared memory does not fit."""

    from fa4_core.arch import smem_capacity
    from fa4_core.errors import Fa4Error
    from fa4_sm120.tiles import SMALL_M_ROWS, family_cap_arch, select_fwd_tile
    from fa4_torch import plan

    print(f"forward of q ({shape.batch}, {shape.seqlen_q}, {shape.nheads}, {shape.head_dim}), k/v ", end="")
    print(
        f"({shape.batch}, {shape.seqlen_k}, {shape.nheads_kv}, {shape.head_dim}/{shape.head_dim_v}), ", end=""
    )
    print(f"{dtype}, causal={causal}")
    ratio = shape.ratio
    pack = ratio > 1  # the API's default (pack_gqa=None)
    small_m = plan.takes_small_m(shape.seqlen_q, shape.nheads, shape.nheads_kv, pack, shape.batch, num_sms)
    key = plan.dense_key(
        torch_dtype(dtype),
        shape.head_dim,
        shape.head_dim_v,
        causal,
        shape.nheads,
        shape.nheads_kv,
        small_m=small_m,
    )
    try:
        row = select_fwd_tile(family, dtype, shape.head_dim, shape.head_dim_v, causal, small_m=small_m)
        cfg = plan.fwd_config(key, family)
    except Fa4Error as e:
        print(f"  unsupported: {e}")
        return 1
    cap_arch = family_cap_arch(family)
    cap = smem_capacity(cap_arch)
    print(
        f"  tile row     {row.family} d{row.head_dim}/{row.head_dim_v}: tile_m={row.tile_m} "
        f"tile_n={row.tile_n} threads={row.num_threads} stages={row.num_stages}"
    )
    if row.small_m:
        print(
            f"               (a small-m row: at most {SMALL_M_ROWS} query rows per tile (decode), or fewer "
            f"128-row tiles than the {num_sms or '(unknown: no GPU)'} SMs)"
        )
    if row.plain_only:
        other = select_fwd_tile(family, dtype, shape.head_dim, shape.head_dim_v, causal, split_kv=True)
        print(
            f"               (calls without a window, split-KV or softcap; with them: tile_m={other.tile_m} "
            f"tile_n={other.tile_n} threads={other.num_threads})"
        )
    fields = ", ".join(f"{k}={v!r}" for k, v in vars(cfg).items())
    print(f"  FwdConfig    {fields}")
    fits = cfg.smem_bytes <= cap
    print(
        f"  smem         {fmt_bytes(cfg.smem_bytes)} of {fmt_bytes(cap)} ({cap_arch} cap): "
        + ("fits" if fits else "DOES NOT FIT")
    )
    rows_per_head = shape.seqlen_q * (ratio if pack else 1)
    heads = shape.nheads_kv if pack else shape.nheads
    m_blocks = -(-rows_per_head // cfg.tile_m)
    print(
        f"  grid         {m_blocks} m-blocks x {heads} {'KV ' if pack else ''}heads x {shape.batch} batch "
        f"= {m_blocks * heads * shape.batch} CTAs of {cfg.num_threads} threads"
        + (f" (pack-GQA: {ratio} query heads per KV head share a tile)" if pack else "")
    )
    try:
        from fa4_sm120.bwd_tiles import layout_notes, select_bwd_tile

        b = select_bwd_tile(family, shape.head_dim, shape.head_dim_v, causal=causal)
        warps = (
            f" ({b.num_threads // 32 // b.mma_warps_n}x{b.mma_warps_n} warps)" if b.mma_warps_n > 1 else ""
        )
        extra = "".join(f"; {n}" for n in layout_notes(b))
        print(f"  backward     tile_m={b.tile_m} tile_n={b.tile_n} threads={b.num_threads}{warps}{extra}")
        if b.excludes:
            other = select_bwd_tile(
                family, shape.head_dim, shape.head_dim_v, **dict.fromkeys(b.excludes, True)
            )
            print(
                f"               (calls with {' or '.join(sorted(b.excludes))}: tile_m={other.tile_m} "
                f"tile_n={other.tile_n} threads={other.num_threads}, V from shared memory)"
            )
    except Fa4Error as e:
        print(f"  backward     unsupported: {e}")
    return 0 if fits else 1
