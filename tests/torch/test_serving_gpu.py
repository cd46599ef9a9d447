"""Serving paths on the GPU against the fp32 reference (correctness rule (docs/testing.md), element-wise): varlen with
``seqused``, paged K/V (page sizes 1..256, identity / permuted / shared tables), the KV cache with
in-place append, split-KV (1, 2, 3 and the heuristic), windows, softcap and learnable sinks in each.

Rows past ``seqused_q`` are not computed by the kernels (as in FlashAttention), so only used rows are
compared.
"""

from __future__ import annotations

import itertools
import random

import pytest

torch = pytest.importorskip("torch")

from fa4_core.testing import attention_ref, check_close  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

BF16 = torch.bfloat16


def _rand(*shape, dtype=BF16):
    return torch.randn(*shape, device="cuda", dtype=dtype)


def _cu(lens):
    return torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32, device="cuda")


def _used_rows_varlen(cu_q, used_q):
    idx = []
    for b in range(len(cu_q) - 1):
        n = cu_q[b + 1] - cu_q[b]
        u = n if used_q is None else min(used_q[b], n)
        idx.extend(range(cu_q[b], cu_q[b] + u))
    return torch.tensor(idx, dtype=torch.long, device="cuda")


def _compare_varlen(out, lse, ref, pt, cu_q_list, used_q_list, softcap=False):
    rows = _used_rows_varlen(cu_q_list, used_q_list)
    check_close("out", out[rows], ref[0][rows], pt[0][rows], softcap=softcap)
    check_close("lse", lse[:, rows], ref[1][:, rows], pt[1][:, rows], softcap=softcap)


VARLEN = [
    # (name, q lens, k lens, used_q, used_k, heads, d, causal)
    ("random", [37, 1, 250, 0, 129, 64], [50, 3, 300, 7, 0, 64], None, None, (8, 2), 128, False),
    ("random-causal", [37, 1, 250, 0, 129, 64], [50, 3, 300, 7, 0, 64], None, None, (8, 2), 128, True),
    ("equal", [256] * 4, [256] * 4, None, None, (4, 4), 64, True),
    ("extreme", [1, 2000, 1, 3], [2000, 1, 1, 700], None, None, (6, 2), 64, False),
    ("extreme-causal", [1, 2000, 1, 3], [2000, 1, 1, 700], None, None, (6, 2), 64, True),
    ("seqused", [100, 80, 60], [120, 90, 70], [50, 80, 0], [120, 10, 5], (8, 1), 128, True),
    ("seqused-noncausal", [100, 80, 60], [120, 90, 70], [99, 1, 60], [3, 90, 0], (4, 4), 96, False),
    ("d256", [77, 300], [500, 33], None, None, (4, 2), 256, True),
    ("d192-128", [77, 300], [500, 33], None, None, (4, 2), (192, 128), False),
]


@pytest.mark.parametrize("case", VARLEN, ids=[c[0] for c in VARLEN])
def test_varlen(case):
    from fa4_torch import flash_attn_varlen_func

    _, lq, lk, uq, uk, (hq, hkv), d, causal = case
    d, dv = d if isinstance(d, tuple) else (d, d)
    torch.manual_seed(0)
    q, k, v = _rand(sum(lq), hq, d), _rand(sum(lk), hkv, d), _rand(sum(lk), hkv, dv)
    cu_q, cu_k = _cu(lq), _cu(lk)
    sq_t = torch.tensor(uq, dtype=torch.int32, device="cuda") if uq else None
    sk_t = torch.tensor(uk, dtype=torch.int32, device="cuda") if uk else None
    kw = dict(cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, seqused_q=sq_t, seqused_k=sk_t, causal=causal)
    out, lse = flash_attn_varlen_func(q, k, v, max_seqlen_q=max(lq), return_lse=True, **kw)
    ref = attention_ref(q, k, v, **kw)
    pt = attention_ref(q, k, v, upcast=False, **kw)
    _compare_varlen(out, lse, ref, pt, [0, *itertools.accumulate(lq)], uq)
    # without max_seqlen_q (grid from the total length, no host sync) the answer is the same
    out2, lse2 = flash_attn_varlen_func(q, k, v, return_lse=True, **kw)
    rows = _used_rows_varlen([0, *itertools.accumulate(lq)], uq)
    assert torch.equal(out2[rows], out[rows]) and torch.equal(lse2[:, rows], lse[:, rows])


