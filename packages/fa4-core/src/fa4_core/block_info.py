"""Key-block ranges per query block: causal (bottom-right aligned), local windows, split-KV.

Visibility rule (FlashAttention convention). Query ``i`` (``0 <= i < seqlen_q``) sees key ``j``
(``0 <= j < seqlen_k``) iff, with ``d = seqlen_k - seqlen_q`` (the bottom-right alignment offset),

* causal: ``j <= i + d``;
* local with ``window = (left, right)``: ``i + d - left <= j <= i + d + right``;
  causal + local is local with ``right = 0``.

A window side that is unbounded is given as ``None`` (host canonicalises ``-1``/``None``).

The kernel walks key blocks from ``n_block_max - 1`` down to ``n_block_min``. Blocks at or above
:meth:`BlockInfo.right_mask_start` may contain keys past the diagonal / window right edge or past
``seqlen_k`` and need the right mask; blocks below :meth:`BlockInfo.left_mask_end` may contain keys
before the window's left edge. Everything between is mask-free.

Rows are packed-GQA rows when ``qhead_per_kvhead > 1`` (row ``p`` is query ``p // qhead_per_kvhead``).
All arithmetic is ``+ - * //`` on non-negative numbers plus :func:`imin`/:func:`imax`, so it runs on
Python ints and on DSL ``Int32`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from fa4_core._intmath import ceil_div, imax, imin

__all__ = ["BlockInfo", "BlockInfoBwd"]


@dataclass(frozen=True)
class BlockInfo:
    tile_m: int
    tile_n: int
    is_causal: bool = False
    is_local: bool = False
    qhead_per_kvhead: int = 1  # > 1 only with pack-GQA

    # -- rows -> queries -------------------------------------------------------------------------
    def _query_first_last(self, m_block, seqlen_q):
        """First and last query position of block ``m_block`` (last clamped to seqlen_q - 1, >= 0)."""
        r = self.qhead_per_kvhead
        q_first = (m_block * self.tile_m) // r
        q_last = ((m_block + 1) * self.tile_m - 1) // r
        q_last = imax(imin(q_last, seqlen_q - 1), 0)
        return q_first, q_last

    def _right_edge(self, q, seqlen_q, seqlen_k, window_right):
        """Exclusive key bound for query ``q``: ``min(seqlen_k, q + d + right + 1)``, >= 0."""
        if self.is_local and window_right is not None:
            right = window_right  # the host folds causal into it: causal + window means right = 0
        elif self.is_causal:
            right = 0
        else:
            return seqlen_k
        # q + seqlen_k - seqlen_q + right + 1 may be negative: clamp before any division
        return imax(imin(seqlen_k, q + seqlen_k + right + 1 - seqlen_q), 0)

    def _left_edge(self, q, seqlen_q, seqlen_k, window_left):
        """Inclusive key bound for query ``q``: ``max(0, q + d - left)``."""
        if not (self.is_local and window_left is not None):
            return 0
        return imax(q + seqlen_k - seqlen_q - window_left, 0)

    # -- ranges ----------------------------------------------------------------------------------
    def n_block_range(
        self, m_block, seqlen_q, seqlen_k, window_left=None, window_right=None, split_idx=0, num_splits=1
    ):
        """``(n_block_min, n_block_max)`` of the key blocks that query block ``m_block`` must visit.

        With ``num_splits > 1`` the full range is cut into ``num_splits`` equal chunks of blocks and
        split ``split_idx``'s chunk is returned. The range may be empty (``n_block_min >= n_block_max``):
        the kernel then writes zeros and ``lse = -inf``.
        """
        q_first, q_last = self._query_first_last(m_block, seqlen_q)
        n_block_max = ceil_div(self._right_edge(q_last, seqlen_q, seqlen_k, window_right), self.tile_n)
        n_block_min = self._left_edge(q_first, seqlen_q, seqlen_k, window_left) // self.tile_n
        if isinstance(num_splits, int) and num_splits == 1:
            return n_block_min, n_block_max
        n_blocks = imax(n_block_max - n_block_min, 0)
        per_split = ceil_div(n_blocks, num_splits)
        lo = n_block_min + split_idx * per_split
        return lo, imin(n_block_max, lo + per_split)

    def right_mask_start(self, m_block, seqlen_q, seqlen_k, window_right=None):
        """Blocks ``n >= right_mask_start`` may hold keys that some row of the tile must not see on the
        right (diagonal, window right edge, or ``>= seqlen_k``); blocks below are right-mask-free."""
        q_first, _ = self._query_first_last(m_block, seqlen_q)
        return self._right_edge(q_first, seqlen_q, seqlen_k, window_right) // self.tile_n

    def left_mask_end(self, m_block, seqlen_q, seqlen_k, window_left=None):
        """Blocks ``n < left_mask_end`` may hold keys before some row's window left edge."""
        if not (self.is_local and window_left is not None):
            return 0
        _, q_last = self._query_first_last(m_block, seqlen_q)
        return ceil_div(self._left_edge(q_last, seqlen_q, seqlen_k, window_left), self.tile_n)


