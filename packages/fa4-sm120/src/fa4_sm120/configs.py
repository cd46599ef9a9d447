"""The compile-time configs of the kernel classes, as plain frozen dataclasses (no DSL import).

A config is everything that changes a kernel's generated code: the tile tables build them, the compile
caches of fa4-torch key on them (in memory and on disk), and the kernel classes
(:mod:`fa4_sm120.fwd`, :mod:`fa4_sm120.bwd`, :mod:`fa4_sm120.bwd_pre_post`, :mod:`fa4_sm120.combine`,
:mod:`fa4_sm120.quantize`)
check and compile them. Keeping them free of the DSL lets a process that loads its kernels from the
disk cache choose and name them without importing the DSL (about 0.3-2.5 s).
"""

from __future__ import annotations

from dataclasses import dataclass

from fa4_core.errors import unsupported
from fa4_sm120.limits import DTYPE_NAMES, HEAD_DIMS, Q8_HEAD_DIMS, Q8_QK_FORMATS
from fa4_sm120.occupancy import ctas_per_sm
from fa4_sm120.smem import bwd_smem_bytes, fwd_smem_bytes, kv8_staging_bytes, q8_fwd_smem_bytes

__all__ = [
    "FwdCodegen",
    "codegen_fields",
    "FwdConfig",
    "KV8_DTYPES",
    "kv8_copy",
    "Q8FwdConfig",
    "fwd_codegen",
    "BwdConfig",
    "PrePostConfig",
    "CombineConfig",
    "QuantizeConfig",
]


@dataclass(frozen=True)
class FwdCodegen:
    """How the forward kernel generates code for a config, beyond its tile: each field ``None`` takes
    the rule of :func:`fwd_codegen`; a value forces the choice (tuners build such variants with
    ``dataclasses.replace``). Part of :class:`FwdConfig`, hence of every compile-cache key."""

    # O is rescaled only when some row max of the warp grew by more than 2**rescale_threshold
    # (log2 units; exact: the offsets cancel in O / row_sum); 0 rescales on every new max
    rescale_threshold: float | None = None
    # P·V in this many column blocks of O (1: one pass), so that fewer V fragments are live at once
    pv_split: int | None = None
    # Q·Kᵀ loads the operands of k-block k+1 while the MMAs of k-block k run
    qk_prefetch: bool | None = None
    # a key block waits for its V tile just before P·V (True) or before the softmax (False)
    late_v_wait: bool | None = None
    # paged K/V: look a block's pages up one stage ahead
    prefetch_pages: bool | None = None
    # paged K/V: a row's address as the KV head's base (once per CTA) plus page * page stride (one
    # 32 x 32 -> 64-bit multiply) plus the row in its page times the row stride in 32 bits instead of
    # three 64-bit products per row; exact while the cache's strides keep a page's and a head's offsets
    # below 2^31 elements (fa4_sm120.limits.PAGE_OFFSET32_LIMIT, checked for FP8 caches by fa4_torch)
    page_offsets32: bool | None = None
    # paged K/V with page_offsets32 whose pages hold whole key tiles (FwdConfig.pages_hold_tiles): a
    # key block's rows are consecutive rows of one page, so its page is looked up once per block and
    # its rows addressed as in a contiguous cache
    page_tiles: bool | None = None
    # FP8 K/V: a thread starts its copy of the next block's K (V) as soon as it has widened this
    # block's, into the 8-bit staging tile it has just read, so two blocks' loads are in flight
    kv8_early_loads: bool | None = None
    # FP8 K/V under bf16 queries: the MMAs in fp16 (K and V widened to fp16 in one conversion per two
    # elements instead of an fp32 round trip to bf16; P in fp16), the Q tile converted to fp16 once
    # per CTA, scaled by a power of two that keeps its largest magnitude below 2^15 (the score scale
    # takes the inverse; exact)
    kv8_f16_mma: bool | None = None
    # FP8 K/V with equal head dims: K and V widened into one 16-bit buffer in turn (V once every warp
    # is done with K's scores, K once every warp is done with the previous V; two more barriers per
    # key block), so that the tile needs no more shared memory than over a 16-bit cache
    kv8_one_buffer: bool | None = None
    # the ldmatrix addresses re-derived per key block from opaque shared-memory bases
    # (fa4_core.layout.rebase_opaque): constant offsets become immediates
    opaque_smem: bool = False
    # the online softmax's row max and row sum as pairwise trees instead of linear chains
    tree_reduce: bool = False
    # a launch bound: ptxas keeps each thread's registers within what this many CTAs per SM leave
    # (65,536 / (min_ctas_per_sm * num_threads)); 0: no bound (up to 255)
    min_ctas_per_sm: int = 0


