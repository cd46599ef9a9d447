"""Online softmax for FlashAttention, in exp2 with the softmax scale folded in.

Per query row the kernel keeps ``row_max`` (of the raw scores) and ``row_sum`` (of
``exp2(s * scale_log2 - row_max * scale_log2)``, thread-partial until :meth:`finalize`). For each
new key block:

1. ``m_new = max(m_old, max_j s_j)`` (a quad all-reduce: the 4 lanes of an accumulator row);
2. ``p_j = exp2(s_j * scale_log2 - m_new * scale_log2)`` (one FFMA + EX2 per score); a row whose
   max is still ``-inf`` (no visible key yet) uses 0 as its offset so it yields ``p = 0``, not NaN;
3. ``row_sum = row_sum * exp2((m_old - m_new) * scale_log2) + sum_j p_j``, and the same factor
   rescales the output accumulator row (returned, applied by the kernel). With a
   ``rescale_threshold`` ``t > 0`` (log2 units), a warp keeps its rows' old offsets unless one of them
   grew by more than ``t`` (``p <= 2^t``, exact: the offsets cancel in ``O / row_sum`` and in the LSE);
   it then returns False and the kernel skips the rescale of its output rows, which in a long
   non-causal row is almost every block after the first few;
4. :meth:`finalize`: ``O /= row_sum`` (0 for empty rows) and
   ``lse = (m * scale_log2 + log2(row_sum)) * ln 2`` (natural log; ``-inf`` for empty rows).

``scale_log2 = softmax_scale * log2(e)`` is a runtime value: changing the scale never recompiles.

Three folds for kernels whose accumulators are not yet the scores (the 8-bit forward), each free in
the exponent's FFMA: a per-block ``block_scale`` (the scores are the accumulators times it: a key
block's dequantization scale), a constant ``score_bias`` (the accumulators hold ``score +
score_bias``: INT8 sums converted to fp32 by their bit pattern) and a constant ``exp_offset`` (log2
units: every ``p`` comes out ``2^exp_offset`` times larger, a power-of-two scale into an 8-bit
format; :meth:`finalize` takes it out of the LSE and puts it on a sink's term, so ``O / row_sum`` is
unchanged).
"""

from __future__ import annotations

import math

import cutlass
import cutlass.cute as cute
from cutlass import Float32

from fa4_core.layout import quad_allreduce_max, quad_allreduce_sum

__all__ = ["OnlineSoftmax", "LOG2_E", "LN_2"]

LOG2_E = math.log2(math.e)
LN_2 = math.log(2.0)


def _tree(t: cute.Tensor, r: int, op):
    """``op`` over row ``r`` of the register tensor ``t`` (rows, cols) as a pairwise tree: depth
    ``ceil(log2(cols))`` (unrolled at trace time)."""
    vals = [t[r, j] for j in range(cute.size(t.shape[1]))]
    while len(vals) > 1:
        pairs = [op(vals[i], vals[i + 1]) for i in range(0, len(vals) - 1, 2)]
        vals = pairs + vals[len(vals) - len(vals) % 2 :]
    return vals[0]