def test_varlen_thousand_sequences():
    from fa4_torch import flash_attn_varlen_func

    rng = random.Random(1)
    lq = [rng.randint(0, 40) for _ in range(1000)]
    lk = [rng.randint(0, 60) for _ in range(1000)]
    q, k, v = _rand(sum(lq), 4, 64), _rand(sum(lk), 2, 64), _rand(sum(lk), 2, 64)
    kw = dict(cu_seqlens_q=_cu(lq), cu_seqlens_k=_cu(lk), causal=True)
    out, lse = flash_attn_varlen_func(q, k, v, max_seqlen_q=max(lq), return_lse=True, **kw)
    _compare_varlen(
        out,
        lse,
        attention_ref(q, k, v, **kw),
        attention_ref(q, k, v, upcast=False, **kw),
        [0, *itertools.accumulate(lq)],
        None,
    )


def _paged(k, v, page_size, kind, rng):
    """Contiguous (b, L, h, d) K/V -> pages + table of the given kind; L a multiple of page_size."""
    b, L = k.shape[:2]
    per = L // page_size
    n_pages = b * per
    if kind == "identity":
        order = list(range(n_pages))
    else:
        order = list(range(n_pages))
        rng.shuffle(order)
    table = torch.tensor(order, dtype=torch.int32, device="cuda").view(b, per)
    k_pages = torch.empty(n_pages, page_size, *k.shape[2:], device="cuda", dtype=k.dtype)
    v_pages = torch.empty(n_pages, page_size, *v.shape[2:], device="cuda", dtype=v.dtype)
    k_pages[table.view(-1).long()] = k.reshape(n_pages, page_size, *k.shape[2:])
    v_pages[table.view(-1).long()] = v.reshape(n_pages, page_size, *v.shape[2:])
    return k_pages, v_pages, table


def _check_paged(q, lq, k_pages, v_pages, table, used_k):
    """Varlen q of lengths ``lq`` over paged K/V, non-causal and causal, against the fp32 reference."""
    from fa4_torch import flash_attn_varlen_func

    cu_q = _cu(lq)
    for causal in (False, True):
        out, lse = flash_attn_varlen_func(
            q,
            k_pages,
            v_pages,
            cu_seqlens_q=cu_q,
            max_seqlen_q=max(lq),
            seqused_k=used_k,
            page_table=table,
            causal=causal,
            return_lse=True,
        )
        kw = dict(
            cu_seqlens_q=cu_q,
            seqused_k=used_k,
            causal=causal,
            k_page=k_pages,
            v_page=v_pages,
            page_table=table,
        )
        ref = attention_ref(q, None, None, **kw)
        pt = attention_ref(q, None, None, upcast=False, **kw)
        _compare_varlen(out, lse, ref, pt, [0, *itertools.accumulate(lq)], None)


PAGED = [
    (ps, kind, d, hq, hkv)
    for ps, kind, (d, hq, hkv) in itertools.product(
        (1, 16, 64, 128, 256),
        ("identity", "permuted", "shared"),
        ((64, 8, 8), (128, 8, 2), (192, 4, 1), (256, 4, 2)),
    )
]


@pytest.mark.parametrize("case", PAGED, ids=lambda c: f"page{c[0]}-{c[1]}-d{c[2]}-h{c[3]}_{c[4]}")
def test_paged_equals_contiguous(case):
    ps, kind, d, hq, hkv = case
    rng = random.Random(ps * 7 + d)
    b, L = 3, 512
    k, v = _rand(b, L, hkv, d), _rand(b, L, hkv, d)
    if kind == "shared":  # every sequence reads sequence 0's pages
        k[1:], v[1:] = k[0], v[0]
    used_k = torch.tensor([L, 300, 1], dtype=torch.int32, device="cuda")
    k_pages, v_pages, table = _paged(k, v, ps, "permuted" if kind == "shared" else kind, rng)
    if kind == "shared":
        table[1:] = table[0]
    lq = [70, 1, 200]
    q = _rand(sum(lq), hq, d)
    _check_paged(q, lq, k_pages, v_pages, table, used_k)