def codegen_fields(items) -> dict:
    """``["NAME=VALUE", ...]`` (the tools' ``--codegen``) -> :class:`FwdCodegen` field values for
    ``dataclasses.replace``: a float, a bool written 0 or 1, or an int, as the field is typed."""
    types = {name: str(f.type) for name, f in FwdCodegen.__dataclass_fields__.items()}
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in types or not value:
            raise unsupported("codegen", item, "NAME=VALUE with NAME one of " + ", ".join(types))
        kind = types[name]
        out[name] = float(value) if "float" in kind else bool(int(value)) if "bool" in kind else int(value)
    return out


@dataclass(frozen=True)
class FwdConfig:
    """Everything that changes the generated code (and nothing that does not: the softmax scale,
    sequence lengths, batch and head counts are runtime values)."""

    dtype: str
    head_dim: int
    head_dim_v: int
    tile_m: int
    tile_n: int
    num_threads: int
    num_stages: int = 1
    q_in_regs: bool = False
    is_causal: bool = False
    is_local: bool = False
    pack_gqa: bool = False
    qhead_per_kvhead: int = 1  # compile-time only with pack_gqa (1 otherwise)
    arch: str = "sm_120a"
    varlen_q: bool = False
    varlen_k: bool = False
    has_seqused_q: bool = False
    has_seqused_k: bool = False
    paged_kv: bool = False
    # paged K/V whose page size is a multiple of ``tile_n``: every key block lies within one page
    # (fa4_torch sets it for FP8 caches, where FwdCodegen.page_tiles uses it)
    pages_hold_tiles: bool = False
    kv_batch_idx: bool = False
    split_kv: bool = False
    has_softcap: bool = False
    has_sink: bool = False
    # the K/V element type when it differs from ``dtype``: "float8_e4m3fn" (an FP8 KV cache: tiles
    # fetched in 8 bits, widened to ``dtype`` in shared memory, descales folded into the score scale
    # and the output); None: K/V are ``dtype``
    kv_dtype: str | None = None
    # the warps split each key block instead of stacking along M (``tile_m`` 16, one warp's rows):
    # each warp runs its own online softmax over ``tile_n / num_warps`` keys, and the warps' partial
    # O, row max and row sum merge through shared memory at the end. For decode, where the query
    # rows of a tile are few: each warp then reads a quarter of K and V from shared memory, not all
    warp_split_n: bool = False
    # benchmarking only: dynamic shared memory requested at launch (>= the kernel's own), so that a
    # GPU with more shared memory per SM (H100: 228 KB) keeps as few CTAs per SM as SM120 would
    launch_smem: int = 0
    codegen: FwdCodegen = FwdCodegen()

    @property
    def num_warps(self) -> int:
        return self.num_threads // 32

    @property
    def rows_per_warp(self) -> int:
        """Query rows of each warp's MMAs (all of the tile's with ``warp_split_n``)."""
        return self.tile_m if self.warp_split_n else self.tile_m // self.num_warps

    @property
    def kv8_one_buffer(self) -> bool:
        """K and V widened into one 16-bit buffer in turn (:attr:`FwdCodegen.kv8_one_buffer`, the rule
        of :func:`fwd_codegen`): an FP8 cache, equal head dims, one stage."""
        return fwd_codegen(self).kv8_one_buffer

    @property
    def smem_bytes(self) -> int:
        return _fwd_smem(self, self.kv8_one_buffer)


KV8_DTYPES = ("float8_e4m3fn",)  # the 8-bit K/V element types of FwdConfig.kv_dtype


