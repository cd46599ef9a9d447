"""Split-KV combine: merge the partial outputs of ``num_splits`` key ranges through their LSEs.

Tensors (one batch mode so that fixed-length and varlen share the kernel; varlen passes batch 1):

* ``mOp`` fp32 ``(splits, batch, seqlen, nheads, dv)``, ``mLSEp`` fp32 ``(splits, batch, seqlen, nheads)``
  (any strides: the split kernel writes LSE as ``(.., nheads, seqlen)`` and the host passes a permuted
  view), ``mO`` 16-bit ``(batch, seqlen, nheads, dv)``, ``mLSE`` fp32 ``(batch, seqlen, nheads)``
  (a view), optional ``mSink`` fp32 ``(nheads,)``.

Algorithm, one warp per (query, head) row:

1. each lane reads up to ``ceil(splits / 32)`` partial LSEs; ``m = max_s lse_s`` (warp all-reduce;
   an all-``-inf`` row uses ``m = 0``);
2. ``w_s = exp(lse_s - m)``, ``total = Σ_s w_s`` (+ ``exp(sink - m)`` with a learnable sink);
   ``lse = m + log(total)`` (``-inf`` when ``total = 0``);
3. each lane accumulates ``dv / 32`` output columns (``c * 32 + lane``: coalesced) ``Σ_s (w_s / total) · O_s`` in fp32 and stores
   them converted to the output dtype.

Constraints: ``splits <= 64``, ``dv`` a multiple of 32 up to 256 (each lane owns ``dv / 32`` columns).
"""

from __future__ import annotations

import math

import cutlass
import cutlass.cute as cute
from cutlass import Float32

from fa4_core.errors import unsupported
from fa4_sm120.configs import CombineConfig
from fa4_sm120.fwd import DTYPES, HEAD_DIMS
from fa4_sm120.limits import MAX_SPLITS

__all__ = ["CombineConfig", "SplitKVCombine", "MAX_SPLITS"]

_LOG2_E = math.log2(math.e)
_LN_2 = math.log(2.0)


class SplitKVCombine:
    def __init__(self, cfg: CombineConfig):
        self.can_implement(cfg)
        self.cfg = cfg
        self.dtype = DTYPES[cfg.dtype]

    @staticmethod
    def can_implement(cfg: CombineConfig) -> None:
        if cfg.dtype not in DTYPES:
            raise unsupported("dtype", cfg.dtype, "float16, bfloat16")
        if cfg.head_dim_v not in HEAD_DIMS:
            raise unsupported("head_dim_v", cfg.head_dim_v, f"one of {HEAD_DIMS}")

    @cute.jit
    def __call__(
        self, mOp: cute.Tensor, mLSEp: cute.Tensor, mO: cute.Tensor, mLSE: cute.Tensor, mSink, stream
    ):
        rows = mO.shape[1] * mO.shape[2]
        grid = (cute.ceil_div(rows, self.cfg.num_warps), mO.shape[0], 1)
        self.kernel(mOp, mLSEp, mO, mLSE, mSink).launch(
            grid=grid, block=[32 * self.cfg.num_warps, 1, 1], stream=stream
        )

    @cute.kernel
    def kernel(self, mOp: cute.Tensor, mLSEp: cute.Tensor, mO: cute.Tensor, mLSE: cute.Tensor, mSink):
        tidx, _, _ = cute.arch.thread_idx()
        bx, batch, _ = cute.arch.block_idx()
        lane = tidx % 32
        warp = tidx // 32
        nheads = mO.shape[2]
        row = bx * self.cfg.num_warps + warp
        if row < mO.shape[1] * nheads:
            q = row // nheads
            h = row - q * nheads
            splits = mOp.shape[0]
            per_lane = MAX_SPLITS // 32
            lse_v = cute.make_rmem_tensor(per_lane, Float32)
            m = -Float32.inf
            for i in cutlass.range_constexpr(per_lane):
                s = lane + 32 * i
                lse_v[i] = -Float32.inf
                if s < splits:
                    lse_v[i] = mLSEp[s, batch, q, h]
                m = cute.arch.fmax(m, lse_v[i])
            for off in cutlass.range_constexpr(5):
                m = cute.arch.fmax(m, cute.arch.shuffle_sync_bfly(m, offset=1 << (4 - off)))
            m = Float32(0.0) if m == -Float32.inf else m
            total = Float32(0.0)
            for i in cutlass.range_constexpr(per_lane):
                total += cute.math.exp2((lse_v[i] - m) * _LOG2_E, fastmath=True)
            for off in cutlass.range_constexpr(5):
                total = total + cute.arch.shuffle_sync_bfly(total, offset=1 << (4 - off))
            if cutlass.const_expr(self.cfg.has_sink):
                total = total + cute.math.exp2((mSink[h] - m) * _LOG2_E, fastmath=True)
            inv = Float32(0.0) if total == Float32(0.0) else Float32(1.0) / total
            if lane == 0:
                mLSE[batch, q, h] = (
                    -Float32.inf
                    if total == Float32(0.0)
                    else m + cute.math.log2(total, fastmath=False) * _LN_2
                )
            cols = self.cfg.head_dim_v // 32
            acc = cute.make_rmem_tensor(cols, Float32)
            acc.fill(0.0)
            for s in cutlass.range(splits, unroll=1):
                w = cute.math.exp2((mLSEp[s, batch, q, h] - m) * _LOG2_E, fastmath=True) * inv
                if w != Float32(0.0):
                    for c in cutlass.range_constexpr(cols):
                        acc[c] += w * mOp[s, batch, q, h, c * 32 + lane]
            for c in cutlass.range_constexpr(cols):
                mO[batch, q, h, c * 32 + lane] = acc[c].to(self.dtype)


def fake_combine_args(cfg: CombineConfig):
    from fa4_sm120.compile import fake_tensor

    sym = cute.sym_int
    s, b, n, h = sym(), sym(), sym(), sym()
    dt = DTYPES[cfg.dtype]
    op = fake_tensor(cutlass.Float32, (s, b, n, h, cfg.head_dim_v), divisibility=1)
    lsep = cute.runtime.make_fake_tensor(
        cutlass.Float32, (s, b, n, h), stride=tuple(cute.sym_int64() for _ in range(4)), assumed_align=4
    )
    o = fake_tensor(dt, (b, n, h, cfg.head_dim_v), divisibility=1)
    lse = cute.runtime.make_fake_tensor(
        cutlass.Float32, (b, n, h), stride=tuple(cute.sym_int64() for _ in range(3)), assumed_align=4
    )
    sink = fake_tensor(cutlass.Float32, (h,), divisibility=1) if cfg.has_sink else None
    return op, lsep, o, lse, sink, cute.runtime.make_fake_stream(use_tvm_ffi_env_stream=True)


def compile_combine(cfg: CombineConfig, *, tvm_ffi: bool = True, gpu_arch: str | None = None, dump_dir=None):
    from fa4_sm120.compile import compile_options

    options = compile_options(tvm_ffi=tvm_ffi, gpu_arch=gpu_arch, dump_dir=dump_dir)
    args = fake_combine_args(cfg)
    if options:
        return cute.compile(SplitKVCombine(cfg), *args, options=options)
    return cute.compile(SplitKVCombine(cfg), *args)
