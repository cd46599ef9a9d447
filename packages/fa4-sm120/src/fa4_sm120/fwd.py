"""FlashAttention forward of the mma.sync family, for SM120/SM121 (and SM80-SM90 in compat mode).

Tensors (16-byte aligned base pointers, last dimension contiguous, other strides multiples of 8
elements; fp16 or bf16, all of one dtype; LSE fp32):

* ``mQ (batch, seqlen_q, nheads, head_dim)``, ``mK (batch_kv, seqlen_k, nheads_kv, head_dim)``,
  ``mV (batch_kv, seqlen_k, nheads_kv, head_dim_v)``, ``mO (batch, seqlen_q, nheads, head_dim_v)``,
  ``mLSE (batch, nheads, seqlen_q)`` (natural log; ``-inf`` for a query that sees no key);
* varlen (``varlen_q``/``varlen_k``): ``mQ/mO (total_q, nheads, d)``, ``mLSE (nheads, total_q)``,
  ``mK/mV (total_k, nheads_kv, d)`` with int32 ``cu_seqlens (batch + 1)``; ``seqused_q/k (batch)``
  override the lengths (varlen or not);
* paged K/V (``paged_kv``): ``mK/mV (num_pages, page_size, nheads_kv, d)`` and int32
  ``page_table (batch, max_pages)``; key ``j`` of sequence ``b`` is row ``j % page_size`` of page
  ``page_table[b, j // page_size]`` (any page size: rows are gathered one by one);
* ``kv_batch_idx``: an int32 ``(batch,)`` map from query batch to K/V batch (KV-cache slots);
* split-KV (``split_kv``): ``mO`` fp32 ``(num_splits, <O dims>)`` and ``mLSE (num_splits, <LSE dims>)``
  hold partial results over each split's key blocks; the combine merges them through their LSEs;
* ``has_softcap``: ``s = softcap * tanh(s * scale / softcap)``; ``has_sink``: fp32 ``(nheads,)`` logits
  added to the softmax normaliser (``lse = sink`` for a row that sees no key);
* ``kv_dtype="float8_e4m3fn"`` (an FP8 KV cache): ``mK``/``mV`` hold e4m3 values (strides multiples
  of 16 elements) with fp32 ``mKDescale``/``mVDescale (batch, nheads_kv)`` (any strides, 0 included:
  one scale broadcast), indexed by the query batch; attention runs on ``K * k_descale`` and
  ``V * v_descale``. See "FP8 K/V" below.

Features: any ``seqlen_q``/``seqlen_k`` >= 0 (tiles need not divide them), causal masks aligned
bottom-right, local windows, MHA/GQA/MQA with pack-GQA (the query heads of one KV head share a tile,
rows addressed arithmetically through :mod:`fa4_core.pack_gqa`), ``head_dim != head_dim_v``.

Algorithm, per CTA (one ``tile_m`` block of (packed) query rows of one head, one batch):

1. Find the key-block range ``[n_block_min, n_block_max)`` and its mask-free middle
   (:class:`fa4_core.block_info.BlockInfo`). Load the Q tile (``cp.async``, 128-bit, swizzled shared
   memory; rows past the sequence are zero-filled) and the last K block (rows past ``seqlen_k``
   zero-filled, so masked scores stay finite).
2. For each key block from the last down: wait for K, start the V load; ``S = Q·Kᵀ`` on
   ``mma.sync m16n8k16`` (operands through ``ldmatrix``), fp32 accumulators; wait for V, start the
   next K load (so loads overlap the MMAs); mask (only blocks that need it); online softmax in exp2
   (:class:`fa4_core.softmax.OnlineSoftmax`) and rescale ``O``, only in a warp where some row's max
   grew by more than ``2^codegen.rescale_threshold`` (the others keep their offsets: exact; most blocks
   of a long row skip the rescale); convert ``P`` to 16 bits **in
   registers** and reuse it as the A operand of ``O += P·V`` (``ldmatrix.trans`` for V).
3. Epilogue: ``O /= row_sum``; O goes registers -> shared memory through a copy partitioned exactly
   like the mma.sync accumulator (``make_tiled_copy_C`` over plain stores: never ``stmatrix``, which
   belongs to wgmma's layout, and never TMA: this class picks no Hopper path whatever the target),
   then shared -> global with 128-bit stores; LSE from the lanes that own column 0 of a row.

FP8 K/V (``kv_dtype``; the rest of the kernel is unchanged, every feature above included): the
``cp.async`` of a K or V block lands in an 8-bit staging tile (16-byte copies of 16 elements, or
8-byte ones, :func:`fa4_sm120.configs.kv8_copy`; rows of 128 bytes or more paired per quarter warp so
that neither the staging nor the widened accesses conflict in shared-memory banks); when the block's
wait has returned, each thread widens the elements it copied itself (no barrier needed before it)
into the 16-bit swizzled K/V buffer, and the barrier that already follows the wait publishes them to
``ldmatrix``. Its staging elements are then free: with ``codegen.kv8_early_loads`` (the decode rows)
the thread starts its copy of the next block's K (V) at once, so K and V are both fetched a whole
block ahead, twice the bytes in flight of the 16-bit schedule, in no more shared memory. The MMAs
stay ``m16n8k16``, in fp16 (``codegen.kv8_f16_mma``; e4m3 values are exact in fp16, one conversion
per two elements): bf16 queries are converted once per CTA (:meth:`FlashAttentionForwardSm120.q_to_f16`,
times a power of two the score scale takes back), P is rounded to fp16, the output stays in q's
dtype. ``k_descale`` multiplies the score scale (before the softcap, which so sees the true score),
``v_descale`` the final ``1 / row_sum`` of O (split-KV partials too: the combine is linear in O);
the LSE needs neither.

Warps along the keys (``warp_split_n``, decode): a tile of 16 query rows (one warp's MMA rows),
whose warps each take ``tile_n / num_warps`` keys of every block: the loads and barriers are the
CTA's as above, but each warp multiplies and runs the online softmax over its own keys only, so it
reads a quarter of K and V from shared memory (with 64 rows over 4 warps each warp reads all of
them, and decode's few query rows leave most MMA rows empty). At the end the warps' row maxima and
sums meet in shared memory, each warp rescales its O rows to the common max, the warps add their O
into one fp32 tile and warp 0 stores the result (:meth:`FlashAttentionForwardSm120.merge_warps`).

Constraints: head_dim and head_dim_v multiples of 32 up to 256; shared memory
``fwd_smem_bytes(...)`` (:mod:`fa4_sm120.smem`) within the arch cap (101,376 B on SM120);
``tile_m`` a multiple of ``16 * num_warps``; ``tile_n`` a multiple of 16.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cutlass
import cutlass.cute as cute
from cutlass import Float8E4M3FN, Float16, Float32, Int32, Int64, Uint32, Uint64
from cutlass.cute.nvgpu import cpasync, warp

from fa4_core.block_info import BlockInfo
from fa4_core.errors import UnsupportedConfigError, unsupported
from fa4_core.layout import acc_as_a_operand, acc_mn_view, quad_allreduce_sum, rebase_opaque
from fa4_core.mask import apply_mask
from fa4_core.pack_gqa import unpack_row
from fa4_core.seqlen_info import SeqlenInfoQK
from fa4_core.softmax import LOG2_E, OnlineSoftmax
from fa4_sm120.configs import KV8_DTYPES, FwdConfig, fwd_codegen, kv8_copy
from fa4_sm120.limits import HEAD_DIMS
from fa4_sm120.mma_sync import (
    DTYPES,
    MmaSyncKernel,
    atom_k,
    check_copy_threads,
    check_dtype,
    check_head_dims,
    check_smem_fits,
    fake_stream,
    fake_tensor,
    launch_bounds,
)

__all__ = ["FwdConfig", "FlashAttentionForwardSm120", "DTYPES", "HEAD_DIMS"]

_F32_MAX = 3.4028234663852886e38  # the largest finite fp32


# ---------------------------------------------------------------------------------------------------
# the stage helpers' arguments, as named bundles of trace-time values (Python objects holding DSL
# values: the helpers are inlined when the kernel is traced, and only read them)
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FwdTensors:
    """The kernel's global tensors (the optional ones ``None`` when the config does not use them)."""

    mQ: Any
    mK: Any
    mV: Any
    mO: Any
    mLSE: Any
    mPageTable: Any
    mKVBatchIdx: Any
    mSink: Any
    mKDescale: Any = None  # FP8 K/V only
    mVDescale: Any = None


@dataclass(frozen=True)
class ScoreParams:
    """Runtime scalars of the scores: ``S * scale_log2`` (log2 units), after the softcap ``softcap *
    tanh(S * softcap_scale)`` with ``has_softcap``; the window of ``is_local``."""

    scale_log2: Any
    softcap_scale: Any
    softcap: Any
    window_left: Any
    window_right: Any


@dataclass(frozen=True)
class KernelSetup:
    """What ``__call__`` builds for the kernel: shared-memory layouts and ``SharedStorage``, the 128-bit
    global copies (``QK``, ``V``, ``K``: global -> shared; ``O``: registers -> global), the tiled MMA."""

    sQ_layout: Any
    sO_layout: Any
    sK_layout: Any
    sV_layout: Any
    gmem_copy_QK: Any
    gmem_copy_V: Any
    gmem_copy_O: Any
    tiled_mma: Any
    SharedStorage: Any
    gmem_copy_K: Any = None  # K's global -> shared copy (gmem_copy_QK unless K is FP8)


@dataclass(frozen=True)
class QTile:
    """A CTA's work: thread ``tidx`` of query block ``m_block`` (packed rows with pack-GQA) of head
    ``head_idx`` (the KV head with pack-GQA) of batch ``batch_idx``, split ``split_idx`` of
    ``num_splits``; ``seq`` holds the batch's offsets and lengths."""

    tidx: Any
    m_block: Any
    head_idx: Any
    batch_idx: Any
    split_idx: Any
    num_splits: Any
    seq: SeqlenInfoQK


