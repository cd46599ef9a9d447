"""Split-KV combine: merge the partial outputs of ``num_splits`` key ranges through their LSEs.

Tensors (one batch mode so that fixed-length and varlen share the kernel; varlen passes batch 1):

* ``mOp`` fp32 ``(splits, batch, seqlen, nheads, dv)``, ``mLSEp`` fp32 ``(splits, batch, seqlen, nheads)``
  (any strides: the split kernel writes LSE as ``(.., nheads, seqlen)`` and the host passes a permuted
  view), ``mO`` 16-bit ``(batch, seqlen, nheads, dv)``, ``mLSE`` fp32 ``(batch, seqlen, nheads)``
  (a view), optional ``mSink`` fp32 ``(nheads,)``.

Algorithm, ``dv / 32`` warps per (query, head) row, each of them 32 of the row's output columns (one
per lane, coalesced):

1. each lane loads its column of the partials of up to 32 splits at once (predicated on the split
   count) and up to ``ceil(splits / 32)`` partial LSEs: the loads are independent of each other, so a
   row of up to 32 splits costs one load latency (a batch-1 decode has few rows and up to 64 splits:
   its combine is that latency);
2. ``m = max_s lse_s`` (warp all-reduce; an all-``-inf`` row uses ``m = 0``), ``w_s = exp(lse_s - m)``,
   ``total = Σ_s w_s`` (+ ``exp(sink - m)`` with a learnable sink), ``lse = m + log(total)`` (``-inf``
   when ``total = 0``; stored by the row's first warp);
3. ``Σ_s (w_s / total) · O_s`` in fp32, in split order (the weights reach every lane by warp shuffles;
   a split of weight 0 adds nothing, whatever its partial holds), stored converted to the output
   dtype. Splits 32..63 are a second round of loads.

Constraints: ``splits <= 64``, ``dv`` a multiple of 32 up to 256.
"""

from __future__ import annotations

import math

import cutlass
import cutlass.cute as cute
from cutlass import Float32

from fa4_core.softmax import LOG2_E
from fa4_sm120.configs import CombineConfig
from fa4_sm120.limits import MAX_SPLITS
from fa4_sm120.mma_sync import DTYPES, MmaSyncKernel, check_dtype, check_head_dims, fake_stream, fake_tensor

__all__ = ["CombineConfig", "SplitKVCombine", "MAX_SPLITS"]

_LN_2 = math.log(2.0)


