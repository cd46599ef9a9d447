"""FlashAttention forward of the mma.sync family, for SM120/SM121 (and SM80-SM90 in compat mode).

Tensors (16-byte aligned base pointers, last dimension contiguous, other strides multiples of 8
elements; fp16 or bf16, all of one dtype; LSE fp32):

* ``mQ (batch, seqlen_q, nheads, head_dim)``, ``mK (batch, seqlen_k, nheads_kv, head_dim)``,
  ``mV (batch, seqlen_k, nheads_kv, head_dim_v)``, ``mO (batch, seqlen_q, nheads, head_dim_v)``,
  ``mLSE (batch, nheads, seqlen_q)`` (natural log; ``-inf`` for a query that sees no key).

Features: any ``seqlen_q``/``seqlen_k`` >= 1 (tiles need not divide them), causal masks aligned
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
   (:class:`fa4_core.softmax.OnlineSoftmax`) and rescale ``O``; convert ``P`` to 16 bits **in
   registers** and reuse it as the A operand of ``O += P·V`` (``ldmatrix.trans`` for V).
3. Epilogue: ``O /= row_sum``; O goes registers -> shared memory through a copy partitioned exactly
   like the mma.sync accumulator (``make_tiled_copy_C`` over plain stores: never ``stmatrix``, which
   belongs to wgmma's layout, and never TMA: this class picks no Hopper path whatever the target),
   then shared -> global with 128-bit stores; LSE from the lanes that own column 0 of a row.

Constraints: head_dim and head_dim_v multiples of 32 up to 256; shared memory
``fwd_smem_bytes(...)`` (:mod:`fa4_sm120.smem`) within the arch cap (101,376 B on SM120);
``tile_m`` a multiple of ``16 * num_warps``; ``tile_n`` a multiple of 16.
"""

from __future__ import annotations

from dataclasses import dataclass

import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32
from cutlass.cute.nvgpu import cpasync, warp

from fa4_core import arch as arch_mod
from fa4_core.block_info import BlockInfo
from fa4_core.errors import UnsupportedConfigError, unsupported
from fa4_core.layout import acc_as_a_operand, acc_mn_view
from fa4_core.mask import apply_mask
from fa4_core.pack_gqa import unpack_row
from fa4_core.softmax import LOG2_E, OnlineSoftmax
from fa4_sm120.smem import fwd_smem_bytes

__all__ = ["FwdConfig", "FlashAttentionForwardSm120", "DTYPES", "HEAD_DIMS"]

DTYPES = {"float16": cutlass.Float16, "bfloat16": cutlass.BFloat16}
HEAD_DIMS = (32, 64, 96, 128, 160, 192, 224, 256)


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

    @property
    def num_warps(self) -> int:
        return self.num_threads // 32

    @property
    def smem_bytes(self) -> int:
        return fwd_smem_bytes(self.tile_m, self.tile_n, self.head_dim, self.head_dim_v, self.num_stages)


