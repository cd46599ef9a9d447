"""BlockInfo: key-block ranges and mask regions equal a brute-force scan of the visibility mask.

For each query block (packed-GQA rows when ``r > 1``) the brute force builds the set of queries whose
rows lie in the tile and scans the full ``seqlen_q x seqlen_k`` visibility matrix of the
FlashAttention rule (bottom-right aligned causal, windows ``i + d - left <= j <= i + d + right``). It
proves, for causal / local / causal+local / none, ``seqlen_q != seqlen_k`` both ways, ratios r = 1..8
and tile sizes that need not divide anything:

* soundness: every key block with a visible key lies inside ``[n_block_min, n_block_max)``;
* tightness: the first and the last block of the range hold a visible key (an empty range exactly
  when the tile sees nothing); tiles with no valid row are only required to stay within bounds;
* masks: a block of the range that holds a key some row must not see on the right (past the
  diagonal/window or ``>= seqlen_k``) is ``>= right_mask_start``; one that holds a key before some
  row's window left edge is ``< left_mask_end``;
* split-KV: the chunks of ``num_splits`` splits partition the range, in order;
* varlen: the same holds per sequence with the lengths read through SeqlenInfo from ``cu_seqlens``
  and ``seqused``.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fa4_core.block_info import BlockInfo
from fa4_core.seqlen_info import SeqlenInfoQK

MODES = ["none", "causal", "local", "causal_local"]


def visibility(seqlen_q, seqlen_k, left, right, n_cols):
    """(vis, right_bad, left_bad) over keys ``0..n_cols``: visible; invisible on the right; on the left."""
    i = np.arange(seqlen_q)[:, None]
    j = np.arange(n_cols)[None, :]
    d = seqlen_k - seqlen_q
    right_bad = np.broadcast_to(j >= seqlen_k, (seqlen_q, n_cols))
    if right is not None:
        right_bad = right_bad | (j > i + d + right)
    left_bad = np.zeros_like(right_bad)
    if left is not None:
        left_bad = j < i + d - left
    vis = ~right_bad & ~left_bad
    return vis, right_bad, left_bad


def make(mode, tile_m, tile_n, r, left, right):
    """BlockInfo and the (left, right) window the host would pass; right=0 folds causal into local."""
    if mode == "none":
        return BlockInfo(tile_m, tile_n, qhead_per_kvhead=r), None, None
    if mode == "causal":
        return BlockInfo(tile_m, tile_n, is_causal=True, qhead_per_kvhead=r), None, 0
    if mode == "local":
        return BlockInfo(tile_m, tile_n, is_local=True, qhead_per_kvhead=r), left, right
    return BlockInfo(tile_m, tile_n, is_causal=True, is_local=True, qhead_per_kvhead=r), left, 0


def check_sequence(bi, seqlen_q, seqlen_k, left, right, num_splits):
    tm, tn, r = bi.tile_m, bi.tile_n, bi.qhead_per_kvhead
    n_blocks_k = -(-seqlen_k // tn)
    n_cols = max(n_blocks_k, 1) * tn
    vis, right_bad, left_bad = visibility(seqlen_q, seqlen_k, left, right, n_cols)
    n_tiles = -(-seqlen_q * r // tm)
    for m_block in range(n_tiles + 1):  # one tile past the end: no valid rows
        nmin, nmax = bi.n_block_range(m_block, seqlen_q, seqlen_k, left, right)
        row0, row1 = m_block * tm, min((m_block + 1) * tm, seqlen_q * r)
        where = f"m_block={m_block} sq={seqlen_q} sk={seqlen_k} window=({left},{right}) {bi}"
        if row0 >= row1:  # no valid rows: in bounds only
            assert 0 <= nmin and nmax <= n_blocks_k, where
            continue
        q0, q1 = row0 // r, (row1 - 1) // r + 1
        block_vis = vis[q0:q1].any(0).reshape(-1, tn).any(1)
        visible_blocks = np.flatnonzero(block_vis)
        if visible_blocks.size == 0:
            assert nmin >= nmax, f"{where}: tile sees nothing but range is [{nmin}, {nmax})"
        else:
            assert (nmin, nmax) == (visible_blocks[0], visible_blocks[-1] + 1), where
        # mask regions
        rms = bi.right_mask_start(m_block, seqlen_q, seqlen_k, right)
        lme = bi.left_mask_end(m_block, seqlen_q, seqlen_k, left)
        rb = right_bad[q0:q1].any(0).reshape(-1, tn).any(1)
        lb = left_bad[q0:q1].any(0).reshape(-1, tn).any(1)
        for n in range(nmin, nmax):
            if rb[n]:
                assert n >= rms, f"{where}: block {n} needs the right mask, right_mask_start={rms}"
            if lb[n]:
                assert n < lme, f"{where}: block {n} needs the left mask, left_mask_end={lme}"
        # split-KV chunks partition the range
        covered = []
        for s in range(num_splits):
            lo, hi = bi.n_block_range(
                m_block, seqlen_q, seqlen_k, left, right, split_idx=s, num_splits=num_splits
            )
            assert nmin <= lo or lo >= hi, where
            covered.extend(range(lo, hi))
        assert covered == list(range(nmin, nmax)), f"{where} splits={num_splits}"


window_side = st.one_of(st.none(), st.integers(0, 200))


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    tile_m=st.sampled_from([16, 32, 48, 64, 128]),
    tile_n=st.sampled_from([16, 32, 64, 80, 128]),
    r=st.integers(1, 8),
    seqlen_q=st.integers(1, 200),
    seqlen_k=st.integers(1, 200),
    left=window_side,
    right=window_side,
    num_splits=st.integers(1, 5),
)
def test_ranges_match_brute_force(mode, tile_m, tile_n, r, seqlen_q, seqlen_k, left, right, num_splits):
    bi, left, right = make(mode, tile_m, tile_n, r, left, right)
    check_sequence(bi, seqlen_q, seqlen_k, left, right, num_splits)


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    tile_m=st.sampled_from([16, 64, 128]),
    tile_n=st.sampled_from([32, 64, 128]),
    r=st.integers(1, 4),
    lengths=st.lists(st.tuples(st.integers(0, 150), st.integers(0, 150)), min_size=1, max_size=4),
    left=window_side,
    right=window_side,
    data=st.data(),
)
def test_varlen_ranges_match_brute_force(mode, tile_m, tile_n, r, lengths, left, right, data):
    bi, left, right = make(mode, tile_m, tile_n, r, left, right)
    cu_q, cu_k = [0], [0]
    for lq, lk in lengths:
        cu_q.append(cu_q[-1] + lq)
        cu_k.append(cu_k[-1] + lk)
    used_k = [data.draw(st.integers(0, lk)) for _, lk in lengths] if data.draw(st.booleans()) else None
    for b in range(len(lengths)):
        info = SeqlenInfoQK.create(b, len(lengths), cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, seqused_k=used_k)
        if info.seqlen_q == 0:
            continue
        check_sequence(bi, info.seqlen_q, info.seqlen_k, left, right, data.draw(st.integers(1, 4)))


def test_examples():
    # causal, square, one tile: all blocks up to the diagonal, last one masked
    bi = BlockInfo(128, 64, is_causal=True)
    assert bi.n_block_range(1, 512, 512) == (0, 4)
    assert bi.right_mask_start(1, 512, 512) == 2
    # bottom-right alignment: seqlen_k > seqlen_q shifts the diagonal right by 384
    assert bi.n_block_range(0, 128, 512) == (0, 8)
    # seqlen_q > seqlen_k: the first rows see nothing
    assert bi.n_block_range(0, 512, 128)[1] <= 0
