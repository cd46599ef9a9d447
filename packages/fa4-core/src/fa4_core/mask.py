"""Score masking for FlashAttention tiles: sequence ends, causal (bottom-right) and local windows.

The rule is the one of :mod:`fa4_core.block_info`: query ``i`` sees key ``j`` iff ``j < seqlen_k``
and ``i + d - left <= j <= i + d + right`` with ``d = seqlen_k - seqlen_q`` (causal: ``right = 0``,
no left bound). :func:`col_limits` gives, for one query, the half-open key interval it sees, in
key-block-local columns; it is plain integer arithmetic (host-testable). :func:`apply_mask` sets the
scores outside that interval to ``-inf`` in one thread's accumulator (rows x cols view).
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from cutlass import Float32

from fa4_core._intmath import imax, imin

__all__ = ["col_limits", "apply_mask"]


def col_limits(q, n_block, tile_n, seqlen_q, seqlen_k, is_causal, is_local, window_left, window_right):
    """``(lo, hi)``: columns ``lo <= c < hi`` of key block ``n_block`` are visible to query ``q``.

    May be empty or extend past the block; callers compare the column index against them.
    ``window_left``/``window_right`` are used only when ``is_local`` (``None`` = unbounded).
    """
    base = n_block * tile_n
    hi = seqlen_k - base
    lo = 0 - base
    diag = q + seqlen_k - seqlen_q - base
    if is_local:
        if window_right is not None:
            hi = imin(hi, diag + window_right + 1)
        elif is_causal:
            hi = imin(hi, diag + 1)
        if window_left is not None:
            lo = imax(lo, diag - window_left)
    elif is_causal:
        hi = imin(hi, diag + 1)
    return lo, hi


@cute.jit
def apply_mask(
    acc_S_mn: cute.Tensor,
    tScS_mn: cute.Tensor,
    m_block: cutlass.Int32,
    n_block: cutlass.Int32,
    seqlen_q: cutlass.Int32,
    seqlen_k: cutlass.Int32,
    window_left,
    window_right,
    tile_m: cutlass.Constexpr[int],
    tile_n: cutlass.Constexpr[int],
    qhead_per_kvhead: cutlass.Constexpr[int],
    is_causal: cutlass.Constexpr[bool],
    is_local: cutlass.Constexpr[bool],
):
    """Mask one thread's scores. ``tScS_mn`` holds the tile-local (row, col) of each score; rows are
    pack-GQA rows when ``qhead_per_kvhead > 1``."""
    for r in cutlass.range_constexpr(cute.size(acc_S_mn.shape[0])):
        row = m_block * tile_m + tScS_mn[r, 0][0]
        q = row // qhead_per_kvhead if cutlass.const_expr(qhead_per_kvhead > 1) else row
        lo, hi = col_limits(
            q, n_block, tile_n, seqlen_q, seqlen_k, is_causal, is_local, window_left, window_right
        )
        for c in cutlass.range_constexpr(cute.size(acc_S_mn.shape[1])):
            col = tScS_mn[0, c][1]
            if cutlass.const_expr(is_local):
                if col >= hi or col < lo:
                    acc_S_mn[r, c] = -Float32.inf
            else:
                if col >= hi:
                    acc_S_mn[r, c] = -Float32.inf