# Paged K/V at the head dims the grid above does not reach (K's pages are looked up a stage ahead
# for d <= 192; d != dv prefetches K only), each as a prefill (the 128-row rows) and as a decode
# step of one query per sequence (the 64-row small-m rows), page sizes 1 and 64.
PAGED_DIMS = [
    (d, dv, hq, hkv, ps, step)
    for d, dv, hq, hkv in (
        (32, 32, 8, 8),
        (64, 64, 8, 2),
        (96, 96, 8, 2),
        (160, 160, 4, 1),
        (192, 128, 4, 2),
        (192, 192, 4, 1),
    )
    for ps in (1, 64)
    for step in ("prefill", "decode")
]


@pytest.mark.parametrize("case", PAGED_DIMS, ids=lambda c: f"d{c[0]}_{c[1]}-h{c[2]}_{c[3]}-page{c[4]}-{c[5]}")
def test_paged_head_dims(case):
    d, dv, hq, hkv, ps, step = case
    b, L = 3, 640
    k, v = _rand(b, L, hkv, d), _rand(b, L, hkv, dv)
    k_pages, v_pages, table = _paged(k, v, ps, "permuted", random.Random(d + ps))
    used_k = torch.tensor([L, 333, 1], dtype=torch.int32, device="cuda")
    lq = [70, 1, 200] if step == "prefill" else [1, 1, 1]
    q = _rand(sum(lq), hq, d)
    _check_paged(q, lq, k_pages, v_pages, table, used_k)


@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("s_new", [1, 5])
@pytest.mark.parametrize("causal", [False, True])
def test_kvcache_append_and_attend(paged, s_new, causal):
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(3)
    b, cap, hq, hkv, d = 3, 256, 8, 2, 128
    k_full, v_full = _rand(b, cap, hkv, d), _rand(b, cap, hkv, d)
    cache_seqlens = torch.tensor([0, 100, 250 - s_new], dtype=torch.int32, device="cuda")
    k_new, v_new = _rand(b, s_new, hkv, d), _rand(b, s_new, hkv, d)
    q = _rand(b, s_new, hq, d)
    if paged:
        k_cache, v_cache, table = _paged(k_full, v_full, 16, "permuted", random.Random(0))
    else:
        k_cache, v_cache, table = k_full.clone(), v_full.clone(), None
    k_before, v_before = k_cache.clone(), v_cache.clone()
    out, lse = flash_attn_with_kvcache(
        q,
        k_cache,
        v_cache,
        k=k_new,
        v=v_new,
        cache_seqlens=cache_seqlens,
        page_table=table,
        causal=causal,
        return_softmax_lse=True,
    )
    # expected cache: the new rows at [cache_seqlens, cache_seqlens + s_new), nothing else changed
    k_exp, v_exp = k_full.clone(), v_full.clone()
    for i in range(b):
        c = int(cache_seqlens[i])
        k_exp[i, c : c + s_new], v_exp[i, c : c + s_new] = k_new[i], v_new[i]
    if paged:
        k_exp_pages, v_exp_pages, _ = _paged(k_exp, v_exp, 16, "permuted", random.Random(0))
        assert torch.equal(k_cache, k_exp_pages) and torch.equal(v_cache, v_exp_pages)
    else:
        assert torch.equal(k_cache, k_exp) and torch.equal(v_cache, v_exp)
    assert not torch.equal(k_cache, k_before) and not torch.equal(v_cache, v_before)
    used = cache_seqlens + s_new
    ref = attention_ref(q, k_exp, v_exp, seqused_k=used, causal=causal)
    pt = attention_ref(q, k_exp, v_exp, seqused_k=used, causal=causal, upcast=False)
    check_close("out", out, ref[0], pt[0])
    check_close("lse", lse, ref[1], pt[1])