class FlashAttentionForwardSm120:
    """The forward kernel class. ``FlashAttentionForwardSm120(cfg)`` then ``cute.compile(obj, ...)``."""

    def __init__(self, cfg: FwdConfig):
        self.can_implement(cfg)
        self.cfg = cfg
        self.dtype = DTYPES[cfg.dtype]
        self.tile_m, self.tile_n = cfg.tile_m, cfg.tile_n
        self.head_dim, self.head_dim_v = cfg.head_dim, cfg.head_dim_v
        self.num_threads = cfg.num_threads
        self.is_causal, self.is_local = cfg.is_causal, cfg.is_local
        self.pack_gqa = cfg.pack_gqa
        self.qhead_per_kvhead = cfg.qhead_per_kvhead if cfg.pack_gqa else 1
        self.q_in_regs = cfg.q_in_regs

    # ------------------------------------------------------------------ constraints
    @staticmethod
    def can_implement(cfg: FwdConfig) -> None:
        """Raise :class:`UnsupportedConfigError` naming the first violated constraint."""
        if cfg.dtype not in DTYPES:
            raise unsupported("dtype", cfg.dtype, "float16, bfloat16")
        for name, d in (("head_dim", cfg.head_dim), ("head_dim_v", cfg.head_dim_v)):
            if d not in HEAD_DIMS:
                raise unsupported(name, d, f"multiples of 32 up to 256: {HEAD_DIMS}")
        if cfg.num_threads % 32 or cfg.num_threads < 64 or cfg.num_threads > 512:
            raise unsupported("num_threads", cfg.num_threads, "a multiple of 32 in [64, 512]")
        if cfg.tile_m % (16 * cfg.num_warps):
            raise unsupported("tile_m", cfg.tile_m, f"a multiple of 16 * num_warps = {16 * cfg.num_warps}")
        if cfg.tile_n % 16 or cfg.tile_n < 16:
            raise unsupported("tile_n", cfg.tile_n, "a multiple of 16")
        if cfg.num_stages != 1:
            raise unsupported("num_stages", cfg.num_stages, "1 (K/V loads overlap the MMAs FA2-style)")
        if not cfg.pack_gqa and cfg.qhead_per_kvhead != 1:
            raise unsupported("qhead_per_kvhead", cfg.qhead_per_kvhead, "1 unless pack_gqa")
        if cfg.pack_gqa and not 1 <= cfg.qhead_per_kvhead <= 256:
            raise unsupported("qhead_per_kvhead", cfg.qhead_per_kvhead, "1..256 with pack_gqa")
        for name, d in (("head_dim", cfg.head_dim), ("head_dim_v", cfg.head_dim_v)):
            # gmem copy: threads per row = (smem atom width) / 8 must divide num_threads
            if cfg.num_threads % (_atom_k(d) // 8):
                raise unsupported(
                    "num_threads", cfg.num_threads, f"a multiple of {_atom_k(d) // 8} for {name}={d}"
                )
        cap = arch_mod.smem_capacity(arch_mod.parse_arch(cfg.arch))
        if cfg.smem_bytes > cap:
            raise UnsupportedConfigError(
                f"tile (tile_m={cfg.tile_m}, tile_n={cfg.tile_n}, num_stages={cfg.num_stages}) with "
                f"head_dim={cfg.head_dim}, head_dim_v={cfg.head_dim_v} needs {cfg.smem_bytes} B of shared "
                f"memory; supported: at most {cap} B on {cfg.arch}"
            )

    @staticmethod
    def supports(cfg: FwdConfig) -> bool:
        try:
            FlashAttentionForwardSm120.can_implement(cfg)
        except UnsupportedConfigError:
            return False
        return True

    # ------------------------------------------------------------------ host-side setup (traced)
    def _smem_layout(self, rows: int, d: int, stages: int | None = None):
        atom_k = _atom_k(d)
        atom = cute.make_composed_layout(
            cute.make_swizzle(3 if atom_k == 64 else 2, 3, 3),
            0,
            cute.make_layout((8, atom_k), stride=(atom_k, 1)),
        )
        if stages is None:
            return cute.tile_to_shape(atom, (rows, d), (0, 1))
        return cute.tile_to_shape(atom, (rows, d, stages), (0, 1, 2))

    def _gmem_copy(self, d: int, async_copy: bool):
        elems = 128 // self.dtype.width
        op = (
            cpasync.CopyG2SOp(cache_mode=cpasync.LoadCacheMode.GLOBAL)
            if async_copy
            else cute.nvgpu.CopyUniversalOp()
        )
        atom = cute.make_copy_atom(op, self.dtype, num_bits_per_copy=128)
        tpr = _atom_k(d) // elems  # threads per row
        thr_layout = cute.make_layout((self.num_threads // tpr, tpr), stride=(tpr, 1))
        return cute.make_tiled_copy_tv(atom, thr_layout, cute.make_layout((1, elems)))

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
        stream,
    ):
        sQ_layout = self._smem_layout(self.tile_m, self.head_dim)
        sO_layout = self._smem_layout(self.tile_m, self.head_dim_v)
        sK_layout = self._smem_layout(self.tile_n, self.head_dim)
        sV_layout = self._smem_layout(self.tile_n, self.head_dim_v)
        q_elems = self.tile_m * max(self.head_dim, self.head_dim_v)

        @cute.struct
        class SharedStorage:
            sQ: cute.struct.Align[cute.struct.MemRange[self.dtype, q_elems], 1024]
            sK: cute.struct.Align[cute.struct.MemRange[self.dtype, cute.cosize(sK_layout)], 1024]
            sV: cute.struct.Align[cute.struct.MemRange[self.dtype, cute.cosize(sV_layout)], 1024]

        # the SMEM arithmetic of the tile table is the kernel's: checked when the kernel is traced
        if cutlass.const_expr(SharedStorage.size_in_bytes() != self.cfg.smem_bytes):
            raise UnsupportedConfigError(
                f"shared storage is {SharedStorage.size_in_bytes()} B but fwd_smem_bytes says "
                f"{self.cfg.smem_bytes} B for {self.cfg}"
            )
        tiled_mma = cute.make_tiled_mma(
            warp.MmaF16BF16Op(self.dtype, Float32, (16, 8, 16)),
            (self.num_threads // 32, 1, 1),
            permutation_mnk=(self.num_threads // 32 * 16, 16, 16),
        )
        num_heads_grid = mK.shape[2] if cutlass.const_expr(self.pack_gqa) else mQ.shape[2]
        packed_len = mQ.shape[1] * self.qhead_per_kvhead
        grid = (cute.ceil_div(packed_len, self.tile_m), num_heads_grid, mQ.shape[0])
        self.kernel(
            mQ,
            mK,
            mV,
            mO,
            mLSE,
            softmax_scale * LOG2_E,
            window_left,
            window_right,
            sQ_layout,
            sO_layout,
            sK_layout,
            sV_layout,
            self._gmem_copy(self.head_dim, True),
            self._gmem_copy(self.head_dim_v, True),
            self._gmem_copy(self.head_dim_v, False),
            tiled_mma,
            SharedStorage,
        ).launch(grid=grid, block=[self.num_threads, 1, 1], smem=SharedStorage.size_in_bytes(), stream=stream)

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
        # causal/local: the heaviest query blocks are the last ones: launch them first
        m_block = num_m_blocks - 1 - bidx if cutlass.const_expr(self.is_causal or self.is_local) else bidx

        seqlen_q = mQ.shape[1]
        seqlen_k = mK.shape[1]
        r = self.qhead_per_kvhead
        packed_len = seqlen_q * r
        head_kv = head_idx if cutlass.const_expr(self.pack_gqa) else head_idx // (mQ.shape[2] // mK.shape[2])

        wl = window_left if cutlass.const_expr(self.is_local) else None
        wr = window_right if cutlass.const_expr(self.is_local) else None
        block_info = BlockInfo(self.tile_m, self.tile_n, self.is_causal, self.is_local, r)
        n_block_min, n_block_max = block_info.n_block_range(m_block, seqlen_q, seqlen_k, wl, wr)
        n_right_mask = block_info.right_mask_start(m_block, seqlen_q, seqlen_k, wr)
        n_left_mask = block_info.left_mask_end(m_block, seqlen_q, seqlen_k, wl)

        # ---------------- shared memory
        smem = cutlass.memory.SmemAllocator()
        storage = smem.allocate(SharedStorage)
        sQ = storage.sQ.get_tensor(sQ_layout)
        sO = storage.sQ.get_tensor(sO_layout)
        sK = storage.sK.get_tensor(sK_layout)
        sV = storage.sV.get_tensor(sV_layout)
        sVt = cute.composition(sV, cute.make_layout((self.head_dim_v, self.tile_n), stride=(self.tile_n, 1)))

        # ---------------- global -> shared copies
        thr_copy_QK = gmem_copy_QK.get_slice(tidx)
        thr_copy_V = gmem_copy_V.get_slice(tidx)
        gK = cute.local_tile(mK[batch_idx, None, head_kv, None], (self.tile_n, self.head_dim), (None, 0))
        gV = cute.local_tile(mV[batch_idx, None, head_kv, None], (self.tile_n, self.head_dim_v), (None, 0))
        tKgK = thr_copy_QK.partition_S(gK)
        tKsK = thr_copy_QK.partition_D(sK)
        tVgV = thr_copy_V.partition_S(gV)
        tVsV = thr_copy_V.partition_D(sV)
        cK = cute.make_identity_tensor((self.tile_n, self.head_dim))
        cV = cute.make_identity_tensor((self.tile_n, self.head_dim_v))
        tKcK = thr_copy_QK.partition_S(cK)
        tVcV = thr_copy_V.partition_S(cV)

        # ---------------- MMA partitions
        thr_mma = tiled_mma.get_slice(tidx)
        tSrQ = thr_mma.make_fragment_A(thr_mma.partition_A(sQ))
        tSrK = thr_mma.make_fragment_B(thr_mma.partition_B(sK))
        tOrVt = thr_mma.make_fragment_B(thr_mma.partition_B(sVt))
        acc_O = cute.make_rmem_tensor(thr_mma.partition_shape_C((self.tile_m, self.head_dim_v)), Float32)
        acc_O.fill(0.0)

        ldsm = warp.LdMatrix8x8x16bOp(transpose=False, num_matrices=4)
        ldsm_t = warp.LdMatrix8x8x16bOp(transpose=True, num_matrices=4)
        smem_copy_Q = cute.make_tiled_copy_A(cute.make_copy_atom(ldsm, self.dtype), tiled_mma)
        smem_copy_K = cute.make_tiled_copy_B(cute.make_copy_atom(ldsm, self.dtype), tiled_mma)
        smem_copy_V = cute.make_tiled_copy_B(cute.make_copy_atom(ldsm_t, self.dtype), tiled_mma)
        thr_smem_Q = smem_copy_Q.get_slice(tidx)
        thr_smem_K = smem_copy_K.get_slice(tidx)
        thr_smem_V = smem_copy_V.get_slice(tidx)
        tSsQ = thr_smem_Q.partition_S(sQ)
        tSrQ_view = thr_smem_Q.retile(tSrQ)
        tSsK = thr_smem_K.partition_S(sK)
        tSrK_view = thr_smem_K.retile(tSrK)
        tOsVt = thr_smem_V.partition_S(sVt)
        tOrVt_view = thr_smem_V.retile(tOrVt)

        cS = cute.make_identity_tensor((self.tile_m, self.tile_n))
        tScS_mn = acc_mn_view(thr_mma.partition_C(cS))
        num_rows = cute.size(tScS_mn.shape[0])
        softmax = OnlineSoftmax(scale_log2, num_rows)
        row_scale = cute.make_rmem_tensor(num_rows, Float32)

        # ---------------- prologue: Q (rows addressed arithmetically) and the last K block
        self.load_rows(mQ, sQ, gmem_copy_QK, tidx, m_block, batch_idx, head_idx, packed_len, self.head_dim)
        has_work = n_block_min < n_block_max
        if has_work:
            self.load_kv(gmem_copy_QK, tKgK, tKsK, tKcK, n_block_max - 1, seqlen_k, True)
        cute.arch.cp_async_commit_group()
        if cutlass.const_expr(self.q_in_regs):
            cute.arch.cp_async_wait_group(0)
            cute.arch.barrier()
            cute.copy(smem_copy_Q, tSsQ, tSrQ_view)

        mma_args = (
            tiled_mma,
            thr_mma,
            acc_O,
            tSrQ,
            tSrK,
            tOrVt,
            tSsQ,
            tSrQ_view,
            tSsK,
            tSrK_view,
            tOsVt,
            tOrVt_view,
            smem_copy_Q,
            smem_copy_K,
            smem_copy_V,
        )
        load_args = (gmem_copy_QK, gmem_copy_V, tKgK, tKsK, tKcK, tVgV, tVsV, tVcV, seqlen_k)
        mask_args = (tScS_mn, m_block, seqlen_q, seqlen_k, wl, wr)

        # ---------------- main loop over key blocks, last to first
        if has_work:
            self.one_block(
                n_block_max - 1, n_block_min, mma_args, load_args, mask_args, softmax, row_scale, True, True
            )
        # blocks that still need the right mask (diagonal / window right edge)
        n_mid_hi = cutlass.max(cutlass.min(n_right_mask, n_block_max - 1), n_block_min)
        n_first_masked = n_block_max - 1 - n_mid_hi
        for i in cutlass.range(n_first_masked, unroll=1):
            n_block = n_block_max - 2 - i
            self.one_block(
                n_block, n_block_min, mma_args, load_args, mask_args, softmax, row_scale, False, True
            )
        # mask-free middle
        n_mid_lo = cutlass.min(cutlass.max(n_left_mask, n_block_min), n_mid_hi)
        for i in cutlass.range(n_mid_hi - n_mid_lo, unroll=1):
            n_block = n_mid_hi - 1 - i
            self.one_block(
                n_block, n_block_min, mma_args, load_args, mask_args, softmax, row_scale, False, False
            )
        # blocks before the window's left edge
        if cutlass.const_expr(self.is_local):
            for i in cutlass.range(n_mid_lo - n_block_min, unroll=1):
                n_block = n_mid_lo - 1 - i
                self.one_block(
                    n_block, n_block_min, mma_args, load_args, mask_args, softmax, row_scale, False, True
                )

        # ---------------- epilogue
        lse = cute.make_rmem_tensor(num_rows, Float32)
        softmax.finalize(row_scale, lse)
        acc_O_mn = acc_mn_view(acc_O)
        for r_ in cutlass.range_constexpr(num_rows):
            acc_O_mn[r_, None] = acc_O_mn[r_, None].load() * row_scale[r_]
        cute.arch.cp_async_wait_group(0)
        self.epilogue(
            acc_O,
            lse,
            mO,
            mLSE,
            sO,
            tiled_mma,
            thr_mma,
            gmem_copy_O,
            tidx,
            m_block,
            batch_idx,
            head_idx,
            packed_len,
        )

    # ------------------------------------------------------------------ stage helpers
    @cute.jit
    def one_block(
        self,
        n_block: Int32,
        n_block_min: Int32,
        mma_args,
        load_args,
        mask_args,
        softmax: OnlineSoftmax,
        row_scale: cute.Tensor,
        is_first: cutlass.Constexpr[bool],
        need_mask: cutlass.Constexpr[bool],
    ):
        (
            tiled_mma,
            thr_mma,
            acc_O,
            tSrQ,
            tSrK,
            tOrVt,
            tSsQ,
            tSrQ_view,
            tSsK,
            tSrK_view,
            tOsVt,
            tOrVt_view,
            smem_copy_Q,
            smem_copy_K,
            smem_copy_V,
        ) = mma_args
        gmem_copy_QK, gmem_copy_V, tKgK, tKsK, tKcK, tVgV, tVsV, tVcV, seqlen_k = load_args
        tScS_mn, m_block, seqlen_q, seqlen_k_, wl, wr = mask_args

        acc_S = cute.make_rmem_tensor(thr_mma.partition_shape_C((self.tile_m, self.tile_n)), Float32)
        acc_S.fill(0.0)
        # K(n) has landed; everyone is done with V(n+1): start V(n)
        cute.arch.cp_async_wait_group(0)
        cute.arch.barrier()
        self.load_kv(gmem_copy_V, tVgV, tVsV, tVcV, n_block, seqlen_k, is_first)
        cute.arch.cp_async_commit_group()
        # S = Q K^T
        self.gemm(
            tiled_mma,
            acc_S,
            tSrQ,
            tSrK,
            tSsQ,
            tSrQ_view,
            tSsK,
            tSrK_view,
            smem_copy_Q,
            smem_copy_K,
            self.q_in_regs,
        )
        # V(n) has landed; everyone is done with K(n): start K(n-1)
        cute.arch.cp_async_wait_group(0)
        cute.arch.barrier()
        if n_block > n_block_min:
            self.load_kv(gmem_copy_QK, tKgK, tKsK, tKcK, n_block - 1, seqlen_k, False)
            cute.arch.cp_async_commit_group()
        acc_S_mn = acc_mn_view(acc_S)
        if cutlass.const_expr(need_mask):
            apply_mask(
                acc_S_mn,
                tScS_mn,
                m_block,
                n_block,
                seqlen_q,
                seqlen_k,
                wl,
                wr,
                self.tile_m,
                self.tile_n,
                self.qhead_per_kvhead,
                self.is_causal,
                self.is_local,
            )
        softmax.online_softmax(acc_S_mn, row_scale, is_first)
        if cutlass.const_expr(not is_first):
            acc_O_mn = acc_mn_view(acc_O)
            for r in cutlass.range_constexpr(cute.size(acc_O_mn.shape[0])):
                acc_O_mn[r, None] = acc_O_mn[r, None].load() * row_scale[r]
        # P stays in registers: convert and reinterpret as the A operand of P V
        rP = cute.make_rmem_tensor_like(acc_S, self.dtype)
        rP.store(acc_S.load().to(self.dtype))
        tOrP = acc_as_a_operand(rP)
        self.gemm(tiled_mma, acc_O, tOrP, tOrVt, None, None, tOsVt, tOrVt_view, None, smem_copy_V, True)

    @cute.jit
    def gemm(
        self,
        tiled_mma: cute.TiledMma,
        acc: cute.Tensor,
        tCrA: cute.Tensor,
        tCrB: cute.Tensor,
        tCsA,
        tCrA_view,
        tCsB: cute.Tensor,
        tCrB_view: cute.Tensor,
        smem_copy_A,
        smem_copy_B: cute.TiledCopy,
        a_in_regs: cutlass.Constexpr[bool],
    ):
        """acc += A·B over the K mode, ldmatrix of k-block k+1 overlapping the MMAs of k-block k."""
        num_k = cute.size(tCrB.shape[2])
        if cutlass.const_expr(not a_in_regs):
            cute.copy(smem_copy_A, tCsA[None, None, 0], tCrA_view[None, None, 0])
        cute.copy(smem_copy_B, tCsB[None, None, 0], tCrB_view[None, None, 0])
        for k in cutlass.range_constexpr(num_k):
            if cutlass.const_expr(k + 1 < num_k):
                if cutlass.const_expr(not a_in_regs):
                    cute.copy(smem_copy_A, tCsA[None, None, k + 1], tCrA_view[None, None, k + 1])
                cute.copy(smem_copy_B, tCsB[None, None, k + 1], tCrB_view[None, None, k + 1])
            cute.gemm(tiled_mma, acc, tCrA[None, None, k], tCrB[None, None, k], acc)

    @cute.jit
    def load_kv(
        self,
        gmem_copy: cute.TiledCopy,
        tXgX: cute.Tensor,
        tXsX: cute.Tensor,
        tXcX: cute.Tensor,
        n_block: Int32,
        seqlen_k: Int32,
        check_rows: cutlass.Constexpr[bool],
    ):
        """K or V block ``n_block`` -> shared memory; with ``check_rows``, rows at or past
        ``seqlen_k`` are zero-filled instead (so 0·V and masked scores stay finite)."""
        if cutlass.const_expr(check_rows):
            limit = seqlen_k - n_block * self.tile_n
            for m in cutlass.range_constexpr(cute.size(tXsX.shape[1])):
                if tXcX[0, m, 0][0] < limit:
                    cute.copy(gmem_copy, tXgX[None, m, None, n_block], tXsX[None, m, None])
                else:
                    tXsX[None, m, None].fill(0)
        else:
            cute.copy(gmem_copy, tXgX[None, None, None, n_block], tXsX)

    @cute.jit
    def _row_base(self, mX: cute.Tensor, row: Int32, batch_idx: Int32, head_idx: Int32):
        """Pointer to element 0 of tile row ``row`` (a pack-GQA row when packing): arithmetic from the
        strides (fa4_core.pack_gqa), never ``crd2idx`` on a composite mode."""
        if cutlass.const_expr(self.pack_gqa):
            q_idx, h = unpack_row(row, self.qhead_per_kvhead)
            head = head_idx * self.qhead_per_kvhead + h
        else:
            q_idx, head = row, head_idx
        offset = batch_idx * mX.stride[0] + q_idx * mX.stride[1] + head * mX.stride[2]
        return mX.iterator + offset

    @cute.jit
    def load_rows(
        self,
        mX: cute.Tensor,
        sX: cute.Tensor,
        gmem_copy: cute.TiledCopy,
        tidx: Int32,
        m_block: Int32,
        batch_idx: Int32,
        head_idx: Int32,
        packed_len: Int32,
        d: cutlass.Constexpr[int],
    ):
        thr_copy = gmem_copy.get_slice(tidx)
        tXsX = thr_copy.partition_D(sX)
        tXcX = thr_copy.partition_S(cute.make_identity_tensor((self.tile_m, d)))
        for m in cutlass.range_constexpr(cute.size(tXsX.shape[1])):
            row = m_block * self.tile_m + tXcX[0, m, 0][0]
            if row < packed_len:
                # a (tile_m, d) view whose every row is this one: the thread's row m slice is it
                gRow = cute.make_tensor(
                    self._row_base(mX, row, batch_idx, head_idx),
                    cute.make_layout((self.tile_m, d), stride=(0, 1)),
                )
                tXgRow = thr_copy.partition_S(gRow)
                cute.copy(gmem_copy, tXgRow[None, m, None], tXsX[None, m, None])
            else:
                tXsX[None, m, None].fill(0)

    @cute.jit
    def epilogue(
        self,
        acc_O: cute.Tensor,
        lse: cute.Tensor,
        mO: cute.Tensor,
        mLSE: cute.Tensor,
        sO: cute.Tensor,
        tiled_mma: cute.TiledMma,
        thr_mma,
        gmem_copy_O: cute.TiledCopy,
        tidx: Int32,
        m_block: Int32,
        batch_idx: Int32,
        head_idx: Int32,
        packed_len: Int32,
    ):
        rO = cute.make_rmem_tensor_like(acc_O, self.dtype)
        rO.store(acc_O.load().to(self.dtype))
        # every warp is done reading sQ (O reuses its buffer)
        cute.arch.barrier()
        # registers -> shared, partitioned like the mma.sync accumulator (plain stores)
        smem_copy_O = cute.make_tiled_copy_C(
            cute.make_copy_atom(cute.nvgpu.CopyUniversalOp(), self.dtype), tiled_mma
        )
        thr_smem_O = smem_copy_O.get_slice(tidx)
        cute.copy(smem_copy_O, thr_smem_O.retile(rO), thr_smem_O.partition_D(sO))

        # LSE: the lane holding column 0 of each of its rows writes it
        cO = cute.make_identity_tensor((self.tile_m, self.head_dim_v))
        tOcO_mn = acc_mn_view(thr_mma.partition_C(cO))
        if tOcO_mn[0, 0][1] == 0:
            for r in cutlass.range_constexpr(cute.size(tOcO_mn.shape[0])):
                row = m_block * self.tile_m + tOcO_mn[r, 0][0]
                if row < packed_len:
                    if cutlass.const_expr(self.pack_gqa):
                        q_idx, h = unpack_row(row, self.qhead_per_kvhead)
                        mLSE[batch_idx, head_idx * self.qhead_per_kvhead + h, q_idx] = lse[r]
                    else:
                        mLSE[batch_idx, head_idx, row] = lse[r]

        cute.arch.barrier()
        # shared -> registers (128-bit) -> global, rows addressed arithmetically
        thr_copy_O = gmem_copy_O.get_slice(tidx)
        tOsO = thr_copy_O.partition_S(sO)
        tOrO = cute.make_rmem_tensor_like(tOsO, self.dtype)
        cute.autovec_copy(tOsO, tOrO)
        tOcO = thr_copy_O.partition_S(cO)
        for m in cutlass.range_constexpr(cute.size(tOsO.shape[1])):
            row = m_block * self.tile_m + tOcO[0, m, 0][0]
            if row < packed_len:
                gRow = cute.make_tensor(
                    self._row_base(mO, row, batch_idx, head_idx),
                    cute.make_layout((self.tile_m, self.head_dim_v), stride=(0, 1)),
                )
                tOgRow = thr_copy_O.partition_D(gRow)
                cute.copy(gmem_copy_O, tOrO[None, m, None], tOgRow[None, m, None])


def _atom_k(d: int) -> int:
    """Width (elements) of the swizzled shared-memory atom for a row of ``d`` elements."""
    return 64 if d % 64 == 0 else 32