@dataclass(frozen=True)
class Operand:
    """One MMA operand of a thread: its register fragment ``frag``; read from shared memory, also the
    ``ldmatrix`` source ``smem``, the fragment retiled for that copy ``frag_view`` and the copy."""

    frag: Any
    smem: Any = None
    frag_view: Any = None
    smem_copy: Any = None


@dataclass(frozen=True)
class MmaState:
    """The MMAs of the main loop: tiled MMA and this thread's slice, the O accumulator, the operands
    ``Q`` (A of S = Q·Kᵀ), ``K`` (its B) and ``Vt`` (B of O += P·V)."""

    tiled_mma: Any
    thr_mma: Any
    acc_O: Any
    Q: Operand
    K: Operand
    Vt: Operand


@dataclass(frozen=True)
class KVSource:
    """K or V: the whole tensor ``mX``, the ``(rows, d)`` view of this sequence and KV head ``mX_cur``
    (None when paged), the global -> shared copy and its thread slice, the width ``d``, this thread's
    shared-memory destination ``tXsX`` and its coordinates ``tXcX``."""

    mX: Any
    mX_cur: Any
    gmem_copy: Any
    thr_copy: Any
    d: int
    tXsX: Any
    tXcX: Any
    tXsW: Any = None  # FP8 K/V: the 16-bit buffer that tXsX (the 8-bit staging tile) is widened into
    head_base: Any = None  # paged K/V with FwdCodegen.page_offsets32: element 0 of this KV head


@dataclass(frozen=True)
class KVLoads:
    """The K and V block loads of a CTA: the sources, the page table, the batch and KV head, the key
    count, the page lookups of :meth:`FlashAttentionForwardSm120.lookup_pages` (None unless
    ``prefetch_pages``) and the page size as a fast divisor (multiply and shift, no ``div``; None
    unless paged)."""

    K: KVSource
    V: KVSource
    mPageTable: Any
    batch_idx: Any
    head_kv: Any
    seqlen_k: Any
    pages: Any
    page_div: Any = None


@dataclass(frozen=True)
class BlockMask:
    """What a key block's softcap and mask read: the coordinates of this thread's scores ``tScS_mn``,
    the query block, the lengths, the window (None unless ``is_local``) and the softcap scalars."""

    tScS_mn: Any
    m_block: Any
    seqlen_q: Any
    seqlen_k: Any
    window_left: Any
    window_right: Any
    softcap_scale: Any
    softcap: Any


