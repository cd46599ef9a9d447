"""BlockInfoBwd (the backward's query-block ranges per key block) against brute force and against the
forward's :class:`BlockInfo`.

For every key block ``n`` of ``seqlen_k`` and every mode (none, causal, local, causal+local), with
``seqlen_q != seqlen_k`` both ways and tiles that need not divide anything:

* transpose: ``m`` is in ``m_block_range(n)`` iff ``n`` is in ``BlockInfo.n_block_range(m)`` (the
  deterministic backward's ordering relies on it: the visitors of a query block are the contiguous
  key blocks from the forward's ``n_block_min``);
* soundness: every (query, key) pair that is visible lies in a visited (m, n) tile;
* masks: in a tile of ``mask_free_m_range(n)`` every valid row sees every key of the block (so the
  kernel may skip the mask there); outside it the mask is applied.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fa4_core.block_info import BlockInfo, BlockInfoBwd

MODES = ["none", "causal", "local", "causal_local"]


def _window(mode, left, right):
    causal = mode in ("causal", "causal_local")
    local = mode in ("local", "causal_local")
    if not local:
        return causal, local, None, None
    if causal:  # the host folds causal into right = 0
        right = 0 if right is None else min(right, 0)
    return causal, local, left, right


def _visible(seqlen_q, seqlen_k, causal, local, left, right):
    i = np.arange(seqlen_q)[:, None]
    j = np.arange(seqlen_k)[None, :]
    d = seqlen_k - seqlen_q
    vis = np.ones((seqlen_q, seqlen_k), dtype=bool)
    r = right if local else (0 if causal else None)
    if r is not None:
        vis &= j <= i + d + r
    if local and left is not None:
        vis &= j >= i + d - left
    return vis


def _check(mode, tm, tn, sq, sk, left, right):
    causal, local, wl, wr = _window(mode, left, right)
    fwd = BlockInfo(tm, tn, causal, local)
    bwd = BlockInfoBwd(tm, tn, causal, local)
    vis = _visible(sq, sk, causal, local, wl, wr)
    num_m = -(-sq // tm)
    num_n = -(-sk // tn)
    for n in range(num_n + 2):  # past the last block too (varlen grids are sized on the max)
        m_lo, m_hi = bwd.m_block_range(n, sq, sk, wl, wr)
        assert m_lo <= m_hi and 0 <= m_lo and m_hi <= num_m, (n, m_lo, m_hi)
        got = set(range(m_lo, m_hi))
        want = set()
        if n < num_n:
            for m in range(num_m):
                n_lo, n_hi = fwd.n_block_range(m, sq, sk, wl, wr)
                if n_lo <= n < n_hi:
                    want.add(m)
        assert got == want, (mode, tm, tn, sq, sk, wl, wr, n, sorted(got), sorted(want))
        # soundness: every visible pair of this key block is in a visited query block
        cols = slice(n * tn, min((n + 1) * tn, sk))
        for m in range(num_m):
            if vis[m * tm : (m + 1) * tm, cols].any():
                assert m in got, (mode, tm, tn, sq, sk, wl, wr, n, m)
        # mask-free tiles see every key of the block from every valid row
        f_lo, f_hi = bwd.mask_free_m_range(n, sq, sk, wl, wr)
        for m in range(max(f_lo, m_lo), min(f_hi, m_hi)):
            assert (n + 1) * tn <= sk, (n, m)
            assert vis[m * tm : (m + 1) * tm, n * tn : (n + 1) * tn].all(), (
                mode, tm, tn, sq, sk, wl, wr, n, m, f_lo, f_hi,
            )  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(
    mode=st.sampled_from(MODES),
    tm=st.sampled_from([16, 32, 64, 128]),
    tn=st.sampled_from([16, 32, 64, 128]),
    sq=st.integers(1, 300),
    sk=st.integers(1, 300),
    left=st.one_of(st.none(), st.integers(0, 200)),
    right=st.one_of(st.none(), st.integers(0, 200)),
)
def test_m_block_range_is_the_transpose(mode, tm, tn, sq, sk, left, right):
    _check(mode, tm, tn, sq, sk, left, right)


def test_m_block_range_grid():
    for mode in MODES:
        for sq, sk in ((128, 128), (113, 203), (300, 129), (1, 77), (257, 1), (64, 64), (65, 63)):
            for left, right in ((None, None), (0, 0), (16, 0), (None, 7), (31, None), (100, 100)):
                _check(mode, 64, 64, sq, sk, left, right)


def test_empty_when_the_key_block_is_past_seqlen_k():
    bwd = BlockInfoBwd(64, 64)
    assert bwd.m_block_range(2, 100, 128) == (0, 0)
    assert bwd.m_block_range(0, 100, 0) == (0, 0)
    assert bwd.m_block_range(1, 100, 128) == (0, 2)


def test_mask_free_range_is_nonempty_where_expected():
    # non-causal, full blocks: no mask anywhere; causal square: blocks strictly below the diagonal
    assert BlockInfoBwd(64, 64).mask_free_m_range(0, 256, 256) == (0, 4)
    assert BlockInfoBwd(64, 64).mask_free_m_range(3, 256, 200) == (0, 0)  # ragged last block
    assert BlockInfoBwd(64, 64, is_causal=True).mask_free_m_range(1, 256, 256) == (2, 4)