# ---------------------------------------------------------------------------------------------------
# the backward's transposed view: query blocks per key block
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockInfoBwd:
    """Query-block ranges per key block, for a backward that owns one key block per CTA (no pack-GQA).

    :meth:`m_block_range` is exactly the transpose of :meth:`BlockInfo.n_block_range` (same tiles,
    ``qhead_per_kvhead = 1``, no split): ``m`` is in the range of key block ``n`` iff ``n`` is in
    the forward range of ``m`` (and ``n * tile_n < seqlen_k``), so the key blocks visiting a query
    block are the contiguous run starting at the forward's ``n_block_min`` (what the deterministic
    backward orders its dQ additions on). Window sides follow :class:`BlockInfo`: with ``is_local``
    the runtime ``window_left``/``window_right`` (``None`` = unbounded; the host folds causal into
    ``right = 0``), else causal means ``right = 0``.
    """

    tile_m: int
    tile_n: int
    is_causal: bool = False
    is_local: bool = False

    def _sides(self, window_left, window_right):
        right = None
        if self.is_local and window_right is not None:
            right = window_right
        elif self.is_causal:
            right = 0
        left = window_left if self.is_local else None
        return left, right

    def m_block_range(self, n_block, seqlen_q, seqlen_k, window_left=None, window_right=None):
        """``(m_block_min, m_block_max)`` with ``m_block_max >= m_block_min``: the query blocks whose
        forward key range holds ``n_block``; empty when ``n_block * tile_n >= seqlen_k``."""
        tm, tn = self.tile_m, self.tile_n
        left, right = self._sides(window_left, window_right)
        num_m = ceil_div(seqlen_q, tm)
        d = seqlen_k - seqlen_q
        m_min = 0
        m_max = num_m
        count_ok = imin(imax(seqlen_k - n_block * tn, 0), 1)  # the key block holds a key
        if right is not None:
            # n < ceil(right_edge(q_last) / tn)  <=>  q_last >= x
            x = n_block * tn - d - right
            m_min = imin(imax(x, 0) // tm, num_m)
            count_ok = count_ok * imin(imax(seqlen_q - x, 0), 1)  # q_last <= seqlen_q - 1
        if left is not None:
            # left_edge(q_first) // tn <= n  <=>  m * tm <= y
            y = (n_block + 1) * tn - d + left - 1
            m_max = imin(imax(y + tm, 0) // tm, num_m)
        return m_min, m_min + imax(m_max - m_min, 0) * count_ok

    def mask_free_m_range(self, n_block, seqlen_q, seqlen_k, window_left=None, window_right=None):
        """``(lo, hi)``: query blocks ``lo <= m < hi`` see every key of ``n_block`` (no right/left
        window edge and no column ``>= seqlen_k`` inside the tile); the others need the mask. Rows
        ``>= seqlen_q`` are not considered (the backward zeroes their P through the LSE)."""
        tm, tn = self.tile_m, self.tile_n
        left, right = self._sides(window_left, window_right)
        num_m = ceil_div(seqlen_q, tm)
        d = seqlen_k - seqlen_q
        lo = 0
        hi = num_m
        if right is not None:
            # some key of the tile is past row m*tm's right edge  <=>  m * tm < z
            z = (n_block + 1) * tn - 1 - d - right
            lo = imin(ceil_div(imax(z, 0), tm), num_m)
        if left is not None:
            # some key of the tile is before row (m+1)*tm-1's left edge  <=>  (m + 1) * tm > w
            w = n_block * tn + 1 - d + left
            hi = imin(imax(w, 0) // tm, num_m)
        full = imin(imax(seqlen_k - (n_block + 1) * tn + 1, 0), 1)  # no column >= seqlen_k
        return lo, lo + imax(hi - lo, 0) * full