class SplitKVCombine(MmaSyncKernel):
    @staticmethod
    def can_implement(cfg: CombineConfig) -> None:
        check_dtype(cfg.dtype)
        check_head_dims({"head_dim_v": cfg.head_dim_v})

    @cute.jit
    def __call__(
        self, mOp: cute.Tensor, mLSEp: cute.Tensor, mO: cute.Tensor, mLSE: cute.Tensor, mSink, stream
    ):
        warps = mO.shape[1] * mO.shape[2] * (self.cfg.head_dim_v // 32)
        grid = (cute.ceil_div(warps, self.cfg.num_warps), mO.shape[0], 1)
        self.kernel(mOp, mLSEp, mO, mLSE, mSink).launch(
            grid=grid, block=[32 * self.cfg.num_warps, 1, 1], stream=stream
        )

    @cute.kernel
    def kernel(self, mOp: cute.Tensor, mLSEp: cute.Tensor, mO: cute.Tensor, mLSE: cute.Tensor, mSink):
        tidx, _, _ = cute.arch.thread_idx()
        bx, batch, _ = cute.arch.block_idx()
        lane = tidx % 32
        per_row = self.cfg.head_dim_v // 32  # warps per row
        g = bx * self.cfg.num_warps + tidx // 32
        nheads = mO.shape[2]
        row = g // per_row
        if row < mO.shape[1] * nheads:
            chunk = g - row * per_row
            col = chunk * 32 + lane
            q = row // nheads
            h = row - q * nheads
            splits = mOp.shape[0]
            rounds = MAX_SPLITS // 32
            # the first 32 splits' partials of this lane's column, issued before anything waits on them
            o_col = mOp[None, batch, q, h, col]  # (splits,): one address, then a stride per split
            o_v = cute.make_rmem_tensor(32, Float32)
            for j in cutlass.range_constexpr(32):
                o_v[j] = Float32(0.0)
                if j < splits:
                    o_v[j] = o_col[j]
            lse_v = cute.make_rmem_tensor(rounds, Float32)
            m = -Float32.inf
            for i in cutlass.range_constexpr(rounds):
                s = lane + 32 * i
                lse_v[i] = -Float32.inf
                if s < splits:
                    lse_v[i] = mLSEp[s, batch, q, h]
                m = cute.arch.fmax(m, lse_v[i])
            for off in cutlass.range_constexpr(5):
                m = cute.arch.fmax(m, cute.arch.shuffle_sync_bfly(m, offset=1 << (4 - off)))
            m = Float32(0.0) if m == -Float32.inf else m
            total = Float32(0.0)
            for i in cutlass.range_constexpr(rounds):
                total += cute.math.exp2((lse_v[i] - m) * LOG2_E, fastmath=True)
            for off in cutlass.range_constexpr(5):
                total = total + cute.arch.shuffle_sync_bfly(total, offset=1 << (4 - off))
            if cutlass.const_expr(self.cfg.has_sink):
                total = total + cute.math.exp2((mSink[h] - m) * LOG2_E, fastmath=True)
            inv = Float32(0.0) if total == Float32(0.0) else Float32(1.0) / total
            if lane == 0 and chunk == 0:
                mLSE[batch, q, h] = (
                    -Float32.inf
                    if total == Float32(0.0)
                    else m + cute.math.log2(total, fastmath=False) * _LN_2
                )
            # split s's weight lives in lane s % 32 (register s // 32) and reaches every lane by a shuffle
            w_v = cute.make_rmem_tensor(rounds, Float32)
            for i in cutlass.range_constexpr(rounds):
                w_v[i] = cute.math.exp2((lse_v[i] - m) * LOG2_E, fastmath=True) * inv
            acc = Float32(0.0)
            for i in cutlass.range_constexpr(rounds):
                if 32 * i < splits:
                    if cutlass.const_expr(i > 0):  # the next 32 splits' partials
                        for j in cutlass.range_constexpr(32):
                            o_v[j] = Float32(0.0)
                            if 32 * i + j < splits:
                                o_v[j] = o_col[32 * i + j]
                    for j in cutlass.range_constexpr(32):
                        w = cute.arch.shuffle_sync(w_v[i], j)
                        acc = Float32(cutlass.select_(w != Float32(0.0), acc + w * o_v[j], acc))
            mO[batch, q, h, col] = acc.to(self.dtype)

    @staticmethod
    def fake_args(cfg: CombineConfig) -> tuple:
        """``(mOp, mLSEp, mO, mLSE, mSink, stream)`` placeholders (the LSEs with any strides)."""
        sym = cute.sym_int
        s, b, n, h = sym(), sym(), sym(), sym()
        dt = DTYPES[cfg.dtype]
        op = fake_tensor(Float32, (s, b, n, h, cfg.head_dim_v), divisibility=1)
        lsep = cute.runtime.make_fake_tensor(
            Float32, (s, b, n, h), stride=tuple(cute.sym_int64() for _ in range(4)), assumed_align=4
        )
        o = fake_tensor(dt, (b, n, h, cfg.head_dim_v), divisibility=1)
        lse = cute.runtime.make_fake_tensor(
            Float32, (b, n, h), stride=tuple(cute.sym_int64() for _ in range(3)), assumed_align=4
        )
        sink = fake_tensor(Float32, (h,), divisibility=1) if cfg.has_sink else None
        return op, lsep, o, lse, sink, fake_stream()


def compile_combine(cfg: CombineConfig, *, tvm_ffi: bool = True, gpu_arch: str | None = None, dump_dir=None):
    """Compile the combine of ``cfg`` (see :func:`fa4_sm120.compile.compile_fwd`)."""
    return SplitKVCombine.compile(cfg, tvm_ffi=tvm_ffi, gpu_arch=gpu_arch, dump_dir=dump_dir)
