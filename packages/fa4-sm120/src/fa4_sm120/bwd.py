"""FlashAttention backward of the mma.sync family (dK, dV, dQ), for SM120/SM121 (and SM80-SM90 in
compat mode).

Tensors (16-byte aligned base pointers, last dimension contiguous, other strides multiples of 8
elements; fp16 or bf16 of one dtype unless noted):

* inputs ``mQ (batch, seqlen_q, nheads, head_dim)``, ``mK (batch, seqlen_k, nheads_kv, head_dim)``,
  ``mV (batch, seqlen_k, nheads_kv, head_dim_v)``, ``mdO (batch, seqlen_q, nheads, head_dim_v)``;
* from the preprocess (:mod:`fa4_sm120.bwd_pre_post`), fp32, rows padded to ``seqlen_q_pad``
  (a multiple of ``tile_m``): ``mLSElog2 (batch, nheads, seqlen_q_pad)`` (``lse * log2(e)``,
  ``+inf`` for a row that sees no key and for padding rows), ``mdPsum (batch, nheads, seqlen_q_pad)``
  (``rowsum(dO * O) - dLSE``, 0 on padding rows);
* outputs ``mdK (batch, seqlen_k, nheads_kv, head_dim)``, ``mdV (batch, seqlen_k, nheads_kv,
  head_dim_v)`` (16-bit, written once per CTA, already summed over the query heads of a KV head),
  ``mdQaccum (batch, nheads, seqlen_q_pad, head_dim)`` fp32, zeroed by the caller, receives
  ``dS·K`` **unscaled** (the postprocess multiplies by ``softmax_scale`` and converts);
* deterministic mode only: ``mSem (batch, nheads, num_m_blocks)`` int32, zeroed by the caller.

Features: any ``seqlen_q``/``seqlen_k`` >= 1, causal (bottom-right aligned), local windows
(``is_local``: runtime ``window_left``/``window_right``, the host folds causal into ``right = 0``),
softcap (``has_softcap``: ``S = softcap * tanh(S * scale / softcap)`` recomputed, ``dS *= 1 -
tanh²``), MHA/GQA/MQA (one CTA owns a key block of one KV head and walks every query head of its
group, so dK/dV need no extra buffer and no reduction), deterministic dQ, varlen:

* ``varlen_q``: ``mQ/mdO (total_q, nheads, d)`` with int32 ``cu_seqlens_q (batch + 1)``; the fp32
  buffers are then ``mLSElog2/mdPsum (1, nheads, total_q_pad)`` and ``mdQaccum (1, nheads,
  total_q_pad, head_dim)``, row ``offset_q + i``; ``varlen_k``: ``mK/mV/mdK/mdV (total_k, nheads_kv,
  d)`` with ``cu_seqlens_k``; ``seqused_q/k (batch)`` override the lengths. With ``varlen_q`` or
  ``seqused_q`` the rows at or past the sequence's length are never read from the LSE/dPsum buffers
  (P is 0 there) and get no dQ addition; the grid is sized on ``max_seqlen_k``.

A sink (learnable_sink) needs nothing for dQ/dK/dV: its term is inside the LSE. Its gradient is
``-sum_rows exp(sink - lse) * (D - dLSE)`` with ``D = rowsum(dO * O)``; the stored 16-bit O makes the
preprocess's D too coarse for a sum over every row (up to 1.3x the bound of docs/testing.md on random inputs),
so with ``has_dsink`` the kernel also accumulates the exact ``D = rowsum(P * dP)`` (fp32, from the
recomputed P and dP) into ``mPdPsum (sdp_wn, batch, nheads, seqlen_q_pad)``, zeroed by the caller:
one slice per warp column, so that every element gets one addition per CTA and the deterministic
mode's ordering covers it too; the caller sums the slices.

Grid: ``(key blocks, KV heads, batch)``; with ``longest_first`` (causal calls without a window) a 1-D
grid in :class:`fa4_core.tile_scheduler.BwdLongestFirstScheduler`'s order: the first key blocks (which
see every query block after them) of a group of (batch, head) pairs first, the group's pairs being as
many as the caller's ``lpt_group`` (their Q, dO and dQ accumulator a share of L2). ``lpt_group`` is
ignored otherwise.

Algorithm, per CTA (key block ``n_block`` of KV head ``head_kv``, batch ``batch_idx``):

1. Load K and V of the key block (``cp.async`` 128-bit into swizzled shared memory, rows past
   ``seqlen_k`` zero-filled). ``acc_dK = acc_dV = 0`` (fp32 registers).
2. For each query head of the group and each query block ``m`` that sees a key of this block
   (causal: ``m >= m_block_min``), with Q(m) and dO(m) already loading:

   a. ``S = Q·Kᵀ`` (``mma.sync m16n8k16``, operands through ``ldmatrix``); softcap; mask (causal
      diagonal, window edges, ``seqlen_k``) only on the blocks that need it
      (:class:`fa4_core.block_info.BlockInfoBwd`); ``P = exp2(S·scale·log2e − LSElog2)``.
   b. ``P`` -> shared memory (16-bit) through a copy partitioned exactly like the accumulator
      (``make_tiled_copy_C`` over plain stores: never ``stmatrix``, wgmma's layout).
   c. ``dP = dO·Vᵀ``; ``dS = P ⊙ (dP − dPsum)`` (softcap: ``⊙ (1 − tanh²)``) -> 16-bit, to shared memory the same way (and, when
      each warp owns whole rows, ``mma_warps_n == 1``, kept in registers as the A operand of ``dQ``).
   d. ``dV += Pᵀ·dO`` and ``dK += dSᵀ·Q`` (both operands through ``ldmatrix.trans`` of the
      transposed shared views); then the next block's Q and dO start loading. With ``early_loads``
      they are two ``cp.async`` groups: dK runs first and the next Q loads as soon as every warp is
      done with sQ, the next dO once dV is done with sdO; S waits for Q only, dP for dO.
   e. ``dQ = dS·K`` (A from registers, or from ``sdS`` when warps also split N; ``Kᵀ`` through
      ``ldmatrix.trans``), added to ``mdQaccum``
      with ``red.global.add.f32`` (``vector_dq_red``: ``red.global.add.v2.f32`` on each pair of
      adjacent columns, sm_90+). Deterministic mode: the CTAs of one query block add in ascending
      ``n_block`` order (from the forward's ``n_block_min`` of that block), serialised by a per-(batch, head, m_block) counter (acquire spin, release
      increment), so the fp32 sums are bit-identical run to run.
3. Epilogue: ``dK *= softmax_scale``; dK and dV go registers -> shared (accumulator-layout plain
   stores, into the K/V buffers) -> global (128-bit stores, rows past ``seqlen_k`` skipped).

Warps: one tiled MMA of ``mma_warps_m x mma_warps_n`` warps serves every product, unless
``sdp_warps_n`` gives S and dP (with their P/dS stores, masks and row statistics) a grid of their own,
``sdp_wm x sdp_wn``; dK, dV and dQ keep ``mma_warps_m x mma_warps_n`` (the products meet only in
shared memory, dS then reaching dQ through ``sdS``). ``mma_warps_n = 1`` (the d <= 160 and 192/128
rows) splits M only; the large head dims (192/192, 224, 256) need tiles of 32 rows to fit 99 KB, and 4
warps over 32 rows means ``2 x 2``.

Constraints: ``head_dim``/``head_dim_v`` multiples of 32 and of ``16 * mma_warps_n``; ``tile_m``,
``tile_n`` multiples of 32 and of ``16 * mma_warps_m`` (the M of the S/dP/dQ and dK/dV products), and
of the rows one 128-bit copy step of ``num_threads`` covers; shared memory
``bwd_smem_bytes(...) = 2 B * (tile_m * (d + dv) + tile_n * (d + dv) + 2 * tile_m * tile_n)`` within
the arch cap (101,376 B on SM120).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32
from cutlass._mlir import ir
from cutlass._mlir.dialects import vector as mlir_vector
from cutlass.cute.nvgpu import warp

from fa4_core.block_info import BlockInfo, BlockInfoBwd
from fa4_core.errors import UnsupportedConfigError, unsupported
from fa4_core.layout import acc_as_a_operand, acc_mn_view, quad_allreduce_sum, rebase_opaque
from fa4_core.mask import apply_mask
from fa4_core.seqlen_info import SeqlenInfoQK
from fa4_core.softmax import LOG2_E
from fa4_core.tile_scheduler import BwdLongestFirstScheduler
from fa4_sm120.configs import BwdConfig
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
)
from fa4_sm120.smem import bwd_smem_bytes

__all__ = [
    "BwdConfig",
    "FlashAttentionBackwardSm120",
    "bwd_smem_bytes",
    "BWD_HEAD_DIMS",
    "DTYPES",
    "fake_bwd_args",
    "compile_bwd",
]

BWD_HEAD_DIMS = HEAD_DIMS  # every head dim of the forward


def _check_adjacent_pairs(layout) -> None:
    """Trace-time check of ``vector_dq_red``: elements ``2j, 2j + 1`` of the dQ accumulator's
    partition of global memory are adjacent columns (first mode of size 2 and stride 1)."""
    pair_mode = (layout.shape[0][0], layout.stride[0][0])
    if pair_mode != (2, 1):
        raise UnsupportedConfigError(
            f"vector_dq_red: the dQ accumulator's first mode is {pair_mode} (size, stride), not a pair "
            "of adjacent columns (2, 1)"
        )


@dataclass(frozen=True)
class TileLoad:
    """Loads of ``(tile_m, d)`` tiles of one global tensor (Q or dO): the tensor, its global -> shared
    copy and this thread's slice of it, the thread's shared-memory destination and coordinates."""

    mX: Any
    gmem_copy: Any
    thr_copy: Any
    tXsX: Any
    tXcX: Any


@dataclass(frozen=True)
class QdOLoads:
    """The Q and dO loads of a CTA (a named bundle of trace-time values, read by the inlined
    :meth:`FlashAttentionBackwardSm120.load_q_do`), with its batch and the batch's query length and
    row offset."""

    Q: TileLoad
    dO: TileLoad
    batch_idx: Any
    seqlen_q: Any
    offset_q: Any


class FlashAttentionBackwardSm120(MmaSyncKernel):
    """The main backward kernel: ``FlashAttentionBackwardSm120.compile(cfg, ...)``, or
    ``cute.compile(FlashAttentionBackwardSm120(cfg), ...)`` over real arguments."""

    def __init__(self, cfg: BwdConfig):
        super().__init__(cfg)
        self.tile_m, self.tile_n = cfg.tile_m, cfg.tile_n
        self.head_dim, self.head_dim_v = cfg.head_dim, cfg.head_dim_v
        self.num_threads = cfg.num_threads
        self.is_causal = cfg.is_causal
        self.is_local = cfg.is_local
        self.deterministic = cfg.deterministic

    # ------------------------------------------------------------------ constraints
    @staticmethod
    def can_implement(cfg: BwdConfig) -> None:
        """Raise :class:`UnsupportedConfigError` naming the first violated constraint."""
        check_dtype(cfg.dtype)
        check_head_dims({"head_dim": cfg.head_dim, "head_dim_v": cfg.head_dim_v})
        if cfg.num_threads % 32 or not 64 <= cfg.num_threads <= 256:
            raise unsupported("num_threads", cfg.num_threads, "a multiple of 32 in [64, 256]")
        if cfg.mma_warps_n not in (1, 2, 4) or cfg.num_warps % cfg.mma_warps_n:
            raise unsupported(
                "mma_warps_n", cfg.mma_warps_n, f"1, 2 or 4, dividing num_warps = {cfg.num_warps}"
            )
        if cfg.sdp_warps_n not in (0, 1, 2, 4, 8) or cfg.num_warps % cfg.sdp_wn:
            raise unsupported(
                "sdp_warps_n",
                cfg.sdp_warps_n,
                f"0 (as mma_warps_n), 1, 2, 4 or 8, dividing num_warps = {cfg.num_warps}",
            )
        # S and dP on their own grid: M = tile_m, N = tile_n
        if cfg.tile_m % (16 * cfg.sdp_wm):
            raise unsupported(
                "tile_m", cfg.tile_m, f"a multiple of 16 * (num_warps / sdp_warps_n) = {16 * cfg.sdp_wm}"
            )
        if cfg.tile_n % (16 * cfg.sdp_wn):
            raise unsupported("tile_n", cfg.tile_n, f"a multiple of 16 * sdp_warps_n = {16 * cfg.sdp_wn}")
        # M of the MMAs: tile_m (S, dP, dQ) and tile_n (dK, dV); N: tile_n, head_dim, head_dim_v
        m_step, n_step = 16 * cfg.mma_warps_m, 16 * cfg.mma_warps_n
        for name, t in (("tile_m", cfg.tile_m), ("tile_n", cfg.tile_n)):
            if t % 32 or t % m_step:
                raise unsupported(name, t, f"a multiple of 32 and of 16 * mma_warps_m = {m_step}")
        for name, t in (("tile_n", cfg.tile_n), ("head_dim", cfg.head_dim), ("head_dim_v", cfg.head_dim_v)):
            if t % n_step:
                raise unsupported(name, t, f"a multiple of 16 * mma_warps_n = {n_step}")
        # the 128-bit tile copies move num_threads / (atom_k / 8) rows per step
        for rows_name, rows in (("tile_m", cfg.tile_m), ("tile_n", cfg.tile_n)):
            for d in (cfg.head_dim, cfg.head_dim_v):
                step = cfg.num_threads // (atom_k(d) // 8)
                if rows % step:
                    raise unsupported(
                        rows_name, rows, f"a multiple of {step} (rows per copy step of {cfg.num_threads} "
                        f"threads at head dim {d})"
                    )  # fmt: skip
        check_copy_threads(cfg.num_threads, {"head_dim": cfg.head_dim, "head_dim_v": cfg.head_dim_v})
        if cfg.vector_dq_red and cfg.arch in ("sm_80", "sm_86"):
            raise unsupported("vector_dq_red", True, f"targets sm_90 and up (red on vectors), not {cfg.arch}")
        check_smem_fits(
            f"backward tile (tile_m={cfg.tile_m}, tile_n={cfg.tile_n}) with head_dim={cfg.head_dim}, head_dim_v={cfg.head_dim_v}",
            cfg.smem_bytes,
            cfg.arch,
        )

    # ------------------------------------------------------------------ host-side setup (traced)
    @cute.jit
    def __call__(
        self,
        mQ: cute.Tensor,
        mK: cute.Tensor,
        mV: cute.Tensor,
        mdO: cute.Tensor,
        mLSElog2: cute.Tensor,
        mdPsum: cute.Tensor,
        mdK: cute.Tensor,
        mdV: cute.Tensor,
        mdQaccum: cute.Tensor,
        mSem: cute.Tensor,
        softmax_scale: Float32,
        window_left: Int32,
        window_right: Int32,
        softcap: Float32,
        max_seqlen_k: Int32,
        lpt_group: Int32,
        mCuSeqlensQ,
        mCuSeqlensK,
        mSeqUsedQ,
        mSeqUsedK,
        mPdPsum,
        stream,
    ):
        d, dv, tm, tn = self.head_dim, self.head_dim_v, self.tile_m, self.tile_n
        sQ_layout = self.smem_layout(tm, d)
        sdO_layout = self.smem_layout(tm, dv)
        sK_layout = self.smem_layout(tn, d)
        sV_layout = self.smem_layout(tn, dv)
        sP_layout = self.smem_layout(tm, tn)

        @cute.struct
        class SharedStorage:
            sQ: cute.struct.Align[cute.struct.MemRange[self.dtype, cute.cosize(sQ_layout)], 1024]
            sdO: cute.struct.Align[cute.struct.MemRange[self.dtype, cute.cosize(sdO_layout)], 1024]
            sK: cute.struct.Align[cute.struct.MemRange[self.dtype, cute.cosize(sK_layout)], 1024]
            sV: cute.struct.Align[cute.struct.MemRange[self.dtype, cute.cosize(sV_layout)], 1024]
            sP: cute.struct.Align[cute.struct.MemRange[self.dtype, cute.cosize(sP_layout)], 1024]
            sdS: cute.struct.Align[cute.struct.MemRange[self.dtype, cute.cosize(sP_layout)], 1024]

        if cutlass.const_expr(SharedStorage.size_in_bytes() != self.cfg.smem_bytes):
            raise UnsupportedConfigError(
                f"shared storage is {SharedStorage.size_in_bytes()} B but bwd_smem_bytes says "
                f"{self.cfg.smem_bytes} B for {self.cfg}"
            )
        wm, wn = self.cfg.mma_warps_m, self.cfg.mma_warps_n
        tiled_mma = cute.make_tiled_mma(
            warp.MmaF16BF16Op(self.dtype, Float32, (16, 8, 16)),
            (wm, wn, 1),
            permutation_mnk=(wm * 16, wn * 16, 16),
        )
        tiled_mma_sdp = tiled_mma  # S and dP: the same grid unless sdp_warps_n says otherwise
        if cutlass.const_expr(self.cfg.sdp_wn != wn):
            swm, swn = self.cfg.sdp_wm, self.cfg.sdp_wn
            tiled_mma_sdp = cute.make_tiled_mma(
                warp.MmaF16BF16Op(self.dtype, Float32, (16, 8, 16)),
                (swm, swn, 1),
                permutation_mnk=(swm * 16, swn * 16, 16),
            )
        cfg = self.cfg
        hkv_axis = 1 if cutlass.const_expr(cfg.varlen_k) else 2
        num_batch = mCuSeqlensQ.shape[0] - 1 if cutlass.const_expr(cfg.varlen_q) else mQ.shape[0]
        num_n_blocks = cute.ceil_div(max_seqlen_k, tn)
        grid = (num_n_blocks, mK.shape[hkv_axis], num_batch)
        if cutlass.const_expr(cfg.longest_first):
            grid = BwdLongestFirstScheduler().grid(num_n_blocks, mK.shape[hkv_axis], num_batch)
        scale_log2 = softmax_scale * LOG2_E
        softcap_scale = softmax_scale
        if cutlass.const_expr(cfg.has_softcap):
            # S is capped first (in softmax units): P = exp2(capped * log2e - LSElog2)
            scale_log2 = Float32(LOG2_E)
            softcap_scale = softmax_scale / softcap
        self.kernel(
            mQ,
            mK,
            mV,
            mdO,
            mLSElog2,
            mdPsum,
            mdK,
            mdV,
            mdQaccum,
            mSem,
            softmax_scale,
            scale_log2,
            softcap_scale,
            softcap,
            window_left,
            window_right,
            num_batch,
            num_n_blocks,
            lpt_group,
            mCuSeqlensQ,
            mCuSeqlensK,
            mSeqUsedQ,
            mSeqUsedK,
            mPdPsum,
            sQ_layout,
            sdO_layout,
            sK_layout,
            sV_layout,
            sP_layout,
            self.gmem_copy(d, True),
            self.gmem_copy(dv, True),
            self.gmem_copy(d, False),
            self.gmem_copy(dv, False),
            tiled_mma,
            tiled_mma_sdp,
            SharedStorage,
        ).launch(
            grid=grid,
            block=[self.num_threads, 1, 1],
            smem=max(SharedStorage.size_in_bytes(), self.cfg.launch_smem),
            stream=stream,
        )

    # ------------------------------------------------------------------ the kernel
    @cute.kernel
    def kernel(
        self,
        mQ: cute.Tensor,
        mK: cute.Tensor,
        mV: cute.Tensor,
        mdO: cute.Tensor,
        mLSElog2: cute.Tensor,
        mdPsum: cute.Tensor,
        mdK: cute.Tensor,
        mdV: cute.Tensor,
        mdQaccum: cute.Tensor,
        mSem: cute.Tensor,
        softmax_scale: Float32,
        scale_log2: Float32,
        softcap_scale: Float32,
        softcap: Float32,
        window_left: Int32,
        window_right: Int32,
        num_batch: Int32,
        num_n_blocks: Int32,
        lpt_group: Int32,
        mCuSeqlensQ,
        mCuSeqlensK,
        mSeqUsedQ,
        mSeqUsedK,
        mPdPsum,
        sQ_layout: cute.ComposedLayout,
        sdO_layout: cute.ComposedLayout,
        sK_layout: cute.ComposedLayout,
        sV_layout: cute.ComposedLayout,
        sP_layout: cute.ComposedLayout,
        gmem_copy_d: cute.TiledCopy,
        gmem_copy_dv: cute.TiledCopy,
        gmem_store_d: cute.TiledCopy,
        gmem_store_dv: cute.TiledCopy,
        tiled_mma: cute.TiledMma,
        tiled_mma_sdp: cute.TiledMma,
        SharedStorage: cutlass.Constexpr,
    ):
        cfg = self.cfg
        d, dv, tm, tn = self.head_dim, self.head_dim_v, self.tile_m, self.tile_n
        tidx, _, _ = cute.arch.thread_idx()
        n_block, head_kv, batch_idx = cute.arch.block_idx()
        if cutlass.const_expr(cfg.longest_first):
            hkv = mK.shape[1 if cutlass.const_expr(cfg.varlen_k) else 2]
            n_block, head_kv, batch_idx = BwdLongestFirstScheduler().tile(
                n_block, num_n_blocks, hkv, num_batch, lpt_group
            )
        # ---------------- lengths and offsets of this batch (fa4_core.seqlen_info)
        sq_static = None if cutlass.const_expr(cfg.varlen_q) else mQ.shape[1]
        sk_static = None if cutlass.const_expr(cfg.varlen_k) else mK.shape[1]
        seq = SeqlenInfoQK.create(
            batch_idx, num_batch, sq_static, sk_static, mCuSeqlensQ, mCuSeqlensK, mSeqUsedQ, mSeqUsedK
        )
        seqlen_q, seqlen_k = seq.seqlen_q, seq.seqlen_k
        offset_q = seq.offset_q
        b_acc = batch_idx  # batch index of the LSE/dPsum/dQaccum buffers (one packed batch if varlen)
        if cutlass.const_expr(cfg.varlen_q):
            b_acc = Int32(0)

        # ---------------- query blocks that see a key of this block, and the mask-free ones among
        # them (fa4_core.block_info.BlockInfoBwd: the transpose of the forward's key-block ranges)
        wl = window_left if cutlass.const_expr(self.is_local) else None
        wr = window_right if cutlass.const_expr(self.is_local) else None
        block_info = BlockInfoBwd(tm, tn, self.is_causal, self.is_local)
        m_block_min, m_block_max = block_info.m_block_range(n_block, seqlen_q, seqlen_k, wl, wr)
        m_free_lo, m_free_hi = block_info.mask_free_m_range(n_block, seqlen_q, seqlen_k, wl, wr)

        # ---------------- shared memory
        smem = cutlass.memory.SmemAllocator()
        storage = smem.allocate(SharedStorage)
        sQ = storage.sQ.get_tensor(sQ_layout)
        sdO = storage.sdO.get_tensor(sdO_layout)
        sK = storage.sK.get_tensor(sK_layout)
        sV = storage.sV.get_tensor(sV_layout)
        sP = storage.sP.get_tensor(sP_layout)
        sdS = storage.sdS.get_tensor(sP_layout)
        # transposed views (mode 0 <-> mode 1) for the Pᵀ·dO, dSᵀ·Q and dS·K products
        sQt = cute.composition(sQ, cute.make_layout((d, tm), stride=(tm, 1)))
        sdOt = cute.composition(sdO, cute.make_layout((dv, tm), stride=(tm, 1)))
        sKt = cute.composition(sK, cute.make_layout((d, tn), stride=(tn, 1)))
        sPt = cute.composition(sP, cute.make_layout((tn, tm), stride=(tm, 1)))
        sdSt = cute.composition(sdS, cute.make_layout((tn, tm), stride=(tm, 1)))

        # ---------------- K, V of this block
        thr_copy_d = gmem_copy_d.get_slice(tidx)
        thr_copy_dv = gmem_copy_dv.get_slice(tidx)
        gK = cute.local_tile(
            self._rows(mK, batch_idx, head_kv, seq.offset_k, d, cfg.varlen_k), (tn, d), (n_block, 0)
        )
        gV = cute.local_tile(
            self._rows(mV, batch_idx, head_kv, seq.offset_k, dv, cfg.varlen_k), (tn, dv), (n_block, 0)
        )
        cKd = cute.make_identity_tensor((tn, d))
        cKdv = cute.make_identity_tensor((tn, dv))
        self.load_tile(
            gmem_copy_d, thr_copy_d.partition_S(gK), thr_copy_d.partition_D(sK),
            thr_copy_d.partition_S(cKd), seqlen_k - n_block * tn,
        )  # fmt: skip
        self.load_tile(
            gmem_copy_dv, thr_copy_dv.partition_S(gV), thr_copy_dv.partition_D(sV),
            thr_copy_dv.partition_S(cKdv), seqlen_k - n_block * tn,
        )  # fmt: skip
        cute.arch.cp_async_commit_group()

        # ---------------- MMA partitions and smem -> register copies
        thr_mma = tiled_mma.get_slice(tidx)
        ldsm = warp.LdMatrix8x8x16bOp(transpose=False, num_matrices=4)
        ldsm_t = warp.LdMatrix8x8x16bOp(transpose=True, num_matrices=4)
        copy_A = cute.make_tiled_copy_A(cute.make_copy_atom(ldsm, self.dtype), tiled_mma)
        copy_B = cute.make_tiled_copy_B(cute.make_copy_atom(ldsm, self.dtype), tiled_mma)
        copy_At = cute.make_tiled_copy_A(cute.make_copy_atom(ldsm_t, self.dtype), tiled_mma)
        copy_Bt = cute.make_tiled_copy_B(cute.make_copy_atom(ldsm_t, self.dtype), tiled_mma)
        # S and dP (own grid with sdp_warps_n; the same objects otherwise)
        thr_mma_sdp, copy_A_sdp, copy_B_sdp = thr_mma, copy_A, copy_B
        if cutlass.const_expr(cfg.sdp_wn != cfg.mma_warps_n):
            thr_mma_sdp = tiled_mma_sdp.get_slice(tidx)
            copy_A_sdp = cute.make_tiled_copy_A(cute.make_copy_atom(ldsm, self.dtype), tiled_mma_sdp)
            copy_B_sdp = cute.make_tiled_copy_B(cute.make_copy_atom(ldsm, self.dtype), tiled_mma_sdp)

        acc_dK = cute.make_rmem_tensor(thr_mma.partition_shape_C((tn, d)), Float32)
        acc_dV = cute.make_rmem_tensor(thr_mma.partition_shape_C((tn, dv)), Float32)
        acc_dK.fill(0.0)
        acc_dV.fill(0.0)

        cS = cute.make_identity_tensor((tm, tn))
        tScS_mn = acc_mn_view(thr_mma_sdp.partition_C(cS))
        num_rows = cute.size(tScS_mn.shape[0])
        store_C = cute.make_tiled_copy_C(
            cute.make_copy_atom(cute.nvgpu.CopyUniversalOp(), self.dtype), tiled_mma
        )
        thr_store_C = store_C.get_slice(tidx)
        store_C_sdp, thr_store_C_sdp = store_C, thr_store_C  # P and dS: stored as S and dP are laid out
        if cutlass.const_expr(cfg.sdp_wn != cfg.mma_warps_n):
            store_C_sdp = cute.make_tiled_copy_C(
                cute.make_copy_atom(cute.nvgpu.CopyUniversalOp(), self.dtype), tiled_mma_sdp
            )
            thr_store_C_sdp = store_C_sdp.get_slice(tidx)
        tPsP = thr_store_C_sdp.partition_D(sP)
        tdSsdS = thr_store_C_sdp.partition_D(sdS)

        cQd = cute.make_identity_tensor((tm, d))
        cQdv = cute.make_identity_tensor((tm, dv))
        tQcQ = thr_copy_d.partition_S(cQd)
        tdOcdO = thr_copy_dv.partition_S(cQdv)
        tQsQ = thr_copy_d.partition_D(sQ)
        tdOsdO = thr_copy_dv.partition_D(sdO)
        q_do = QdOLoads(
            Q=TileLoad(mQ, gmem_copy_d, thr_copy_d, tQsQ, tQcQ),
            dO=TileLoad(mdO, gmem_copy_dv, thr_copy_dv, tdOsdO, tdOcdO),
            batch_idx=batch_idx,
            seqlen_q=seqlen_q,
            offset_q=offset_q,
        )

        h_axis = 1 if cutlass.const_expr(cfg.varlen_q) else 2
        hkv_axis = 1 if cutlass.const_expr(cfg.varlen_k) else 2
        r = mQ.shape[h_axis] // mK.shape[hkv_axis]  # query heads per KV head (a runtime value)
        num_m_iters = m_block_max - m_block_min
        total_iters = num_m_iters * r
        cdQ = thr_mma.partition_C(cute.make_identity_tensor((tm, d)))
        # prologue: Q, dO of the first (head, block)
        # early_loads: Q and dO in two cp.async groups (Q first), so that S waits for Q only
        parts = ("q", "do") if cutlass.const_expr(cfg.early_loads) else ("q_do",)
        if total_iters > 0:
            for part in cutlass.range_constexpr(len(parts)):
                self.load_q_do(q_do, head_kv * r, m_block_min, parts[part])
        tCrV = None
        if cutlass.const_expr(cfg.v_in_regs):
            # V's B fragments of dP, once: wait for the K/V group (the Q/dO groups may still fly)
            tCrV = thr_mma_sdp.make_fragment_B(thr_mma_sdp.partition_B(sV))
            thr_V = copy_B_sdp.get_slice(tidx)
            cute.arch.cp_async_wait_group(len(parts))
            cute.arch.barrier()
            cute.copy(copy_B_sdp, thr_V.partition_S(sV), thr_V.retile(tCrV))

        for it in cutlass.range(total_iters, unroll=1):
            h_off = it // num_m_iters
            m_block = m_block_min + (it - h_off * num_m_iters)
            head = head_kv * r + h_off
            next_it = it + 1
            h_next = next_it // num_m_iters
            m_next = m_block_min + (next_it - h_next * num_m_iters)

            # ---- a. S = Q Kᵀ, P
            acc_S = cute.make_rmem_tensor(thr_mma_sdp.partition_shape_C((tm, tn)), Float32)
            acc_S.fill(0.0)
            lse = cute.make_rmem_tensor(num_rows, Float32)
            dpsum = cute.make_rmem_tensor(num_rows, Float32)
            for i in cutlass.range_constexpr(num_rows):
                row = m_block * tm + tScS_mn[i, 0][0]
                if cutlass.const_expr(cfg.check_q_rows):
                    # rows past this sequence: P = 0 (never read: another sequence's or unwritten)
                    lse[i] = Float32.inf
                    dpsum[i] = Float32(0.0)
                    if row < seqlen_q:
                        lse[i] = mLSElog2[b_acc, head, offset_q + row]
                        dpsum[i] = mdPsum[b_acc, head, offset_q + row]
                else:
                    lse[i] = mLSElog2[batch_idx, head, row]
                    dpsum[i] = mdPsum[batch_idx, head, row]
            # K, V and Q have landed (early_loads: dO may still be in flight)
            cute.arch.cp_async_wait_group(1 if cutlass.const_expr(cfg.early_loads) else 0)
            cute.arch.barrier()
            self.gemm(tiled_mma_sdp, thr_mma_sdp, acc_S, sQ, sK, copy_A_sdp, copy_B_sdp, tidx)
            if cutlass.const_expr(cfg.has_softcap):
                # capped scores, and d(capped)/d(scaled score) = 1 - tanh² for dS
                t = cute.math.tanh(acc_S.load() * softcap_scale, fastmath=True)
                acc_S.store(t * softcap)
                dtanh = cute.make_rmem_tensor_like(acc_S, Float32)
                dtanh.store(1.0 - t * t)
            acc_S_mn = acc_mn_view(acc_S)
            need_mask = Int32(1)
            if m_block >= m_free_lo:
                if m_block < m_free_hi:
                    need_mask = Int32(0)
            if need_mask != 0:
                apply_mask(
                    acc_S_mn, tScS_mn, m_block, n_block, seqlen_q, seqlen_k, wl, wr,
                    tm, tn, 1, self.is_causal, self.is_local,
                )  # fmt: skip
            for i in cutlass.range_constexpr(num_rows):
                s = acc_S_mn[i, None].load()
                acc_S_mn[i, None] = cute.math.exp2(s * scale_log2 - lse[i], fastmath=True)
            # ---- b. P -> shared (accumulator-layout plain stores)
            rP = cute.make_rmem_tensor_like(acc_S, self.dtype)
            rP.store(acc_S.load().to(self.dtype))
            cute.copy(store_C_sdp, thr_store_C_sdp.retile(rP), tPsP)
            # ---- c. dP = dO Vᵀ, dS = P (dP - dPsum)
            if cutlass.const_expr(cfg.early_loads):
                cute.arch.cp_async_wait_group(0)  # dO
                cute.arch.barrier()
            acc_dP = cute.make_rmem_tensor(thr_mma_sdp.partition_shape_C((tm, tn)), Float32)
            acc_dP.fill(0.0)
            if cutlass.const_expr(cfg.v_in_regs):
                self.gemm(tiled_mma_sdp, thr_mma_sdp, acc_dP, sdO, tCrV, copy_A_sdp, None, tidx)
            else:
                self.gemm(tiled_mma_sdp, thr_mma_sdp, acc_dP, sdO, sV, copy_A_sdp, copy_B_sdp, tidx)
            acc_dP_mn = acc_mn_view(acc_dP)
            pdp = cute.make_rmem_tensor(num_rows, Float32)
            if cutlass.const_expr(cfg.has_dsink):
                # rowsum(P * dP) over this warp's columns of the block (quad lanes share a row)
                for i in cutlass.range_constexpr(num_rows):
                    prod = acc_S_mn[i, None].load() * acc_dP_mn[i, None].load()
                    pdp[i] = quad_allreduce_sum(prod.reduce(cute.ReductionOp.ADD, Float32.zero, 0))
            for i in cutlass.range_constexpr(num_rows):
                acc_dP_mn[i, None] = acc_S_mn[i, None].load() * (acc_dP_mn[i, None].load() - dpsum[i])
            if cutlass.const_expr(cfg.has_softcap):
                acc_dP.store(acc_dP.load() * dtanh.load())
            rdS = cute.make_rmem_tensor_like(acc_dP, self.dtype)
            rdS.store(acc_dP.load().to(self.dtype))
            cute.copy(store_C_sdp, thr_store_C_sdp.retile(rdS), tdSsdS)
            cute.arch.barrier()
            # ---- d. dV += Pᵀ dO, dK += dSᵀ Q; then the next block's Q and dO start loading
            if cutlass.const_expr(cfg.early_loads):
                # dK first: once every warp is done with sQ the next Q loads during dV, dQ and the
                # reductions; the next dO during dQ, the reductions and the next S
                self.gemm(tiled_mma, thr_mma, acc_dK, sdSt, sQt, copy_At, copy_Bt, tidx)
                cute.arch.barrier()  # everyone is done with sQ
                if next_it < total_iters:
                    self.load_q_do(q_do, head_kv * r + h_next, m_next, "q")
                self.gemm(tiled_mma, thr_mma, acc_dV, sPt, sdOt, copy_At, copy_Bt, tidx)
                cute.arch.barrier()  # everyone is done with sdO (and sP)
                if next_it < total_iters:
                    self.load_q_do(q_do, head_kv * r + h_next, m_next, "do")
            else:
                self.gemm(tiled_mma, thr_mma, acc_dV, sPt, sdOt, copy_At, copy_Bt, tidx)
                self.gemm(tiled_mma, thr_mma, acc_dK, sdSt, sQt, copy_At, copy_Bt, tidx)
                cute.arch.barrier()  # everyone is done with sQ, sdO, sP, sdS
                if next_it < total_iters:
                    self.load_q_do(q_do, head_kv * r + h_next, m_next, "q_do")
            # ---- e. dQ += dS K (fp32 reductions in global memory)
            acc_dQ = cute.make_rmem_tensor(thr_mma.partition_shape_C((tm, d)), Float32)
            acc_dQ.fill(0.0)
            if cutlass.const_expr(cfg.dq_from_regs):
                self.gemm(tiled_mma, thr_mma, acc_dQ, acc_as_a_operand(rdS), sKt, None, copy_Bt, tidx)
            else:
                self.gemm(tiled_mma, thr_mma, acc_dQ, sdS, sKt, copy_A, copy_Bt, tidx)
            mdQ_h = mdQaccum[b_acc, head, None, None]
            if cutlass.const_expr(cfg.varlen_q):
                mdQ_h = cute.make_tensor(mdQ_h.iterator + offset_q * mdQ_h.stride[0], mdQ_h.layout)
            gdQ = cute.local_tile(mdQ_h, (tm, d), (m_block, 0))
            tdQgdQ = thr_mma.partition_C(gdQ)
            if cutlass.const_expr(self.deterministic):
                sem_ptr = mSem.iterator + cute.crd2idx((batch_idx, head, m_block), mSem.layout)
                # the CTAs adding into this query block are the key blocks n_first, n_first + 1, ...
                # of the forward's range of that block (BlockInfoBwd is its exact transpose)
                n_first = Int32(0)
                if cutlass.const_expr(self.is_local):
                    fwd_info = BlockInfo(tm, tn, self.is_causal, self.is_local, 1)
                    n_first, _ = fwd_info.n_block_range(m_block, seqlen_q, seqlen_k, wl, wr)
                if tidx == 0:
                    cnt = cute.arch.load(sem_ptr, Int32, sem="acquire", scope="gpu")
                    while cnt != n_block - n_first:
                        cnt = cute.arch.load(sem_ptr, Int32, sem="acquire", scope="gpu")
                cute.arch.barrier()
            # fp32 reductions: one per element, or (vector_dq_red, sm_90+) one red.v2 per pair of
            # adjacent columns (elements 2j, 2j + 1 of the accumulator: same row, columns c, c + 1)
            if cutlass.const_expr(cfg.vector_dq_red):
                _check_adjacent_pairs(tdQgdQ.layout)
            step = 2 if cutlass.const_expr(cfg.vector_dq_red) else 1
            for j in cutlass.range_constexpr(cute.size(acc_dQ) // step):
                i = j * step
                if cutlass.const_expr(cfg.check_q_rows):
                    if m_block * tm + cdQ[i][0] < seqlen_q:
                        self._red_dq(tdQgdQ.iterator + cute.crd2idx(i, tdQgdQ.layout), acc_dQ, i)
                else:
                    self._red_dq(tdQgdQ.iterator + cute.crd2idx(i, tdQgdQ.layout), acc_dQ, i)
            if cutlass.const_expr(cfg.has_dsink):
                if tidx % 4 == 0:
                    warp_n = (tidx // 32) // cfg.sdp_wm  # the S/dP grid's warps are M-major
                    for i in cutlass.range_constexpr(num_rows):
                        row = m_block * tm + tScS_mn[i, 0][0]
                        if row < seqlen_q:
                            cute.arch.red(
                                mPdPsum.iterator
                                + cute.crd2idx((warp_n, b_acc, head, offset_q + row), mPdPsum.layout),
                                pdp[i],
                                op="add",
                                dtype="f32",
                                sem="relaxed",
                                scope="gpu",
                            )
            if cutlass.const_expr(self.deterministic):
                cute.arch.fence_acq_rel_gpu()
                cute.arch.barrier()
                if tidx == 0:
                    cute.arch.atomic_add(sem_ptr, Int32(1), sem="release", scope="gpu")

        # ---------------- epilogue: dK, dV -> shared (K/V buffers) -> global
        cute.arch.cp_async_wait_group(0)
        cute.arch.barrier()
        acc_dK.store(acc_dK.load() * softmax_scale)
        rdK = cute.make_rmem_tensor_like(acc_dK, self.dtype)
        rdK.store(acc_dK.load().to(self.dtype))
        rdV = cute.make_rmem_tensor_like(acc_dV, self.dtype)
        rdV.store(acc_dV.load().to(self.dtype))
        cute.copy(store_C, thr_store_C.retile(rdK), thr_store_C.partition_D(sK))
        cute.copy(store_C, thr_store_C.retile(rdV), thr_store_C.partition_D(sV))
        cute.arch.barrier()
        gdK = cute.local_tile(
            self._rows(mdK, batch_idx, head_kv, seq.offset_k, d, cfg.varlen_k), (tn, d), (n_block, 0)
        )
        gdV = cute.local_tile(
            self._rows(mdV, batch_idx, head_kv, seq.offset_k, dv, cfg.varlen_k), (tn, dv), (n_block, 0)
        )
        self.store_tile(gmem_store_d, tidx, sK, gdK, cKd, seqlen_k - n_block * tn)
        self.store_tile(gmem_store_dv, tidx, sV, gdV, cKdv, seqlen_k - n_block * tn)

    # ------------------------------------------------------------------ stage helpers
    @cute.jit
    def _rows(
        self,
        mX: cute.Tensor,
        batch_idx,
        head,
        offset,
        d: cutlass.Constexpr[int],
        varlen: cutlass.Constexpr[bool],
    ):
        """(rows, d) view of one head of one sequence: ``mX[batch, :, head, :]``, or for a packed varlen
        ``(total, heads, d)`` tensor the rows from ``offset`` on (pointer arithmetic on the strides)."""
        if cutlass.const_expr(varlen):
            base = mX.iterator + offset * mX.stride[0] + head * mX.stride[1]
            return cute.make_tensor(base, cute.make_layout((mX.shape[0], d), stride=(mX.stride[0], 1)))
        return mX[batch_idx, None, head, None]

    @cute.jit
    def _red_dq(self, ptr, acc_dQ: cute.Tensor, i: cutlass.Constexpr[int]):
        """``*ptr += acc_dQ[i]`` (``red.global.add.f32``), or with ``vector_dq_red`` the pair
        ``acc_dQ[i], acc_dQ[i + 1]`` into ``ptr[0], ptr[1]`` (``red.global.add.v2.f32``: half the
        instructions and whole 32-byte sectors)."""
        if cutlass.const_expr(self.cfg.vector_dq_red):
            pair = mlir_vector.from_elements(
                ir.VectorType.get([2], Float32.mlir_type), [acc_dQ[i].ir_value(), acc_dQ[i + 1].ir_value()]
            )
            cute.arch.red(ptr, pair, op="add", dtype="f32", sem="relaxed", scope="gpu")
        else:
            cute.arch.red(ptr, acc_dQ[i], op="add", dtype="f32", sem="relaxed", scope="gpu")

    @cute.jit
    def gemm(
        self,
        tiled_mma: cute.TiledMma,
        thr_mma,
        acc: cute.Tensor,
        A: cute.Tensor,
        B: cute.Tensor,
        copy_A,
        copy_B,
        tidx: Int32,
    ):
        """acc += A·B. An operand with a copy is a shared-memory tensor, loaded k-block by k-block
        (``ldmatrix`` of k-block k+1 overlapping the MMAs of k-block k); an operand whose copy is
        None is already a register fragment of ``thr_mma``."""
        tCrA, tCrB = A, B
        if cutlass.const_expr(copy_A is not None):
            tCrA = thr_mma.make_fragment_A(thr_mma.partition_A(A))
            thr_A = copy_A.get_slice(tidx)
            tCsA, tCrA_v = thr_A.partition_S(A), thr_A.retile(tCrA)
            if cutlass.const_expr(self.cfg.opaque_smem):
                tCsA = rebase_opaque(tCsA)
        if cutlass.const_expr(copy_B is not None):
            tCrB = thr_mma.make_fragment_B(thr_mma.partition_B(B))
            thr_B = copy_B.get_slice(tidx)
            tCsB, tCrB_v = thr_B.partition_S(B), thr_B.retile(tCrB)
            if cutlass.const_expr(self.cfg.opaque_smem):
                tCsB = rebase_opaque(tCsB)
        num_k = cute.size(tCrA.shape[2])
        for k in cutlass.range_constexpr(num_k + 1):
            # loads of k-block k, then the MMAs of k-block k - 1
            if cutlass.const_expr(k < num_k):
                if cutlass.const_expr(copy_A is not None):
                    cute.copy(copy_A, tCsA[None, None, k], tCrA_v[None, None, k])
                if cutlass.const_expr(copy_B is not None):
                    cute.copy(copy_B, tCsB[None, None, k], tCrB_v[None, None, k])
            if cutlass.const_expr(k > 0):
                cute.gemm(tiled_mma, acc, tCrA[None, None, k - 1], tCrB[None, None, k - 1], acc)

    @cute.jit
    def load_tile(
        self,
        gmem_copy: cute.TiledCopy,
        tXgX: cute.Tensor,
        tXsX: cute.Tensor,
        tXcX: cute.Tensor,
        limit: Int32,
    ):
        """A tile -> shared memory (``cp.async``); rows at or past ``limit`` are zero-filled."""
        for m in cutlass.range_constexpr(cute.size(tXsX.shape[1])):
            if tXcX[0, m, 0][0] < limit:
                cute.copy(gmem_copy, tXgX[None, m, None], tXsX[None, m, None])
            else:
                tXsX[None, m, None].fill(0)

    @cute.jit
    def load_q_do(self, loads: QdOLoads, head: Int32, m_block: Int32, part: cutlass.Constexpr[str]):
        """Q and/or dO of query block ``m_block`` of ``head`` -> shared memory as one ``cp.async``
        group: ``part`` is ``"q_do"`` (both), ``"q"`` or ``"do"``."""
        vq = self.cfg.varlen_q
        Q, dO = loads.Q, loads.dO
        gQ = cute.local_tile(
            self._rows(Q.mX, loads.batch_idx, head, loads.offset_q, self.head_dim, vq),
            (self.tile_m, self.head_dim),
            (m_block, 0),
        )
        gdO = cute.local_tile(
            self._rows(dO.mX, loads.batch_idx, head, loads.offset_q, self.head_dim_v, vq),
            (self.tile_m, self.head_dim_v),
            (m_block, 0),
        )
        limit = loads.seqlen_q - m_block * self.tile_m
        if cutlass.const_expr(part != "do"):
            self.load_tile(Q.gmem_copy, Q.thr_copy.partition_S(gQ), Q.tXsX, Q.tXcX, limit)
        if cutlass.const_expr(part != "q"):
            self.load_tile(dO.gmem_copy, dO.thr_copy.partition_S(gdO), dO.tXsX, dO.tXcX, limit)
        cute.arch.cp_async_commit_group()

    @cute.jit
    def store_tile(
        self,
        gmem_copy: cute.TiledCopy,
        tidx: Int32,
        sX: cute.Tensor,
        gX: cute.Tensor,
        cX: cute.Tensor,
        limit: Int32,
    ):
        """Shared -> registers (128-bit) -> global; rows at or past ``limit`` are skipped."""
        thr_copy = gmem_copy.get_slice(tidx)
        tXsX = thr_copy.partition_S(sX)
        tXrX = cute.make_rmem_tensor_like(tXsX, self.dtype)
        cute.autovec_copy(tXsX, tXrX)
        tXgX = thr_copy.partition_D(gX)
        tXcX = thr_copy.partition_S(cX)
        for m in cutlass.range_constexpr(cute.size(tXsX.shape[1])):
            if tXcX[0, m, 0][0] < limit:
                cute.copy(gmem_copy, tXrX[None, m, None], tXgX[None, m, None])

    # ------------------------------------------------------------------ compile without tensors
    @staticmethod
    def fake_args(cfg: BwdConfig) -> tuple:
        """Placeholders for :meth:`__call__`: ``(mQ, mK, mV, mdO, mLSElog2, mdPsum, mdK, mdV, mdQaccum,
        mSem, softmax_scale, window_left, window_right, softcap, max_seqlen_k, lpt_group, cu_seqlens_q,
        cu_seqlens_k, seqused_q, seqused_k, mPdPsum, stream)``; absent optional tensors are ``None``."""
        dt = DTYPES[cfg.dtype]
        sym = cute.sym_int
        b, sq, sk, hq, hkv, sqp, nm, tq, tk, bacc = (sym() for _ in range(10))
        q_rows = (tq,) if cfg.varlen_q else (b, sq)
        kv_rows = (tk,) if cfg.varlen_k else (b, sk)
        q = fake_tensor(dt, (*q_rows, hq, cfg.head_dim))
        k = fake_tensor(dt, (*kv_rows, hkv, cfg.head_dim))
        v = fake_tensor(dt, (*kv_rows, hkv, cfg.head_dim_v))
        do = fake_tensor(dt, (*q_rows, hq, cfg.head_dim_v))
        acc_b = bacc if cfg.varlen_q else b  # one packed batch with varlen_q
        lse = fake_tensor(Float32, (acc_b, hq, sqp), divisibility=1)
        dpsum = fake_tensor(Float32, (acc_b, hq, sqp), divisibility=1)
        dk = fake_tensor(dt, (*kv_rows, hkv, cfg.head_dim))
        dv = fake_tensor(dt, (*kv_rows, hkv, cfg.head_dim_v))
        dq_accum = fake_tensor(Float32, (acc_b, hq, sqp, cfg.head_dim), divisibility=4)
        # its own symbols: outside deterministic mode the caller passes a (1, 1, 1) placeholder
        sem = fake_tensor(Int32, (sym(), sym(), nm), divisibility=1)
        nb1 = sym()
        cu_q = fake_tensor(Int32, (nb1,), divisibility=1) if cfg.varlen_q else None
        cu_k = fake_tensor(Int32, (nb1,), divisibility=1) if cfg.varlen_k else None
        used_q = fake_tensor(Int32, (sym(),), divisibility=1) if cfg.has_seqused_q else None
        used_k = fake_tensor(Int32, (sym(),), divisibility=1) if cfg.has_seqused_k else None
        pdp = fake_tensor(Float32, (sym(), acc_b, hq, sqp), divisibility=1) if cfg.has_dsink else None
        return (
            q, k, v, do, lse, dpsum, dk, dv, dq_accum, sem, Float32(1.0), Int32(-1), Int32(-1),
            Float32(0.0), Int32(1), Int32(1), cu_q, cu_k, used_q, used_k, pdp, fake_stream(),
        )  # fmt: skip


fake_bwd_args = FlashAttentionBackwardSm120.fake_args


def compile_bwd(
    cfg: BwdConfig, *, tvm_ffi: bool = True, gpu_arch: str | None = None, dump_dir: str | None = None
):
    """Compile the main backward kernel of ``cfg`` (see :func:`fa4_sm120.compile.compile_fwd`)."""
    return FlashAttentionBackwardSm120.compile(cfg, tvm_ffi=tvm_ffi, gpu_arch=gpu_arch, dump_dir=dump_dir)
