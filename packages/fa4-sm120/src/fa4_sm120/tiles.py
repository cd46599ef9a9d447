"""Tile tables of the forward kernel: one row per (arch family, head dims, dtypes, causal).

Shared memory per row is ``2 B * (tile_m * max(d, dv) + stages * tile_n * (d + dv))``
(:func:`fa4_sm120.smem.fwd_smem_bytes`); every SM120 / SM86 row fits 101,376 B and every SM80 row
166,912 B (a test proves it). The H100/H200 use the SM120 rows (compat mode, docs/architecture.md). Rows are
exact on ``(head_dim, head_dim_v)``; a pair without a row takes the row of ``(m, m)``,
``m = max(head_dim, head_dim_v)``, which needs at least as much shared memory and so still fits.
Registers per thread (fp32 accumulators): ``acc_O = tile_m * dv / threads``, ``acc_S = tile_m *
tile_n / threads``.

Why each row is what it is (the measurements, the alternatives, the ``sm_120a`` registers and
spills of every row): ``docs/sm120-resources.md``. ``plain_only`` rows serve only calls without a
window, split-KV or softcap, whose builds of that tile would spill.
"""

from __future__ import annotations

from dataclasses import dataclass

from fa4_core.arch import parse_arch, smem_capacity
from fa4_core.errors import UnsupportedArchError, unsupported
from fa4_sm120.configs import FP8_V_INPUT, KV8_DTYPES, FwdCodegen, FwdConfig, Q8FwdConfig, QuantizeConfig
from fa4_sm120.smem import fwd_smem_bytes, kv8_staging_bytes

__all__ = [
    "FwdTile",
    "FWD_TABLE",
    "FAMILIES",
    "select_fwd_tile",
    "fwd_config",
    "family_cap_arch",
    "selecting_args",
    "SMALL_M_ROWS",
    "wants_small_m",
    "wants_decode",
    "DECODE_ROWS",
    "Q8Tile",
    "Q8_FWD_TILES",
    "q8_fwd_config",
    "q8_quantize_configs",
]

ANY_DTYPE = ("float16", "bfloat16")
ANY_CAUSAL = (False, True)


@dataclass(frozen=True)
class FwdTile:
    family: str
    head_dim: int
    head_dim_v: int
    tile_m: int
    tile_n: int
    num_threads: int
    num_stages: int = 1
    q_in_regs: bool = False
    dtypes: tuple[str, ...] = ANY_DTYPE
    causal: tuple[bool, ...] = ANY_CAUSAL
    # only for calls of exactly these head dims without a local window, split-KV or softcap (the
    # variants whose sm_120a build of this tile would spill take the next row)
    plain_only: bool = False
    # only for calls whose query rows per tile (seqlen_q, times the heads per KV head under pack-GQA)
    # are at most SMALL_M_ROWS: decode and short chunks, where a 128-row tile is mostly empty rows
    small_m: bool = False
    # only for FP8-cache calls of at most DECODE_ROWS query rows per tile: 16 rows whose warps split
    # each key block (FwdConfig.warp_split_n), so each warp reads only its share of K and V from
    # shared memory
    decode: bool = False
    # a launch bound (FwdCodegen.min_ctas_per_sm) where shared memory already limits the row to
    # this many CTAs per SM120 SM: ptxas may then use the registers they leave (0: no bound)
    min_ctas_per_sm: int = 0


# A call with at most this many query rows per (batch, head) tile (packed GQA heads counted) takes
# a family's ``small_m`` row of its head dims: decode's FLOPs per K/V byte equal the tile's rows, so
# a 128-row tile makes a bandwidth-bound decode compute-bound (H200, 8 x 32k, 32/8 heads, d128:
# 2.1 TB/s at 272 TFLOP/s of mostly empty rows, 2026-12-02) where 64 rows halve the work.
SMALL_M_ROWS = 64

