"""Checks that read index tensors (monotone cu_seqlens, seqused within capacity, page indices and
cache slots in range) raise typed errors naming the argument. They run on CPU index tensors (and
with FA4_VALIDATE_DATA=1 on GPU ones, which synchronises): CPU tests reach them before the device check."""

from __future__ import annotations

import re

import pytest
import torch

from fa4_core.errors import UnsupportedConfigError
from fa4_torch import flash_attn_varlen_func, flash_attn_with_kvcache


def i32(*xs):
    return torch.tensor(xs, dtype=torch.int32)


def bf(*shape):
    return torch.zeros(*shape, dtype=torch.bfloat16)


@pytest.mark.parametrize(
    "cu, match",
    [
        (i32(0, 5, 3, 10), r"cu_seqlens_q=.*monotone"),
        (i32(1, 5, 7, 10), r"cu_seqlens_q\[0\]=1"),
        (i32(0, 5, 7, 11), r"cu_seqlens_q\[-1\]=11"),
    ],
)
def test_cu_seqlens_q_must_be_monotone_from_zero_within_total(cu, match):
    q = bf(10, 4, 64)
    with pytest.raises(UnsupportedConfigError, match=match):
        flash_attn_varlen_func(q, q, q, cu_seqlens_q=cu, cu_seqlens_k=i32(0, 5, 7, 10))


def test_cu_seqlens_k_checked_too():
    q = bf(10, 4, 64)
    with pytest.raises(UnsupportedConfigError, match=r"cu_seqlens_k=.*monotone"):
        flash_attn_varlen_func(q, q, q, cu_seqlens_q=i32(0, 5, 7, 10), cu_seqlens_k=i32(0, 6, 2, 10))


@pytest.mark.parametrize("used, match", [(i32(1, 3, 9), "seqused_q"), (i32(-1, 0, 0), "seqused_q")])
def test_seqused_q_within_capacity(used, match):
    q = bf(10, 4, 64)
    cu = i32(0, 5, 7, 10)
    with pytest.raises(UnsupportedConfigError, match=match):
        flash_attn_varlen_func(q, q, q, cu_seqlens_q=cu, cu_seqlens_k=cu, seqused_q=used)


def test_seqused_k_within_paged_capacity_and_page_indices_in_range():
    q = bf(6, 4, 64)
    cu = i32(0, 3, 6)
    kp = bf(8, 16, 4, 64)
    table = i32(0, 1, 2, 3, 4, 5).view(2, 3)
    with pytest.raises(UnsupportedConfigError, match="seqused_k"):
        flash_attn_varlen_func(q, kp, kp, cu_seqlens_q=cu, seqused_k=i32(48, 49), page_table=table)
    bad = i32(0, 1, 2, 3, 4, 8).view(2, 3)
    with pytest.raises(UnsupportedConfigError, match=r"page_table=.*\[0, 8\]"):
        flash_attn_varlen_func(q, kp, kp, cu_seqlens_q=cu, seqused_k=i32(10, 10), page_table=bad)


def test_kvcache_slots_and_lengths_in_range():
    q = bf(2, 1, 4, 64)
    kc = bf(3, 32, 4, 64)
    with pytest.raises(UnsupportedConfigError, match="cache_batch_idx"):
        flash_attn_with_kvcache(q, kc, kc, cache_seqlens=i32(3, 4), cache_batch_idx=i32(0, 3))
    kc2 = bf(2, 32, 4, 64)
    with pytest.raises(UnsupportedConfigError, match=r"cache_seqlens=\[3, 33\]") as info:
        flash_attn_with_kvcache(q, kc2, kc2, cache_seqlens=i32(3, 33))
    assert "seqused_k" not in str(info.value)  # the user's argument, not fa4's internal one
    # with new keys appended: the start plus the new rows must fit
    kn = bf(2, 2, 4, 64)
    with pytest.raises(UnsupportedConfigError, match=r"cache_seqlens=\[3, 31\].*<= 30"):
        flash_attn_with_kvcache(q, kc2, kc2, k=kn, v=kn, cache_seqlens=i32(3, 31))
    with pytest.raises(UnsupportedConfigError, match=r"cache_seqlens=31 is not supported.*<= 30"):
        flash_attn_with_kvcache(q, kc2, kc2, k=kn, v=kn, cache_seqlens=31)
    with pytest.raises(UnsupportedConfigError, match=r"cache_seqlens=33 is not supported"):
        flash_attn_with_kvcache(q, kc2, kc2, cache_seqlens=33)  # an int: checked wherever the tensors are
    table = i32(0, 1).view(2, 1)
    pages = bf(2, 16, 4, 64)
    with pytest.raises(UnsupportedConfigError, match=r"cache_seqlens=\[0, 16\].*<= 15"):
        flash_attn_with_kvcache(q, pages, pages, k=bf(2, 1, 4, 64), v=bf(2, 1, 4, 64), cache_seqlens=i32(0, 16),
                                page_table=table)  # fmt: skip