def test_kvcache_cache_batch_idx():
    from fa4_torch import flash_attn_with_kvcache

    b, slots, cap, hq, hkv, d = 3, 5, 128, 4, 4, 64
    k_cache, v_cache = _rand(slots, cap, hkv, d), _rand(slots, cap, hkv, d)
    idx = torch.tensor([4, 0, 2], dtype=torch.int32, device="cuda")
    seqlens = torch.tensor([128, 17, 64], dtype=torch.int32, device="cuda")
    q = _rand(b, 2, hq, d)
    out = flash_attn_with_kvcache(
        q, k_cache, v_cache, cache_seqlens=seqlens, cache_batch_idx=idx, causal=True
    )
    kk, vv = k_cache[idx.long()], v_cache[idx.long()]
    ref = attention_ref(q, kk, vv, seqused_k=seqlens, causal=True)
    pt = attention_ref(q, kk, vv, seqused_k=seqlens, causal=True, upcast=False)
    check_close("out", out, ref[0], pt[0])


@pytest.mark.parametrize("num_splits", [1, 2, 3, 0])
# query rows per tile (sq x heads per KV head): 4, 4, 49 and 64 take the 64-row small-m rows, 68 not
@pytest.mark.parametrize(
    "shape",
    [(2, 1, 32, 8, 4000), (1, 4, 16, 16, 2048), (3, 7, 28, 4, 999), (2, 16, 8, 2, 700), (2, 17, 8, 2, 700)],
)
@pytest.mark.parametrize("causal", [False, True])
def test_split_kv(num_splits, shape, causal):
    from fa4_torch import flash_attn_func

    b, sq, hq, hkv, sk = shape
    q, k, v = _rand(b, sq, hq, 128), _rand(b, sk, hkv, 128), _rand(b, sk, hkv, 128)
    out, lse = flash_attn_func(q, k, v, causal=causal, num_splits=num_splits, return_lse=True)
    ref = attention_ref(q, k, v, causal=causal)
    pt = attention_ref(q, k, v, causal=causal, upcast=False)
    check_close("out", out, ref[0], pt[0])
    check_close("lse", lse, ref[1], pt[1])


@pytest.mark.parametrize("num_splits", [33, 64])
@pytest.mark.parametrize("sink", [False, True])
def test_split_kv_many_splits(num_splits, sink):
    """The combine's weights of splits 32..63 (its second register of LSEs) and, at 64 splits of 63
    key blocks, a split that saw no key (weight 0: its partial must not enter)."""
    from fa4_torch import flash_attn_func

    torch.manual_seed(3)
    q, k, v = _rand(2, 1, 16, 128), _rand(2, 4000, 4, 128), _rand(2, 4000, 4, 128)
    s = (torch.randn(16, device="cuda", dtype=torch.float32) * 2) if sink else None
    out, lse = flash_attn_func(q, k, v, num_splits=num_splits, learnable_sink=s, return_lse=True)
    ref = attention_ref(q, k, v, learnable_sink=s)
    pt = attention_ref(q, k, v, learnable_sink=s, upcast=False)
    check_close("out", out, ref[0], pt[0])
    check_close("lse", lse, ref[1], pt[1])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("num_splits", [1, 4])