# An FP8-cache call with at most this many query rows per tile (decode of one token with up to 16 query
# heads per KV head, or a few speculative tokens) takes a ``decode`` row where its head dims have one:
# a 64-row tile's four warps would each read (and widen) the whole K and V tile in shared memory for
# rows that are mostly empty (wants_decode, docs/sm120-resources.md).
DECODE_ROWS = 16

# an FP8 K/V cache's key tiles are at most this long (fwd_config) ...
KV8_MAX_TILE_N = 64
# ... and at most this long on rows whose warps hold 32 or more query rows each, or of head dims of
# at least KV8_WIDE_HEAD_DIM
KV8_WIDE_WARP_TILE_N = 32
KV8_WIDE_HEAD_DIM = 192


def wants_decode(rows: int, kv_dtype: str | None) -> bool:
    """Whether a forward call with ``rows`` query rows per tile (pack-GQA heads counted) over K/V of
    ``kv_dtype`` (None: q's dtype) takes a ``decode`` row (where its head dims have one): an FP8 K/V
    cache with at most :data:`DECODE_ROWS` rows. A 16-bit cache keeps the 64-row rows: with twice
    the bytes per key its decode is bound by memory there, and the decode rows measured 0-11% slower
    (docs/sm120-resources.md)."""
    return kv_dtype is not None and rows <= DECODE_ROWS