def kv8_copy(head_dim: int, num_threads: int, tile_n: int) -> tuple[int, int]:
    """``(threads_per_row, elements_per_copy)`` of the ``cp.async`` of 8-bit K/V rows of ``head_dim``:
    16-byte copies (16 elements) over as many threads per row as divide ``head_dim / 16`` and keep
    the rows of one pass within ``tile_n``; else 8-byte copies laid out as the 16-bit tiles' (8
    elements, ``atom / 8`` threads per row), which always fit."""
    for tpr in range(head_dim // 16, 0, -1):
        if (head_dim // 16) % tpr == 0 and num_threads % tpr == 0 and tile_n % (num_threads // tpr) == 0:
            return tpr, 16
    return (64 if head_dim % 64 == 0 else 32) // 8, 8


@dataclass(frozen=True)
class Q8FwdConfig(FwdConfig):
    """The 8-bit forward (:mod:`fa4_sm120.fwd_q8`): a :class:`FwdConfig` (``dtype`` is the output's)
    plus the format of Q·Kᵀ (``"int8"``: s8 operands, int32 accumulation; ``"fp8"``: e4m3, fp32) and
    the accumulator of P·V (``"fp32"``, or ``"fp16"`` per key block, added into the fp32 O).

    Opt-in code-generation variants (the tile table's configs leave them at their defaults):

    * ``q_in_regs``: Q's A fragments are ``ldmatrix``-ed once per CTA, before the key loop (they are
      the A operand of every key block), instead of again in every block;
    * ``num_stages`` 2: K and Vᵀ double-buffered, each block's loads issued one block ahead, one
      barrier per key block instead of three (1: K and Vᵀ share the block FA2-style);
    * ``q8_b_split``: Q·Kᵀ ``ldmatrix``-es K's B fragments of each k-block in this many groups of key
      columns, each just before its MMAs (fewer live at once); ``codegen.pv_split`` does the same
      for Vᵀ's fragments in P·V (groups of O columns);
    * ``tile_n`` 32 (Vᵀ rows of 16 16-bit elements) for 32 query rows per warp at ``head_dim`` 128.
    """

    qk: str = "int8"
    pv_accum: str = "fp32"
    q8_b_split: int = 1

    @property
    def reads_lse_shift(self) -> bool:
        """Whether the kernel reads smoothing's per-row shift (``mShift``): the softcap and the sinks
        need the true scores; its LSE is then the true scores' (else the smoothed scores')."""
        return self.has_softcap or self.has_sink

    @property
    def smem_bytes(self) -> int:
        return q8_fwd_smem_bytes(self.tile_m, self.tile_n, self.head_dim, self.head_dim_v, self.num_stages)


# the lazy O rescale's threshold (log2 units: probabilities stay <= 2^0.5; larger thresholds cost
# accuracy against SDPA's kernel, docs/sm120-resources.md) ...
_RESCALE_THRESHOLD = 0.5
# ... for head_dim_v of at least this, or where a thread holds at least this many O accumulators
_RESCALE_MIN_DV = 128
_RESCALE_MIN_ACC_O = 96


def _fwd_smem(cfg: FwdConfig, one_buffer: bool) -> int:
    smem = fwd_smem_bytes(cfg.tile_m, cfg.tile_n, cfg.head_dim, cfg.head_dim_v, cfg.num_stages)
    if cfg.kv_dtype is not None:
        smem += kv8_staging_bytes(cfg.tile_n, cfg.head_dim, cfg.head_dim_v)
    if one_buffer:
        smem -= fwd_smem_bytes(0, cfg.tile_n, 0, cfg.head_dim_v, cfg.num_stages)  # no 16-bit V buffer
    return smem


def _one_buffer_fits_more(cfg: FwdConfig) -> bool:
    """Whether widening K and V into one 16-bit buffer lets more CTAs of ``cfg`` share an SM120 SM,
    whatever registers (up to 255) ptxas gives a thread."""
    fits = [ctas_per_sm(_fwd_smem(cfg, one), 255, cfg.num_threads) for one in (False, True)]
    return fits[1] > fits[0]


def fwd_codegen(cfg: FwdConfig) -> FwdCodegen:
    """The forward's code-generation choices for ``cfg``: its ``codegen`` fields where they are set,
    else the rule (``docs/sm120-resources.md`` has the measurements behind each):

    * ``pv_split``: 2 for warps of 32+ rows with ``dv >= 128`` (acc_O alone is 128+ of 255 registers:
      half the V fragments live at once keeps the sm_120a build spill-free), else 1;
    * ``qk_prefetch``: where P·V runs in one pass, except an FP8 cache at ``dv`` 64 off the decode rows
      with softcap and split keys (the 64-row tile's sm_120a build spills 4 B with it);
    * ``late_v_wait``: on, except where the sm_120a build spills with it (pack-GQA with varlen or a
      window; fp16 or an FP8 K/V cache on the d64 4-warp 128-row tile; the fp16 d64 decode row with
      softcap and a window: 4 B; an FP8 cache on the d32 128-row tile over contiguous keys without
      a mask or split keys: 8 B in some of them, none with the early wait);
    * ``prefetch_pages``: paged K/V with ``head_dim <= 192`` (2 registers per copied row), except an
      FP8 cache with softcap and a window (the d128 pack-GQA decode build spills 8 B with it), and an
      FP8 cache off the decode rows with split keys under pack-GQA with a window or varlen q (the d128
      causal 64x64x128 builds spill 4-8 B with it);
    * ``kv8_early_loads``: on the decode rows (``warp_split_n``) of an FP8 cache (the 64- and 128-row
      tiles' paged builds reach 255 registers with it and spill on sm_120a);
    * ``kv8_f16_mma``: with an FP8 cache (it changes only bf16 queries);
    * ``kv8_one_buffer``: on the decode rows of an FP8 cache, and on its other rows where it raises the
      CTAs per SM120 SM at the most registers a thread may take (the d128 chunk and prefill rows: one
      to two); possible wherever the cache is FP8, the head dims are equal and the tile has one stage
      (elsewhere off, whatever the field says);
    * ``rescale_threshold``: lazy (2^0.5) for ``dv >= 128`` or 96+ O accumulators per thread, else 0;
    * ``page_offsets32``: paged K/V of an FP8 cache (whose strides ``fa4_torch`` checks against
      :data:`fa4_sm120.limits.PAGE_OFFSET32_LIMIT`);
    * ``page_tiles``: with ``page_offsets32`` where the pages hold whole key tiles
      (``pages_hold_tiles``; elsewhere off, whatever the field says), except the d128 rows of 32 query
      rows per warp with varlen q under pack-GQA (the 128x32 prefill tile spills 4-8 B with it) and
      the rows off the decode rows with a window, softcap and split keys (the fp16 d128 chunk row
      spills 4 B);
    * ``opaque_smem``, ``tree_reduce``: as the config says (off unless set).
    """
    g = cfg.codegen
    rows_per_warp = cfg.rows_per_warp
    pv_split = (
        g.pv_split if g.pv_split is not None else (2 if rows_per_warp >= 32 and cfg.head_dim_v >= 128 else 1)
    )
    late_v_wait = not (
        (cfg.pack_gqa and (cfg.varlen_q or cfg.varlen_k or cfg.is_local))
        or ((cfg.dtype == "float16" or cfg.kv_dtype) and cfg.head_dim_v == 64 and rows_per_warp >= 32)
        or (
            cfg.warp_split_n
            and cfg.dtype == "float16"
            and cfg.head_dim_v == 64
            and cfg.has_softcap
            and cfg.is_local
        )
        or (
            cfg.kv_dtype
            and cfg.head_dim_v == 32
            and cfg.tile_m == 128
            and not (cfg.is_causal or cfg.is_local or cfg.paged_kv or cfg.varlen_k or cfg.split_kv)
        )
    )
    offsets32 = cfg.paged_kv and (
        g.page_offsets32 if g.page_offsets32 is not None else cfg.kv_dtype is not None
    )
    acc_o = rows_per_warp * cfg.head_dim_v // 32
    lazy = cfg.head_dim_v >= _RESCALE_MIN_DV or acc_o >= _RESCALE_MIN_ACC_O
    return FwdCodegen(
        rescale_threshold=(
            g.rescale_threshold if g.rescale_threshold is not None else (_RESCALE_THRESHOLD if lazy else 0.0)
        ),
        pv_split=pv_split,
        qk_prefetch=(
            g.qk_prefetch
            if g.qk_prefetch is not None
            else pv_split == 1
            and not (
                cfg.kv_dtype
                and cfg.head_dim_v == 64
                and not cfg.warp_split_n
                and cfg.has_softcap
                and cfg.split_kv
            )
        ),
        late_v_wait=g.late_v_wait if g.late_v_wait is not None else late_v_wait,
        prefetch_pages=(
            g.prefetch_pages
            if g.prefetch_pages is not None
            else cfg.paged_kv
            and cfg.head_dim <= 192
            and not (cfg.kv_dtype and cfg.has_softcap and cfg.is_local)
            and not (
                cfg.kv_dtype
                and not cfg.warp_split_n
                and cfg.split_kv
                and cfg.pack_gqa
                and (cfg.is_local or cfg.varlen_q)
            )
        ),
        kv8_early_loads=(
            g.kv8_early_loads
            if g.kv8_early_loads is not None
            else bool(cfg.kv_dtype is not None and cfg.warp_split_n)
        ),
        kv8_f16_mma=g.kv8_f16_mma if g.kv8_f16_mma is not None else cfg.kv_dtype is not None,
        kv8_one_buffer=bool(
            cfg.kv_dtype is not None
            and cfg.head_dim == cfg.head_dim_v
            and cfg.num_stages == 1
            and (
                g.kv8_one_buffer
                if g.kv8_one_buffer is not None
                else cfg.warp_split_n or _one_buffer_fits_more(cfg)
            )
        ),
        opaque_smem=g.opaque_smem,
        tree_reduce=g.tree_reduce,
        page_tiles=bool(
            offsets32
            and cfg.pages_hold_tiles
            and (
                g.page_tiles
                if g.page_tiles is not None
                else not (
                    (cfg.varlen_q and cfg.pack_gqa and cfg.head_dim == 128 and rows_per_warp >= 32)
                    or (not cfg.warp_split_n and cfg.is_local and cfg.has_softcap and cfg.split_kv)
                )
            )
        ),
        page_offsets32=offsets32,
    )


@dataclass(frozen=True)
class BwdConfig:
    """Everything that changes the generated code of the backward (scale, lengths, batch and head
    counts are runtime values)."""

    dtype: str
    head_dim: int
    head_dim_v: int
    tile_m: int = 64
    tile_n: int = 64
    num_threads: int = 128
    mma_warps_n: int = 1  # warps along N of every MMA (the rest split M); 1 keeps dS in registers for dQ
    # warps along N of S = Q·Kᵀ and dP = dO·Vᵀ alone (their P/dS stores, masks, row statistics); 0: the
    # same grid as every other product (mma_warps_n). dK, dV and dQ keep mma_warps_n
    sdp_warps_n: int = 0
    # dP = dO·Vᵀ with V's B fragments loaded into registers once per CTA (FlashAttention-2's
    # Is_V_in_regs): dP then reads only dO from shared memory
    v_in_regs: bool = False
    is_causal: bool = False
    deterministic: bool = False
    arch: str = "sm_120a"
    is_local: bool = False
    has_softcap: bool = False
    varlen_q: bool = False
    varlen_k: bool = False
    has_seqused_q: bool = False
    has_seqused_k: bool = False
    has_dsink: bool = False  # also accumulate rowsum(P * dP) per query row (the learnable sink's gradient)
    # dQ reductions as red.global.add.v2.f32 (pairs of adjacent columns; PTX needs sm_90+)
    vector_dq_red: bool = False
    # Q and dO of the next query block in two cp.async groups, each issued as soon as its buffer is
    # free (dK before dV), so that S waits for Q only and dO loads behind dQ and the next S
    early_loads: bool = False
    # causal: a 1-D grid of the key blocks, the longest (first) ones of every (batch, head) first, in
    # L2-sized groups of pairs (fa4_core.tile_scheduler.BwdLongestFirstScheduler)
    longest_first: bool = False
    # ldmatrix addresses re-derived from opaque shared-memory bases in each product
    # (fa4_core.layout.rebase_opaque; see FwdCodegen.opaque_smem)
    opaque_smem: bool = False
    # benchmarking only: dynamic shared memory requested at launch (>= the kernel's own), so that a
    # GPU with more shared memory per SM (H100/H200: 228 KB) keeps as few CTAs per SM as SM120 would
    launch_smem: int = 0

    @property
    def check_q_rows(self) -> bool:
        """Rows past the (per-sequence) query length are read from packed/unwritten buffers."""
        return self.varlen_q or self.has_seqused_q

    @property
    def num_warps(self) -> int:
        return self.num_threads // 32

    @property
    def mma_warps_m(self) -> int:
        return self.num_warps // self.mma_warps_n

    @property
    def sdp_wn(self) -> int:
        """Warps along N (keys) of the S and dP products."""
        return self.sdp_warps_n or self.mma_warps_n

    @property
    def sdp_wm(self) -> int:
        return self.num_warps // self.sdp_wn

    @property
    def dq_from_regs(self) -> bool:
        """With every warp owning whole rows of dS (``mma_warps_n == 1`` on the grid S and dP share
        with dQ) its dS accumulator is the A operand of its ``dQ = dS·K`` rows; otherwise dQ reads dS
        back from shared memory."""
        return self.mma_warps_n == 1 and self.sdp_wn == 1

    @property
    def smem_bytes(self) -> int:
        return bwd_smem_bytes(self.tile_m, self.tile_n, self.head_dim, self.head_dim_v)


@dataclass(frozen=True)
class PrePostConfig:
    dtype: str
    head_dim: int  # head_dim_v for the preprocess (O, dO), head_dim for the postprocess (dQ)
    has_dlse: bool = False  # preprocess only: subtract the gradient of the returned LSE

    def check(self) -> None:
        if self.dtype not in DTYPE_NAMES:
            raise unsupported("dtype", self.dtype, ", ".join(DTYPE_NAMES))
        if self.head_dim not in HEAD_DIMS:
            raise unsupported("head_dim", self.head_dim, f"multiples of 32 up to 256: {HEAD_DIMS}")


@dataclass(frozen=True)
class CombineConfig:
    dtype: str
    head_dim_v: int
    has_sink: bool = False
    num_warps: int = 4


QUANTIZE_ROLES = ("q", "k", "v", "stats")
# V's quantizer also takes e4m3 values as they are (FlashAttention-3's FP8 inputs: channel scales 1,
# only the layout changes)
FP8_V_INPUT = "float8_e4m3fn"


@dataclass(frozen=True)
class QuantizeConfig:
    """The 8-bit quantizer of one of Q, K, V (:mod:`fa4_sm120.quantize`): the 16-bit input ``dtype``,
    ``head_dim``, ``block`` (rows per scale for Q and K; keys per CTA for V, a multiple of 32; for
    ``role="stats"``, K's mean and V's channel scales in one pass, the keys per CTA), the 8-bit ``fmt``
    (``"int8"`` or ``"fp8"``; V and the statistics are always ``"fp8"``), ``smooth`` (Q: also write the
    LSE shift ``softmax_scale * q·mean_k``; K: subtract the mean first), ``seqused`` (sequence ``b``
    is the first ``seqused[b]`` rows of the input: padded batches) and ``unroll`` (the statistics: the
    rows whose 16-byte K and V vectors each thread loads before it adds them in; 1 for the others)."""

    dtype: str
    head_dim: int
    block: int
    role: str
    fmt: str = "fp8"
    smooth: bool = False
    seqused: bool = False  # sequence b is its first mSeqUsed[b] rows (padded batches)
    num_threads: int = 128
    unroll: int = 1

    def check(self) -> None:
        if self.dtype not in DTYPE_NAMES and not (self.dtype == FP8_V_INPUT and self.role == "v"):
            raise unsupported("dtype", self.dtype, ", ".join(DTYPE_NAMES) + f" ({FP8_V_INPUT} for V)")
        if self.head_dim not in Q8_HEAD_DIMS:
            raise unsupported("head_dim", self.head_dim, f"one of {Q8_HEAD_DIMS}")
        if self.role not in QUANTIZE_ROLES:
            raise unsupported("role", self.role, ", ".join(QUANTIZE_ROLES))
        if self.fmt not in Q8_QK_FORMATS or (self.role in ("v", "stats") and self.fmt != "fp8"):
            raise unsupported("fmt", self.fmt, "'fp8' for V and the statistics; 'int8' or 'fp8' for Q and K")
        if self.role in ("v", "stats") and self.smooth:
            raise unsupported("smooth", True, "False for V and the statistics")
        if self.unroll < 1 or (self.role != "stats" and self.unroll != 1):
            raise unsupported("unroll", self.unroll, "a positive number for the statistics, 1 otherwise")
        if self.num_threads != 128:
            raise unsupported("num_threads", self.num_threads, "128")
        if self.block <= 0 or self.block % self.block_multiple:
            raise unsupported("block", self.block, f"a positive multiple of {self.block_multiple}")

    @property
    def block_multiple(self) -> int:
        """Blocks are multiples of this: whole 32-key groups (V), a number of rows of which each thread
        moves the same number of 16-byte vectors (Q, K), or the rows of the CTA's ``unroll`` passes
        (the statistics: ``num_threads / (head_dim / 8)`` rows a pass)."""
        if self.role == "v":
            return 32
        if self.role == "stats":
            return self.num_threads // (self.head_dim // 8) * self.unroll
        m = 1
        while (m * self.head_dim // 8) % self.num_threads:
            m += 1
        return m
