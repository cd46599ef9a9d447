"""What a validated call runs: the compiled variant it needs, named by a typed key, and the decisions
that pick it (the tile row, pack-GQA, the split count), with the device facts those decisions read.

The second layer of fa4-torch (``validate -> plan -> launch -> ops -> autograd -> api``): it imports
:mod:`fa4_torch.validate`, :mod:`fa4_torch.dispatch` and the plain-data modules of ``fa4_sm120``
(tile tables, occupancy, configs); never the DSL, never a kernel.

* :class:`FwdKey`: everything a compiled forward depends on, and the device it is compiled for
  (dtype, head dims, causal/local, pack-GQA and its ratio, the serving flags, the small-m row);
  :func:`fwd_config` turns it into the kernel's :class:`~fa4_sm120.configs.FwdConfig` for a dispatch
  family. :func:`forward_plan` makes the key and split count of a validated call
  (:class:`~fa4_torch.validate.FwdArgs`); :func:`dense_key` the key of a dense call from its shape
  (the command line's ``info`` and ``warmup``, by the same rules).
* :class:`BwdKey` and :func:`bwd_configs`: the same for the backward (main kernel, pre- and
  postprocess).
* Pack-GQA: on when ``nheads > nheads_kv`` unless the caller says otherwise. The small-m row
  (:func:`fa4_sm120.tiles.wants_small_m`): at most 64 query rows per tile (decode), or, for
  batch-dense q, fewer 128-row tiles than SMs; over an FP8 K/V cache with at most 16 rows per tile,
  the decode row (:func:`fa4_sm120.tiles.wants_decode`). The split count: :func:`heuristic_splits` for
  ``num_splits=0``, at most :data:`~fa4_sm120.limits.MAX_SPLITS`.
* Device facts, memoised per device index: :func:`num_sms`, :func:`sm_facts`, :func:`compile_target`,
  and :func:`device_family` (the dispatch table's answer).

Seams (tests pin a device through them; every caller goes through this module's globals):
:func:`num_sms`, :func:`sm_facts`, :func:`device_family`, :func:`heuristic_splits`;
:func:`reset_caches` forgets the memoised facts. The tile tables' functions are looked up in their
modules at each use (``fa4_sm120.tiles.fwd_config``, ``fa4_sm120.bwd_tiles.bwd_config``, ...): the
tuners of ``benchmarks/`` and their ``--emulate-sm120`` replace them there.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch

from fa4_sm120 import bwd_tiles, tiles
from fa4_sm120.configs import BwdConfig, FwdConfig, PrePostConfig
from fa4_sm120.limits import MAX_SPLITS
from fa4_sm120.occupancy import SM120, SmFacts, ctas_per_sm
from fa4_torch.dispatch import device_family
from fa4_torch.validate import DTYPES, KV8_DTYPES, FwdArgs

__all__ = [
    "FwdKey",
    "FwdPlan",
    "BwdKey",
    "forward_plan",
    "dense_key",
    "takes_small_m",
    "fwd_config",
    "bwd_configs",
    "heuristic_splits",
    "split_wave",
    "num_sms",
    "sm_facts",
    "compile_target",
    "device_family",
    "reset_caches",
    "FWD_REGS_PER_THREAD",
    "MIN_SPLIT_KEYS",
    "MIN_SPLIT_KEYS_DECODE",
]

# The registers a thread of a forward tile is assumed to hold when counting resident CTAs: the table's
# rows are spill-free at up to 255 (the sm_120a builds hold 168-255, docs/sm120-resources.md)
FWD_REGS_PER_THREAD = 255
# keys per split-KV split, at least: decode-size calls (the small-m row) and the others
MIN_SPLIT_KEYS_DECODE = 128
MIN_SPLIT_KEYS = 512
# FwdKey.page_align's cap: the largest key tile (page sizes 128, 256, ... all hold whole tiles of any row)
MAX_PAGE_ALIGN = 128

_new = tuple.__new__  # NamedTuple(*fields) without its Python-level __new__: half the cost per call
_sm_count: dict[int, int] = {}  # device index -> SM count
_sm_facts: dict[int, SmFacts] = {}  # device index -> per-SM limits
# (device, dtype, head dims, row flags) -> (tile_m, tile_n, slots)
_split_wave: dict[tuple, tuple[int, int, int]] = {}


# ---------------------------------------------------------------------------------- keys
class FwdKey(NamedTuple):
    """One compiled forward: what its code depends on, and the device it runs on (``None``: no GPU
    here, a compile for another machine's GPU)."""

    dtype: torch.dtype
    head_dim: int
    head_dim_v: int
    causal: bool
    local: bool
    pack_gqa: bool
    qhead_per_kvhead: int  # query heads folded into one KV head's tile (1 without pack-GQA)
    varlen_q: bool = False
    varlen_k: bool = False
    seqused_q: bool = False
    seqused_k: bool = False
    paged_kv: bool = False
    kv_batch_idx: bool = False
    split_kv: bool = False
    softcap: bool = False
    sink: bool = False  # the kernel adds the sink (unsplit calls; split ones add it in the combine)
    small_m: bool = False  # the family's 64-row row (decode, few-tile calls)
    device: torch.device | None = None
    kv8: bool = False  # an FP8 (float8_e4m3fn) K/V cache
    decode: bool = False  # the family's decode row (FP8 cache, at most 16 query rows per tile), if any
    # FP8 cache in pages: the largest power of two dividing the page size, at most 128 (0 otherwise);
    # a row whose tile_n divides it reads whole tiles from one page (FwdConfig.pages_hold_tiles)
    page_align: int = 0


class FwdPlan(NamedTuple):
    """What a validated forward call runs: its kernel's key and the key splits (1: unsplit)."""

    key: FwdKey
    splits: int


class BwdKey(NamedTuple):
    """One compiled backward (main kernel, preprocess, postprocess): what their code depends on."""

    dtype: torch.dtype
    head_dim: int
    head_dim_v: int
    causal: bool
    deterministic: bool
    has_dlse: bool  # the returned LSE received a gradient (the preprocess subtracts it)
    local: bool = False
    softcap: bool = False
    varlen_q: bool = False
    varlen_k: bool = False
    seqused_q: bool = False
    seqused_k: bool = False
    dsink: bool = False  # the main kernel sums rowsum(P * dP) for the sink's gradient


# ---------------------------------------------------------------------------------- the forward
def forward_plan(args: FwdArgs) -> FwdPlan:
    """The key and split count of a validated forward call (may read the device's facts)."""
    (q, _, _, cu_q, cu_k, used_q, used_k, page_table, kv_batch, sink, _, causal, is_local, _, _, softcap,
     splits, pack_gqa, batch, nheads, nheads_kv, head_dim, head_dim_v, max_q, max_k, _, _) = args  # fmt: skip
    ratio = nheads // nheads_kv
    pack = ratio > 1 if pack_gqa is None else pack_gqa
    varlen_q = cu_q is not None
    # decode and few-tile calls: the 64-row tiles. Few-tile only for batch-dense q: a varlen call's
    # tile must not depend on whether max_seqlen_q was given (the answer is bitwise the same without)
    small_m = takes_small_m(max_q, nheads, nheads_kv, pack, batch, 0 if varlen_q else num_sms(q.device))
    kv_dtype = KV8_DTYPES.get(args.k.dtype)
    decode = tiles.wants_decode(max_q * (ratio if pack else 1), kv_dtype)
    if splits == 0:
        splits = heuristic_splits(
            q.device, batch, nheads, nheads_kv, max_q, max_k, pack, ratio, DTYPES[q.dtype], head_dim,
            head_dim_v, small_m, kv_dtype, decode,
        )  # fmt: skip
    splits = max(1, min(splits, MAX_SPLITS))
    page = args.k.shape[1] if page_table is not None and kv_dtype is not None else 0
    key = _new(FwdKey, (
        q.dtype, head_dim, head_dim_v, causal, is_local, pack, ratio if pack else 1, varlen_q,
        cu_k is not None, used_q is not None, used_k is not None, page_table is not None,
        kv_batch is not None, splits > 1, softcap > 0, sink is not None and splits == 1, small_m, q.device,
        kv_dtype is not None, decode, min(page & -page, MAX_PAGE_ALIGN),
    ))  # fmt: skip
    return _new(FwdPlan, (key, splits))


def dense_key(
    dtype: torch.dtype,
    head_dim: int,
    head_dim_v: int,
    causal: bool,
    nheads: int,
    nheads_kv: int,
    *,
    small_m: bool,
    device: torch.device | None = None,
) -> FwdKey:
    """The key of a batch-dense call without window, split-KV, softcap or sink, with the API's
    default pack-GQA (on when ``nheads > nheads_kv``); ``small_m``: which of the two rows."""
    ratio = nheads // nheads_kv
    pack = ratio > 1
    return FwdKey(dtype, head_dim, head_dim_v, causal, False, pack, ratio if pack else 1, small_m=small_m,
                  device=device)  # fmt: skip


def takes_small_m(seqlen_q: int, nheads: int, nheads_kv: int, pack: bool, batch: int, sms: int) -> bool:
    """Whether a call takes the small-m row (:func:`fa4_sm120.tiles.wants_small_m` on its rows per
    tile and tile heads, pack-GQA counted); ``sms`` 0 for varlen q (see :func:`forward_plan`)."""
    ratio = nheads // nheads_kv
    return tiles.wants_small_m(seqlen_q * (ratio if pack else 1), nheads_kv if pack else nheads, batch, sms)


def fwd_config(key: FwdKey, family: str) -> FwdConfig:
    """The compile-time config of ``key`` on a GPU of the dispatch ``family`` (its tile table's row)."""
    cfg = tiles.fwd_config(
        family, DTYPES[key.dtype], key.head_dim, key.head_dim_v, causal=key.causal, local=key.local,
        pack_gqa=key.pack_gqa, qhead_per_kvhead=key.qhead_per_kvhead, split_kv=key.split_kv,
        softcap=key.softcap, small_m=key.small_m, kv_dtype="float8_e4m3fn" if key.kv8 else None,
        decode=key.decode,
    )  # fmt: skip
    return dataclasses.replace(
        cfg,
        varlen_q=key.varlen_q,
        varlen_k=key.varlen_k,
        has_seqused_q=key.seqused_q,
        has_seqused_k=key.seqused_k,
        paged_kv=key.paged_kv,
        pages_hold_tiles=key.paged_kv and key.page_align > 0 and key.page_align % cfg.tile_n == 0,
        kv_batch_idx=key.kv_batch_idx,
        split_kv=key.split_kv,
        has_softcap=key.softcap,
        has_sink=key.sink,
    )


def bwd_configs(key: BwdKey, family: str, target: str) -> tuple[BwdConfig, PrePostConfig, PrePostConfig]:
    """``(main, preprocess, postprocess)`` configs of ``key`` on a GPU of ``family`` compiled for
    ``target`` (``sm_XY``: what its PTX has decides the vector dQ reductions)."""
    dt = DTYPES[key.dtype]
    cfg = bwd_tiles.bwd_config(
        family, dt, key.head_dim, key.head_dim_v, causal=key.causal, deterministic=key.deterministic,
        local=key.local, softcap=key.softcap, varlen_q=key.varlen_q, varlen_k=key.varlen_k,
        seqused_q=key.seqused_q, seqused_k=key.seqused_k, dsink=key.dsink, target=target,
    )  # fmt: skip
    return cfg, PrePostConfig(dt, key.head_dim_v, key.has_dlse), PrePostConfig(dt, key.head_dim)


# ---------------------------------------------------------------------------------- split-KV
def split_wave(
    device,
    dtype: str,
    head_dim: int,
    head_dim_v: int,
    small_m: bool,
    kv_dtype: str | None = None,
    decode: bool = False,
) -> tuple[int, int, int]:
    """(tile_m, tile_n, resident CTA slots on the device) of the split-KV forward row (memoised)."""
    key = (device, dtype, head_dim, head_dim_v, small_m, kv_dtype, decode)
    hit = _split_wave.get(key)
    if hit is None:
        cfg = tiles.fwd_config(
            device_family(device), dtype, head_dim, head_dim_v, causal=False, split_kv=True, small_m=small_m,
            kv_dtype=kv_dtype, decode=decode,
        )  # fmt: skip
        per_sm = ctas_per_sm(cfg.smem_bytes, FWD_REGS_PER_THREAD, cfg.num_threads, sm_facts(device))
        hit = _split_wave[key] = (cfg.tile_m, cfg.tile_n, max(1, per_sm) * num_sms(device))
    return hit


def heuristic_splits(
    device, batch, nheads, nheads_kv, seqlen_q, seqlen_k, pack, ratio, dtype, head_dim, head_dim_v,
    small_m=False, kv_dtype=None, decode=False,
):  # fmt: skip
    """Split the keys when the (m-block, head, batch) tiles fill less than half of one wave of
    resident CTAs: as many splits as fill that one wave whole, with at least 128 keys per split for
    a decode-size call (``small_m``: the small-m row) and 512 for any other, and then as few as give
    each split the same number of key blocks (no split left empty).

    Whole waves, not a CTA count per SM: a partial second wave costs as long as a full one. H200,
    decode 32/8 heads d128 at 32k keys (2 resident CTAs of the 64-row tile per SM, 264 slots): batch
    8's 64 tiles ran at 3,042 GB/s with 9 splits (576 CTAs, 2.2 waves) and 3,804 with 4 (256); batch 16
    at 2,691 unsplit and 3,960 with 2; batch 2 at 2,436 with 33 and 3,037 with 16 (2026-12-02,
    tools/decode_splits.py). Shorter splits lose to the combine: batch 1 x 16k keys ran at 1,687 GB/s
    with 32 splits, 1,454 with 16 and 1,324 with 64; 512 x 512 prefill at 74 TFLOP/s unsplit, 54 with
    2 splits (same run). Short caches, timed as CUDA-graph replays (2026-12-04, 32/8 heads d128, GB/s by
    split count): batch 1 x 512 keys 117 unsplit, 161 with 4, 165 with 8; x 1,024 201 with 2, 298 with
    8; x 2,048 384 with 4, 500 with 16; x 4,096 697 with 8, 737 with 32, 812 with 16; batch 8 x 1,024
    1,271 with 2, 1,485 with 4 (one wave)."""
    tile_m, tile_n, slots = split_wave(device, dtype, head_dim, head_dim_v, small_m, kv_dtype, decode)
    heads = nheads_kv if pack else nheads
    tiles = -(-seqlen_q * (ratio if pack else 1) // tile_m) * heads * batch
    min_keys = MIN_SPLIT_KEYS_DECODE if small_m else MIN_SPLIT_KEYS
    if 2 * tiles > slots or seqlen_k < 2 * min_keys:
        return 1
    splits = max(1, min(slots // tiles, seqlen_k // min_keys, MAX_SPLITS))
    # each split takes ceil(blocks / splits) key blocks (the last one what is left): the fewest splits
    # of that share leave none empty and none longer
    blocks = -(-seqlen_k // tile_n)
    return -(-blocks // -(-blocks // splits))


# ---------------------------------------------------------------------------------- device facts
def _index(device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def num_sms(device) -> int:
    """The device's SM count (memoised per device index: a cached call does no property lookup)."""
    idx = _index(device)
    sms = _sm_count.get(idx)
    if sms is None:
        sms = _sm_count[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return sms


def sm_facts(device) -> SmFacts:
    """The device's per-SM limits (memoised per device index), read from the CUDA properties, SM120's
    where a property is missing."""
    idx = _index(device)
    facts = _sm_facts.get(idx)
    if facts is None:
        p = torch.cuda.get_device_properties(idx)
        smem = getattr(p, "shared_memory_per_multiprocessor", 0) or SM120.smem_per_sm
        threads = getattr(p, "max_threads_per_multi_processor", 0) or SM120.max_warps * 32
        facts = _sm_facts[idx] = SmFacts(
            smem,
            getattr(p, "shared_memory_per_block_optin", 0) or smem - SM120.reserved_per_cta,
            SM120.reserved_per_cta,
            getattr(p, "regs_per_multiprocessor", 0) or SM120.regs_per_sm,
            threads // 32,
            SM120.max_ctas,
        )
    return facts


def compile_target(device) -> str:
    """``sm_XY``: the compute capability of the GPU that runs (and compiles) the kernel."""
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def reset_caches() -> None:
    """Forget the memoised device facts and split waves (tests, tile-table sweeps)."""
    _sm_count.clear()
    _sm_facts.clear()
    _split_wave.clear()