def test_kvcache_errors_name_the_kvcache_arguments():
    """fa4's attention names k/v/seqused_k; the KV-cache call reports k_cache, v_cache, cache_seqlens."""
    q = bf(2, 1, 4, 64)
    kc = bf(2, 32, 4, 64)
    lens = i32(3, 4)
    cases = [
        (dict(k_cache=bf(2, 32, 4, 128), v_cache=bf(2, 32, 4, 128)), r"k_cache\.shape\[-1\] \(head_dim\)="),
        (dict(v_cache=bf(2, 32, 2, 64)), r"v_cache\.shape\[:-1\]=.*k_cache's"),
        (dict(k_cache=bf(3, 32, 4, 64), v_cache=bf(3, 32, 4, 64)), r"k_cache\.shape\[0\] \(batch\)="),
        (dict(cache_seqlens=lens.to("meta")), r"cache_seqlens\.device="),
        (dict(k_cache=kc.to("meta"), v_cache=kc.to("meta")), r"k_cache\.device="),
        (dict(k_cache=bf(2, 32, 4, 68)[..., :64]), r"k_cache\.stride\([012]\)="),
    ]
    for change, rx in cases:
        kw = dict(k_cache=kc, v_cache=kc, cache_seqlens=lens)
        kw.update(change)
        with pytest.raises(UnsupportedConfigError, match=rx) as info:
            flash_attn_with_kvcache(q, **kw)
        assert not re.search(r"(?<![\w.])(k|v|seqused_k)[.=]", str(info.value)), str(info.value)


def test_kvcache_page_size_zero_is_rejected():
    q = bf(2, 1, 4, 64)
    pages = bf(4, 0, 4, 64)
    with pytest.raises(UnsupportedConfigError, match=r"k_cache\.shape\[1\] \(page_size\)=0"):
        flash_attn_with_kvcache(q, pages, pages, cache_seqlens=0, page_table=i32(0, 1).view(2, 1))


def _varlen_ok():
    q = bf(10, 4, 64)
    return dict(q=q, k=q, v=q, cu_seqlens_q=i32(0, 5, 7, 10), cu_seqlens_k=i32(0, 5, 7, 10))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(cu_seqlens_q=torch.tensor([0, 5, 7, 10])), r"cu_seqlens_q\.dtype"),  # int64
        (
            dict(cu_seqlens_q=i32(0, 5, 7, 10).view(2, 2)[:, :1].reshape(2)),
            r"cu_seqlens_q\.stride",
        ),  # strided
        (dict(cu_seqlens_q=i32(0, 10)), r"cu_seqlens_k\.shape"),  # batch 1 vs 3
        (dict(cu_seqlens_k=i32(0, 5, 10)), r"cu_seqlens_k\.shape"),
        (dict(seqused_k=i32(1, 2)), r"seqused_k\.shape"),
        (dict(seqused_q=torch.tensor([1, 2, 3])), r"seqused_q\.dtype"),
        (dict(learnable_sink=torch.zeros(3)), r"learnable_sink\.shape"),
        (dict(learnable_sink=torch.zeros(4, dtype=torch.float16)), r"learnable_sink\.dtype"),
        (dict(num_splits=-1), r"num_splits=-1"),
        (dict(max_seqlen_q=-3), r"max_seqlen_q=-3"),
        (dict(max_seqlen_k=-3), r"max_seqlen_k=-3"),
        (dict(max_seqlen_k=2.5), r"max_seqlen_k=2\.5"),
        (dict(seqused_k=i32(1, 2, 3), max_seqlen_k=-1), r"max_seqlen_k=-1"),
        (dict(k=bf(10, 3, 64), v=bf(10, 3, 64)), r"nheads % nheads_kv"),
        (dict(page_table=i32(0, 1).view(1, 2)), r"page_table"),
    ],
)
def test_varlen_structural_errors_name_the_argument(change, match):
    kw = _varlen_ok()
    kw.update(change)
    q, k, v = kw.pop("q"), kw.pop("k"), kw.pop("v")
    with pytest.raises(UnsupportedConfigError, match=match):
        flash_attn_varlen_func(q, k, v, **kw)


def test_paged_page_table_structural_errors():
    q = bf(6, 4, 64)
    kp = bf(8, 16, 4, 64)
    cu = i32(0, 3, 6)
    with pytest.raises(UnsupportedConfigError, match=r"page_table\.dtype"):
        flash_attn_varlen_func(q, kp, kp, cu_seqlens_q=cu, page_table=torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(UnsupportedConfigError, match=r"page_table\.shape\[0\]"):
        flash_attn_varlen_func(q, kp, kp, cu_seqlens_q=cu, page_table=i32(0, 1, 2).view(1, 3))