class OnlineSoftmax:
    """Row statistics of one thread's accumulator rows. Build inside a kernel."""

    def __init__(
        self,
        scale_log2: Float32,
        num_rows: int,
        rescale_threshold: float = 0.0,
        tree_reduce: bool = False,
        exp_offset: float = 0.0,
    ):
        self.scale_log2 = scale_log2
        self.exp_offset = exp_offset
        self.num_rows = num_rows
        self.rescale_threshold = rescale_threshold
        # True: a row's max and sum are pairwise trees (depth log2(cols)) instead of the linear chain
        # that TensorSSA.reduce emits (depth cols), for fewer dependent-latency stalls; the sum then
        # adds in another order (same fp32 accuracy class)
        self.tree_reduce = tree_reduce
        self.row_max = cute.make_rmem_tensor(num_rows, Float32)
        self.row_sum = cute.make_rmem_tensor(num_rows, Float32)
        self.row_max.fill(-Float32.inf)
        self.row_sum.fill(0.0)

    @cute.jit
    def online_softmax(
        self,
        acc_S_mn: cute.Tensor,
        row_scale: cute.Tensor,
        is_first: cutlass.Constexpr[bool],
        block_scale=None,
        score_bias: cutlass.Constexpr = None,
    ):
        """Turn raw scores ``acc_S_mn`` (rows, cols) into probabilities in place; write into
        ``row_scale`` the factor by which each output row must be rescaled. Returns whether any of
        them can differ from 1 in this warp (warp-uniform): where it is false, the caller may skip
        the rescale of its output rows (every factor is exactly 1).

        ``block_scale`` (a positive Float32, or None for 1): the scores are ``(acc - score_bias) *
        block_scale``; ``score_bias`` (a Python float, or None for 0). Masked entries are ``-inf``."""
        c = self.scale_log2
        if cutlass.const_expr(block_scale is not None):
            # at least the smallest normal float: a masked -inf times 0 would be NaN
            c = cute.arch.fmax(self.scale_log2 * block_scale, Float32(1.1754944e-38))
        m_cur = cute.make_rmem_tensor(self.num_rows, Float32)
        for r in cutlass.range_constexpr(self.num_rows):
            if cutlass.const_expr(self.tree_reduce):
                m_row = _tree(acc_S_mn, r, cute.arch.fmax)
            else:
                m_row = acc_S_mn[r, None].load().reduce(cute.ReductionOp.MAX, -Float32.inf, 0)
            m_row = quad_allreduce_max(m_row)
            if cutlass.const_expr(score_bias is not None):
                m_row = m_row - Float32(score_bias)  # exact: -inf stays -inf
            if cutlass.const_expr(block_scale is not None):
                m_row = m_row * block_scale
            m_cur[r] = m_row
        update = cutlass.Boolean(True)
        if cutlass.const_expr(not is_first and self.rescale_threshold > 0.0):
            # keep the old offsets unless some row of the warp grew by more than the threshold
            # (in log2 units): p <= 2^threshold then, exact in fp32 and as a 16-bit MMA operand
            grow = cutlass.Boolean(False)
            for r in cutlass.range_constexpr(self.num_rows):
                d = m_cur[r] * self.scale_log2 - self.row_max[r] * self.scale_log2
                grow = grow | (d > Float32(self.rescale_threshold))
            update = cute.arch.vote_any_sync(grow)
        for r in cutlass.range_constexpr(self.num_rows):
            s = acc_S_mn[r, None].load()
            m_old = self.row_max[r]
            m_new = m_cur[r]
            if cutlass.const_expr(not is_first):
                m_new = cute.arch.fmax(m_old, m_cur[r])
                if cutlass.const_expr(self.rescale_threshold > 0.0):
                    m_new = m_new if update else m_old
            m_scaled = m_new * self.scale_log2
            m_scaled = Float32(0.0) if m_new == -Float32.inf else m_scaled
            # the exponent's constant: the row's offset, less the bias's and the offset's share
            m_off = m_scaled
            if cutlass.const_expr(score_bias is not None):
                m_off = m_off + Float32(score_bias) * c
            if cutlass.const_expr(self.exp_offset != 0.0):
                m_off = m_off - Float32(self.exp_offset)
            p = cute.math.exp2(s * c - m_off, fastmath=True)
            acc_S_mn[r, None] = p
            if cutlass.const_expr(self.tree_reduce):
                p_sum = _tree(acc_S_mn, r, lambda a, b: a + b)
            else:
                p_sum = p.reduce(cute.ReductionOp.ADD, Float32.zero, 0)
            if cutlass.const_expr(is_first):
                row_scale[r] = Float32(1.0)
                self.row_sum[r] = p_sum
            else:
                scale = cute.math.exp2(m_old * self.scale_log2 - m_scaled, fastmath=True)
                if cutlass.const_expr(self.rescale_threshold > 0.0):
                    scale = scale if update else Float32(1.0)
                row_scale[r] = scale
                self.row_sum[r] = self.row_sum[r] * scale + p_sum
            self.row_max[r] = m_new
        return update

    @cute.jit
    def finalize(self, row_scale: cute.Tensor, lse: cute.Tensor, sink_log2=None):
        """``row_scale[r] = 1 / row_sum`` (0 for a row with no visible key) and the natural-log LSE
        (NaN for a row whose sum is NaN).

        ``sink_log2`` (optional, one value per row: the learnable sink logit times log2(e)) adds
        ``exp(sink)`` to the normaliser; a row with no visible key then has ``lse = sink``.
        """
        for r in cutlass.range_constexpr(self.num_rows):
            total = quad_allreduce_sum(self.row_sum[r])
            m_scaled = self.row_max[r] * self.scale_log2
            if cutlass.const_expr(sink_log2 is not None):
                m_scaled = -Float32.inf if self.row_max[r] == -Float32.inf else m_scaled
                m_final = cute.arch.fmax(m_scaled, sink_log2[r])
                rescale = cute.math.exp2(m_scaled - m_final, fastmath=True)
                sink_e = sink_log2[r] - m_final
                if cutlass.const_expr(self.exp_offset != 0.0):
                    sink_e = sink_e + Float32(self.exp_offset)
                total = total * rescale + cute.math.exp2(sink_e, fastmath=True)
                row_scale[r] = rescale * cute.arch.rcp_approx(total)
                lse[r] = (m_final + self._log2_sum(total)) * LN_2
            else:
                # a NaN row sum (a NaN score, or an infinite one less itself) is not empty: it
                # reaches the output and the LSE, so a split-KV combine propagates it too
                empty = total == Float32(0.0)
                row_scale[r] = Float32(0.0) if empty else cute.arch.rcp_approx(total)
                lse[r] = -Float32.inf if empty else (m_scaled + self._log2_sum(total)) * LN_2

    def _log2_sum(self, total):
        """``log2`` of a row sum, ``exp_offset`` taken out."""
        lt = cute.math.log2(total, fastmath=True)
        if cutlass.const_expr(self.exp_offset != 0.0):
            lt = lt - Float32(self.exp_offset)
        return lt