class FlashAttentionForwardSm120(MmaSyncKernel):
    """The forward kernel class: ``FlashAttentionForwardSm120.compile(cfg, ...)``, or
    ``cute.compile(FlashAttentionForwardSm120(cfg), ...)`` over real arguments."""

    def __init__(self, cfg: FwdConfig):
        super().__init__(cfg)
        self.tile_m, self.tile_n = cfg.tile_m, cfg.tile_n
        self.head_dim, self.head_dim_v = cfg.head_dim, cfg.head_dim_v
        self.num_threads = cfg.num_threads
        self.is_causal, self.is_local = cfg.is_causal, cfg.is_local
        self.pack_gqa = cfg.pack_gqa
        self.qhead_per_kvhead = cfg.qhead_per_kvhead if cfg.pack_gqa else 1
        self.q_in_regs = cfg.q_in_regs
        # code-generation choices: the config's, else the rule (fa4_sm120.configs.fwd_codegen)
        gen = fwd_codegen(cfg)
        self.pv_split, self.qk_prefetch, self.late_v_wait = gen.pv_split, gen.qk_prefetch, gen.late_v_wait
        self.prefetch_pages, self.opaque_smem = gen.prefetch_pages, gen.opaque_smem
        # paged K/V only (the rule's): 32-bit row offsets; a tile per page lookup
        self.page_offsets32, self.page_tiles = gen.page_offsets32, gen.page_tiles
        self.rescale_threshold, self.tree_reduce = gen.rescale_threshold, gen.tree_reduce
        self.kv8 = cfg.kv_dtype is not None  # an FP8 K/V cache (module docstring, "FP8 K/V")
        self.kv8_early = self.kv8 and gen.kv8_early_loads
        # bf16 queries over FP8 K/V with fp16 MMAs (FwdCodegen.kv8_f16_mma): the Q tile is converted
        # in shared memory once (q_to_f16); the output stays bf16
        self.kv8_f16 = self.kv8 and bool(gen.kv8_f16_mma) and cfg.dtype == "bfloat16"
        self.mma_dtype = Float16 if self.kv8_f16 else self.dtype  # of the MMAs, P, and the K/V buffers
        # the warps split each key block (module docstring, "Warps along the keys")
        self.warp_split_n = cfg.warp_split_n
        self.mma_warps = 1 if cfg.warp_split_n else cfg.num_warps  # warps of the tiled MMA (along M)
        self.tile_n_w = cfg.tile_n // cfg.num_warps if cfg.warp_split_n else cfg.tile_n  # keys per warp

    # ------------------------------------------------------------------ constraints
    @staticmethod
    def can_implement(cfg: FwdConfig) -> None:
        """Raise :class:`UnsupportedConfigError` naming the first violated constraint."""
        check_dtype(cfg.dtype)
        check_head_dims({"head_dim": cfg.head_dim, "head_dim_v": cfg.head_dim_v})
        if cfg.num_threads % 32 or cfg.num_threads < 64 or cfg.num_threads > 512:
            raise unsupported("num_threads", cfg.num_threads, "a multiple of 32 in [64, 512]")
        if cfg.warp_split_n:
            if cfg.tile_m != 16:
                raise unsupported("tile_m", cfg.tile_m, "16 with warp_split_n (one warp's rows)")
            if cfg.tile_n % (16 * cfg.num_warps):
                raise unsupported(
                    "tile_n",
                    cfg.tile_n,
                    f"a multiple of 16 * num_warps = {16 * cfg.num_warps} with warp_split_n",
                )
            for name, d in (("head_dim", cfg.head_dim), ("head_dim_v", cfg.head_dim_v)):
                if cfg.num_threads * 8 // atom_k(d) > cfg.tile_m:  # one copy pass covers at most the tile
                    raise unsupported(name, d, "a multiple of 64 with warp_split_n")
            if cfg.tile_n * cfg.head_dim < 32 * (cfg.head_dim_v + 8):  # merge_warps' fp32 O tile in sK
                raise unsupported("tile_n", cfg.tile_n, f">= {32 * (cfg.head_dim_v + 8) // cfg.head_dim}")
        elif cfg.tile_m % (16 * cfg.num_warps):
            raise unsupported("tile_m", cfg.tile_m, f"a multiple of 16 * num_warps = {16 * cfg.num_warps}")
        if cfg.tile_n % 16 or cfg.tile_n < 16:
            raise unsupported("tile_n", cfg.tile_n, "a multiple of 16")
        if cfg.num_stages != 1:
            raise unsupported("num_stages", cfg.num_stages, "1 (K/V loads overlap the MMAs FA2-style)")
        if not cfg.pack_gqa and cfg.qhead_per_kvhead != 1:
            raise unsupported("qhead_per_kvhead", cfg.qhead_per_kvhead, "1 unless pack_gqa")
        if cfg.pack_gqa and not 1 <= cfg.qhead_per_kvhead <= 256:
            raise unsupported("qhead_per_kvhead", cfg.qhead_per_kvhead, "1..256 with pack_gqa")
        if cfg.paged_kv and cfg.varlen_k:
            raise unsupported(
                "(paged_kv, varlen_k)", (True, True), "paged K/V with seqused_k, not cu_seqlens_k"
            )
        if cfg.kv_batch_idx and (cfg.varlen_k or cfg.paged_kv):
            raise unsupported("kv_batch_idx", True, "contiguous (batch_kv, seqlen_k, ...) K/V only")
        if cfg.kv_dtype is not None and cfg.kv_dtype not in KV8_DTYPES:
            raise unsupported("kv_dtype", cfg.kv_dtype, f"None (K/V in dtype) or one of {KV8_DTYPES}")
        n = cfg.codegen.min_ctas_per_sm
        if not isinstance(n, int) or n < 0 or n * cfg.num_threads > 1536:
            raise unsupported(
                "codegen.min_ctas_per_sm",
                n,
                f"0 (no bound) or at most {1536 // cfg.num_threads} (48 warps per SM)",
            )
        check_copy_threads(cfg.num_threads, {"head_dim": cfg.head_dim, "head_dim_v": cfg.head_dim_v})
        check_smem_fits(
            f"tile (tile_m={cfg.tile_m}, tile_n={cfg.tile_n}, num_stages={cfg.num_stages}) with head_dim={cfg.head_dim}, head_dim_v={cfg.head_dim_v}",
            cfg.smem_bytes,
            cfg.arch,
        )

    # ------------------------------------------------------------------ host-side setup (traced)
    def shared_storage(self, sK_layout, sV_layout):
        """``SharedStorage``: ``sQ`` (``tile_m * max(head_dim, head_dim_v)`` elements; O's buffer in
        the epilogue), ``sK`` and ``sV``, each 1024-byte aligned (with FP8 K/V also the 8-bit staging
        tiles ``sK8``, ``sV8``); its size is checked against
        ``cfg.smem_bytes`` (the tile table's arithmetic is the kernel's) when the kernel is traced."""
        q_elems = self.tile_m * max(self.head_dim, self.head_dim_v)

        def buf(dtype, elems):
            return cute.struct.Align[cute.struct.MemRange[dtype, elems], 1024]

        fields = {  # annotations as objects (this module's annotations are strings)
            "sQ": buf(self.dtype, q_elems),
            "sK": buf(self.mma_dtype, cute.cosize(sK_layout)),
        }
        if not self.cfg.kv8_one_buffer:  # else V is widened into sK (FwdConfig.kv8_one_buffer)
            fields["sV"] = buf(self.mma_dtype, cute.cosize(sV_layout))
        if self.kv8:  # FP8 K/V: the 8-bit staging tiles (fa4_sm120.smem.kv8_staging_bytes)
            fields["sK8"] = buf(Float8E4M3FN, self.tile_n * self.head_dim)
            fields["sV8"] = buf(Float8E4M3FN, self.tile_n * self.head_dim_v)
        SharedStorage = cute.struct(type("SharedStorage", (), {"__annotations__": fields}))
        if SharedStorage.size_in_bytes() != self.cfg.smem_bytes:
            raise UnsupportedConfigError(
                f"shared storage is {SharedStorage.size_in_bytes()} B but the config's smem_bytes is "
                f"{self.cfg.smem_bytes} B for {self.cfg}"
            )
        return SharedStorage

    def make_tiled_mma(self):
        """``m16n8k16`` 16-bit MMAs, the warps stacked along M (one warp with ``warp_split_n``: each
        warp multiplies its own keys), N and K tiled by 16."""
        return cute.make_tiled_mma(
            warp.MmaF16BF16Op(self.mma_dtype, Float32, (16, 8, 16)),
            (self.mma_warps, 1, 1),
            permutation_mnk=(self.mma_warps * 16, 16, 16),
        )

    @cute.jit
    def __call__(
        self,
        mQ: cute.Tensor,
        mK: cute.Tensor,
        mV: cute.Tensor,
        mO: cute.Tensor,
        mLSE: cute.Tensor,
        softmax_scale: Float32,
        window_left: Int32,
        window_right: Int32,
        softcap: Float32,
        max_seqlen_q: Int32,
        num_splits: Int32,
        mCuSeqlensQ,
        mCuSeqlensK,
        mSeqUsedQ,
        mSeqUsedK,
        mPageTable,
        mKVBatchIdx,
        mSink,
        mKDescale,
        mVDescale,
        stream,
    ):
        cfg = self.cfg
        sQ_layout = self.smem_layout(self.tile_m, self.head_dim)
        sO_layout = self.smem_layout(self.tile_m, self.head_dim_v)
        sK_layout = self.smem_layout(self.tile_n, self.head_dim)
        sV_layout = self.smem_layout(self.tile_n, self.head_dim_v)
        SharedStorage = self.shared_storage(sK_layout, sV_layout)
        tiled_mma = self.make_tiled_mma()
        h_axis = 1 if cutlass.const_expr(cfg.varlen_q) else 2
        hkv_axis = 2
        if cutlass.const_expr(cfg.varlen_k):
            hkv_axis = 1
        num_heads_grid = mK.shape[hkv_axis] if cutlass.const_expr(self.pack_gqa) else mQ.shape[h_axis]
        num_batch = mCuSeqlensQ.shape[0] - 1 if cutlass.const_expr(cfg.varlen_q) else mQ.shape[0]
        grid = (
            cute.ceil_div(max_seqlen_q * self.qhead_per_kvhead, self.tile_m),
            num_heads_grid * num_splits,
            num_batch,
        )
        scale_log2 = softmax_scale * LOG2_E
        softcap_scale = softmax_scale
        if cutlass.const_expr(cfg.has_softcap):
            scale_log2 = Float32(LOG2_E)
            softcap_scale = softmax_scale / softcap
        self.kernel(
            mQ,
            mK,
            mV,
            mO,
            mLSE,
            scale_log2,
            softcap_scale,
            softcap,
            window_left,
            window_right,
            num_batch,
            num_heads_grid,
            mCuSeqlensQ,
            mCuSeqlensK,
            mSeqUsedQ,
            mSeqUsedK,
            mPageTable,
            mKVBatchIdx,
            mSink,
            mKDescale,
            mVDescale,
            sQ_layout,
            sO_layout,
            sK_layout,
            sV_layout,
            self.gmem_copy(self.head_dim, True),
            self._kv_gmem_copy(self.head_dim_v),
            self.gmem_copy(self.head_dim_v, False),
            self._kv_gmem_copy(self.head_dim),
            tiled_mma,
            SharedStorage,
        ).launch(
            grid=grid,
            block=[self.num_threads, 1, 1],
            smem=max(SharedStorage.size_in_bytes(), cfg.launch_smem),
            stream=stream,
            **launch_bounds(cfg.codegen.min_ctas_per_sm),
        )

    # ------------------------------------------------------------------ the kernel
    @cute.kernel
    def kernel(
        self,
        mQ: cute.Tensor,
        mK: cute.Tensor,
        mV: cute.Tensor,
        mO: cute.Tensor,
        mLSE: cute.Tensor,
        scale_log2: Float32,
        softcap_scale: Float32,
        softcap: Float32,
        window_left: Int32,
        window_right: Int32,
        num_batch: Int32,
        num_heads_grid: Int32,
        mCuSeqlensQ,
        mCuSeqlensK,
        mSeqUsedQ,
        mSeqUsedK,
        mPageTable,
        mKVBatchIdx,
        mSink,
        mKDescale,
        mVDescale,
        sQ_layout: cute.ComposedLayout,
        sO_layout: cute.ComposedLayout,
        sK_layout: cute.ComposedLayout,
        sV_layout: cute.ComposedLayout,
        gmem_copy_QK: cute.TiledCopy,
        gmem_copy_V: cute.TiledCopy,
        gmem_copy_O: cute.TiledCopy,
        gmem_copy_K: cute.TiledCopy,
        tiled_mma: cute.TiledMma,
        SharedStorage: cutlass.Constexpr,
    ):
        cfg = self.cfg
        tidx, _, _ = cute.arch.thread_idx()
        bidx, head_split, batch_idx = cute.arch.block_idx()
        num_m_blocks, _, _ = cute.arch.grid_dim()
        # causal/local: the heaviest query blocks are the last ones: launch them first
        m_block = num_m_blocks - 1 - bidx if cutlass.const_expr(self.is_causal or self.is_local) else bidx
        split_idx = Int32(0)
        num_splits = Int32(1)
        head_idx = head_split
        if cutlass.const_expr(cfg.split_kv):
            split_idx = head_split // num_heads_grid
            head_idx = head_split - split_idx * num_heads_grid
            _, ny, _ = cute.arch.grid_dim()
            num_splits = ny // num_heads_grid

        # ---------------- sequence lengths and offsets of this batch (fa4_core.seqlen_info)
        sq_static = None if cutlass.const_expr(cfg.varlen_q) else mQ.shape[1]
        sk_static = None
        if cutlass.const_expr(cfg.paged_kv):
            sk_static = mPageTable.shape[1] * mK.shape[1]
        elif cutlass.const_expr(not cfg.varlen_k):
            sk_static = mK.shape[1]
        seq = SeqlenInfoQK.create(
            batch_idx, num_batch, sq_static, sk_static, mCuSeqlensQ, mCuSeqlensK, mSeqUsedQ, mSeqUsedK
        )
        seqlen_q = seq.seqlen_q
        r = self.qhead_per_kvhead
        packed_len = seqlen_q * r
        if m_block * self.tile_m < packed_len:
            self.attend_tile(
                FwdTensors(mQ, mK, mV, mO, mLSE, mPageTable, mKVBatchIdx, mSink, mKDescale, mVDescale),
                ScoreParams(scale_log2, softcap_scale, softcap, window_left, window_right),
                KernelSetup(
                    sQ_layout,
                    sO_layout,
                    sK_layout,
                    sV_layout,
                    gmem_copy_QK,
                    gmem_copy_V,
                    gmem_copy_O,
                    tiled_mma,
                    SharedStorage,
                    gmem_copy_K,
                ),
                QTile(tidx, m_block, head_idx, batch_idx, split_idx, num_splits, seq),
            )

    @cute.jit
    def attend_tile(self, g: FwdTensors, scores: ScoreParams, setup: KernelSetup, tile: QTile):
        """The whole CTA's work on a query tile that has rows: steps 1-3 of the module docstring."""
        cfg = self.cfg
        seq = tile.seq
        tidx, m_block, head_idx, batch_idx = tile.tidx, tile.m_block, tile.head_idx, tile.batch_idx
        seqlen_q, seqlen_k = seq.seqlen_q, seq.seqlen_k
        r = self.qhead_per_kvhead
        packed_len = seqlen_q * r
        h_axis = 1 if cutlass.const_expr(cfg.varlen_q) else 2
        hkv_axis = 1 if cutlass.const_expr(cfg.varlen_k) else 2
        head_kv = (
            head_idx
            if cutlass.const_expr(self.pack_gqa)
            else head_idx // (g.mQ.shape[h_axis] // g.mK.shape[hkv_axis])
        )
        batch_kv = batch_idx
        if cutlass.const_expr(cfg.kv_batch_idx):
            batch_kv = g.mKVBatchIdx[batch_idx]

        wl = scores.window_left if cutlass.const_expr(self.is_local) else None
        wr = scores.window_right if cutlass.const_expr(self.is_local) else None
        block_info = BlockInfo(self.tile_m, self.tile_n, self.is_causal, self.is_local, r)
        if cutlass.const_expr(cfg.split_kv):
            n_block_min, n_block_max = block_info.n_block_range(
                m_block, seqlen_q, seqlen_k, wl, wr, tile.split_idx, tile.num_splits
            )
        else:
            n_block_min, n_block_max = block_info.n_block_range(m_block, seqlen_q, seqlen_k, wl, wr)
        n_right_mask = block_info.right_mask_start(m_block, seqlen_q, seqlen_k, wr)
        n_left_mask = block_info.left_mask_end(m_block, seqlen_q, seqlen_k, wl)

        # ---------------- shared memory
        smem = cutlass.memory.SmemAllocator()
        storage = smem.allocate(setup.SharedStorage)
        sQ = storage.sQ.get_tensor(setup.sQ_layout)
        sO = storage.sQ.get_tensor(setup.sO_layout)
        sK = storage.sK.get_tensor(setup.sK_layout)
        sV = (storage.sK if cutlass.const_expr(cfg.kv8_one_buffer) else storage.sV).get_tensor(
            setup.sV_layout
        )
        sVt = cute.composition(sV, cute.make_layout((self.head_dim_v, self.tile_n), stride=(self.tile_n, 1)))

        # ---------------- global -> shared copies of K and V
        thr_copy_K = setup.gmem_copy_K.get_slice(tidx)
        thr_copy_V = setup.gmem_copy_V.get_slice(tidx)
        tKsK = thr_copy_K.partition_D(sK)
        tVsV = thr_copy_V.partition_D(sV)
        tKsW = tVsW = None
        if cutlass.const_expr(self.kv8):
            # FP8 K/V: the copies land in the 8-bit staging tiles; tXsW, the same thread's elements
            # of the 16-bit buffers, is what they are widened into (widen_kv)
            tKsW, tVsW = tKsK, tVsV
            tKsK = thr_copy_K.partition_D(storage.sK8.get_tensor(self._staging_layout(self.head_dim)))
            tVsV = thr_copy_V.partition_D(storage.sV8.get_tensor(self._staging_layout(self.head_dim_v)))
        tKcK = thr_copy_K.partition_S(cute.make_identity_tensor((self.tile_n, self.head_dim)))
        tVcV = thr_copy_V.partition_S(cute.make_identity_tensor((self.tile_n, self.head_dim_v)))
        mK_cur = self._kv_view(g.mK, batch_kv, head_kv, seq.offset_k, self.head_dim)
        mV_cur = self._kv_view(g.mV, batch_kv, head_kv, seq.offset_k, self.head_dim_v)
        # paged K/V: the page and in-page row of each row this thread copies, looked up one stage ahead
        # (K(n-1)'s while S(n) is computed) and reused by V(n) when it has K's copy layout, so no
        # page-table load sits between a barrier and the cp.async it addresses
        pages = None
        if cutlass.const_expr(self.prefetch_pages):
            n_rows = cute.size(tKsK.shape[1])
            pages = (cute.make_rmem_tensor(n_rows, Int32), cute.make_rmem_tensor(n_rows, Int32))
        base_K = base_V = None
        if cutlass.const_expr(self.page_offsets32):
            base_K = g.mK.iterator + head_kv * self._stride32(g.mK, 2)
            base_V = g.mV.iterator + head_kv * self._stride32(g.mV, 2)
        loads = KVLoads(
            K=KVSource(g.mK, mK_cur, setup.gmem_copy_K, thr_copy_K, self.head_dim, tKsK, tKcK, tKsW, base_K),
            V=KVSource(
                g.mV, mV_cur, setup.gmem_copy_V, thr_copy_V, self.head_dim_v, tVsV, tVcV, tVsW, base_V
            ),
            mPageTable=g.mPageTable,
            batch_idx=batch_idx,
            head_kv=head_kv,
            seqlen_k=seqlen_k,
            pages=pages,
            page_div=cute.fast_divmod_create_divisor_v2(g.mK.shape[1])
            if cutlass.const_expr(cfg.paged_kv)
            else None,
        )

        # ---------------- MMA partitions
        # warp_split_n: each warp is a one-warp MMA over its own tile_n_w keys of sK and sV
        warp_idx = tidx // 32
        mma_tidx = tidx
        cS = cute.make_identity_tensor((self.tile_m, self.tile_n))
        if cutlass.const_expr(self.warp_split_n):
            mma_tidx = tidx % 32
            sK = cute.local_tile(sK, (self.tile_n_w, self.head_dim), (warp_idx, 0))
            sVt = cute.local_tile(sVt, (self.head_dim_v, self.tile_n_w), (0, warp_idx))
            cS = cute.local_tile(cS, (self.tile_m, self.tile_n_w), (0, warp_idx))
        tiled_mma = setup.tiled_mma
        thr_mma = tiled_mma.get_slice(mma_tidx)
        sQ_mma = sQ  # the Q tile as the MMAs read it (fp16 after q_to_f16)
        if cutlass.const_expr(self.kv8_f16):
            sQ_mma = cute.make_tensor(cute.recast_ptr(sQ.iterator, dtype=Float16), sQ.layout)
        tSrQ = thr_mma.make_fragment_A(thr_mma.partition_A(sQ_mma))
        tSrK = thr_mma.make_fragment_B(thr_mma.partition_B(sK))
        tOrVt = thr_mma.make_fragment_B(thr_mma.partition_B(sVt))
        acc_O = cute.make_rmem_tensor(thr_mma.partition_shape_C((self.tile_m, self.head_dim_v)), Float32)
        acc_O.fill(0.0)

        ldsm = warp.LdMatrix8x8x16bOp(transpose=False, num_matrices=4)
        ldsm_t = warp.LdMatrix8x8x16bOp(transpose=True, num_matrices=4)
        smem_copy_Q = cute.make_tiled_copy_A(cute.make_copy_atom(ldsm, self.mma_dtype), tiled_mma)
        smem_copy_K = cute.make_tiled_copy_B(cute.make_copy_atom(ldsm, self.mma_dtype), tiled_mma)
        smem_copy_V = cute.make_tiled_copy_B(cute.make_copy_atom(ldsm_t, self.mma_dtype), tiled_mma)
        thr_smem_Q = smem_copy_Q.get_slice(mma_tidx)
        thr_smem_K = smem_copy_K.get_slice(mma_tidx)
        thr_smem_V = smem_copy_V.get_slice(mma_tidx)
        tSsQ = thr_smem_Q.partition_S(sQ_mma)
        tSrQ_view = thr_smem_Q.retile(tSrQ)
        tSsK = thr_smem_K.partition_S(sK)
        tSrK_view = thr_smem_K.retile(tSrK)
        tOsVt = thr_smem_V.partition_S(sVt)
        tOrVt_view = thr_smem_V.retile(tOrVt)
        mma = MmaState(
            tiled_mma=tiled_mma,
            thr_mma=thr_mma,
            acc_O=acc_O,
            Q=Operand(tSrQ, tSsQ, tSrQ_view, smem_copy_Q),
            K=Operand(tSrK, tSsK, tSrK_view, smem_copy_K),
            Vt=Operand(tOrVt, tOsVt, tOrVt_view, smem_copy_V),
        )

        tScS_mn = acc_mn_view(thr_mma.partition_C(cS))  # tile coordinates (this warp's keys)
        num_rows = cute.size(tScS_mn.shape[0])
        scale_log2, softcap_scale = scores.scale_log2, scores.softcap_scale
        if cutlass.const_expr(self.kv8):
            # FP8 K/V: k_descale folds into the score scale (before the softcap: it sees true scores)
            k_descale = g.mKDescale[batch_idx, head_kv]
            if cutlass.const_expr(cfg.has_softcap):
                softcap_scale = softcap_scale * k_descale
            else:
                scale_log2 = scale_log2 * k_descale

        # ---------------- prologue: Q (rows addressed arithmetically) and the last K block
        self.load_q(g.mQ, sQ, setup.gmem_copy_QK, tile, packed_len)
        if cutlass.const_expr(self.kv8_f16):
            cute.arch.cp_async_commit_group()  # Q alone: converted while the first K block is in flight
        has_work = n_block_min < n_block_max
        if has_work:
            if cutlass.const_expr(self.prefetch_pages):
                self.lookup_pages(loads, n_block_max - 1)
            self.load_kv(loads, loads.K, n_block_max - 1, True, pages)
        cute.arch.cp_async_commit_group()
        if cutlass.const_expr(self.kv8_early):  # V of the last block too, and the next block's pages
            if has_work:
                self.load_kv(loads, loads.V, n_block_max - 1, True, self._pages_V(pages))
                if cutlass.const_expr(self.prefetch_pages):
                    if n_block_max - 1 > n_block_min:
                        self.lookup_pages(loads, n_block_max - 2)
            cute.arch.cp_async_commit_group()
        if cutlass.const_expr(self.kv8_f16):
            cute.arch.cp_async_wait_group(1)  # Q has landed (with the early loads K too; V may not)
            cute.arch.barrier()
            q_inv = self.q_to_f16(sQ, sQ_mma, setup.gmem_copy_QK, tidx, storage)
            cute.arch.barrier()  # every row converted before any warp's ldmatrix
            # the scores come out 2^k times too large: the scale that meets them first takes 2^-k
            if cutlass.const_expr(cfg.has_softcap):
                softcap_scale = softcap_scale * q_inv
            else:
                scale_log2 = scale_log2 * q_inv
        softmax = OnlineSoftmax(scale_log2, num_rows, self.rescale_threshold, self.tree_reduce)
        row_scale = cute.make_rmem_tensor(num_rows, Float32)
        mask = BlockMask(tScS_mn, m_block, seqlen_q, seqlen_k, wl, wr, softcap_scale, scores.softcap)
        if cutlass.const_expr(self.q_in_regs):
            cute.arch.cp_async_wait_group(0)
            cute.arch.barrier()
            cute.copy(smem_copy_Q, tSsQ, tSrQ_view)

        # ---------------- main loop over key blocks, last to first
        if has_work:
            self.one_block(n_block_max - 1, n_block_min, mma, loads, mask, softmax, row_scale, True, True)
        # blocks that still need the right mask (diagonal / window right edge)
        n_mid_hi = cutlass.max(cutlass.min(n_right_mask, n_block_max - 1), n_block_min)
        for i in cutlass.range(n_block_max - 1 - n_mid_hi, unroll=1):
            self.one_block(
                n_block_max - 2 - i, n_block_min, mma, loads, mask, softmax, row_scale, False, True
            )
        # mask-free middle
        n_mid_lo = cutlass.min(cutlass.max(n_left_mask, n_block_min), n_mid_hi)
        for i in cutlass.range(n_mid_hi - n_mid_lo, unroll=1):
            self.one_block(n_mid_hi - 1 - i, n_block_min, mma, loads, mask, softmax, row_scale, False, False)
        # blocks before the window's left edge
        if cutlass.const_expr(self.is_local):
            for i in cutlass.range(n_mid_lo - n_block_min, unroll=1):
                self.one_block(
                    n_mid_lo - 1 - i, n_block_min, mma, loads, mask, softmax, row_scale, False, True
                )

        # ---------------- epilogue
        if cutlass.const_expr(self.warp_split_n):
            self.merge_warps(softmax, acc_O, thr_mma, storage, warp_idx)
        lse = cute.make_rmem_tensor(num_rows, Float32)
        if cutlass.const_expr(cfg.has_sink and not cfg.split_kv):
            sink_log2 = cute.make_rmem_tensor(num_rows, Float32)
            for r_ in cutlass.range_constexpr(num_rows):
                row = m_block * self.tile_m + tScS_mn[r_, 0][0]
                head = head_idx
                if cutlass.const_expr(self.pack_gqa):
                    head = head_idx * r + (row - (row // r) * r)
                sink_log2[r_] = g.mSink[head] * Float32(LOG2_E)
            softmax.finalize(row_scale, lse, sink_log2)
        else:
            softmax.finalize(row_scale, lse)
        if cutlass.const_expr(self.kv8):
            # FP8 K/V: v_descale folds into 1 / row_sum (the LSE does not see it)
            v_descale = g.mVDescale[batch_idx, head_kv]
            for r_ in cutlass.range_constexpr(num_rows):
                row_scale[r_] = row_scale[r_] * v_descale
        acc_O_mn = acc_mn_view(acc_O)
        for r_ in cutlass.range_constexpr(num_rows):
            acc_O_mn[r_, None] = acc_O_mn[r_, None].load() * row_scale[r_]
        cute.arch.cp_async_wait_group(0)
        if cutlass.const_expr(self.warp_split_n):  # every warp holds the merged rows: warp 0 stores them
            if warp_idx == 0:
                self.store_lse(lse, g.mLSE, thr_mma, tile, packed_len)
                if cutlass.const_expr(cfg.split_kv):
                    self.store_o_partial(acc_O, g.mO, thr_mma, tile, packed_len)
        else:
            self.store_lse(lse, g.mLSE, thr_mma, tile, packed_len)
            if cutlass.const_expr(cfg.split_kv):
                self.store_o_partial(acc_O, g.mO, thr_mma, tile, packed_len)
        if cutlass.const_expr(not cfg.split_kv):
            self.epilogue(acc_O, g.mO, sO, tiled_mma, setup.gmem_copy_O, tile, packed_len)

    # ------------------------------------------------------------------ stage helpers
    @cute.jit
    def one_block(
        self,
        n_block: Int32,
        n_block_min: Int32,
        mma: MmaState,
        loads: KVLoads,
        mask: BlockMask,
        softmax: OnlineSoftmax,
        row_scale: cute.Tensor,
        is_first: cutlass.Constexpr[bool],
        need_mask: cutlass.Constexpr[bool],
    ):
        """Key block ``n_block`` (step 2 of the module docstring); ``is_first``: the first (last)
        block, whose rows past ``seqlen_k`` are zero-filled and whose O needs no rescale."""
        pages_V = self._pages_V(loads.pages)
        if cutlass.const_expr(self.opaque_smem):
            mma = replace(
                mma,
                Q=replace(mma.Q, smem=rebase_opaque(mma.Q.smem)),
                K=replace(mma.K, smem=rebase_opaque(mma.K.smem)),
                Vt=replace(mma.Vt, smem=rebase_opaque(mma.Vt.smem)),
            )

        acc_S = cute.make_rmem_tensor(mma.thr_mma.partition_shape_C((self.tile_m, self.tile_n_w)), Float32)
        acc_S.fill(0.0)
        if cutlass.const_expr(self.kv8_early):
            # K(n) has landed (V(n) may still be in flight): widen it, then fetch K(n-1) into the
            # staging elements this thread has just read
            cute.arch.cp_async_wait_group(1)
            if cutlass.const_expr(self.cfg.kv8_one_buffer):
                cute.arch.barrier()  # everyone is done with V(n+1) (K is widened into its buffer)
            self.widen_kv(loads.K)  # everyone is done with K(n+1) (the barrier after its S)
            if n_block > n_block_min:
                self.load_kv(loads, loads.K, n_block - 1, False, loads.pages)
            cute.arch.cp_async_commit_group()  # empty after the last block: the wait counts hold
            cute.arch.barrier()
        else:
            # K(n) has landed; everyone is done with V(n+1): start V(n)
            cute.arch.cp_async_wait_group(0)
            if cutlass.const_expr(self.kv8):
                if cutlass.const_expr(self.cfg.kv8_one_buffer):
                    cute.arch.barrier()  # everyone is done with V(n+1) (K is widened into its buffer)
                self.widen_kv(loads.K)  # everyone is done with K(n+1) (the barrier after its S)
            cute.arch.barrier()
            self.load_kv(loads, loads.V, n_block, is_first, pages_V)
            cute.arch.cp_async_commit_group()
            if cutlass.const_expr(self.prefetch_pages):
                if n_block > n_block_min:  # K(n-1)'s pages: in flight while S(n) is computed
                    self.lookup_pages(loads, n_block - 1)
        # S = Q K^T
        self.gemm(mma.tiled_mma, acc_S, mma.Q, mma.K, self.q_in_regs)
        if cutlass.const_expr(self.kv8_early):
            # V(n) has landed (K(n-1) may still be in flight): widen it, then fetch V(n-1)
            cute.arch.cp_async_wait_group(1)
            if cutlass.const_expr(self.cfg.kv8_one_buffer):
                cute.arch.barrier()  # everyone is done with K(n) (V is widened into its buffer)
            self.widen_kv(loads.V)  # everyone is done with V(n+1) (the barrier at this block's top)
            if n_block > n_block_min:
                self.load_kv(loads, loads.V, n_block - 1, False, pages_V)
                if cutlass.const_expr(self.prefetch_pages):
                    if n_block - 1 > n_block_min:  # K(n-2)'s and V(n-2)'s pages
                        self.lookup_pages(loads, n_block - 2)
            cute.arch.cp_async_commit_group()
            cute.arch.barrier()
        elif cutlass.const_expr(self.late_v_wait):
            # everyone is done with K(n): start K(n-1); V(n) is waited for just before P·V
            cute.arch.barrier()
        else:
            # V(n) has landed; everyone is done with K(n): start K(n-1)
            cute.arch.cp_async_wait_group(0)
            if cutlass.const_expr(self.kv8):
                if cutlass.const_expr(self.cfg.kv8_one_buffer):
                    cute.arch.barrier()  # everyone is done with K(n) (V is widened into its buffer)
                self.widen_kv(loads.V)  # everyone is done with V(n+1) (the barrier at this block's top)
            cute.arch.barrier()
        if cutlass.const_expr(not self.kv8_early):
            if n_block > n_block_min:
                self.load_kv(loads, loads.K, n_block - 1, False, loads.pages)
                if cutlass.const_expr(not self.late_v_wait):
                    cute.arch.cp_async_commit_group()
            if cutlass.const_expr(self.late_v_wait):
                cute.arch.cp_async_commit_group()  # empty after the last block: wait_group(1) still means V(n)
        if cutlass.const_expr(self.cfg.has_softcap):
            s = acc_S.load()
            acc_S.store(cute.math.tanh(s * mask.softcap_scale, fastmath=True) * mask.softcap)
        acc_S_mn = acc_mn_view(acc_S)
        if cutlass.const_expr(need_mask):
            apply_mask(
                acc_S_mn,
                mask.tScS_mn,
                mask.m_block,
                n_block,
                mask.seqlen_q,
                mask.seqlen_k,
                mask.window_left,
                mask.window_right,
                self.tile_m,
                self.tile_n,
                self.qhead_per_kvhead,
                self.is_causal,
                self.is_local,
            )
        rescale = softmax.online_softmax(acc_S_mn, row_scale, is_first)
        if cutlass.const_expr(not is_first):
            # warp-uniform: false when every factor is 1. ptxas if-converts this branch (the SASS
            # of the H200 and sm_120a builds issues the O FMULs every block, predicated off;
            # 2026-12-03): emitting P·V twice, with and without the rescale, to keep the branch
            # made the d128 row spill 1,856 B on sm_120a; a loop of 0 or 1 trips gave the same
            # SASS as the `if`
            if rescale:
                acc_O_mn = acc_mn_view(mma.acc_O)
                for r in cutlass.range_constexpr(cute.size(acc_O_mn.shape[0])):
                    acc_O_mn[r, None] = acc_O_mn[r, None].load() * row_scale[r]
        # P stays in registers: convert and reinterpret as the A operand of P V
        rP = cute.make_rmem_tensor_like(acc_S, self.mma_dtype)
        rP.store(acc_S.load().to(self.mma_dtype))
        P = Operand(acc_as_a_operand(rP))
        if cutlass.const_expr(self.late_v_wait and not self.kv8_early):
            cute.arch.cp_async_wait_group(1)  # V(n) has landed (K(n-1) may still be in flight)
            if cutlass.const_expr(self.kv8):
                self.widen_kv(loads.V)  # everyone is done with V(n+1) (the barrier at this block's top)
            cute.arch.barrier()
        if cutlass.const_expr(self.pv_split == 1):
            self.gemm(mma.tiled_mma, mma.acc_O, P, mma.Vt, True)
        else:
            # column blocks of O: the same MMAs, grouped so that one block's V fragments are live
            Vt = mma.Vt
            acc_p, b_p, bs_p, bv_p = (
                self._split_mode(t, mode)
                for t, mode in ((mma.acc_O, 2), (Vt.frag, 1), (Vt.smem, 1), (Vt.frag_view, 1))
            )
            for h in cutlass.range_constexpr(self.pv_split):
                acc_h = acc_p[None, None, (None, h)]
                Vt_h = Operand(
                    b_p[None, (None, h), None],
                    bs_p[None, (None, h), None],
                    bv_p[None, (None, h), None],
                    Vt.smem_copy,
                )
                self.gemm(mma.tiled_mma, acc_h, P, Vt_h, True)

    # ------------------------------------------------------------------ warps along the keys
    @cute.jit
    def merge_warps(self, softmax: OnlineSoftmax, acc_O: cute.Tensor, thr_mma, storage, warp_idx):
        """``warp_split_n``: merge the warps' partial rows (each over its own keys) into every warp's
        ``acc_O`` and ``softmax`` (as one softmax over all keys would have left them, before
        :meth:`OnlineSoftmax.finalize`). Each warp's row max and sum go to shared memory; every warp
        rescales its O rows by ``exp2((its max - the max) * scale)`` (0 for a warp that saw no key of
        the row), the warps add their rows into one fp32 tile in turn, and all read the sum back.
        The scratch is the K and Q buffers (every load has landed and been read)."""
        nw = self.cfg.num_warps
        dv = self.head_dim_v
        ld = dv + 8  # padded rows: an accumulator row's quads fall in different banks
        cute.arch.cp_async_wait_group(0)
        cute.arch.barrier()  # every warp is done with sK and sQ
        sAcc = cute.make_tensor(
            cute.recast_ptr(storage.sK.get_tensor(cute.make_layout(1)).iterator, dtype=Float32),
            cute.make_layout((self.tile_m, dv), stride=(ld, 1)),
        )
        sStat = cute.make_tensor(
            cute.recast_ptr(storage.sQ.get_tensor(cute.make_layout(1)).iterator, dtype=Float32),
            cute.make_layout((nw, self.tile_m, 2), stride=(2 * self.tile_m, 2, 1)),
        )
        tOcO_mn = acc_mn_view(thr_mma.partition_C(cute.make_identity_tensor((self.tile_m, dv))))
        acc_O_mn = acc_mn_view(acc_O)
        num_rows = cute.size(tOcO_mn.shape[0])
        lead = tOcO_mn[0, 0][1] == 0  # the lane of each quad that holds column 0 of its rows
        for r in cutlass.range_constexpr(num_rows):
            total = quad_allreduce_sum(softmax.row_sum[r])
            if lead:
                row = tOcO_mn[r, 0][0]
                sStat[warp_idx, row, 0] = softmax.row_max[r]
                sStat[warp_idx, row, 1] = total
        cute.arch.barrier()
        s = softmax.scale_log2
        for r in cutlass.range_constexpr(num_rows):
            row = tOcO_mn[r, 0][0]
            m_all = sStat[0, row, 0]
            for w in cutlass.range_constexpr(1, nw):
                m_all = cute.arch.fmax(m_all, sStat[w, row, 0])
            m_all_s = Float32(0.0) if m_all == -Float32.inf else m_all * s
            sum_all = Float32(0.0)
            for w in cutlass.range_constexpr(nw):
                sum_all += sStat[w, row, 1] * cute.math.exp2(sStat[w, row, 0] * s - m_all_s, fastmath=True)
            factor = cute.math.exp2(softmax.row_max[r] * s - m_all_s, fastmath=True)
            acc_O_mn[r, None] = acc_O_mn[r, None].load() * factor
            softmax.row_max[r] = m_all
            softmax.row_sum[r] = sum_all if lead else Float32(0.0)  # finalize sums the quad
        for w in cutlass.range_constexpr(nw):
            if warp_idx == w:
                for r in cutlass.range_constexpr(num_rows):
                    for c in cutlass.range_constexpr(cute.size(tOcO_mn.shape[1])):
                        row, col = tOcO_mn[r, c]
                        if cutlass.const_expr(w == 0):
                            sAcc[row, col] = acc_O_mn[r, c]
                        else:
                            sAcc[row, col] = sAcc[row, col] + acc_O_mn[r, c]
            cute.arch.barrier()
        for r in cutlass.range_constexpr(num_rows):
            for c in cutlass.range_constexpr(cute.size(tOcO_mn.shape[1])):
                row, col = tOcO_mn[r, c]
                acc_O_mn[r, c] = sAcc[row, col]

    # ------------------------------------------------------------------ FP8 K/V (kv_dtype)
    def _pages_V(self, pages):
        """Paged K/V: V's rows reuse K's looked-up pages when it has K's copy layout (equal head dims),
        else V looks its rows up itself (None)."""
        return pages if self.head_dim == self.head_dim_v else None

    def _kv8_row_pairs(self, d: int) -> bool:
        """Whether the 8-bit copy of rows of ``d`` elements pairs two rows per quarter warp
        (:meth:`_kv_gmem_copy`): 16-byte copies of 8 or more threads per row, a power-of-two row."""
        tpr, elems = kv8_copy(d, self.num_threads, self.tile_n)
        return elems == 16 and tpr % 8 == 0 and d & (d - 1) == 0

    def _staging_layout(self, d: int):
        """An 8-bit staging tile: ``(tile_n, d)`` row-major (each thread reads back what it copied);
        with row pairs (:meth:`_kv8_row_pairs`) an odd row's 16-byte chunks are swapped in halves
        (the row's lowest bit XORed into bit 2 of the chunk index), so that the 4 chunks of two rows
        that a quarter warp copies lie in 8 different bank groups."""
        flat = cute.make_layout((self.tile_n, d), stride=(d, 1))
        if not self._kv8_row_pairs(d):
            return flat
        return cute.make_composed_layout(cute.make_swizzle(1, 6, d.bit_length() - 1 - 6), 0, flat)

    def _kv_gmem_copy(self, d: int):
        """The global -> shared copy of K or V rows of ``d`` elements: the 16-bit one, or with FP8 K/V
        16-byte (else 8-byte) ``cp.async`` of 8-bit elements (:func:`fa4_sm120.configs.kv8_copy`)."""
        if not self.kv8:
            return self.gmem_copy(d, True)
        tpr, elems = kv8_copy(d, self.num_threads, self.tile_n)
        mode = cpasync.LoadCacheMode.GLOBAL if elems == 16 else cpasync.LoadCacheMode.ALWAYS
        atom = cute.make_copy_atom(
            cpasync.CopyG2SOp(cache_mode=mode), Float8E4M3FN, num_bits_per_copy=8 * elems
        )
        rows = self.num_threads // tpr
        if self._kv8_row_pairs(d):
            # A quarter warp (one phase of a 128-bit shared-memory access) takes chunks 4c..4c+3 of two
            # rows, not chunks 0..7 of one: the 16-bit chunks those widen into (2j, 2j+1 of 16 elements
            # j) then differ in the swizzle's row bit, where one row's chunks j and j+4 would hit the
            # same banks of their two 64-column atoms (two wavefronts per store instead of one).
            thr_layout = cute.make_layout(((2, rows // 2), (4, tpr // 4)), stride=((4, 2 * tpr), (1, 8)))
        else:
            thr_layout = cute.make_layout((rows, tpr), stride=(tpr, 1))
        return cute.make_tiled_copy_tv(atom, thr_layout, cute.make_layout((1, elems)))

    @cute.jit
    def widen_kv(self, src: KVSource):
        """FP8 K/V: this thread's elements of the 8-bit staging tile -> ``dtype`` in the 16-bit buffer
        (after the wait of the thread's own ``cp.async``; a barrier publishes them)."""
        for m in cutlass.range_constexpr(cute.size(src.tXsX.shape[1])):
            for k in cutlass.range_constexpr(cute.size(src.tXsX.shape[2])):
                src.tXsW[None, m, k].store(src.tXsX[None, m, k].load().to(self.mma_dtype))

    @cute.jit
    def q_to_f16(self, sQ: cute.Tensor, sQ16: cute.Tensor, gmem_copy, tidx, storage) -> Float32:
        """``kv8_f16``: the bf16 Q tile ``sQ`` -> fp16 in place (``sQ16``, the same bytes), times
        ``2^k``, the power of two that puts the tile's largest magnitude ``a`` just below ``2^15``
        (fp16 ends at 65,504; ``k`` clamped to [-126, 126]); returns ``2^-k``. Exact: bf16's 8
        significant bits fit fp16's 11, and only elements below ``a * 2^-39`` can lose bits (to fp16's
        subnormals), far below what a dot product with them could show. Zero rows stay zero; inf and
        NaN stay so and are left out of ``a`` (the other rows keep their scale). Each thread converts
        the elements it copied; the tile's maximum meets in shared memory (the 16-bit K buffer, which
        nothing has written yet)."""
        thr = gmem_copy.get_slice(tidx)
        tXsQ, tXsQ16 = thr.partition_D(sQ), thr.partition_D(sQ16)
        x = tXsQ.load().to(Float32)
        xr = cute.make_rmem_tensor(x.shape, Float32)
        xr.store(x)
        amax = Float32(0.0)  # of the finite elements: an inf or NaN row must not scale the others to 0
        for i in cutlass.range_constexpr(cute.size(xr)):
            a = cute.arch.fmax(xr[i], -xr[i])
            if a <= Float32(_F32_MAX):
                amax = cute.arch.fmax(amax, a)
        for i in cutlass.range_constexpr(5):
            amax = cute.arch.fmax(amax, cute.arch.shuffle_sync_bfly(amax, offset=1 << (4 - i)))
        nw = self.num_threads // 32
        red = cute.make_tensor(
            cute.recast_ptr(storage.sK.get_tensor(cute.make_layout(1)).iterator, dtype=Float32),
            cute.make_layout(nw),
        )
        if tidx % 32 == 0:
            red[tidx // 32] = amax
        cute.arch.barrier()
        for w in cutlass.range_constexpr(nw):
            amax = cute.arch.fmax(amax, red[w])
        # a < 2^e with e = (biased exponent) - 126 (a = 0: e = -126; inf or NaN: e = 129); the powers
        # of two built from their exponent bits
        bits = cute.make_rmem_tensor(3, Float32)
        bits[0] = amax
        ibits = cute.recast_tensor(bits, Int32)
        e = (ibits[0] >> 23) - 126
        k = cutlass.min(cutlass.max(15 - e, -126), 126)
        ibits[1] = (k + 127) << 23
        ibits[2] = (127 - k) << 23
        tXsQ16.store((xr.load() * bits[1]).to(Float16))
        return bits[2]

    def _split_mode(self, t: cute.Tensor, mode: int) -> cute.Tensor:
        """``t`` with mode ``mode`` divided into ``(size / pv_split, pv_split)``: index ``(None, h)``
        selects block ``h`` (flat indices ``[h * size / pv_split, (h + 1) * size / pv_split)``)."""
        tiler = [None] * cute.rank(t)
        tiler[mode] = cute.size(t.shape[mode]) // self.pv_split
        return cute.logical_divide(t, tuple(tiler))

    @cute.jit
    def gemm(
        self,
        tiled_mma: cute.TiledMma,
        acc: cute.Tensor,
        A: Operand,
        B: Operand,
        a_in_regs: cutlass.Constexpr[bool],
    ):
        """acc += A·B over the K mode, ldmatrix of k-block k+1 overlapping the MMAs of k-block k
        (A's ``ldmatrix`` skipped when ``a_in_regs``)."""
        num_k = cute.size(B.frag.shape[2])
        if cutlass.const_expr(not a_in_regs and not self.qk_prefetch):
            for k in cutlass.range_constexpr(num_k):  # each k-block's operands loaded just before its MMAs
                cute.copy(A.smem_copy, A.smem[None, None, k], A.frag_view[None, None, k])
                cute.copy(B.smem_copy, B.smem[None, None, k], B.frag_view[None, None, k])
                cute.gemm(tiled_mma, acc, A.frag[None, None, k], B.frag[None, None, k], acc)
            return
        if cutlass.const_expr(not a_in_regs):
            cute.copy(A.smem_copy, A.smem[None, None, 0], A.frag_view[None, None, 0])
        cute.copy(B.smem_copy, B.smem[None, None, 0], B.frag_view[None, None, 0])
        for k in cutlass.range_constexpr(num_k):
            if cutlass.const_expr(k + 1 < num_k):
                if cutlass.const_expr(not a_in_regs):
                    cute.copy(A.smem_copy, A.smem[None, None, k + 1], A.frag_view[None, None, k + 1])
                cute.copy(B.smem_copy, B.smem[None, None, k + 1], B.frag_view[None, None, k + 1])
            cute.gemm(tiled_mma, acc, A.frag[None, None, k], B.frag[None, None, k], acc)

    # ------------------------------------------------------------------ addressing
    @cute.jit
    def _kv_view(self, mX: cute.Tensor, batch_kv, head_kv, offset_k, d: cutlass.Constexpr[int]):
        """(rows, d) view of one KV head of one sequence (contiguous or varlen K/V; unused when paged)."""
        if cutlass.const_expr(self.cfg.paged_kv):
            return None
        if cutlass.const_expr(self.cfg.varlen_k):
            base = mX.iterator + offset_k * mX.stride[0] + head_kv * mX.stride[1]
            return cute.make_tensor(base, cute.make_layout((mX.shape[0], d), stride=(mX.stride[0], 1)))
        return mX[batch_kv, None, head_kv, None]

    @cute.jit
    def _kv_row_ptr(self, mX: cute.Tensor, loads: KVLoads, j):
        """Paged K/V: pointer to key ``j`` of sequence ``loads.batch_idx`` (any page size)."""
        page_slot, in_page = divmod(j, loads.page_div)
        page = loads.mPageTable[loads.batch_idx, page_slot]
        return mX.iterator + page * mX.stride[0] + in_page * mX.stride[1] + loads.head_kv * mX.stride[2]

    @cute.jit
    def _stride32(self, mX: cute.Tensor, mode: cutlass.Constexpr[int]):
        """Stride ``mode`` of a paged cache in 32 bits, a multiple of a 16-byte copy's elements (rows are
        16-byte aligned, fa4_torch.validate). Exact for the strides ``fa4_torch.validate`` lets through
        with ``FwdCodegen.page_offsets32`` (:data:`fa4_sm120.limits.PAGE_OFFSET32_LIMIT`)."""
        return cute.assume(Int32(mX.stride[mode]), divby=128 // mX.element_type.width)

    @cute.jit
    def lookup_pages(self, loads: KVLoads, n_block):
        """Paged K/V: ``loads.pages = (page, row in page)`` of each key row of block ``n_block`` that
        this thread copies (rows at or past ``seqlen_k`` are left as they are: never loaded); with
        ``FwdCodegen.page_tiles``, of the block's first row only, in element 0."""
        page, in_page = loads.pages
        if cutlass.const_expr(self.page_tiles):
            slot, in_page[0] = divmod(n_block * self.tile_n, loads.page_div)
            page[0] = loads.mPageTable[loads.batch_idx, slot]
        else:
            tXcX = loads.K.tXcX
            for m in cutlass.range_constexpr(cute.size(tXcX.shape[1])):
                j = n_block * self.tile_n + tXcX[0, m, 0][0]
                if j < loads.seqlen_k:
                    slot, in_page[m] = divmod(j, loads.page_div)
                    page[m] = loads.mPageTable[loads.batch_idx, slot]

    @cute.jit
    def _q_row_ptr(self, mX: cute.Tensor, row, tile: QTile):
        """Pointer to element 0 of (packed) query row ``row`` of the tile's batch and head: arithmetic
        from the strides (fa4_core.pack_gqa), never ``crd2idx`` on a composite mode."""
        if cutlass.const_expr(self.pack_gqa):
            q_idx, h = unpack_row(row, self.qhead_per_kvhead)
            head = tile.head_idx * self.qhead_per_kvhead + h
        else:
            q_idx, head = row, tile.head_idx
        if cutlass.const_expr(self.cfg.varlen_q):
            return mX.iterator + (tile.seq.offset_q + q_idx) * mX.stride[0] + head * mX.stride[1]
        return mX.iterator + tile.batch_idx * mX.stride[0] + q_idx * mX.stride[1] + head * mX.stride[2]

    # ------------------------------------------------------------------ loads
    @cute.jit
    def load_kv(
        self,
        loads: KVLoads,
        src: KVSource,
        n_block: Int32,
        check_rows: cutlass.Constexpr[bool],
        pages=None,
    ):
        """Block ``n_block`` of ``src`` (``loads.K`` or ``loads.V``) -> shared memory; with
        ``check_rows``, rows at or past ``seqlen_k`` are zero-filled instead (so 0·V and masked scores
        stay finite). Paged K/V: the rows' pages from ``pages`` (:meth:`lookup_pages` of this block)
        when given."""
        if cutlass.const_expr(self.page_tiles):
            self._load_page_tile(loads, src, n_block, check_rows, pages)
        elif cutlass.const_expr(self.cfg.paged_kv):
            self._load_rows(loads, src, n_block, pages)
        else:
            gX = cute.local_tile(src.mX_cur, (self.tile_n, src.d), (n_block, 0))
            self._copy_tile(loads, src, gX, n_block, check_rows)

    @cute.jit
    def _copy_tile(
        self, loads: KVLoads, src: KVSource, gX: cute.Tensor, n_block, check_rows: cutlass.Constexpr[bool]
    ):
        """The ``(tile_n, d)`` block ``gX`` of consecutive rows -> shared memory (rows at or past
        ``seqlen_k`` zero-filled with ``check_rows``)."""
        tXsX, tXcX = src.tXsX, src.tXcX
        tXgX = src.thr_copy.partition_S(gX)
        if cutlass.const_expr(check_rows):
            limit = loads.seqlen_k - n_block * self.tile_n
            for m in cutlass.range_constexpr(cute.size(tXsX.shape[1])):
                if tXcX[0, m, 0][0] < limit:
                    cute.copy(src.gmem_copy, tXgX[None, m, None], tXsX[None, m, None])
                else:
                    tXsX[None, m, None].fill(0)
        else:
            cute.copy(src.gmem_copy, tXgX, tXsX)

    @cute.jit
    def _load_page_tile(
        self, loads: KVLoads, src: KVSource, n_block, check_rows: cutlass.Constexpr[bool], pages
    ):
        """Paged K/V whose pages hold whole key tiles (``FwdCodegen.page_tiles``): block
        ``n_block`` is ``tile_n`` consecutive rows of one page, looked up once (``pages`` element 0
        when given, :meth:`lookup_pages`)."""
        mX = src.mX
        if cutlass.const_expr(pages is None):
            slot, in_page = divmod(n_block * self.tile_n, loads.page_div)
            page = loads.mPageTable[loads.batch_idx, slot]
        else:
            page, in_page = pages[0][0], pages[1][0]
        row_stride = self._stride32(mX, 1)
        offset = Uint64(Uint32(page)) * Uint64(Uint32(self._stride32(mX, 0)))
        offset = Int64(offset) + in_page * row_stride
        ptr = src.head_base + cute.assume(offset, divby=128 // mX.element_type.width)
        gX = cute.make_tensor(ptr, cute.make_layout((self.tile_n, src.d), stride=(row_stride, 1)))
        self._copy_tile(loads, src, gX, n_block, check_rows)

    @cute.jit
    def _load_rows(self, loads: KVLoads, src: KVSource, n_block, pages):
        """Paged K/V row by row: each row's page and row in it (from ``pages`` when given), rows at or
        past ``seqlen_k`` zero-filled."""
        mX, tXsX, tXcX = src.mX, src.tXsX, src.tXcX
        for m in cutlass.range_constexpr(cute.size(tXsX.shape[1])):
            row = tXcX[0, m, 0][0]
            j = n_block * self.tile_n + row
            if j < loads.seqlen_k:
                if cutlass.const_expr(self.page_offsets32):
                    if cutlass.const_expr(pages is None):
                        slot, in_page = divmod(j, loads.page_div)
                        page = loads.mPageTable[loads.batch_idx, slot]
                    else:
                        page, in_page = pages[0][m], pages[1][m]
                    # page and stride non-negative: zero-extended, one 32 x 32 -> 64-bit multiply
                    offset = Uint64(Uint32(page)) * Uint64(Uint32(self._stride32(mX, 0)))
                    offset = Int64(offset) + in_page * self._stride32(mX, 1)
                    ptr = src.head_base + cute.assume(offset, divby=128 // mX.element_type.width)
                elif cutlass.const_expr(pages is None):
                    ptr = self._kv_row_ptr(mX, loads, j)
                else:
                    ptr = (
                        mX.iterator
                        + pages[0][m] * mX.stride[0]
                        + pages[1][m] * mX.stride[1]
                        + loads.head_kv * mX.stride[2]
                    )
                gRow = cute.make_tensor(ptr, cute.make_layout((self.tile_n, src.d), stride=(0, 1)))
                cute.copy(src.gmem_copy, src.thr_copy.partition_S(gRow)[None, m, None], tXsX[None, m, None])
            else:
                tXsX[None, m, None].fill(0)

    @cute.jit
    def load_q(self, mQ, sQ, gmem_copy, tile: QTile, packed_len):
        """The Q tile -> shared memory, rows past ``packed_len`` zero-filled."""
        m_block = tile.m_block
        thr_copy = gmem_copy.get_slice(tile.tidx)
        tXsX = thr_copy.partition_D(sQ)
        tXcX = thr_copy.partition_S(cute.make_identity_tensor((self.tile_m, self.head_dim)))
        for m in cutlass.range_constexpr(cute.size(tXsX.shape[1])):
            row = m_block * self.tile_m + tXcX[0, m, 0][0]
            if row < packed_len:
                # a (tile_m, d) view whose every row is this one: the thread's row m slice is it
                gRow = cute.make_tensor(
                    self._q_row_ptr(mQ, row, tile),
                    cute.make_layout((self.tile_m, self.head_dim), stride=(0, 1)),
                )
                cute.copy(gmem_copy, thr_copy.partition_S(gRow)[None, m, None], tXsX[None, m, None])
            else:
                tXsX[None, m, None].fill(0)

    # ------------------------------------------------------------------ stores
    @cute.jit
    def _lse_index(self, row, tile: QTile):
        if cutlass.const_expr(self.pack_gqa):
            q_idx, h = unpack_row(row, self.qhead_per_kvhead)
            head = tile.head_idx * self.qhead_per_kvhead + h
        else:
            q_idx, head = row, tile.head_idx
        if cutlass.const_expr(self.cfg.varlen_q):
            return (head, tile.seq.offset_q + q_idx)
        return (tile.batch_idx, head, q_idx)

    @cute.jit
    def store_lse(self, lse, mLSE, thr_mma, tile: QTile, packed_len):
        """The lane holding column 0 of each of its rows writes the row's LSE."""
        m_block = tile.m_block
        cO = cute.make_identity_tensor((self.tile_m, self.head_dim_v))
        tOcO_mn = acc_mn_view(thr_mma.partition_C(cO))
        if tOcO_mn[0, 0][1] == 0:
            for r in cutlass.range_constexpr(cute.size(tOcO_mn.shape[0])):
                row = m_block * self.tile_m + tOcO_mn[r, 0][0]
                if row < packed_len:
                    idx = self._lse_index(row, tile)
                    if cutlass.const_expr(self.cfg.split_kv):
                        mLSE[(tile.split_idx, *idx)] = lse[r]
                    else:
                        mLSE[idx] = lse[r]

    @cute.jit
    def store_o_partial(self, acc_O, mO, thr_mma, tile: QTile, packed_len):
        """Split-KV: fp32 partial O straight from the accumulator registers (two adjacent columns per
        store), rows addressed arithmetically."""
        m_block, split_idx = tile.m_block, tile.split_idx
        cO = cute.make_identity_tensor((self.tile_m, self.head_dim_v))
        tOcO_mn = acc_mn_view(thr_mma.partition_C(cO))
        acc_O_mn = acc_mn_view(acc_O)
        mO_s = (
            mO[split_idx, None, None, None, None]
            if cutlass.const_expr(not self.cfg.varlen_q)
            else mO[split_idx, None, None, None]
        )
        for r in cutlass.range_constexpr(cute.size(tOcO_mn.shape[0])):
            row = m_block * self.tile_m + tOcO_mn[r, 0][0]
            if row < packed_len:
                gRow = cute.make_tensor(
                    self._q_row_ptr(mO_s, row, tile),
                    cute.make_layout((self.head_dim_v,), stride=(1,)),
                )
                for c in cutlass.range_constexpr(cute.size(tOcO_mn.shape[1])):
                    gRow[tOcO_mn[0, c][1]] = acc_O_mn[r, c]

    @cute.jit
    def epilogue(self, acc_O, mO, sO, tiled_mma, gmem_copy_O, tile: QTile, packed_len):
        """O / row_sum (already scaled) -> 16 bits -> shared memory -> global (step 3)."""
        tidx, m_block = tile.tidx, tile.m_block
        rO = cute.make_rmem_tensor_like(acc_O, self.dtype)
        rO.store(acc_O.load().to(self.dtype))
        # every warp is done reading sQ (O reuses its buffer)
        cute.arch.barrier()
        # registers -> shared, partitioned like the mma.sync accumulator (plain stores); with
        # warp_split_n every warp holds the merged O and warp 0 writes it
        smem_copy_O = cute.make_tiled_copy_C(
            cute.make_copy_atom(cute.nvgpu.CopyUniversalOp(), self.dtype), tiled_mma
        )
        if cutlass.const_expr(self.warp_split_n):
            if tidx < 32:
                thr_smem_O = smem_copy_O.get_slice(tidx)
                cute.copy(smem_copy_O, thr_smem_O.retile(rO), thr_smem_O.partition_D(sO))
        else:
            thr_smem_O = smem_copy_O.get_slice(tidx)
            cute.copy(smem_copy_O, thr_smem_O.retile(rO), thr_smem_O.partition_D(sO))
        cute.arch.barrier()
        # shared -> registers (128-bit) -> global, rows addressed arithmetically
        cO = cute.make_identity_tensor((self.tile_m, self.head_dim_v))
        thr_copy_O = gmem_copy_O.get_slice(tidx)
        tOsO = thr_copy_O.partition_S(sO)
        tOrO = cute.make_rmem_tensor_like(tOsO, self.dtype)
        cute.autovec_copy(tOsO, tOrO)
        tOcO = thr_copy_O.partition_S(cO)
        for m in cutlass.range_constexpr(cute.size(tOsO.shape[1])):
            row = m_block * self.tile_m + tOcO[0, m, 0][0]
            if row < packed_len:
                gRow = cute.make_tensor(
                    self._q_row_ptr(mO, row, tile),
                    cute.make_layout((self.tile_m, self.head_dim_v), stride=(0, 1)),
                )
                cute.copy(gmem_copy_O, tOrO[None, m, None], thr_copy_O.partition_D(gRow)[None, m, None])

    # ------------------------------------------------------------------ compile without tensors
    @staticmethod
    def fake_args(cfg: FwdConfig) -> tuple:
        """Placeholders for :meth:`__call__`, shaped by the config's flags: ``(mQ, mK, mV, mO, mLSE,
        softmax_scale, window_left, window_right, softcap, max_seqlen_q, num_splits, cu_seqlens_q,
        cu_seqlens_k, seqused_q, seqused_k, page_table, kv_batch_idx, sink, k_descale, v_descale,
        stream)``; absent optional
        tensors are ``None``."""
        dt = DTYPES[cfg.dtype]
        sym = cute.sym_int
        b, bkv, sq, sk, hq, hkv, tq, tk, npages, psize, maxp, ns = (sym() for _ in range(12))
        q_rows = (tq,) if cfg.varlen_q else (b, sq)
        if cfg.paged_kv:
            kv_rows = (npages, psize)
        elif cfg.varlen_k:
            kv_rows = (tk,)
        else:
            kv_rows = (bkv if cfg.kv_batch_idx else b, sk)
        q = fake_tensor(dt, (*q_rows, hq, cfg.head_dim))
        # FP8 K/V: strides in multiples of 16 elements (16-byte cp.async)
        kv_dt, kv_div = (Float8E4M3FN, 16) if cfg.kv_dtype is not None else (dt, 8)
        k = fake_tensor(kv_dt, (*kv_rows, hkv, cfg.head_dim), divisibility=kv_div)
        v = fake_tensor(kv_dt, (*kv_rows, hkv, cfg.head_dim_v), divisibility=kv_div)
        lse_dims = (hq, tq) if cfg.varlen_q else (b, hq, sq)
        if cfg.split_kv:
            o = fake_tensor(Float32, (ns, *q_rows, hq, cfg.head_dim_v), divisibility=4)
            lse = fake_tensor(Float32, (ns, *lse_dims), divisibility=1)
        else:
            o = fake_tensor(dt, (*q_rows, hq, cfg.head_dim_v))
            lse = fake_tensor(Float32, lse_dims, divisibility=1)
        nb1 = sym()
        cu_q = fake_tensor(Int32, (nb1,), divisibility=1) if cfg.varlen_q else None
        cu_k = fake_tensor(Int32, (nb1,), divisibility=1) if cfg.varlen_k else None
        used_q = fake_tensor(Int32, (b,), divisibility=1) if cfg.has_seqused_q else None
        used_k = fake_tensor(Int32, (b,), divisibility=1) if cfg.has_seqused_k else None
        page_table = fake_tensor(Int32, (b, maxp), divisibility=1) if cfg.paged_kv else None
        kv_batch = fake_tensor(Int32, (b,), divisibility=1) if cfg.kv_batch_idx else None
        sink = fake_tensor(Float32, (hq,), divisibility=1) if cfg.has_sink else None
        k_descale = v_descale = None
        if cfg.kv_dtype is not None:  # (batch, nheads_kv), any strides (0: one scale broadcast)
            k_descale = cute.runtime.make_fake_tensor(
                Float32, (b, hkv), stride=(cute.sym_int64(), cute.sym_int64()), assumed_align=4
            )
            v_descale = cute.runtime.make_fake_tensor(
                Float32, (b, hkv), stride=(cute.sym_int64(), cute.sym_int64()), assumed_align=4
            )
        return (
            q, k, v, o, lse, Float32(1.0), Int32(-1), Int32(-1), Float32(0.0), Int32(1), Int32(1),
            cu_q, cu_k, used_q, used_k, page_table, kv_batch, sink, k_descale, v_descale, fake_stream(),
        )  # fmt: skip
