"""Tile schedulers: which output tile ``(m_block, head, batch[, split])`` a CTA computes.

Every scheduler has two halves written with ``+ - * //`` and :func:`imin`/:func:`imax` only, so that
they run on Python ints (host, CPU tests) and on DSL ``Int32`` (inside kernels):

* host: ``grid(...)`` -> the launch grid ``(x, y, z)``;
* device: ``tile(...)`` -> the tile of a CTA from its block index.

Schedulers
----------
:class:`SingleTileScheduler`
    One CTA per tile, grid ``(num_m_blocks, num_heads * num_splits, num_batch)``; ``blockIdx.y`` is
    ``head * num_splits + split``. ``num_heads`` is the number of KV heads with pack-GQA.

:class:`LongestFirstScheduler`
    Causal (and local) tiles are not equally long: query block ``m`` of a causal tile visits about
    ``m + 1`` key blocks. Launching the longest tiles first lets the short ones fill the tail of the
    wave instead of leaving a few long ones to run alone at the end. The grid is 1-D,
    ``num_m_blocks * num_heads * num_batch`` CTAs; linear index ``L`` is decoded as::

        L = ((num_m_blocks - 1 - m_block) * num_batch + batch) * num_heads + head

    i.e. m_block descending (longest first), then batch, with the head fastest so that CTAs of the
    heads sharing a KV head (GQA) run together and reuse K/V through L2.

:class:`BwdLongestFirstScheduler`
    The causal backward's key blocks: key block ``n`` sees the query blocks from about ``n`` on, so the
    first key blocks of every (batch, head) are the longest. Launching all of them first (instead of
    one (batch, head) after the other) keeps a few long CTAs from running alone at the end. But every
    key block of one (batch, head) streams the same Q, dO and dQ accumulator through L2, so the (batch,
    head) pairs go in groups of ``group_size`` whose buffers fit a share of L2, unless that leaves a
    group too few CTAs to fill the GPU a few times over (:meth:`BwdLongestFirstScheduler.group_size`). The grid is 1-D, ``num_n_blocks * num_pairs``
    CTAs; inside group ``g`` (``gs`` pairs, the last group may hold fewer) linear index ``L`` is::

        L = g * group_size * num_n_blocks + n_block * gs + (pair - g * group_size)

    with ``pair = batch * num_heads + head``: n_block ascending (longest first), the pair fastest.
    Key block ``n`` of a pair always comes after ``n - 1`` of it, the order the deterministic mode's
    dQ semaphores wait in.

:class:`VarlenTileScheduler`
    Variable-length batches without a host sync: the host does not read ``cu_seqlens``. The grid is
    sized from the host-known bound ``max_seqlen_q``::

        grid = (ceil(max_seqlen_q * qhead_per_kvhead / tile_m), num_heads, num_batch)

    and a CTA whose tile starts at or past its batch's packed length is **skipped**:
    :meth:`VarlenTileScheduler.is_valid` is ``m_block * tile_m < seqlen_q[b] * qhead_per_kvhead``
    (the kernel returns at once when it is false; that CTA writes nothing). ``max_seqlen_q`` must be
    ``>= max_b seqlen_q[b]``: a smaller value leaves rows uncomputed, and it cannot be checked
    without the sync this scheduler avoids (the torch layer documents it as the caller's contract,
    as FlashAttention does). With ``longest_first`` the m blocks of each sequence are visited in
    reverse, counted from that sequence's own last block, so that the longest causal tiles of every
    sequence start first; the skipped CTAs are then the highest ``blockIdx.x`` of short sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

from fa4_core._intmath import ceil_div, imax, imin

__all__ = [
    "num_m_blocks",
    "SingleTileScheduler",
    "LongestFirstScheduler",
    "BwdLongestFirstScheduler",
    "VarlenTileScheduler",
]


def num_m_blocks(seqlen_q, tile_m, qhead_per_kvhead=1):
    """Query blocks of one (batch, head): ``ceil(seqlen_q * qhead_per_kvhead / tile_m)``."""
    return ceil_div(seqlen_q * qhead_per_kvhead, tile_m)


@dataclass(frozen=True)
class SingleTileScheduler:
    """Grid ``(num_m_blocks, num_heads * num_splits, num_batch)``: one tile per CTA, in launch order."""

    num_splits: int = 1

    def grid(self, num_m_blocks, num_heads, num_batch):
        return (num_m_blocks, num_heads * self.num_splits, num_batch)

    def tile(self, block_x, block_y, block_z):
        """``(m_block, head, batch, split)`` of the CTA at ``blockIdx = (x, y, z)``."""
        head = block_y // self.num_splits
        split = block_y - head * self.num_splits
        return block_x, head, block_z, split


@dataclass(frozen=True)
class LongestFirstScheduler:
    """1-D grid, m blocks in descending order (see module docstring for the linear index)."""

    def grid(self, num_m_blocks, num_heads, num_batch):
        return (num_m_blocks * num_heads * num_batch, 1, 1)

    def tile(self, linear_idx, num_m_blocks, num_heads, num_batch):
        """``(m_block, head, batch)`` of linear block index ``linear_idx``."""
        bh = linear_idx // num_heads
        head = linear_idx - bh * num_heads
        m_rev = bh // num_batch
        batch = bh - m_rev * num_batch
        return num_m_blocks - 1 - m_rev, head, batch

    def linear_index(self, m_block, head, batch, num_m_blocks, num_heads, num_batch):
        """Inverse of :meth:`tile`."""
        return ((num_m_blocks - 1 - m_block) * num_batch + batch) * num_heads + head


@dataclass(frozen=True)
class BwdLongestFirstScheduler:
    """1-D grid of the backward's key blocks, longest first inside L2-sized groups of (batch, head)
    pairs (see module docstring for the linear index)."""

    # the share of L2 one group's Q, dO and dQ accumulator may take: below the L2 of every SM120 part
    # (RTX 50-series 32-96 MB, DGX Spark 24 MB) and of the H100/H200 (50 MB)
    L2_BUDGET_BYTES = 16 << 20

    # a group at least this many times the GPU's SMs in CTAs: a smaller one's longest CTAs would start
    # behind the previous groups and finish last (GQA 1x8192, 32/8 heads, one 16 MiB group per pair:
    # -18% on the H200, 2026-12-02)
    MIN_WAVES = 4

    @staticmethod
    def group_size(
        bytes_per_pair: int,
        num_pairs: int,
        num_n_blocks: int = 1,
        num_sms: int = 0,
        budget: int = L2_BUDGET_BYTES,
        min_waves: int = MIN_WAVES,
    ) -> int:
        """Pairs per group (host-side Python ints): as many as fit ``budget``, but no fewer than give
        ``min_waves * num_sms`` CTAs of ``num_n_blocks`` key blocks each; at least 1, at most all."""
        if num_pairs <= 0:
            return 1
        fit = budget // max(bytes_per_pair, 1)
        fill = -(-min_waves * num_sms // max(num_n_blocks, 1))
        return max(1, min(num_pairs, max(fit, fill)))

    def grid(self, num_n_blocks, num_heads, num_batch):
        return (num_n_blocks * num_heads * num_batch, 1, 1)

    def tile(self, linear_idx, num_n_blocks, num_heads, num_batch, group_size):
        """``(n_block, head, batch)`` of linear block index ``linear_idx``."""
        per_group = group_size * num_n_blocks
        group = linear_idx // per_group
        rem = linear_idx - group * per_group
        first = group * group_size
        gs = imin(group_size, num_heads * num_batch - first)
        n_block = rem // gs
        pair = first + rem - n_block * gs
        batch = pair // num_heads
        return n_block, pair - batch * num_heads, batch

    def linear_index(self, n_block, head, batch, num_n_blocks, num_heads, num_batch, group_size):
        """Inverse of :meth:`tile`."""
        pair = batch * num_heads + head
        group = pair // group_size
        first = group * group_size
        gs = imin(group_size, num_heads * num_batch - first)
        return first * num_n_blocks + n_block * gs + (pair - first)


@dataclass(frozen=True)
class VarlenTileScheduler:
    """Varlen grid from ``max_seqlen_q`` with per-tile skipping (see module docstring)."""

    tile_m: int
    qhead_per_kvhead: int = 1
    longest_first: bool = False

    def grid(self, max_seqlen_q, num_heads, num_batch):
        return (num_m_blocks(max_seqlen_q, self.tile_m, self.qhead_per_kvhead), num_heads, num_batch)

    def num_m_blocks(self, seqlen_q):
        return num_m_blocks(seqlen_q, self.tile_m, self.qhead_per_kvhead)

    def is_valid(self, block_x, seqlen_q):
        """True iff the CTA at ``blockIdx.x = block_x`` has a tile in a sequence of ``seqlen_q`` queries.

        ``block_x * tile_m < seqlen_q * qhead_per_kvhead`` (a Python bool or a DSL Boolean).
        """
        return block_x * self.tile_m < seqlen_q * self.qhead_per_kvhead

    def m_block(self, block_x, seqlen_q):
        """The m block of ``blockIdx.x`` for a sequence of ``seqlen_q`` queries (>= 0; only meaningful
        when :meth:`is_valid`)."""
        if not self.longest_first:
            return block_x
        return imax(self.num_m_blocks(seqlen_q) - 1 - block_x, 0)

    def tile(self, block_x, block_y, block_z, seqlen_q):
        """``(m_block, head, batch, valid)``; ``seqlen_q`` is batch ``block_z``'s length (SeqlenInfo)."""
        return self.m_block(block_x, seqlen_q), block_y, block_z, self.is_valid(block_x, seqlen_q)