@pytest.mark.parametrize("sq", [1, 64])
def test_nonfinite_query_element_propagates(bad, num_splits, sq):
    """A NaN or infinite element in one query row: that row's output and LSE are NaN (the row sum is
    NaN, not empty), through the split-KV combine too; every other row is exact."""
    from fa4_torch import flash_attn_func

    torch.manual_seed(11)
    b, hq, hkv, sk, d = 2, 8, 2, 1000, 128
    q, k, v = _rand(b, sq, hq, d), _rand(b, sk, hkv, d), _rand(b, sk, hkv, d)
    q_bad = q.clone()
    q_bad[0, sq - 1, 1, 5] = bad
    out, lse = flash_attn_func(q_bad, k, v, num_splits=num_splits, return_lse=True)
    ref = attention_ref(q, k, v)
    pt = attention_ref(q, k, v, upcast=False)
    good = torch.ones(b, sq, hq, dtype=torch.bool, device="cuda")
    good[0, sq - 1, 1] = False
    check_close("out", out[good], ref[0][good], pt[0][good])
    good_lse = good.permute(0, 2, 1)  # lse is (b, h, sq)
    check_close("lse", lse[good_lse], ref[1][good_lse], pt[1][good_lse])
    assert out[0, sq - 1, 1].isnan().all(), out[0, sq - 1, 1]
    assert lse[0, 1, sq - 1].isnan(), lse[0, 1, sq - 1]


FEATURES = [
    dict(window_size=(64, 0)),
    dict(window_size=(32, 32)),
    dict(softcap=15.0),
    dict(sink=True),
    dict(softcap=30.0, sink=True, window_size=(100, None)),
]


@pytest.mark.parametrize("feat", FEATURES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("path", ["dense", "varlen", "paged", "split", "decode"])
def test_window_softcap_sink(feat, causal, path):
    from fa4_torch import flash_attn_func, flash_attn_varlen_func

    torch.manual_seed(7)
    hq, hkv, d = 8, 2, 128
    softcap = feat.get("softcap", 0.0)
    window = feat.get("window_size", (None, None))
    sink = (torch.randn(hq, device="cuda", dtype=torch.float32) * 2) if feat.get("sink") else None
    common = dict(causal=causal, window_size=window, softcap=softcap, learnable_sink=sink)
    if path in ("dense", "split", "decode"):  # decode: 4 queries x 4 heads per KV head, the small-m row
        # (decode: 1100 keys, so that the heuristic splits them: 8 ways, at least 128 keys per split)
        sq, sk, splits = {"dense": (300, 500, 1), "split": (300, 500, 3), "decode": (4, 1100, 0)}[path]
        q, k, v = _rand(2, sq, hq, d), _rand(2, sk, hkv, d), _rand(2, sk, hkv, d)
        out, lse = flash_attn_func(q, k, v, num_splits=splits, return_lse=True, **common)
        ref = attention_ref(q, k, v, **common)
        pt = attention_ref(q, k, v, upcast=False, **common)
        check_close("out", out, ref[0], pt[0], softcap=softcap > 0)
        check_close("lse", lse, ref[1], pt[1], softcap=softcap > 0)
        return
    lq, lk = [50, 300, 1], [400, 300, 64]
    q = _rand(sum(lq), hq, d)
    cu_q = _cu(lq)
    if path == "varlen":
        k, v = _rand(sum(lk), hkv, d), _rand(sum(lk), hkv, d)
        kw = dict(cu_seqlens_q=cu_q, cu_seqlens_k=_cu(lk))
        out, lse = flash_attn_varlen_func(q, k, v, max_seqlen_q=300, return_lse=True, **kw, **common)
        ref = attention_ref(q, k, v, **kw, **common)
        pt = attention_ref(q, k, v, upcast=False, **kw, **common)
    else:
        kc, vc = _rand(3, 512, hkv, d), _rand(3, 512, hkv, d)
        kp, vp, table = _paged(kc, vc, 64, "permuted", random.Random(2))
        used = torch.tensor(lk, dtype=torch.int32, device="cuda")
        out, lse = flash_attn_varlen_func(
            q,
            kp,
            vp,
            cu_seqlens_q=cu_q,
            max_seqlen_q=300,
            seqused_k=used,
            page_table=table,
            return_lse=True,
            **common,
        )
        kw = dict(cu_seqlens_q=cu_q, seqused_k=used, k_page=kp, v_page=vp, page_table=table)
        ref = attention_ref(q, None, None, **kw, **common)
        pt = attention_ref(q, None, None, upcast=False, **kw, **common)
    _compare_varlen(out, lse, ref, pt, [0, *itertools.accumulate(lq)], None, softcap=softcap > 0)
