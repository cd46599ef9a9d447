"""The backward's preprocess and postprocess kernels (mma-free, bandwidth-bound).

Preprocess, per query row ``i`` of head ``h`` (grid: blocks of ``ROWS`` rows x heads x batch; four
lanes per row, each reading ``head_dim_v / 4`` elements of O and dO with 128-bit loads):

* ``dPsum[b, h, i] = sum_j dO[b, i, h, j] * O[b, i, h, j] - dLSE[b, h, i]`` (fp32, the dLSE term only
  when the gradient of the returned LSE is given), 0 for padding rows ``i >= seqlen_q``;
* ``LSElog2[b, h, i] = LSE[b, h, i] * log2(e)``, and ``+inf`` for a row that sees no key
  (``LSE = -inf``) and for padding rows, so that the main kernel's ``exp2(S*scale_log2 - LSElog2)``
  is exactly 0 there (never ``inf - inf``).

Both outputs are ``(batch, nheads, seqlen_q_pad)`` with ``seqlen_q_pad`` a multiple of the main
kernel's ``tile_m``. The caller zeroes the fp32 dQ accumulator (and the deterministic-mode counters).

Postprocess: ``dQ[b, i, h, :] = (dQaccum[b, h, i, :] * softmax_scale)`` converted to fp16/bf16, rows
``i < seqlen_q`` only (same grid and lane layout as the preprocess, fp32 read, 128-bit write).
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from cutlass import Float32

from fa4_core.layout import quad_allreduce_sum
from fa4_core.softmax import LOG2_E
from fa4_sm120.configs import PrePostConfig
from fa4_sm120.mma_sync import DTYPES, MmaSyncKernel, fake_stream, fake_tensor

__all__ = [
    "PrePostConfig",
    "BwdPreprocess",
    "BwdPostprocess",
    "compile_preprocess",
    "compile_postprocess",
    "ROWS",
]

ROWS = 32  # query rows per CTA
THREADS = 128  # four lanes per row
LANES_PER_ROW = THREADS // ROWS


class _RowKernel(MmaSyncKernel):
    """Blocks of ``ROWS`` query rows of one head, ``LANES_PER_ROW`` lanes per row."""

    num_threads = THREADS

    def __init__(self, cfg: PrePostConfig):
        super().__init__(cfg)
        self.head_dim = cfg.head_dim

    @staticmethod
    def can_implement(cfg: PrePostConfig) -> None:
        cfg.check()

    def row_copy(self):
        """Tiled copy of a (ROWS, head_dim) tile: LANES_PER_ROW lanes per row, 128-bit vectors."""
        return self.gmem_copy(self.head_dim, False, threads_per_row=LANES_PER_ROW)


class BwdPreprocess(_RowKernel):
    def __init__(self, cfg: PrePostConfig):
        super().__init__(cfg)
        self.has_dlse = cfg.has_dlse

    @cute.jit
    def __call__(
        self,
        mO: cute.Tensor,
        mdO: cute.Tensor,
        mLSE: cute.Tensor,
        mdLSE: cute.Tensor,
        mLSElog2: cute.Tensor,
        mdPsum: cute.Tensor,
        stream,
    ):
        grid = (cute.ceil_div(mLSElog2.shape[2], ROWS), mO.shape[2], mO.shape[0])
        self.kernel(mO, mdO, mLSE, mdLSE, mLSElog2, mdPsum, self.row_copy()).launch(
            grid=grid, block=[THREADS, 1, 1], stream=stream
        )

    @cute.kernel
    def kernel(
        self,
        mO: cute.Tensor,
        mdO: cute.Tensor,
        mLSE: cute.Tensor,
        mdLSE: cute.Tensor,
        mLSElog2: cute.Tensor,
        mdPsum: cute.Tensor,
        gmem_copy: cute.TiledCopy,
    ):
        tidx, _, _ = cute.arch.thread_idx()
        m_block, head, batch = cute.arch.block_idx()
        seqlen_q = mO.shape[1]
        seqlen_pad = mLSElog2.shape[2]
        thr = gmem_copy.get_slice(tidx)
        gO = cute.local_tile(mO[batch, None, head, None], (ROWS, self.head_dim), (m_block, 0))
        gdO = cute.local_tile(mdO[batch, None, head, None], (ROWS, self.head_dim), (m_block, 0))
        tOgO = thr.partition_S(gO)
        tOgdO = thr.partition_S(gdO)
        tOcO = thr.partition_S(cute.make_identity_tensor((ROWS, self.head_dim)))
        rO = cute.make_rmem_tensor_like(tOgO, self.dtype)
        rdO = cute.make_rmem_tensor_like(tOgdO, self.dtype)
        rO.fill(0)
        rdO.fill(0)
        row = m_block * ROWS + tOcO[0, 0, 0][0]
        if row < seqlen_q:
            cute.copy(gmem_copy, tOgO, rO)
            cute.copy(gmem_copy, tOgdO, rdO)
        prod = rO.load().to(Float32) * rdO.load().to(Float32)
        dot = quad_allreduce_sum(prod.reduce(cute.ReductionOp.ADD, Float32.zero, 0))
        if tidx % LANES_PER_ROW == 0 and row < seqlen_pad:
            dpsum = Float32(0.0)
            lse_log2 = Float32.inf
            if row < seqlen_q:
                dpsum = dot
                if cutlass.const_expr(self.has_dlse):
                    dpsum = dpsum - mdLSE[batch, head, row]
                lse = mLSE[batch, head, row]
                if lse != -Float32.inf:
                    lse_log2 = lse * LOG2_E
            mdPsum[batch, head, row] = dpsum
            mLSElog2[batch, head, row] = lse_log2

    @staticmethod
    def fake_args(cfg: PrePostConfig) -> tuple:
        """``(mO, mdO, mLSE, mdLSE, mLSElog2, mdPsum, stream)`` placeholders."""
        dt = DTYPES[cfg.dtype]
        sym = cute.sym_int
        b, sq, hq, sqp = sym(), sym(), sym(), sym()
        o = fake_tensor(dt, (b, sq, hq, cfg.head_dim))
        do = fake_tensor(dt, (b, sq, hq, cfg.head_dim))
        lse = fake_tensor(Float32, (b, hq, sq), divisibility=1)
        dlse = fake_tensor(Float32, (b, hq, sq), divisibility=1)
        lse2 = fake_tensor(Float32, (b, hq, sqp), divisibility=1)
        dpsum = fake_tensor(Float32, (b, hq, sqp), divisibility=1)
        return o, do, lse, dlse, lse2, dpsum, fake_stream()


class BwdPostprocess(_RowKernel):
    @cute.jit
    def __call__(self, mdQaccum: cute.Tensor, mdQ: cute.Tensor, softmax_scale: Float32, stream):
        grid = (cute.ceil_div(mdQ.shape[1], ROWS), mdQ.shape[2], mdQ.shape[0])
        self.kernel(mdQaccum, mdQ, softmax_scale, self.row_copy()).launch(
            grid=grid, block=[THREADS, 1, 1], stream=stream
        )

    @cute.kernel
    def kernel(
        self, mdQaccum: cute.Tensor, mdQ: cute.Tensor, softmax_scale: Float32, gmem_copy: cute.TiledCopy
    ):
        tidx, _, _ = cute.arch.thread_idx()
        m_block, head, batch = cute.arch.block_idx()
        seqlen_q = mdQ.shape[1]
        thr = gmem_copy.get_slice(tidx)
        gdQ = cute.local_tile(mdQ[batch, None, head, None], (ROWS, self.head_dim), (m_block, 0))
        gAcc = cute.local_tile(mdQaccum[batch, head, None, None], (ROWS, self.head_dim), (m_block, 0))
        tQgdQ = thr.partition_D(gdQ)
        # the fp32 source partitioned like the 16-bit destination (same element coordinates)
        tQgAcc = thr.partition_S(gAcc)
        tQcQ = thr.partition_S(cute.make_identity_tensor((ROWS, self.head_dim)))
        row = m_block * ROWS + tQcQ[0, 0, 0][0]
        if row < seqlen_q:
            rAcc = cute.make_rmem_tensor_like(tQgAcc, Float32)
            cute.autovec_copy(tQgAcc, rAcc)
            rdQ = cute.make_rmem_tensor_like(tQgdQ, self.dtype)
            rdQ.store((rAcc.load() * softmax_scale).to(self.dtype))
            cute.copy(gmem_copy, rdQ, tQgdQ)

    @staticmethod
    def fake_args(cfg: PrePostConfig) -> tuple:
        """``(mdQaccum, mdQ, softmax_scale, stream)`` placeholders."""
        dt = DTYPES[cfg.dtype]
        sym = cute.sym_int
        b, sq, hq, sqp = sym(), sym(), sym(), sym()
        acc = fake_tensor(Float32, (b, hq, sqp, cfg.head_dim), divisibility=4)
        dq = fake_tensor(dt, (b, sq, hq, cfg.head_dim))
        return acc, dq, Float32(1.0), fake_stream()


def compile_preprocess(cfg: PrePostConfig, *, tvm_ffi=True, gpu_arch=None, dump_dir=None):
    """Compile the preprocess of ``cfg`` (see :func:`fa4_sm120.compile.compile_fwd`)."""
    return BwdPreprocess.compile(cfg, tvm_ffi=tvm_ffi, gpu_arch=gpu_arch, dump_dir=dump_dir)


def compile_postprocess(cfg: PrePostConfig, *, tvm_ffi=True, gpu_arch=None, dump_dir=None):
    """Compile the postprocess of ``cfg`` (see :func:`fa4_sm120.compile.compile_fwd`)."""
    return BwdPostprocess.compile(cfg, tvm_ffi=tvm_ffi, gpu_arch=gpu_arch, dump_dir=dump_dir)