def wants_small_m(rows: int, heads: int, batch: int, num_sms: int = 0) -> bool:
    """Whether a forward call with ``rows`` query rows per (batch, head) tile (seqlen_q, times the
    heads per KV head under pack-GQA) over ``heads`` tile heads takes a ``small_m`` row: decode-sized
    rows (at most :data:`SMALL_M_ROWS`), or, with ``num_sms`` known, fewer 128-row tiles than SMs
    (twice the CTAs of half the rows then keep every SM busy)."""
    if rows <= SMALL_M_ROWS:
        return True
    return num_sms > 0 and -(-rows // 128) * heads * batch < num_sms


# fmt: off
FWD_TABLE: tuple[FwdTile, ...] = (
    # ---- SM120/SM121 (and H100/H200 in compat mode): 101,376 B per CTA
    # decode over an FP8 cache (at most 16 query rows): 16 rows, the 4 warps splitting each key block
    FwdTile("sm120",  64,  64,  16, 128, 128, small_m=True, decode=True),  # 2*(16*64  + 128*(64+64))   = 34,816 B
    # (two CTAs per SM: without the bound ptxas keeps the d128 row at 168 registers, three CTAs'
    # worth, and its fp16 paged builds spill 4-8 B with the early FP8 loads)
    FwdTile("sm120", 128, 128,  16,  64, 128, small_m=True, decode=True, min_ctas_per_sm=2),  # 2*(16*128 +  64*(128+128)) = 36,864 B
    # decode / short chunks (small_m): 64 rows over 4 warps of 16, picked first when they apply
    FwdTile("sm120",  32,  32,  64, 128, 128, small_m=True),  # 2*(64*32  + 128*(32+32))  = 20,480 B
    FwdTile("sm120",  64,  64,  64, 128, 128, small_m=True),  # 2*(64*64  + 128*(64+64))  = 40,960 B
    FwdTile("sm120",  96,  96,  64,  64, 128, small_m=True),  # 2*(64*96  +  64*(96+96))  = 36,864 B
    FwdTile("sm120", 128, 128,  64,  64, 128, small_m=True),  # 2*(64*128 +  64*(128+128)) = 49,152 B
    FwdTile("sm120", 160, 160,  64,  64, 128, small_m=True),  # 2*(64*160 +  64*(160+160)) = 61,440 B
    FwdTile("sm120", 192, 128,  64,  64, 128, small_m=True),  # 2*(64*192 +  64*(192+128)) = 65,536 B
    FwdTile("sm120", 192, 192,  64,  64, 128, small_m=True),  # 2*(64*192 +  64*(192+192)) = 73,728 B
    FwdTile("sm120",  32,  32, 128, 128, 256),  # 2*(128*32  + 128*(32+32))   = 24,576 B
    FwdTile("sm120",  64,  64, 128,  64, 128),  # 2*(128*64  +  64*(64+64))   = 32,768 B
    # causal d96 and d128 on the 64-row tiles, two CTAs per SM
    FwdTile("sm120",  96,  96,  64,  64, 128, causal=(True,)),  # 36,864 B
    FwdTile("sm120",  96,  96, 128,  64, 128, causal=(False,), plain_only=True),  # 49,152 B
    FwdTile("sm120",  96,  96, 128,  64, 256),  # 2*(128*96  +  64*(96+96))   = 49,152 B
    FwdTile("sm120", 128, 128, 128,  32, 128, causal=(False,), plain_only=True),  # 49,152 B
    FwdTile("sm120", 128, 128,  64,  64, 128, causal=(True,)),  # 49,152 B
    FwdTile("sm120", 128, 128, 128,  64, 256),  # 2*(128*128 +  64*(128+128)) = 65,536 B
    FwdTile("sm120", 160, 160, 128,  64, 256),  # 2*(128*160 +  64*(160+160)) = 81,920 B
    FwdTile("sm120", 192, 128, 128,  64, 256),  # 2*(128*192 +  64*(192+128)) = 90,112 B
    FwdTile("sm120", 192, 192, 128,  64, 256),  # 2*(128*192 +  64*(192+192)) = 98,304 B
    FwdTile("sm120", 224, 224,  64,  64, 128),  # 2*(64*224  +  64*(224+224)) = 86,016 B
    FwdTile("sm120", 256, 256,  64,  64, 128),  # 2*(64*256  +  64*(256+256)) = 98,304 B
    # ---- SM86/SM89 (RTX 30/40): 101,376 B per CTA, same arithmetic as SM120
    FwdTile("sm86",   32,  32, 128, 128, 256),  # 24,576 B
    FwdTile("sm86",   64,  64, 128,  64, 128),  # 32,768 B
    FwdTile("sm86",   96,  96, 128,  64, 256),  # 49,152 B
    FwdTile("sm86",  128, 128, 128,  64, 256),  # 65,536 B
    FwdTile("sm86",  160, 160, 128,  64, 256),  # 81,920 B
    FwdTile("sm86",  192, 128, 128,  64, 256),  # 90,112 B
    FwdTile("sm86",  192, 192, 128,  64, 256),  # 98,304 B
    FwdTile("sm86",  224, 224,  64,  64, 128),  # 86,016 B
    FwdTile("sm86",  256, 256,  64,  64, 128),  # 98,304 B
    # ---- SM80 (A100): 166,912 B per CTA, larger key tiles
    FwdTile("sm80",   32,  32, 128, 128, 256),  # 24,576 B
    FwdTile("sm80",   64,  64, 128, 128, 256),  # 49,152 B
    FwdTile("sm80",   96,  96, 128, 128, 256),  # 2*(128*96  + 128*(96+96))   = 73,728 B
    FwdTile("sm80",  128, 128, 128, 128, 256),  # 2*(128*128 + 128*(128+128)) = 98,304 B
    FwdTile("sm80",  160, 160, 128,  64, 256),  # 81,920 B
    FwdTile("sm80",  192, 128, 128,  64, 256),  # 90,112 B
    FwdTile("sm80",  192, 192, 128,  64, 256),  # 98,304 B
    FwdTile("sm80",  224, 224, 128,  64, 256),  # 2*(128*224 +  64*(224+224)) = 114,688 B
    FwdTile("sm80",  256, 256, 128,  64, 256),  # 2*(128*256 +  64*(256+256)) = 131,072 B
)
# fmt: on

FAMILIES = ("sm120", "sm86", "sm80")

# the arch whose shared-memory cap bounds a family's rows
_CAP_ARCH = {"sm120": "sm_120a", "sm86": "sm_86", "sm80": "sm_80"}


def family_cap_arch(family: str) -> str:
    if family not in _CAP_ARCH:
        raise UnsupportedArchError(f"family={family!r} has no tile table; supported: {FAMILIES}")
    return _CAP_ARCH[family]


def select_fwd_tile(
    family: str,
    dtype: str,
    head_dim: int,
    head_dim_v: int,
    causal: bool,
    *,
    local: bool = False,
    split_kv: bool = False,
    softcap: bool = False,
    small_m: bool = False,
    kv_dtype: str | None = None,
    decode: bool = False,
) -> FwdTile:
    """The first row of ``family`` for these head dims (else those of ``max(d, dv)``), dtype and
    causal; a ``plain_only`` row only for its exact head dims and none of a local window, split-KV
    and softcap (the builds measured spill-free); a ``small_m`` row only for ``small_m`` calls (at
    most :data:`SMALL_M_ROWS` query rows per tile), a ``decode`` row only for ``decode`` calls over an
    FP8 cache (at most :data:`DECODE_ROWS`; ``decode`` implies ``small_m``). An FP8 K/V cache
    (``kv_dtype``) takes the first such row that still fits the family's cap with its 8-bit staging
    tiles (:func:`fa4_sm120.smem.kv8_staging_bytes`), else the first ``small_m`` row that does."""
    cap_arch = family_cap_arch(family)
    cap = smem_capacity(parse_arch(cap_arch)) if kv_dtype is not None else 0  # (FP8 only: may load the DSL)
    passes = [
        (exact, dims, small_m)
        for exact, dims in ((True, (head_dim, head_dim_v)), (False, (max(head_dim, head_dim_v),) * 2))
    ]
    if (
        kv_dtype is not None
    ):  # the 64-row tiles (smaller) serve FP8 calls of any length that no other row fits
        passes += [(exact, dims, True) for exact, dims, _ in passes]
    for exact, dims, small_m in passes:
        for row in FWD_TABLE:
            if (
                row.family == family
                and (row.head_dim, row.head_dim_v) == dims
                and dtype in row.dtypes
                and causal in row.causal
                and not (row.plain_only and (local or split_kv or softcap or not exact))
                and (small_m or decode or not row.small_m)
                and ((decode and kv_dtype is not None) or not row.decode)
                and (kv_dtype is None or _kv8_fits(row, head_dim, head_dim_v, cap))
            ):
                return row
    if kv_dtype is not None:
        raise unsupported(
            "(head_dim, head_dim_v)",
            (head_dim, head_dim_v),
            f"with a {kv_dtype} K/V cache, head dims whose {family} row fits {cap} B of shared memory "
            "with the 8-bit staging tiles (up to 192)",
        )
    raise unsupported(
        "(head_dim, head_dim_v)",
        (head_dim, head_dim_v),
        f"multiples of 32 up to 256 ({family} table: "
        + ", ".join(f"{r.head_dim}/{r.head_dim_v}" for r in FWD_TABLE if r.family == family)
        + ")",
    )


def _kv8_fits(row: FwdTile, head_dim: int, head_dim_v: int, cap: int) -> bool:
    smem = fwd_smem_bytes(row.tile_m, row.tile_n, head_dim, head_dim_v, row.num_stages)
    return smem + kv8_staging_bytes(row.tile_n, head_dim, head_dim_v) <= cap


def fwd_config(
    family: str,
    dtype: str,
    head_dim: int,
    head_dim_v: int,
    *,
    causal: bool,
    local: bool = False,
    pack_gqa: bool = False,
    qhead_per_kvhead: int = 1,
    split_kv: bool = False,
    softcap: bool = False,
    small_m: bool = False,
    kv_dtype: str | None = None,
    decode: bool = False,
) -> FwdConfig:
    """The full compile-time config for one call shape, from the family's table row (``local``,
    ``split_kv`` and ``softcap`` can change the row; the other feature flags, varlen, paged K/V,
    sinks, change the generated code, not the tile; an FP8 K/V cache, ``kv_dtype``, can)."""
    row = select_fwd_tile(
        family, dtype, head_dim, head_dim_v, causal, local=local, split_kv=split_kv, softcap=softcap,
        small_m=small_m, kv_dtype=kv_dtype, decode=decode,
    )  # fmt: skip
    tile_n = row.tile_n
    if kv_dtype is not None:
        # FP8 K/V: key tiles of at most KV8_MAX_TILE_N (the widening's registers: the d64 small-m
        # row's 128-key tile spills 4-40 B on sm_120a with pack-GQA, varlen or softcap; 64 does not),
        # and of KV8_WIDE_WARP_TILE_N on rows of 32+ query rows per warp (the d64 128x64x128 row's
        # 64-key FP8 builds spill 4-96 B on sm_120a with a causal mask, a window or the softcap) or of
        # KV8_WIDE_HEAD_DIM+ (the d192 64x64x128 row's spill 4-52 B under pack-GQA; with 32 keys the
        # tile, K and V widened into one buffer, fits twice per SM120 SM, spill-free)
        tile_n = min(tile_n, KV8_MAX_TILE_N)
        if row.tile_m // (row.num_threads // 32) >= 32 or head_dim >= KV8_WIDE_HEAD_DIM:
            tile_n = min(tile_n, KV8_WIDE_WARP_TILE_N)
    return FwdConfig(
        dtype=dtype,
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        tile_m=row.tile_m,
        tile_n=tile_n,
        num_threads=row.num_threads,
        num_stages=row.num_stages,
        q_in_regs=row.q_in_regs,
        is_causal=causal,
        is_local=local,
        pack_gqa=pack_gqa,
        qhead_per_kvhead=qhead_per_kvhead if pack_gqa else 1,
        split_kv=split_kv,
        has_softcap=softcap,
        arch=family_cap_arch(family),
        kv_dtype=kv_dtype,
        warp_split_n=row.decode,
        codegen=FwdCodegen(min_ctas_per_sm=row.min_ctas_per_sm),
    )


def selecting_args(row: FwdTile, causal: bool) -> dict:
    """Keyword arguments of :func:`fwd_config` (besides ``causal``) under which the table picks
    ``row``: a ``small_m`` row for small-m calls, a row after a ``plain_only`` row of its dims for
    split-KV (and local) calls."""
    if row.decode:
        return {"small_m": True, "decode": True, "kv_dtype": KV8_DTYPES[0]}
    if row.small_m:
        return {"small_m": True}
    first = select_fwd_tile(row.family, row.dtypes[0], row.head_dim, row.head_dim_v, causal)
    return {} if first == row else {"split_kv": True}


# ---------------------------------------------------------------------------------- the 8-bit forward
@dataclass(frozen=True)
class Q8Tile:
    """A row of :data:`Q8_FWD_TILES`: the 8-bit forward's tile and its opt-in code-generation fields
    (:class:`~fa4_sm120.configs.Q8FwdConfig`)."""

    tile_m: int
    tile_n: int
    num_threads: int
    q_in_regs: bool = False
    num_stages: int = 1
    q8_b_split: int = 1  # Q8FwdConfig.q8_b_split


# head_dim -> the row of fa4_sm120.fwd_q8 (every arch family: the kernel is register-bound; its sm_120a
# builds are spill-free, tests/sm120; docs/sm120-resources.md has why each row is what it is)
Q8_FWD_TILES = {
    64: Q8Tile(128, 32, 128, q_in_regs=True, num_stages=2),
    128: Q8Tile(64, 64, 128, q8_b_split=2),
    256: Q8Tile(64, 32, 128, num_stages=2),
}


def q8_fwd_config(
    dtype: str,
    head_dim: int,
    *,
    causal: bool,
    qk: str,
    pv_accum: str,
    seqused: bool = False,
    local: bool = False,
    softcap: bool = False,
    sink: bool = False,
    launch_smem: int = 0,
):
    """The :class:`~fa4_sm120.configs.Q8FwdConfig` of an 8-bit forward call (``seqused``: a padded
    batch with per-sequence lengths, the varlen form; ``local``: a window; ``softcap``, ``sink``:
    the call has them)."""
    if head_dim not in Q8_FWD_TILES:
        raise unsupported("head_dim", head_dim, f"one of {tuple(Q8_FWD_TILES)} for 8-bit attention")
    t = Q8_FWD_TILES[head_dim]
    stages = t.num_stages
    if head_dim == 128 and (seqused or local or softcap or sink):
        # the d128 row sits at 222-255 registers: its sm_120a builds with per-sequence lengths, a
        # window, the softcap or sinks are spill-free with K and Vᵀ double-buffered, and these are the
        # builds the GPU tests run (docs/sm120-resources.md)
        stages = 2
    return Q8FwdConfig(
        dtype=dtype, head_dim=head_dim, head_dim_v=head_dim, tile_m=t.tile_m, tile_n=t.tile_n,
        num_threads=t.num_threads, q_in_regs=t.q_in_regs, num_stages=stages, is_causal=causal, qk=qk,
        pv_accum=pv_accum, has_seqused_q=seqused, has_seqused_k=seqused, is_local=local, has_softcap=softcap,
        has_sink=sink, launch_smem=launch_smem, q8_b_split=t.q8_b_split,
    )  # fmt: skip


# keys per CTA of V's quantizer (whole 32-key groups, dividing the forward's key padding of 128: one
# 16-key unit per thread at head dim 128, half the threads at 64)
_Q8_V_QUANT_BLOCK = 128

# K's mean and V's channel scales in one pass (role "stats"): 64 KiB of each of K and V per CTA (256
# keys at head dim 128, 512 at 64), each thread loading 4 rows' 16-byte K and V vectors before adding them
# in; the partial sums and maxima of a (batch, KV head) are combined by its last CTA
_Q8_STATS_ELEMS = 256 * 128  # per CTA and tensor
_Q8_STATS_UNROLL = 4


def q8_quantize_configs(
    dtype: str, head_dim: int, *, qk: str, smooth: bool = True, seqused: bool = False
) -> dict[str, QuantizeConfig]:
    """The quantizers (:mod:`fa4_sm120.quantize`) of an 8-bit forward call, by role: Q's and K's scale
    blocks are the forward's tiles; ``smooth`` (a call with keys) subtracts K's mean and has Q write
    the LSE shift; ``seqused``: padded batches with per-sequence lengths (the varlen form); ``"stats"``:
    K's mean and V's channel scales, which the others read."""
    if head_dim not in Q8_FWD_TILES:
        raise unsupported("head_dim", head_dim, f"one of {tuple(Q8_FWD_TILES)} for 8-bit attention")
    tile_m, tile_n = Q8_FWD_TILES[head_dim].tile_m, Q8_FWD_TILES[head_dim].tile_n
    return {
        "q": QuantizeConfig(dtype, head_dim, tile_m, "q", qk, smooth, seqused),
        "k": QuantizeConfig(dtype, head_dim, tile_n, "k", qk, True, seqused),
        "v": QuantizeConfig(dtype, head_dim, _Q8_V_QUANT_BLOCK, "v", "fp8", False, seqused),
        "stats": QuantizeConfig(
            dtype, head_dim, _Q8_STATS_ELEMS // head_dim, "stats", seqused=seqused, unroll=_Q8_STATS_UNROLL
        ),
    }


def q8_fp8_v_config(head_dim: int, *, seqused: bool = False) -> QuantizeConfig:
    """V's quantizer on e4m3 values (FlashAttention-3's FP8 inputs): the kernel's transposed,
    key-permuted, zero-padded layout of V as given (its caller passes channel scales of 1)."""
    if head_dim not in Q8_FWD_TILES:
        raise unsupported("head_dim", head_dim, f"one of {tuple(Q8_FWD_TILES)} for 8-bit attention")
    return QuantizeConfig(FP8_V_INPUT, head_dim, _Q8_V_QUANT_BLOCK, "v", "fp8", False, seqused)
