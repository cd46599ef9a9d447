"""The 8-bit forward of the mma.sync family: ``S = Q·Kᵀ`` on ``mma.sync m16n8k32`` with s8 (int32
accumulation) or e4m3 (fp32) operands, ``O += P·V`` on e4m3 ``m16n8k32`` with fp32 accumulation (or
fp16 per key block, added into the fp32 O). The recipe and the quantizer that writes its inputs are
``fa4_torch.quant``'s; ``docs/quantized.md`` has the accuracy of each choice.

Tensors (the 8-bit ones passed as 16-bit tensors of the output dtype whose last dimension holds two
8-bit values per element, so that every copy and ``ldmatrix`` is the 16-bit forward's):

* ``mQ (batch, seqlen_q, nheads, head_dim / 2)``, ``mK (batch, seqlen_k, nheads_kv, head_dim / 2)``:
  8-bit values per block of ``tile_m`` query rows / ``tile_n`` keys, scales fp32 ``mQScale (batch,
  nheads, ceil(seqlen_q / tile_m))`` and ``mKScale (batch, nheads_kv, ceil(seqlen_k / tile_n))``;
* ``mVt (batch, nheads_kv, head_dim_v, seqlen_k_padded / 2)``: e4m3 V transposed, keys padded to a
  multiple of ``tile_n`` (every block is read whole) and permuted within each group of 32
  (``fa4_torch.quant.pv_key_order``), with fp32 channel scales ``mVScale (batch, nheads_kv,
  head_dim_v)``;
* ``mO (batch, seqlen_q, nheads, head_dim_v)`` fp16/bf16, ``mLSE (batch, nheads, seqlen_q)`` (of the
  scores as quantized: smoothing's shift is the caller's).

Why the layouts: an ``m16n8k32`` 8-bit A or B fragment holds the same bytes as an ``m16n8k16`` 16-bit
one whose elements are pairs of 8-bit values along k, so Q and K (k = head dim) and Vᵀ (k = keys) go
through the 16-bit ``ldmatrix`` and the 16-bit forward's tiled MMA partitions; only the instruction
differs (:func:`mma_m16n8k32`, inline PTX). P never leaves registers: a thread's S accumulators of
four 8-column tiles are exactly the keys its A fragment of one 32-key step needs, in the order the
quantizer gave Vᵀ's keys, so each register is two ``cvt.rn.satfinite.e4m3x2.f32`` (:func:`fa4_sm120.convert8.pack_e4m3x4`).

Per CTA (one ``tile_m`` block of query rows of one head), as :class:`fa4_sm120.fwd.FlashAttentionForwardSm120`
(whose loads, masks, online softmax, LSE and O stores it reuses): S is masked and passed through the
online softmax, whose exponent's FFMA also applies the key block's scale (the query block's is in the
softmax scale), removes the INT8 sums' conversion bias and multiplies P by ``Q8_P_SCALE`` = 2^8 into
e4m3's range (:class:`fa4_core.softmax.OnlineSoftmax`'s folds: no per-score work of their own). With
fp32 accumulation O is rescaled on every key block, without a branch (the factor is exactly 1 where no
row max moved past the threshold): a conditional rescale has the compiler keep O outside the aligned
register quads that the MMAs accumulate in, and move every tile in and out of one in every block. Each
key block's scale is loaded one block ahead. The epilogue divides by the row sum (of the scaled P) and
multiplies by V's channel scales.

Code-generation variants (:class:`~fa4_sm120.configs.Q8FwdConfig`'s fields; the rows of
``fa4_sm120.tiles.Q8_FWD_TILES`` set them): ``q_in_regs`` (Q's A fragments loaded once per CTA),
``num_stages`` 2 (K and Vᵀ double-buffered: every block's loads issued one block ahead, one barrier
per block instead of three), ``q8_b_split`` and ``codegen.pv_split`` (K's / Vᵀ's B fragments loaded
in groups of columns just before their MMAs), ``tile_n`` 32 (Vᵀ rows of 16 16-bit elements: 32 query
rows per warp without spills).

Supported: non-causal and causal (bottom-right), local windows (``is_local``: ``window_left`` /
``window_right``, the 16-bit forward's masks and block ranges), MHA/GQA/MQA (no pack-GQA), head dims
64 and 128 (``head_dim == head_dim_v``), any lengths, per-sequence lengths within a padded batch
(``has_seqused_q`` / ``has_seqused_k``: ``mSeqUsedQ``, ``mSeqUsedK (batch,)`` int32; the quantizer
writes Vᵀ's keys past a sequence's length as zeros), the softcap and learnable sinks. Both need the
true scores, not the smoothed ones (K's mean subtracted shifts row ``i``'s scores by the quantizer's
``shift[i] = softmax_scale * q_i·mean``, which the softmax cancels but ``tanh`` and a sink logit do
not): with ``has_softcap`` or ``has_sink`` (``cfg.reads_lse_shift``) the kernel reads ``mShift
(batch, nheads, seqlen_q)``; the softcap applies ``softcap * tanh((s * q_scale * k_scale *
softmax_scale + shift) / softcap)``, a sink logit (``mSink (nheads,)`` fp32) is compared with the
smoothed scores as ``sink - shift``; the LSE is then the true scores' (else the smoothed ones', to
which the caller adds ``shift``). Not (typed errors): packed varlen (``cu_seqlens``), paged K/V,
split-KV, pack-GQA.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32
from cutlass._mlir.dialects import llvm
from cutlass.cute.nvgpu import warp
from cutlass.cutlass_dsl import T

from fa4_core.block_info import BlockInfo
from fa4_core.errors import unsupported
from fa4_core.layout import acc_mn_view
from fa4_core.mask import apply_mask
from fa4_core.seqlen_info import SeqlenInfoQK
from fa4_core.softmax import LOG2_E, OnlineSoftmax
from fa4_sm120.configs import Q8FwdConfig, fwd_codegen
from fa4_sm120.convert8 import F32_MAGIC, F32_MAGIC_BITS, pack_e4m3x4
from fa4_sm120.fwd import FlashAttentionForwardSm120, KVLoads, KVSource, QTile, ScoreParams
from fa4_sm120.limits import Q8_HEAD_DIMS, Q8_P_SCALE, Q8_PV_ACCUMS, Q8_QK_FORMATS
from fa4_sm120.mma_sync import DTYPES, fake_stream, fake_tensor, launch_bounds

__all__ = [
    "Q8FwdConfig",
    "FlashAttentionForwardQ8Sm120",
    "mma_m16n8k32",
]


# (qk or "pv", accumulator): instruction, accumulator registers, their constraint
_MMA = {
    ("int8", "s32"): ("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32", 4, "r"),
    ("fp8", "f32"): ("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32", 4, "f"),
    ("fp8", "f16"): ("mma.sync.aligned.m16n8k32.row.col.f16.e4m3.e4m3.f16", 2, "r"),
}


def mma_m16n8k32(fmt: str, acc_type: str, acc: cute.Tensor, a: cute.Tensor, b: cute.Tensor) -> None:
    """``acc += a·b`` on one ``mma.sync m16n8k32`` (inline PTX): ``a`` 4 and ``b`` 2 Int32 registers
    (four 8-bit values each), ``acc`` the atom's 4 accumulators (Int32 for ``s32``, Float32 for
    ``f32``) or 2 Int32 registers of packed f16 pairs (``f16``)."""
    instr, n_acc, con = _MMA[(fmt, acc_type)]
    ty = T.f32() if con == "f" else T.i32()
    dtype = Float32 if con == "f" else Int32
    c = ",".join(f"${i}" for i in range(n_acc))
    asm = (
        f"{instr} {{{c}}}, {{${n_acc},${n_acc + 1},${n_acc + 2},${n_acc + 3}}}, "
        f"{{${n_acc + 4},${n_acc + 5}}}, {{{','.join(f'${n_acc + 6 + i}' for i in range(n_acc))}}};"
    )
    constraints = ",".join([f"={con}"] * n_acc + ["r"] * 6 + [str(i) for i in range(n_acc)])
    ins = [a[i].ir_value() for i in range(4)] + [b[i].ir_value() for i in range(2)]
    ins += [acc[i].ir_value() for i in range(n_acc)]
    res = llvm.inline_asm(
        llvm.StructType.get_literal([ty] * n_acc),
        ins,
        asm,
        constraints,
        has_side_effects=False,
        is_align_stack=False,
        asm_dialect=llvm.AsmDialect.AD_ATT,
    )
    for i in range(n_acc):
        acc[i] = dtype(llvm.extractvalue(ty, res, [i]))


@dataclasses.dataclass(frozen=True)
class Q8Block:
    """What every key block of a query tile reads: the ldmatrix sources and fragments of Q, K and Vᵀ
    (``frags``), the O accumulators, this thread's score coordinates, the tile's place and lengths,
    K's block scales, the window (None unless ``is_local``), the softcap's ``(score scale, softcap)``
    (None without), smoothing's per-row shift (divided by the softcap with one) and the next key
    block's scale (one register: each block loads its successor's, so no block waits on the load)."""

    frags: Any
    acc_O: Any
    tScS_mn: Any
    m_block: Any
    seqlen_q: Any
    seqlen_k: Any
    mKScale: Any
    batch_idx: Any
    head_kv: Any
    window_left: Any
    window_right: Any
    cap: Any
    shift: Any
    k_scale_next: Any


class FlashAttentionForwardQ8Sm120(FlashAttentionForwardSm120):
    """The 8-bit forward kernel class: ``FlashAttentionForwardQ8Sm120.compile(cfg, ...)``."""

    def __init__(self, cfg: Q8FwdConfig):
        super().__init__(cfg)
        # Q and K rows in 16-bit elements (two 8-bit values each): the base class's loads read this
        self.head_dim = cfg.head_dim // 2
        self.kv_cols = cfg.tile_n // 2  # a Vᵀ tile row (keys) in 16-bit elements
        self.qk_acc = "s32" if cfg.qk == "int8" else "f32"

    # ------------------------------------------------------------------ constraints
    @staticmethod
    def can_implement(cfg: Q8FwdConfig) -> None:
        if cfg.qk not in Q8_QK_FORMATS:
            raise unsupported("qk", cfg.qk, ", ".join(Q8_QK_FORMATS))
        if cfg.pv_accum not in Q8_PV_ACCUMS:
            raise unsupported("pv_accum", cfg.pv_accum, ", ".join(Q8_PV_ACCUMS))
        if cfg.head_dim not in Q8_HEAD_DIMS or cfg.head_dim_v != cfg.head_dim:
            raise unsupported(
                "(head_dim, head_dim_v)",
                (cfg.head_dim, cfg.head_dim_v),
                " or ".join(f"({d}, {d})" for d in Q8_HEAD_DIMS),
            )
        if cfg.tile_n not in (32, 64, 128):
            raise unsupported("tile_n", cfg.tile_n, "32, 64 or 128 (divisors of the quantizer's key padding)")
        if cfg.tile_n == 32 and cfg.num_threads // 2 > cfg.head_dim_v:
            # Vᵀ rows of 16 16-bit elements: two threads per row, one copy pass at most the tile
            raise unsupported("tile_n", cfg.tile_n, f"64 or 128 with {cfg.num_threads} threads")
        if cfg.num_stages not in (1, 2):
            raise unsupported("num_stages", cfg.num_stages, "1 or 2 (K and Vᵀ double-buffered)")
        if cfg.q8_b_split not in (1, 2, 4) or (cfg.tile_n // 8) % (2 * cfg.q8_b_split):
            raise unsupported("q8_b_split", cfg.q8_b_split, "1, 2 or 4, dividing tile_n / 16")
        for name in ("pack_gqa", "varlen_q", "varlen_k", "paged_kv", "kv_batch_idx", "split_kv", "warp_split_n",
                     "kv_dtype"):  # fmt: skip
            if getattr(cfg, name):
                raise unsupported(name, True, "False: the 8-bit forward has no such variant")
        # the 16-bit forward's checks of the tile (it has one stage only)
        FlashAttentionForwardSm120.can_implement(dataclasses.replace(cfg, num_stages=1))
        pv_split = fwd_codegen(cfg).pv_split
        if (cfg.head_dim_v // 8) % (2 * pv_split):
            raise unsupported("codegen.pv_split", pv_split, "a divisor of head_dim_v / 16")
        threshold = fwd_codegen(cfg).rescale_threshold
        if Q8_P_SCALE * 2.0**threshold >= 448.0:  # P times Q8_P_SCALE must stay inside e4m3
            raise unsupported("codegen.rescale_threshold", threshold, "< log2(448 / Q8_P_SCALE)")

    # ------------------------------------------------------------------ host-side setup (traced)
    @cute.jit
    def __call__(
        self,
        mQ: cute.Tensor,
        mK: cute.Tensor,
        mVt: cute.Tensor,
        mQScale: cute.Tensor,
        mKScale: cute.Tensor,
        mVScale: cute.Tensor,
        mO: cute.Tensor,
        mLSE: cute.Tensor,
        mSeqUsedQ,
        mSeqUsedK,
        mShift,
        mSink,
        softmax_scale: Float32,
        window_left: Int32,
        window_right: Int32,
        softcap: Float32,
        stream,
    ):
        cfg = self.cfg
        sQ_layout = self.smem_layout(self.tile_m, self.head_dim)
        sO_layout = self.smem_layout(self.tile_m, self.head_dim_v)
        sK_layout = self.staged_layout(self.tile_n, self.head_dim)
        sV_layout = self.staged_layout(self.head_dim_v, self.kv_cols)
        SharedStorage = self.shared_storage(sK_layout, sV_layout)  # checked against q8_fwd_smem_bytes
        tiled_mma = self.make_tiled_mma()  # 16-bit partitions: 8-bit operands travel as pairs
        grid = (cute.ceil_div(mQ.shape[1], self.tile_m), mQ.shape[2], mQ.shape[0])
        self.kernel_q8(
            mQ,
            mK,
            mVt,
            mQScale,
            mKScale,
            mVScale,
            mO,
            mLSE,
            mSeqUsedQ,
            mSeqUsedK,
            mShift,
            mSink,
            softmax_scale * LOG2_E,
            softmax_scale / softcap if cutlass.const_expr(cfg.has_softcap) else softmax_scale,
            softcap,
            window_left,
            window_right,
            sQ_layout,
            sO_layout,
            sK_layout,
            sV_layout,
            self.gmem_copy(self.head_dim, True),
            self.gmem_copy(self.kv_cols, True, 2 if self.kv_cols == 16 else None),
            self.gmem_copy(self.head_dim_v, False),
            tiled_mma,
            SharedStorage,
        ).launch(
            grid=grid,
            block=[self.num_threads, 1, 1],
            smem=max(SharedStorage.size_in_bytes(), cfg.launch_smem),
            stream=stream,
            **launch_bounds(cfg.codegen.min_ctas_per_sm),
        )

    def staged_layout(self, rows: int, cols: int):
        """The swizzled ``(rows, cols)`` tile of K or Vᵀ (:func:`fa4_sm120.mma_sync.smem_layout`), with
        a third (stage) mode of ``cfg.num_stages`` when there are two; rows of 16 elements (Vᵀ of
        32-key blocks) on an ``(8, 16)`` atom with a 1-bit swizzle (the 8 rows of an ``ldmatrix``
        matrix land in 8 distinct 16-byte bank groups)."""
        if cols == 16:
            atom = cute.make_composed_layout(
                cute.make_swizzle(1, 3, 3), 0, cute.make_layout((8, 16), stride=(16, 1))
            )
        else:
            k = 64 if cols % 64 == 0 else 32
            atom = cute.make_composed_layout(
                cute.make_swizzle(3 if k == 64 else 2, 3, 3), 0, cute.make_layout((8, k), stride=(k, 1))
            )
        if self.cfg.num_stages == 1:
            return cute.tile_to_shape(atom, (rows, cols), (0, 1))
        return cute.tile_to_shape(atom, (rows, cols, self.cfg.num_stages), (0, 1, 2))

    # ------------------------------------------------------------------ the kernel
    @cute.kernel
    def kernel_q8(
        self,
        mQ: cute.Tensor,
        mK: cute.Tensor,
        mVt: cute.Tensor,
        mQScale: cute.Tensor,
        mKScale: cute.Tensor,
        mVScale: cute.Tensor,
        mO: cute.Tensor,
        mLSE: cute.Tensor,
        mSeqUsedQ,
        mSeqUsedK,
        mShift,
        mSink,
        scale_log2: Float32,
        softcap_scale: Float32,
        softcap: Float32,
        window_left: Int32,
        window_right: Int32,
        sQ_layout: cute.ComposedLayout,
        sO_layout: cute.ComposedLayout,
        sK_layout: cute.ComposedLayout,
        sV_layout: cute.ComposedLayout,
        gmem_copy_QK: cute.TiledCopy,
        gmem_copy_V: cute.TiledCopy,
        gmem_copy_O: cute.TiledCopy,
        tiled_mma: cute.TiledMma,
        SharedStorage: cutlass.Constexpr,
    ):
        tidx, _, _ = cute.arch.thread_idx()
        bidx, head_idx, batch_idx = cute.arch.block_idx()
        num_m_blocks, _, _ = cute.arch.grid_dim()
        m_block = num_m_blocks - 1 - bidx if cutlass.const_expr(self.is_causal or self.is_local) else bidx
        seq = SeqlenInfoQK.create(
            batch_idx, mQ.shape[0], mQ.shape[1], mK.shape[1], None, None, mSeqUsedQ, mSeqUsedK
        )
        tile = QTile(tidx, m_block, head_idx, batch_idx, Int32(0), Int32(1), seq)
        if m_block * self.tile_m < seq.seqlen_q:
            self.attend_q8(
                mQ, mK, mVt, mQScale, mKScale, mVScale, mO, mLSE, mShift, mSink,
                ScoreParams(scale_log2, softcap_scale, softcap, window_left, window_right), tile,
                (sQ_layout, sO_layout, sK_layout, sV_layout),
                (gmem_copy_QK, gmem_copy_V, gmem_copy_O), tiled_mma, SharedStorage,
            )  # fmt: skip

    @cute.jit
    def attend_q8(
        self,
        mQ: cute.Tensor,
        mK: cute.Tensor,
        mVt: cute.Tensor,
        mQScale: cute.Tensor,
        mKScale: cute.Tensor,
        mVScale: cute.Tensor,
        mO: cute.Tensor,
        mLSE: cute.Tensor,
        mShift,
        mSink,
        scores: ScoreParams,
        tile: QTile,
        layouts,
        copies,
        tiled_mma: cute.TiledMma,
        SharedStorage: cutlass.Constexpr,
    ):
        """A query tile that has rows: the base class's steps 1-3 with 8-bit MMAs."""
        sQ_layout, sO_layout, sK_layout, sV_layout = layouts
        gmem_copy_QK, gmem_copy_V, gmem_copy_O = copies
        tidx, m_block, head_idx, batch_idx = tile.tidx, tile.m_block, tile.head_idx, tile.batch_idx
        seqlen_q, seqlen_k = tile.seq.seqlen_q, tile.seq.seqlen_k
        head_kv = head_idx // (mQ.shape[2] // mK.shape[2])
        stages = self.cfg.num_stages

        wl = scores.window_left if cutlass.const_expr(self.is_local) else None
        wr = scores.window_right if cutlass.const_expr(self.is_local) else None
        block_info = BlockInfo(self.tile_m, self.tile_n, self.is_causal, self.is_local, 1)
        n_block_min, n_block_max = block_info.n_block_range(m_block, seqlen_q, seqlen_k, wl, wr)
        n_right_mask = block_info.right_mask_start(m_block, seqlen_q, seqlen_k, wr)
        n_left_mask = block_info.left_mask_end(m_block, seqlen_q, seqlen_k, wl)

        smem = cutlass.memory.SmemAllocator()
        storage = smem.allocate(SharedStorage)
        sQ = storage.sQ.get_tensor(sQ_layout)
        sO = storage.sQ.get_tensor(sO_layout)
        sK = storage.sK.get_tensor(sK_layout)  # (tile_n, head_dim / 2[, stages])
        sVt = storage.sV.get_tensor(sV_layout)  # (head_dim_v, tile_n / 2[, stages])

        # K: the base class's block loads (rows past seqlen_k zero-filled); Vᵀ: whole padded tiles
        thr_copy_K = gmem_copy_QK.get_slice(tidx)
        thr_copy_V = gmem_copy_V.get_slice(tidx)
        tKsK = thr_copy_K.partition_D(sK)
        tKcK = thr_copy_K.partition_S(cute.make_identity_tensor((self.tile_n, self.head_dim)))
        mK_cur = mK[batch_idx, None, head_kv, None]
        mVt_cur = mVt[batch_idx, head_kv, None, None]
        tVsV = thr_copy_V.partition_D(sVt)
        loads = KVLoads(
            K=KVSource(mK, mK_cur, gmem_copy_QK, thr_copy_K, self.head_dim, tKsK, tKcK),
            V=None,
            mPageTable=None,
            batch_idx=batch_idx,
            head_kv=head_kv,
            seqlen_k=seqlen_k,
            pages=None,
        )

        thr_mma = tiled_mma.get_slice(tidx)
        tSrQ = thr_mma.make_fragment_A(thr_mma.partition_A(sQ))
        tSrK = thr_mma.make_fragment_B(thr_mma.partition_B(self._st(sK, 0, 2)))
        tOrVt = thr_mma.make_fragment_B(thr_mma.partition_B(self._st(sVt, 0, 2)))
        acc_O = cute.make_rmem_tensor(thr_mma.partition_shape_C((self.tile_m, self.head_dim_v)), Float32)
        acc_O.fill(0.0)
        ldsm = warp.LdMatrix8x8x16bOp(transpose=False, num_matrices=4)
        smem_copy_Q = cute.make_tiled_copy_A(cute.make_copy_atom(ldsm, self.dtype), tiled_mma)
        smem_copy_B = cute.make_tiled_copy_B(cute.make_copy_atom(ldsm, self.dtype), tiled_mma)
        thr_smem_Q = smem_copy_Q.get_slice(tidx)
        thr_smem_B = smem_copy_B.get_slice(tidx)
        # the K and Vᵀ ldmatrix sources keep the stage mode (indexed per key block) if any
        frags = (
            (smem_copy_Q, thr_smem_Q.partition_S(sQ), thr_smem_Q.retile(tSrQ), tSrQ),
            (smem_copy_B, thr_smem_B.partition_S(sK), thr_smem_B.retile(tSrK), tSrK),
            (smem_copy_B, thr_smem_B.partition_S(sVt), thr_smem_B.retile(tOrVt), tOrVt),
        )

        cS = cute.make_identity_tensor((self.tile_m, self.tile_n))
        tScS_mn = acc_mn_view(thr_mma.partition_C(cS))
        num_rows = cute.size(tScS_mn.shape[0])
        q_scale = mQScale[batch_idx, head_idx, m_block]
        # smoothing's shift of each of this thread's rows (the true score minus the smoothed one)
        shift = cute.make_rmem_tensor(num_rows, Float32)
        if cutlass.const_expr(self.cfg.reads_lse_shift):
            for r_ in cutlass.range_constexpr(num_rows):
                row = m_block * self.tile_m + tScS_mn[r_, 0][0]
                shift[r_] = mShift[batch_idx, head_idx, row] if row < seqlen_q else Float32(0.0)
        # P comes out of the exponent times Q8_P_SCALE (a power of two), ready for e4m3
        p_offset = math.log2(Q8_P_SCALE)
        if cutlass.const_expr(self.cfg.has_softcap):
            # the block scales and the softmax scale before the cap, smoothing undone: softcap *
            # tanh((s * q_scale * k_scale * softmax_scale + shift) / softcap), in natural-log units
            softmax = OnlineSoftmax(
                Float32(LOG2_E), num_rows, self.rescale_threshold, self.tree_reduce, p_offset
            )
            cap = (q_scale * scores.softcap_scale, scores.softcap)
            inv_cap = Float32(1.0) / scores.softcap
            for r_ in cutlass.range_constexpr(num_rows):
                shift[r_] = shift[r_] * inv_cap
        else:
            # the query block's scale folded into the softmax scale
            softmax = OnlineSoftmax(
                scores.scale_log2 * q_scale, num_rows, self.rescale_threshold, self.tree_reduce, p_offset
            )
            cap = None
        row_scale = cute.make_rmem_tensor(num_rows, Float32)
        k_scale_next = cute.make_rmem_tensor(1, Float32)

        self.load_q(mQ, sQ, gmem_copy_QK, tile, seqlen_q)
        has_work = n_block_min < n_block_max
        s0 = (n_block_max - 1) % stages if cutlass.const_expr(stages > 1) else 0
        if has_work:
            self.load_kv(self._stage(loads, s0), self._stage(loads, s0).K, n_block_max - 1, True)
            k_scale_next[0] = mKScale[batch_idx, head_kv, n_block_max - 1]
        cute.arch.cp_async_commit_group()
        vt = (mVt_cur, thr_copy_V, tVsV, gmem_copy_V)
        if cutlass.const_expr(stages > 1):  # V(n_max - 1) too: every block's loads are one block ahead
            if has_work:
                self._load_vt(vt, n_block_max - 1, s0)
            cute.arch.cp_async_commit_group()
        if cutlass.const_expr(self.q_in_regs):  # Q's A fragments, once: the A operand of every block
            cute.arch.cp_async_wait_group(0)
            cute.arch.barrier()
            cute.copy(smem_copy_Q, frags[0][1], frags[0][2])
        ctx = Q8Block(
            frags,
            acc_O,
            tScS_mn,
            m_block,
            seqlen_q,
            seqlen_k,
            mKScale,
            batch_idx,
            head_kv,
            wl,
            wr,
            cap,
            shift,
            k_scale_next,
        )
        if has_work:
            self.block_q8(n_block_max - 1, n_block_min, ctx, loads, vt, softmax, row_scale, True, True)
        # blocks that still need the right mask (diagonal / window right edge)
        n_mid_hi = cutlass.max(cutlass.min(n_right_mask, n_block_max - 1), n_block_min)
        for i in cutlass.range(n_block_max - 1 - n_mid_hi, unroll=1):
            self.block_q8(n_block_max - 2 - i, n_block_min, ctx, loads, vt, softmax, row_scale, False, True)
        # mask-free middle
        n_mid_lo = cutlass.min(cutlass.max(n_left_mask, n_block_min), n_mid_hi)
        for i in cutlass.range(n_mid_hi - n_mid_lo, unroll=1):
            self.block_q8(n_mid_hi - 1 - i, n_block_min, ctx, loads, vt, softmax, row_scale, False, False)
        # blocks before the window's left edge
        if cutlass.const_expr(self.is_local):
            for i in cutlass.range(n_mid_lo - n_block_min, unroll=1):
                self.block_q8(n_mid_lo - 1 - i, n_block_min, ctx, loads, vt, softmax, row_scale, False, True)

        lse = cute.make_rmem_tensor(num_rows, Float32)
        if cutlass.const_expr(self.cfg.has_sink):
            # the sink logit on the scores' scale: smoothed (the shift subtracted) unless capped
            sink_log2 = cute.make_rmem_tensor(num_rows, Float32)
            for r_ in cutlass.range_constexpr(num_rows):
                sink = mSink[head_idx]
                if cutlass.const_expr(not self.cfg.has_softcap):
                    sink = sink - shift[r_]
                sink_log2[r_] = sink * Float32(LOG2_E)
            softmax.finalize(row_scale, lse, sink_log2)
        else:
            softmax.finalize(row_scale, lse)
        if cutlass.const_expr(self.cfg.has_sink and not self.cfg.has_softcap):
            for r_ in cutlass.range_constexpr(num_rows):  # the LSE of the true scores
                lse[r_] = lse[r_] + shift[r_]
        # O / row_sum * v_scale[column] (O and row_sum both of P times Q8_P_SCALE)
        tOcO_mn = acc_mn_view(thr_mma.partition_C(cute.make_identity_tensor((self.tile_m, self.head_dim_v))))
        acc_O_mn = acc_mn_view(acc_O)
        for c2 in cutlass.range_constexpr(cute.size(acc_O_mn.shape[1]) // 2):  # column pairs: < 64 per loop
            for j in cutlass.range_constexpr(2):
                c = 2 * c2 + j
                vs = mVScale[batch_idx, head_kv, tOcO_mn[0, c][1]]
                for r_ in cutlass.range_constexpr(num_rows):
                    acc_O_mn[r_, c] = acc_O_mn[r_, c] * row_scale[r_] * vs
        cute.arch.cp_async_wait_group(0)
        self.store_lse(lse, mLSE, thr_mma, tile, seqlen_q)
        self.epilogue(acc_O, mO, sO, tiled_mma, gmem_copy_O, tile, seqlen_q)

    def _st(self, t: cute.Tensor, s, rank: int):
        """Stage ``s`` of ``t`` (whose modes past ``rank`` are the stage's; ``t`` with one stage)."""
        if self.cfg.num_stages == 1:
            return t
        return t[(None,) * rank + (s,)]

    def _stage(self, loads: KVLoads, s) -> KVLoads:
        """``loads`` whose K destination is stage ``s`` of the K buffer."""
        K = dataclasses.replace(loads.K, tXsX=self._st(loads.K.tXsX, s, 3))
        return dataclasses.replace(loads, K=K)

    @cute.jit
    def _load_vt(self, vt, n_block: Int32, s):
        """The whole (padded) Vᵀ tile of key block ``n_block`` -> stage ``s`` of the Vᵀ buffer."""
        mVt_cur, thr_copy_V, tVsV, gmem_copy_V = vt
        gV = cute.local_tile(mVt_cur, (self.head_dim_v, self.kv_cols), (0, n_block))
        cute.copy(gmem_copy_V, thr_copy_V.partition_S(gV), self._st(tVsV, s, 3))

    # ------------------------------------------------------------------ one key block
    @cute.jit
    def block_q8(
        self,
        n_block: Int32,
        n_block_min: Int32,
        ctx,
        loads,
        vt,
        softmax: OnlineSoftmax,
        row_scale: cute.Tensor,
        is_first: cutlass.Constexpr[bool],
        need_mask: cutlass.Constexpr[bool],
    ):
        acc_O, tScS_mn, m_block, cap, shift = ctx.acc_O, ctx.tScS_mn, ctx.m_block, ctx.cap, ctx.shift
        # the key block's scale (the query block's is in the softmax scale); the next block's, ahead
        k_scale = ctx.k_scale_next[0]
        ctx.k_scale_next[0] = ctx.mKScale[ctx.batch_idx, ctx.head_kv, cutlass.max(n_block - 1, n_block_min)]
        Q, K, Vt = ctx.frags
        acc_shape = (cute.size(Q[3].shape[1]), cute.size(K[3].shape[1]))
        two = cutlass.const_expr(self.cfg.num_stages > 1)
        s = n_block % 2 if two else 0  # this block's stage of the K and Vᵀ buffers
        if cutlass.const_expr(two):
            # K(n) and V(n) have landed; everyone is done with block n+1's stage: K(n-1), V(n-1) into it
            cute.arch.cp_async_wait_group(0)
            cute.arch.barrier()
            if n_block > n_block_min:
                self.load_kv(self._stage(loads, 1 - s), self._stage(loads, 1 - s).K, n_block - 1, False)
                self._load_vt(vt, n_block - 1, 1 - s)
            cute.arch.cp_async_commit_group()
        else:
            # K(n) has landed; everyone is done with V(n+1): start V(n)
            cute.arch.cp_async_wait_group(0)
            cute.arch.barrier()
            self._load_vt(vt, n_block, 0)
            cute.arch.cp_async_commit_group()
        # S = Q·Kᵀ in 8 bits; K's B fragments in q8_b_split groups of key columns per k-block
        acc_dtype = Int32 if cutlass.const_expr(self.qk_acc == "s32") else Float32
        acc_S = cute.make_rmem_tensor(((2, 2), acc_shape[0], acc_shape[1]), acc_dtype)
        acc_S.fill(0)
        num_k = cute.size(K[3].shape[2])
        bs = self.cfg.q8_b_split
        ncp = cute.size(K[2].shape[1]) // bs  # ldmatrix columns (of two 8-key tiles) per group
        nmm = acc_shape[1] // bs  # 8-key MMA tiles per group
        sK_s = self._st(K[1], s, 3)
        for k in cutlass.range_constexpr(num_k):
            if cutlass.const_expr(not self.q_in_regs):
                cute.copy(Q[0], Q[1][None, None, k], Q[2][None, None, k])
            for g in cutlass.range_constexpr(bs):
                if cutlass.const_expr(bs == 1):
                    cute.copy(K[0], sK_s[None, None, k], K[2][None, None, k])
                else:
                    for j in cutlass.range_constexpr(g * ncp, (g + 1) * ncp):
                        cute.copy(K[0], sK_s[None, j, k], K[2][None, j, k])
                for m in cutlass.range_constexpr(acc_shape[0]):
                    a = cute.recast_tensor(Q[3][None, m, k], Int32)
                    for n in cutlass.range_constexpr(g * nmm, (g + 1) * nmm):
                        b = cute.recast_tensor(K[3][None, n, k], Int32)
                        mma_m16n8k32(self.cfg.qk, self.qk_acc, acc_S[None, m, n], a, b)
        if cutlass.const_expr(not two):
            # everyone is done with K(n): start K(n-1); V(n) is waited for just before P·V
            cute.arch.barrier()
            if n_block > n_block_min:
                self.load_kv(self._stage(loads, 0), self._stage(loads, 0).K, n_block - 1, False)
            cute.arch.cp_async_commit_group()
        acc_Sf = acc_S
        bias = None  # what the fp32 accumulators hold beyond the scores
        if cutlass.const_expr(self.qk_acc == "s32"):
            # int32 -> fp32 in place, exactly, without the quarter-rate I2F: |s| < 2^22 (head_dim *
            # 127 * 127 for head_dim <= 256), so the bits of s + 0x4B400000 are the float 1.5 * 2^23 + s
            # (the bias the softmax's FFMA removes; the cap needs the scores themselves)
            acc_S.store(acc_S.load() + Int32(F32_MAGIC_BITS))
            acc_Sf = cute.recast_tensor(acc_S, Float32)
            if cutlass.const_expr(cap is not None):
                acc_Sf.store(acc_Sf.load() - Float32(F32_MAGIC))
            else:
                bias = F32_MAGIC
        acc_S_mn = acc_mn_view(acc_Sf)
        if cutlass.const_expr(cap is not None):
            # softcap * tanh(s * k_scale * cap_scale + shift / softcap) (the module docstring)
            cs = k_scale * cap[0]
            for r in cutlass.range_constexpr(cute.size(acc_S_mn.shape[0])):
                for c in cutlass.range_constexpr(cute.size(acc_S_mn.shape[1])):
                    acc_S_mn[r, c] = acc_S_mn[r, c] * cs + shift[r]
            acc_Sf.store(cute.math.tanh(acc_Sf.load(), fastmath=True) * cap[1])
        if cutlass.const_expr(need_mask):
            apply_mask(
                acc_S_mn, tScS_mn, m_block, n_block, ctx.seqlen_q, ctx.seqlen_k, ctx.window_left, ctx.window_right,
                self.tile_m, self.tile_n, 1, self.is_causal, self.is_local,
            )  # fmt: skip
        if cutlass.const_expr(cap is not None):
            rescale = softmax.online_softmax(acc_S_mn, row_scale, is_first)
        else:  # the key block's scale and the bias in the exponent's FFMA
            rescale = softmax.online_softmax(acc_S_mn, row_scale, is_first, k_scale, bias)
        # P in e4m3, straight from the accumulators: A register (mh, kh) of 32-key step kb holds the
        # two column pairs of 8-column tiles 4kb + 2kh and 4kb + 2kh + 1 of row mh
        num_kb = self.tile_n // 32
        rP = cute.make_rmem_tensor((4, acc_shape[0], num_kb), Int32)
        for kb in cutlass.range_constexpr(num_kb):
            for m in cutlass.range_constexpr(acc_shape[0]):
                for kh in cutlass.range_constexpr(2):
                    for mh in cutlass.range_constexpr(2):
                        row, col = mh + 2 * m, 2 * (4 * kb + 2 * kh)
                        rP[mh + 2 * kh, m, kb] = pack_e4m3x4(
                            acc_S_mn[row, col],
                            acc_S_mn[row, col + 1],
                            acc_S_mn[row, col + 2],
                            acc_S_mn[row, col + 3],
                        )
        if cutlass.const_expr(not two):
            cute.arch.cp_async_wait_group(1)  # V(n) has landed (K(n-1) may still be in flight)
            cute.arch.barrier()
        # O's rescale. With fp32 accumulation O is the P·V MMAs' accumulator: rescaled on every block,
        # without a branch (row_scale is exactly 1 where no row max moved its offset); under a branch
        # the compiler keeps O outside the aligned register quads an MMA accumulates in and moves
        # every tile in and out of one in every block. With fp16 accumulation O only takes adds: it
        # is rescaled where some row of the warp needs it (the d256 builds spill otherwise).
        if cutlass.const_expr(not is_first):
            if cutlass.const_expr(self.cfg.pv_accum == "fp32"):
                self._rescale_o(acc_O, row_scale)
            elif rescale:
                self._rescale_o(acc_O, row_scale)
        # O += P·V; Vᵀ's B fragments in codegen.pv_split groups of O columns per 32-key step
        num_n = cute.size(Vt[3].shape[1])
        vs_ = self.pv_split
        vcp = cute.size(Vt[2].shape[1]) // vs_
        vmm = num_n // vs_
        sVt_s = self._st(Vt[1], s, 3)
        for kb in cutlass.range_constexpr(num_kb):
            for g in cutlass.range_constexpr(vs_):
                # one copy per ldmatrix column (one for the whole group gives ptxas a worse schedule)
                for j in cutlass.range_constexpr(g * vcp, (g + 1) * vcp):
                    cute.copy(Vt[0], sVt_s[None, j, kb], Vt[2][None, j, kb])
                for m in cutlass.range_constexpr(acc_shape[0]):
                    a = rP[None, m, kb]
                    for n in cutlass.range_constexpr(g * vmm, (g + 1) * vmm):
                        b = cute.recast_tensor(Vt[3][None, n, kb], Int32)
                        if cutlass.const_expr(self.cfg.pv_accum == "fp32"):
                            mma_m16n8k32("fp8", "f32", acc_O[None, m, n], a, b)
                        else:
                            acc16 = cute.make_rmem_tensor(2, Int32)
                            acc16.fill(0)
                            mma_m16n8k32("fp8", "f16", acc16, a, b)
                            self._add_f16(acc_O[None, m, n], acc16)

    @cute.jit
    def _rescale_o(self, acc_O: cute.Tensor, row_scale: cute.Tensor):
        """Each row of the O accumulators times its ``row_scale``."""
        acc_O_mn = acc_mn_view(acc_O)
        for r in cutlass.range_constexpr(cute.size(acc_O_mn.shape[0])):
            acc_O_mn[r, None] = acc_O_mn[r, None].load() * row_scale[r]

    @cute.jit
    def _add_f16(self, acc: cute.Tensor, acc16: cute.Tensor):
        """``acc`` (4 fp32) += the two packed f16 pairs of ``acc16``."""
        h = cute.recast_tensor(acc16, cutlass.Float16)
        for i in cutlass.range_constexpr(4):
            acc[i] = acc[i] + h[i].to(Float32)

    # ------------------------------------------------------------------ compile without tensors
    @staticmethod
    def fake_args(cfg: Q8FwdConfig) -> tuple:
        """Placeholders for :meth:`__call__`: ``(mQ, mK, mVt, mQScale, mKScale, mVScale, mO, mLSE,
        mSeqUsedQ, mSeqUsedK, mShift, mSink, softmax_scale, window_left, window_right, softcap,
        stream)`` (the lengths None unless ``has_seqused_q`` / ``has_seqused_k``, the shift unless
        ``reads_lse_shift``, the sinks unless ``has_sink``)."""
        dt = DTYPES[cfg.dtype]
        sym = cute.sym_int
        b, sq, sk, skp, hq, hkv, nq, nk = (sym() for _ in range(8))
        q = fake_tensor(dt, (b, sq, hq, cfg.head_dim // 2))
        k = fake_tensor(dt, (b, sk, hkv, cfg.head_dim // 2))
        vt = fake_tensor(dt, (b, hkv, cfg.head_dim_v, skp))
        qs = fake_tensor(Float32, (b, hq, nq), divisibility=1)
        ks = fake_tensor(Float32, (b, hkv, nk), divisibility=1)
        vs = fake_tensor(Float32, (b, hkv, cfg.head_dim_v), divisibility=1)
        o = fake_tensor(dt, (b, sq, hq, cfg.head_dim_v))
        lse = fake_tensor(Float32, (b, hq, sq), divisibility=1)
        used_q = fake_tensor(Int32, (b,), divisibility=1) if cfg.has_seqused_q else None
        used_k = fake_tensor(Int32, (b,), divisibility=1) if cfg.has_seqused_k else None
        shift = fake_tensor(Float32, (b, hq, sq), divisibility=1) if cfg.reads_lse_shift else None
        sink = fake_tensor(Float32, (hq,), divisibility=1) if cfg.has_sink else None
        return (
            q, k, vt, qs, ks, vs, o, lse, used_q, used_k, shift, sink, Float32(1.0), Int32(-1), Int32(-1),
            Float32(0.0), fake_stream(),
        )  # fmt: skip
