"""Tile schedulers: every decode is a bijection onto the tiles that exist, in the documented order.

* SingleTileScheduler: the grid enumerates every ``(m_block, head, batch, split)`` exactly once.
* LongestFirstScheduler: the 1-D index enumerates every tile once, ``m_block`` never increases with the
  index (longest causal tiles first), and ``linear_index`` inverts ``tile``.
* BwdLongestFirstScheduler: the 1-D index enumerates every ``(n_block, head, batch)`` once; inside a
  group of pairs ``n_block`` never decreases (longest causal key blocks first); key block ``n`` of a
  pair comes after ``n - 1`` of it (the deterministic mode's order); ``linear_index`` inverts ``tile``;
  the group size fits the L2 budget.
* VarlenTileScheduler: over the grid sized from ``max_seqlen_q``, the CTAs that pass ``is_valid`` are
  exactly the brute-force set ``{(m, h, b) : m * tile_m < seqlen_q[b] * r}``, each once; skipped CTAs
  are the rest; with ``longest_first`` each sequence's blocks come in descending order; an
  over-launched batch (lengths read through SeqlenInfo) has no valid tile.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from fa4_core.seqlen_info import SeqlenInfo
from fa4_core.tile_scheduler import (
    BwdLongestFirstScheduler,
    LongestFirstScheduler,
    SingleTileScheduler,
    VarlenTileScheduler,
    num_m_blocks,
)


@settings(max_examples=60, deadline=None)
@given(nm=st.integers(1, 9), nh=st.integers(1, 6), nb=st.integers(1, 5), ns=st.integers(1, 4))
def test_single_tile_bijection(nm, nh, nb, ns):
    sched = SingleTileScheduler(num_splits=ns)
    gx, gy, gz = sched.grid(nm, nh, nb)
    tiles = [sched.tile(x, y, z) for x in range(gx) for y in range(gy) for z in range(gz)]
    assert sorted(tiles) == sorted(itertools.product(range(nm), range(nh), range(nb), range(ns)))
    assert len(set(tiles)) == len(tiles)


@settings(max_examples=60, deadline=None)
@given(nm=st.integers(1, 12), nh=st.integers(1, 6), nb=st.integers(1, 5))
def test_longest_first(nm, nh, nb):
    sched = LongestFirstScheduler()
    total, gy, gz = sched.grid(nm, nh, nb)
    assert (gy, gz) == (1, 1)
    tiles = [sched.tile(i, nm, nh, nb) for i in range(total)]
    assert sorted(tiles) == sorted(itertools.product(range(nm), range(nh), range(nb)))
    ms = [t[0] for t in tiles]
    assert ms == sorted(ms, reverse=True)  # longest causal tiles first
    assert ms[0] == nm - 1
    for i, (m, h, b) in enumerate(tiles):
        assert sched.linear_index(m, h, b, nm, nh, nb) == i
    # heads fastest: consecutive CTAs share (m_block, batch), i.e. a KV head's group reuses K/V in L2
    assert [t[1] for t in tiles[:nh]] == list(range(nh))


@settings(max_examples=80, deadline=None)
@given(nn=st.integers(1, 12), nh=st.integers(1, 6), nb=st.integers(1, 5), gs=st.integers(1, 40))
def test_bwd_longest_first(nn, nh, nb, gs):
    sched = BwdLongestFirstScheduler()
    total, gy, gz = sched.grid(nn, nh, nb)
    assert (gy, gz) == (1, 1)
    group = min(gs, nh * nb)
    tiles = [sched.tile(i, nn, nh, nb, group) for i in range(total)]
    assert sorted(tiles) == sorted(itertools.product(range(nn), range(nh), range(nb)))
    for i, (n, h, b) in enumerate(tiles):
        assert sched.linear_index(n, h, b, nn, nh, nb, group) == i
    for g0 in range(0, nh * nb, group):  # inside a group: n ascending, then the pairs in order
        members = [t for t in tiles if g0 <= t[2] * nh + t[1] < g0 + group]
        assert members == sorted(members, key=lambda t: (t[0], t[2] * nh + t[1]))
    pos = {t: i for i, t in enumerate(tiles)}
    assert all(pos[(n - 1, h, b)] < pos[(n, h, b)] for n, h, b in tiles if n)
    assert tiles[0][0] == 0


def test_bwd_longest_first_group_size():
    budget = BwdLongestFirstScheduler.L2_BUDGET_BYTES
    assert BwdLongestFirstScheduler.group_size(budget // 4, 100) == 4
    assert BwdLongestFirstScheduler.group_size(budget // 4, 3) == 3  # never more than the pairs
    assert BwdLongestFirstScheduler.group_size(budget * 8, 100) == 1  # at least one pair
    assert BwdLongestFirstScheduler.group_size(0, 5) == 5
    assert BwdLongestFirstScheduler.group_size(1, 0) == 1
    # a group of few CTAs grows to MIN_WAVES x SMs of them: 132 SMs, 64 key blocks -> 9 pairs
    waves = BwdLongestFirstScheduler.MIN_WAVES
    assert BwdLongestFirstScheduler.group_size(budget, 8, 64, 132) == 8  # all 8 (fit alone: 1)
    assert BwdLongestFirstScheduler.group_size(budget, 100, 64, 132) == -(-waves * 132 // 64)
    assert BwdLongestFirstScheduler.group_size(budget // 20, 100, 64, 132) == 20  # L2 fit is larger
    assert BwdLongestFirstScheduler.group_size(budget, 100, 0, 132) == 100  # no key blocks: all


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), min_size=1, max_size=6),
    tile_m=st.sampled_from([16, 64, 80, 128]),
    r=st.integers(1, 8),
    nh=st.integers(1, 3),
    longest_first=st.booleans(),
    extra_batches=st.integers(0, 2),
)
def test_varlen_decode_equals_brute_force(lengths, tile_m, r, nh, longest_first, extra_batches):
    num_batch = len(lengths)
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    sched = VarlenTileScheduler(tile_m, qhead_per_kvhead=r, longest_first=longest_first)
    gx, gy, gz = sched.grid(max(lengths), nh, num_batch)
    assert gx == -(-max(lengths) * r // tile_m)
    got, order = [], {}
    for z in range(gz + extra_batches):  # a grid larger than the batch sees length 0
        seqlen_q = SeqlenInfo.create(z, num_batch, cu_seqlens=cu).seqlen
        for y in range(gy):
            for x in range(gx):
                m, h, b, valid = sched.tile(x, y, z, seqlen_q)
                assert m >= 0
                if valid:
                    assert m * tile_m < seqlen_q * r  # the tile has at least one valid row
                    got.append((m, h, b))
                    order.setdefault((h, b), []).append(m)
    want = [
        (m, h, b) for b, n in enumerate(lengths) for h in range(nh) for m in range(num_m_blocks(n, tile_m, r))
    ]
    assert sorted(got) == sorted(want)
    assert len(set(got)) == len(got)
    for ms in order.values():
        assert ms == (sorted(ms, reverse=True) if longest_first else sorted(ms))


def test_varlen_examples():
    sched = VarlenTileScheduler(128, qhead_per_kvhead=4)
    assert sched.grid(100, 2, 3) == (4, 2, 3)  # ceil(100 * 4 / 128)
    assert sched.is_valid(0, 1) and not sched.is_valid(1, 32) and sched.is_valid(1, 33)
    assert not sched.is_valid(0, 0)
