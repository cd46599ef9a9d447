"""SeqlenInfo: offsets/lengths for fixed-length, varlen and seqused, and reads that never leave the tensors.

``Strict`` is a list that raises on any index outside ``[0, len)`` (negative ones included), so an
over-launched batch index ``b >= num_batch`` proves that the clamp keeps every read in range while the
length it reports is 0.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fa4_core.seqlen_info import SeqlenInfo, SeqlenInfoQK, batch_valid


class Strict(list):
    def __getitem__(self, i):
        if not isinstance(i, int) or not 0 <= i < len(self):
            raise IndexError(f"read at {i!r} of a length-{len(self)} tensor")
        return list.__getitem__(self, i)


def prefix(lengths):
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return cu


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 50), min_size=1, max_size=8),
    use_seqused=st.booleans(),
    extra=st.integers(0, 5),
    data=st.data(),
)
def test_varlen(lengths, use_seqused, extra, data):
    num_batch = len(lengths)
    cu = Strict(prefix(lengths))
    used = Strict([data.draw(st.integers(0, n)) for n in lengths]) if use_seqused else None
    for b in range(num_batch + extra):
        info = SeqlenInfo.create(b, num_batch, cu_seqlens=cu, seqused=used)
        if b < num_batch:
            assert info.offset == cu[b]
            assert info.seqlen == (used[b] if use_seqused else lengths[b])
        else:
            assert info.seqlen == 0  # over-launched: nothing to do, and no read out of range
        assert info.has_cu_seqlens and info.has_seqused == use_seqused


@settings(max_examples=100, deadline=None)
@given(
    num_batch=st.integers(1, 8),
    seqlen=st.integers(0, 300),
    use_seqused=st.booleans(),
    extra=st.integers(0, 5),
    data=st.data(),
)
def test_fixed_length(num_batch, seqlen, use_seqused, extra, data):
    used = Strict(data.draw(st.lists(st.integers(0, seqlen), min_size=num_batch, max_size=num_batch)))
    for b in range(num_batch + extra):
        info = SeqlenInfo.create(b, num_batch, seqlen, seqused=used if use_seqused else None)
        assert info.offset == 0
        want = (used[b] if use_seqused else seqlen) if b < num_batch else 0
        assert info.seqlen == want


@settings(max_examples=100, deadline=None)
@given(
    lengths_q=st.lists(st.integers(0, 40), min_size=1, max_size=6),
    data=st.data(),
)
def test_qk_pair(lengths_q, data):
    """Query side varlen, key side fixed (paged KV) with seqused_k, as flash_attn_varlen_func with a page table."""
    num_batch = len(lengths_q)
    cu_q = Strict(prefix(lengths_q))
    used_k = Strict(data.draw(st.lists(st.integers(0, 100), min_size=num_batch, max_size=num_batch)))
    for b in range(num_batch + 2):
        info = SeqlenInfoQK.create(b, num_batch, None, 128, cu_seqlens_q=cu_q, seqused_k=used_k)
        if b < num_batch:
            assert (info.offset_q, info.seqlen_q, info.offset_k, info.seqlen_k) == (
                cu_q[b],
                lengths_q[b],
                0,
                used_k[b],
            )
        else:
            assert (info.seqlen_q, info.seqlen_k) == (0, 0)


def test_batch_valid():
    assert [batch_valid(b, 3) for b in range(6)] == [1, 1, 1, 0, 0, 0]


def test_strict_wrapper_catches_unclamped_reads():
    """The wrapper really fails on the read an unclamped implementation would make."""
    cu = Strict([0, 3, 5])
    with pytest.raises(IndexError):
        cu[3]
    with pytest.raises(IndexError):
        cu[-1]


def test_fixed_length_needs_a_length():
    with pytest.raises(ValueError):
        SeqlenInfo.create(0, 1)
