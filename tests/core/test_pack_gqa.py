"""pack_gqa: the arithmetic packed-row address equals the naive (query, head) enumeration.

The naive model lists the packed rows of one KV head in order, ``[(q, h) for q in range(seqlen_q) for h
in range(r)]``; packed row ``p`` is element ``p`` of that list and its address is ``q * stride_seq +
(head_kv * r + h) * stride_head``. Every ratio ``r`` in 1..32 and tile sizes 16..256 are covered,
including ratios that do not divide ``tile_m`` (a tile then starts and ends inside a query position).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fa4_core.pack_gqa import packed_row_offset, packed_rows, query_range_of_rows, unpack_row

TILE_M = [16, 32, 48, 64, 80, 96, 112, 128, 176, 192, 256]


def naive_rows(seqlen_q, r):
    return [(q, h) for q in range(seqlen_q) for h in range(r)]


@settings(max_examples=200, deadline=None)
@given(
    r=st.integers(1, 32),
    seqlen_q=st.integers(1, 40),
    tile_m=st.sampled_from(TILE_M),
    head_kv=st.integers(0, 7),
    head_major=st.booleans(),
    d=st.sampled_from([8, 64, 128]),
    data=st.data(),
)
def test_packed_offset_equals_naive(r, seqlen_q, tile_m, head_kv, head_major, d, data):
    nheads = (head_kv + 1) * r
    # (b, s, h, d) contiguous, or head-major (b, h, s, d)
    stride_seq, stride_head = (d, seqlen_q * d) if head_major else (nheads * d, d)
    rows = naive_rows(seqlen_q, r)
    assert packed_rows(seqlen_q, r) == len(rows)
    n_tiles = -(-len(rows) // tile_m)
    m_block = data.draw(st.integers(0, n_tiles - 1))
    start, end = m_block * tile_m, min((m_block + 1) * tile_m, len(rows))
    for p in range(start, end):
        q, h = rows[p]
        assert unpack_row(p, r) == (q, h)
        want = q * stride_seq + (head_kv * r + h) * stride_head
        assert packed_row_offset(p, head_kv, r, stride_seq, stride_head) == want
    # queries touched by the tile's valid rows
    qs = [rows[p][0] for p in range(start, end)]
    assert query_range_of_rows(start, end, r) == (min(qs), max(qs))


@pytest.mark.parametrize("r,tile_m", [(3, 64), (5, 128), (6, 16), (7, 256), (32, 16), (12, 176), (1, 16)])
def test_non_dividing_ratios_every_row_exactly_once(r, tile_m):
    """Tiles of ``tile_m`` packed rows cover every (query, head) exactly once, also when r does not divide tile_m."""
    seqlen_q = 37
    seen = []
    for m_block in range(-(-seqlen_q * r // tile_m)):
        for p in range(m_block * tile_m, min((m_block + 1) * tile_m, seqlen_q * r)):
            seen.append(unpack_row(p, r))
    assert seen == naive_rows(seqlen_q, r)
