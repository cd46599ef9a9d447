"""An FP8 (float8_e4m3fn) KV cache on the GPU, against the fp32 reference computed from the
dequantized cache (``cache.float() * descale``) with the correctness rule of docs/testing.md: the
low-precision reference is the same computation in q's dtype on the dequantized cache.

Grid (small: each case compiles one variant and attends over at most a few thousand keys): decode
(1 and 4 query rows, pack-GQA 4) over contiguous and paged caches (page 16, 64 and 7: any page size),
unsplit, 3 splits and the heuristic's, d32 to d192 (and K of d192 with V of d128), fp16 and bf16 q,
one scale and per-(batch, head) scales; cache slots (``cache_batch_idx``); softcap, sinks and windows; varlen prefill over a
paged FP8 cache and chunks over a contiguous one (the prefill rows, d32 to d192); the append
(quantize into the cache, then attend) equals quantizing the rows by hand and attending, memoised
decode steps too; a first call without descales made inside a CUDA graph capture; an error leaves
the caches bit for bit as they were; bf16 queries of magnitudes beyond fp16's range and near bf16's
smallest normals (the fp16 MMAs of ``FwdCodegen.kv8_f16_mma`` scale the Q tile), a non-finite
query element that leaves the other heads of its tile exact, and paged rows addressed in 32-bit
products (``FwdCodegen.page_offsets32``) bit for bit equal to 64-bit row offsets, and pages that hold
whole key tiles read a tile at a time (``FwdCodegen.page_tiles``) bit for bit equal to row by row.
"""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from fa4_core.errors import UnsupportedConfigError  # noqa: E402
from fa4_core.testing import attention_ref, check_close  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

BF16, F16, E4M3 = torch.bfloat16, torch.float16, torch.float8_e4m3fn


def _fp8(*shape, scale=1.0):
    """Random e4m3 values spanning the format (|x| up to ~ 3 * 4 * scale)."""
    return (torch.randn(*shape, device="cuda") * 4 * scale).to(E4M3)


def _descales(kind, b, hkv):
    if kind == "scalar":
        return torch.tensor(0.37, device="cuda"), torch.tensor([0.23], device="cuda")
    g = torch.Generator(device="cuda").manual_seed(5)
    kd = torch.rand(b, hkv, device="cuda", generator=g) * 0.4 + 0.1
    vd = torch.rand(b, hkv, device="cuda", generator=g) * 0.4 + 0.1
    return kd, vd


def _dequant(cache, descale, batch_of_row=None):
    """``cache (B, L, h, d)`` in e4m3 -> fp32 ``cache * descale`` (descale 0-d, (1,) or (B, h))."""
    d = descale.float()
    if d.numel() == 1:
        return cache.float() * d.reshape(())
    return cache.float() * d[:, None, :, None]


def _paged(k, v, page_size):
    """Contiguous (b, L, h, d) caches -> permuted pages + table (L a multiple of page_size)."""
    b, L = k.shape[:2]
    per = L // page_size
    order = list(range(b * per))
    random.Random(0).shuffle(order)
    table = torch.tensor(order, dtype=torch.int32, device="cuda").view(b, per)
    kp = torch.empty(b * per, page_size, *k.shape[2:], device="cuda", dtype=k.dtype)
    vp = torch.empty_like(kp)
    kp.view(torch.uint8)[table.view(-1).long()] = k.reshape(b * per, page_size, *k.shape[2:]).view(
        torch.uint8
    )
    vp.view(torch.uint8)[table.view(-1).long()] = v.reshape(b * per, page_size, *v.shape[2:]).view(
        torch.uint8
    )
    return kp, vp, table


def _check(out, lse, q, k_dq, v_dq, softcap=0.0, **kw):
    """out/lse against the fp32 reference on the dequantized cache and the same in q's dtype."""
    ref = attention_ref(q, k_dq, v_dq, softcap=softcap, **kw)
    pt = attention_ref(q, k_dq.to(q.dtype), v_dq.to(q.dtype), softcap=softcap, upcast=False, **kw)
    check_close("out", out, ref[0], pt[0], softcap=softcap > 0)
    if lse is not None:
        check_close("lse", lse, ref[1], pt[1], softcap=softcap > 0)


DECODE = [
    # (page size or None, query rows, d, splits, descale kind, q dtype)
    (None, 1, 128, 1, "scalar", BF16),
    (None, 1, 128, 0, "per-head", BF16),
    (None, 4, 64, 3, "per-head", F16),
    (16, 1, 128, 0, "scalar", BF16),
    (64, 4, 128, 1, "per-head", BF16),
    (64, 1, 64, 3, "scalar", F16),
    (7, 2, 128, 0, "per-head", BF16),
    (None, 1, 96, 0, "per-head", BF16),
    (64, 4, 160, 3, "scalar", BF16),
    (16, 1, 192, 0, "per-head", F16),
    (None, 1, 32, 0, "per-head", BF16),
    (16, 4, 32, 3, "scalar", F16),
]


@pytest.mark.parametrize("page, sq, d, splits, kind, dt", DECODE, ids=str)
def test_kv8_decode(page, sq, d, splits, kind, dt):
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(0)
    b, cap, hq, hkv = 3, 1120 if page == 7 else 1024, 8, 2
    k8, v8 = _fp8(b, cap, hkv, d), _fp8(b, cap, hkv, d)
    kd, vd = _descales(kind, b, hkv)
    seqlens = torch.tensor([cap, 5, 700], dtype=torch.int32, device="cuda")  # >= the query rows
    q = torch.randn(b, sq, hq, d, device="cuda", dtype=dt)
    kc, vc, table = (k8, v8, None) if page is None else _paged(k8, v8, page)
    out, lse = flash_attn_with_kvcache(
        q, kc, vc, cache_seqlens=seqlens, page_table=table, causal=True, num_splits=splits,
        return_softmax_lse=True, k_descale=kd, v_descale=vd,
    )  # fmt: skip
    assert out.dtype == dt
    _check(out, lse, q, _dequant(k8, kd), _dequant(v8, vd), seqused_k=seqlens, causal=True)


@pytest.fixture
def kv8_codegen(monkeypatch):
    """``use("NAME=VALUE", ...)``: the FP8-cache kernels built with these ``FwdCodegen`` fields from then
    on, as the benchmarks' ``--codegen`` builds them (``benchmarks/_common.kv8_candidate``); every
    compiled function and memo forgotten before and after so that no other test meets them."""
    import os

    from fa4_sm120 import tiles
    from fa4_torch import launch

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    monkeypatch.setattr(tiles, "fwd_config", tiles.fwd_config)  # kv8_candidate rebinds it: restored after
    import _common

    def use(*fields):
        launch.reset_caches()
        _common.kv8_candidate(list(fields))

    yield use
    monkeypatch.undo()
    launch.reset_caches()


def _paged_bits_unchanged(kv8_codegen, field, page, sq, splits, cap, seed):
    """A paged FP8 call (causal, 3 sequences, pack-GQA 4, d128) with the rule's kernels and again with
    the FP8 kernels built with ``field`` (``"NAME=VALUE"``): the same output and LSE bit for bit, and
    the correctness rule."""
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(seed)
    b, hq, hkv, d = 3, 8, 2, 128
    k8, v8 = _fp8(b, cap, hkv, d), _fp8(b, cap, hkv, d)
    kd, vd = _descales("per-head", b, hkv)
    seqlens = torch.tensor([cap, 333, 1000], dtype=torch.int32, device="cuda")
    q = torch.randn(b, sq, hq, d, device="cuda", dtype=BF16)
    kc, vc, table = _paged(k8, v8, page)
    common = dict(cache_seqlens=seqlens, page_table=table, causal=True, num_splits=splits,
                  return_softmax_lse=True, k_descale=kd, v_descale=vd)  # fmt: skip
    out, lse = flash_attn_with_kvcache(q, kc, vc, **common)
    kv8_codegen(field)
    out_field, lse_field = flash_attn_with_kvcache(q, kc, vc, **common)
    assert torch.equal(out, out_field) and torch.equal(lse, lse_field)
    _check(out, lse, q, _dequant(k8, kd), _dequant(v8, vd), seqused_k=seqlens, causal=True)


@pytest.mark.parametrize("page, sq, splits", [(16, 1, 0), (7, 4, 0), (64, 1, 1), (16, 300, 1)], ids=str)
def test_kv8_page_offsets32_equals_64bit_offsets(kv8_codegen, page, sq, splits):
    """``FwdCodegen.page_offsets32`` (the rule over a paged FP8 cache) changes only how a paged row's
    address is computed: a paged FP8 call (decode and prefill rows, split or not, odd page sizes) gives
    the output and LSE of the kernels built without it (three 64-bit products per row) bit for bit,
    and passes the correctness rule."""
    _paged_bits_unchanged(kv8_codegen, "page_offsets32=0", page, sq, splits, 1120 if page == 7 else 1024, 11)


@pytest.mark.parametrize(
    "page, sq, splits", [(64, 1, 0), (128, 4, 3), (192, 1, 1), (64, 300, 1), (192, 300, 0)], ids=str
)
def test_kv8_page_tiles_equal_row_by_row_pages(kv8_codegen, page, sq, splits):
    """``FwdCodegen.page_tiles`` (the rule where pages hold whole key tiles: 64, 128 and 192 rows
    against 64-key tiles) looks a block's page up once: the output and LSE are those of the kernels
    that look every row up (``page_tiles=0``) bit for bit, decode and prefill rows, split or not, and
    pass the correctness rule."""
    _paged_bits_unchanged(kv8_codegen, "page_tiles=0", page, sq, splits, 1920, 14)


@pytest.mark.parametrize("splits", [1, 0])
@pytest.mark.parametrize("sink", [False, True])
def test_kv8_decode_short_and_empty_caches(splits, sink):
    """The decode rows' warps each take 16 keys of a 64-key block: caches of 0, 1, 15, 16, 17, 64 and
    65 keys leave some warps (or all) without a key, and their merge must then give exactly what one
    softmax over the visible keys gives (a row without keys: out 0, lse -inf or the sink)."""
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(8)
    lens = [0, 1, 15, 16, 17, 64, 65]
    b, cap, hq, hkv, d = len(lens), 128, 8, 2, 128
    k8, v8 = _fp8(b, cap, hkv, d), _fp8(b, cap, hkv, d)
    kd, vd = _descales("per-head", b, hkv)
    seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    q = torch.randn(b, 1, hq, d, device="cuda", dtype=BF16)
    learnable_sink = torch.randn(hq, device="cuda") if sink else None
    out, lse = flash_attn_with_kvcache(
        q, k8, v8, cache_seqlens=seqlens, num_splits=splits, return_softmax_lse=True,
        learnable_sink=learnable_sink, k_descale=kd, v_descale=vd,
    )  # fmt: skip
    _check(out, lse, q, _dequant(k8, kd), _dequant(v8, vd), seqused_k=seqlens, learnable_sink=learnable_sink)


# (scale of q, of k_descale): q beyond fp16's range (up to ~1e5) with scores of order 1 and with very
# peaked ones, small q, and q near bf16's smallest normals with a k_descale that brings the scores back
MAGNITUDES = [(3e4, 1e-5), (3e4, 1.0), (1e-3, 1.0), (1e-30, 1e29)]


@pytest.mark.parametrize("q_scale, kd_scale", MAGNITUDES, ids=str)
@pytest.mark.parametrize("sq", [1, 64])
def test_kv8_q_magnitudes(q_scale, kd_scale, sq):
    """bf16 queries of any magnitude over an FP8 cache (fp16 MMAs, ``FwdCodegen.kv8_f16_mma``), one
    query row zero: the Q tile's power-of-two scale keeps them exact (decode rows and 64-row tiles)."""
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(9)
    b, cap, hq, hkv, d = 2, 512, 8, 2, 128
    k8, v8 = _fp8(b, cap, hkv, d, scale=0.25), _fp8(b, cap, hkv, d)
    kd, vd = _descales("per-head", b, hkv)
    kd = kd * kd_scale
    seqlens = torch.tensor([512, 300], dtype=torch.int32, device="cuda")
    q = (torch.randn(b, sq, hq, d, device="cuda") * q_scale).to(BF16)
    q[1, 0, 3] = 0
    out, lse = flash_attn_with_kvcache(
        q, k8, v8, cache_seqlens=seqlens, causal=True, return_softmax_lse=True, k_descale=kd, v_descale=vd
    )
    assert torch.isfinite(out).all()
    _check(out, lse, q, _dequant(k8, kd), _dequant(v8, vd), seqused_k=seqlens, causal=True)


@pytest.mark.parametrize("splits", [1, 0])
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
def test_kv8_nonfinite_q_element_leaves_the_other_heads(bad, splits):
    """A non-finite element in one query head's row: the heads that share its tile (pack-GQA) are
    exact (the Q tile's fp16 scale ignores non-finite values), and that head's output is not finite
    (NaN and infinities propagate, docs/api.md), with and without split keys."""
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(10)
    b, cap, hq, hkv, d = 2, 512, 8, 2, 128
    k8, v8 = _fp8(b, cap, hkv, d), _fp8(b, cap, hkv, d)
    kd, vd = _descales("per-head", b, hkv)
    seqlens = torch.tensor([512, 200], dtype=torch.int32, device="cuda")
    q = torch.randn(b, 1, hq, d, device="cuda", dtype=BF16)
    q_bad = q.clone()
    q_bad[0, 0, 1, 5] = bad
    out = flash_attn_with_kvcache(
        q_bad, k8, v8, cache_seqlens=seqlens, k_descale=kd, v_descale=vd, num_splits=splits
    )
    kdq, vdq = _dequant(k8, kd), _dequant(v8, vd)
    ref = attention_ref(q, kdq, vdq, seqused_k=seqlens)[0]
    pt = attention_ref(q, kdq.to(BF16), vdq.to(BF16), seqused_k=seqlens, upcast=False)[0]
    keep = [h for h in range(hq) if h != 1]
    check_close("out[0]", out[0, :, keep], ref[0, :, keep], pt[0, :, keep])
    check_close("out[1]", out[1], ref[1], pt[1])
    assert not torch.isfinite(out[0, 0, 1]).all()


def test_kv8_cache_batch_idx():
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(1)
    b, slots, cap, hq, hkv, d = 3, 5, 256, 4, 4, 64
    k8, v8 = _fp8(slots, cap, hkv, d), _fp8(slots, cap, hkv, d)
    kd, vd = _descales("per-head", b, hkv)  # indexed by q's batch, not by the slot
    idx = torch.tensor([4, 0, 2], dtype=torch.int32, device="cuda")
    seqlens = torch.tensor([256, 17, 64], dtype=torch.int32, device="cuda")
    q = torch.randn(b, 2, hq, d, device="cuda", dtype=BF16)
    out = flash_attn_with_kvcache(
        q, k8, v8, cache_seqlens=seqlens, cache_batch_idx=idx, causal=True, k_descale=kd, v_descale=vd
    )
    kk, vv = (x.view(torch.uint8)[idx.long()].view(E4M3) for x in (k8, v8))
    _check(out, None, q, _dequant(kk, kd), _dequant(vv, vd), seqused_k=seqlens, causal=True)


FEATURES = [
    dict(softcap=15.0),
    dict(sink=True),
    dict(window_size=(100, 0)),
    dict(softcap=30.0, sink=True, window_size=(300, None)),
]


@pytest.mark.parametrize("feat", FEATURES, ids=str)
@pytest.mark.parametrize("page", [None, 64])
def test_kv8_softcap_sink_window(feat, page):
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(2)
    b, cap, hq, hkv, d = 2, 1024, 8, 2, 128
    k8, v8 = _fp8(b, cap, hkv, d, scale=0.5), _fp8(b, cap, hkv, d)
    kd, vd = _descales("per-head", b, hkv)
    seqlens = torch.tensor([1000, 333], dtype=torch.int32, device="cuda")
    q = torch.randn(b, 4, hq, d, device="cuda", dtype=BF16)
    sink = torch.randn(hq, device="cuda") * 2 if feat.get("sink") else None
    common = dict(
        causal=True, window_size=feat.get("window_size", (None, None)), softcap=feat.get("softcap", 0.0)
    )
    kc, vc, table = (k8, v8, None) if page is None else _paged(k8, v8, page)
    out, lse = flash_attn_with_kvcache(
        q, kc, vc, cache_seqlens=seqlens, page_table=table, learnable_sink=sink, return_softmax_lse=True,
        k_descale=kd, v_descale=vd, **common,
    )  # fmt: skip
    _check(out, lse, q, _dequant(k8, kd), _dequant(v8, vd), seqused_k=seqlens, learnable_sink=sink, **common)


@pytest.mark.parametrize("d", [64, 128, 192])
@pytest.mark.parametrize("causal", [False, True])
def test_kv8_varlen_prefill_over_a_paged_cache(causal, d):
    from fa4_torch import flash_attn_varlen_func

    torch.manual_seed(3)
    hq, hkv = 8, 2
    lq, lk = [50, 300, 1], [400, 300, 64]
    k8, v8 = _fp8(3, 512, hkv, d), _fp8(3, 512, hkv, d)
    kd, vd = torch.tensor(0.31, device="cuda"), torch.tensor(0.17, device="cuda")
    kp, vp, table = _paged(k8, v8, 64)
    q = torch.randn(sum(lq), hq, d, device="cuda", dtype=BF16)
    cu_q = torch.tensor([0, 50, 350, 351], dtype=torch.int32, device="cuda")
    used = torch.tensor(lk, dtype=torch.int32, device="cuda")
    out, lse = flash_attn_varlen_func(
        q, kp, vp, cu_seqlens_q=cu_q, max_seqlen_q=300, seqused_k=used, page_table=table, causal=causal,
        return_lse=True, k_descale=kd, v_descale=vd,
    )  # fmt: skip
    kw = dict(cu_seqlens_q=cu_q, seqused_k=used, causal=causal)
    kdq, vdq = _dequant(k8, kd), _dequant(v8, vd)
    ref = attention_ref(q, None, None, k_page=_paged(kdq, vdq, 64)[0], v_page=_paged(kdq, vdq, 64)[1],
                        page_table=table, **kw)  # fmt: skip
    kpt, vpt = _paged(kdq.to(BF16), vdq.to(BF16), 64)[:2]
    pt = attention_ref(q, None, None, k_page=kpt, v_page=vpt, page_table=table, upcast=False, **kw)
    check_close("out", out, ref[0], pt[0])
    check_close("lse", lse, ref[1], pt[1])


PREFILL = [dict(), dict(softcap=20.0, window_size=(150, 0)), dict(window_size=(200, 40))]


@pytest.mark.parametrize("feat", PREFILL, ids=str)
@pytest.mark.parametrize("d", [64, 96, 128, 192])
def test_kv8_prefill_chunk_over_a_contiguous_cache(d, feat):
    """A chunk of 300 query tokens (the prefill rows, not the few-tile rule's 64-row ones: at d64 and d96
    32-key FP8 tiles, at d128 K and V widened into one buffer) over a contiguous FP8 cache that already
    holds them, causal, with a window and the softcap."""
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(9)
    b, cap, hq, hkv = 2, 1024, 32, 8  # 160 tiles of 128 packed rows: more than an H100/H200 has SMs
    k8, v8 = _fp8(b, cap, hkv, d, scale=0.5), _fp8(b, cap, hkv, d)
    kd, vd = _descales("per-head", b, hkv)
    seqlens = torch.tensor([1000, 301], dtype=torch.int32, device="cuda")
    q = torch.randn(b, 300, hq, d, device="cuda", dtype=BF16)
    common = dict(
        causal=True, window_size=feat.get("window_size", (None, None)), softcap=feat.get("softcap", 0.0)
    )
    out, lse = flash_attn_with_kvcache(
        q, k8, v8, cache_seqlens=seqlens, return_softmax_lse=True, k_descale=kd, v_descale=vd, **common
    )
    _check(out, lse, q, _dequant(k8, kd), _dequant(v8, vd), seqused_k=seqlens, **common)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("slots", [False, True])
def test_kv8_d32_prefill_chunk(slots, causal):
    """A chunk of 300 query tokens at d32 (the 128-row prefill tile; without a mask or split keys over
    contiguous keys its V is waited for early, ``FwdCodegen.late_v_wait``) over a contiguous FP8 cache,
    by batch or through cache slots."""
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(12)
    # as many query heads as KV heads (no pack-GQA); 192 tiles of 128 rows: more than an H100/H200 has SMs
    b, n, cap, h, d = 4, 5, 1024, 16, 32
    k8, v8 = _fp8(n if slots else b, cap, h, d, scale=0.5), _fp8(n if slots else b, cap, h, d)
    kd, vd = _descales("per-head", b, h)
    idx = torch.tensor([2, 0, 4, 1], dtype=torch.int32, device="cuda") if slots else None
    seqlens = torch.tensor([1000, 301, 640, 1024], dtype=torch.int32, device="cuda")
    q = torch.randn(b, 300, h, d, device="cuda", dtype=BF16)
    out, lse = flash_attn_with_kvcache(
        q, k8, v8, cache_seqlens=seqlens, cache_batch_idx=idx, causal=causal, return_softmax_lse=True,
        k_descale=kd, v_descale=vd,
    )  # fmt: skip
    rows = idx.long() if slots else torch.arange(b, device="cuda")
    kk, vv = (x.view(torch.uint8)[rows].view(E4M3) for x in (k8, v8))
    _check(out, lse, q, _dequant(kk, kd), _dequant(vv, vd), seqused_k=seqlens, causal=causal)


@pytest.mark.parametrize("sq, page, splits", [(1, 16, 0), (4, None, 3), (300, 64, 1)], ids=str)
def test_kv8_unequal_head_dims(sq, page, splits):
    """K of d192 and V of d128 in an FP8 cache (decode rows, split or not, and a prefill chunk; paged
    and contiguous): the output has V's head dim."""
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(13)
    b, cap, hq, hkv, d, dv = 2, 1024, 16, 4, 192, 128
    k8, v8 = _fp8(b, cap, hkv, d, scale=0.5), _fp8(b, cap, hkv, dv)
    kd, vd = _descales("per-head", b, hkv)
    seqlens = torch.tensor([1000, 333], dtype=torch.int32, device="cuda")
    q = torch.randn(b, sq, hq, d, device="cuda", dtype=BF16)
    if page is None:
        kc, vc, table = k8, v8, None
    else:
        kc, _, table = _paged(k8, k8, page)
        vc = _paged(v8, v8, page)[0]
    out, lse = flash_attn_with_kvcache(
        q, kc, vc, cache_seqlens=seqlens, page_table=table, causal=True, num_splits=splits,
        return_softmax_lse=True, k_descale=kd, v_descale=vd,
    )  # fmt: skip
    assert out.shape == (b, sq, hq, dv)
    _check(out, lse, q, _dequant(k8, kd), _dequant(v8, vd), seqused_k=seqlens, causal=True)


@pytest.mark.parametrize("page", [None, 16])
def test_kv8_append_then_attend_equals_quantize_then_attend(page):
    """The append quantizes the new rows into the cache (saturating e4m3 of k / k_descale); the output
    is bit for bit that of attending over a cache holding those rows already."""
    from fa4_torch import flash_attn_with_kvcache

    torch.manual_seed(4)
    b, cap, hq, hkv, d, s_new = 2, 256, 8, 2, 128, 3
    k8, v8 = _fp8(b, cap, hkv, d), _fp8(b, cap, hkv, d)
    kd, vd = _descales("per-head", b, hkv)
    seqlens = torch.tensor([10, 200], dtype=torch.int32, device="cuda")
    k_new = torch.randn(b, s_new, hkv, d, device="cuda", dtype=BF16) * 40  # some saturate at 448
    v_new = torch.randn(b, s_new, hkv, d, device="cuda", dtype=BF16)
    q = torch.randn(b, s_new, hq, d, device="cuda", dtype=BF16)
    # by hand: the quantized rows written into a copy of the cache
    k_exp, v_exp = k8.clone(), v8.clone()
    fmax = torch.finfo(E4M3).max
    for i in range(b):
        c = int(seqlens[i])
        k_exp[i, c : c + s_new] = (k_new[i].float() / kd[i][None, :, None]).clamp(-fmax, fmax).to(E4M3)
        v_exp[i, c : c + s_new] = (v_new[i].float() / vd[i][None, :, None]).clamp(-fmax, fmax).to(E4M3)
    kc, vc, table = (k8.clone(), v8.clone(), None) if page is None else _paged(k8, v8, page)
    common = dict(page_table=table, causal=True, k_descale=kd, v_descale=vd)
    out = flash_attn_with_kvcache(q, kc, vc, k=k_new, v=v_new, cache_seqlens=seqlens, **common)
    kc_exp, vc_exp = (k_exp, v_exp) if page is None else _paged(k_exp, v_exp, page)[:2]
    assert torch.equal(kc.view(torch.uint8), kc_exp.view(torch.uint8))
    assert torch.equal(vc.view(torch.uint8), vc_exp.view(torch.uint8))
    out_exp = flash_attn_with_kvcache(q, kc_exp, vc_exp, cache_seqlens=seqlens + s_new, **common)
    assert torch.equal(out, out_exp)
    _check(out, None, q, _dequant(k_exp, kd), _dequant(v_exp, vd), seqused_k=seqlens + s_new, causal=True)


@pytest.mark.parametrize("page", [None, 64])
def test_kv8_memoised_decode_steps(page):
    """Decode steps that append one token each (the same metadata every step): the first call fills
    the FP8 cache's memo (``launch.KV8_MEMO``), the next ones take it; each step's append is the
    saturating quantization and each output matches the reference on the dequantized cache."""
    from fa4_torch import flash_attn_with_kvcache, launch

    launch.KV8_MEMO.clear()
    torch.manual_seed(6)
    b, cap, hq, hkv, d = 2, 4096, 8, 2, 128
    k8, v8 = _fp8(b, cap, hkv, d), _fp8(b, cap, hkv, d)
    kd, vd = _descales("per-head", b, hkv)
    kc, vc, table = (k8.clone(), v8.clone(), None) if page is None else _paged(k8, v8, page)
    seqlens = torch.tensor([1000, 3000], dtype=torch.int32, device="cuda")
    fmax = torch.finfo(E4M3).max
    for step in range(4):
        q = torch.randn(b, 1, hq, d, device="cuda", dtype=BF16)
        k_new = torch.randn(b, 1, hkv, d, device="cuda", dtype=BF16)
        v_new = torch.randn(b, 1, hkv, d, device="cuda", dtype=BF16)
        out = flash_attn_with_kvcache(
            q, kc, vc, k=k_new, v=v_new, cache_seqlens=seqlens, page_table=table, k_descale=kd, v_descale=vd
        )
        assert len(launch.KV8_MEMO) == 1, step
        for i in range(b):  # the reference's cache: the same rows quantized by hand
            c = int(seqlens[i])
            k8[i, c] = (k_new[i, 0].float() / kd[i][:, None]).clamp(-fmax, fmax).to(E4M3)
            v8[i, c] = (v_new[i, 0].float() / vd[i][:, None]).clamp(-fmax, fmax).to(E4M3)
        seqlens = seqlens + 1
        _check(out, None, q, _dequant(k8, kd), _dequant(v8, vd), seqused_k=seqlens)


def test_kv8_first_call_inside_a_graph_capture():
    """The process's first FP8-cache call without descales (1.0) made inside a CUDA graph capture: the
    eager call after it, before the graph ever replays, still reads 1.0 (the capture's constant is
    the graph's own), and so does every replay."""
    from fa4_torch import flash_attn_with_kvcache, validate

    torch.manual_seed(8)
    b, cap, hq, hkv, d = 2, 1024, 8, 2, 128
    k8, v8 = _fp8(b, cap, hkv, d, scale=0.05), _fp8(b, cap, hkv, d)
    q = torch.randn(b, 1, hq, d, device="cuda", dtype=BF16)
    seqlens = torch.tensor([700, 1024], dtype=torch.int32, device="cuda")
    call = lambda: flash_attn_with_kvcache(q, k8, v8, cache_seqlens=seqlens, num_splits=1)  # noqa: E731
    call()  # compiled outside the capture
    validate._ONES.clear()  # the constant of None is made inside it
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        captured = call()
    one = torch.ones((), device="cuda")
    _check(call(), None, q, _dequant(k8, one), _dequant(v8, one), seqused_k=seqlens)
    g.replay()
    _check(captured, None, q, _dequant(k8, one), _dequant(v8, one), seqused_k=seqlens)


@pytest.mark.parametrize(
    "over, rx",
    [
        (lambda: dict(k_descale=torch.ones(3, 2, device="cuda")), r"k_descale\.shape"),
        (lambda: dict(v_descale=torch.ones(2, 2)), r"v_descale\.device"),
        (lambda: dict(k_descale=torch.ones(2, 2, device="cuda", dtype=torch.float16)), r"k_descale\.dtype"),
        (lambda: dict(cache_seqlens=300), "cache_seqlens=300"),
    ],
    ids=["shape", "device", "dtype", "past-end"],
)
def test_kv8_errors_leave_the_caches_as_they_were(over, rx):
    from fa4_torch import flash_attn_with_kvcache

    b, cap, hq, hkv, d = 2, 256, 4, 2, 64
    k8, v8 = _fp8(b, cap, hkv, d), _fp8(b, cap, hkv, d)
    before = k8.view(torch.uint8).clone(), v8.view(torch.uint8).clone()
    kw = dict(
        k=torch.randn(b, 1, hkv, d, device="cuda", dtype=BF16), v=torch.randn(b, 1, hkv, d, device="cuda", dtype=BF16),
        cache_seqlens=torch.tensor([5, 9], dtype=torch.int32, device="cuda"),
        k_descale=torch.ones(2, 2, device="cuda"), v_descale=torch.tensor(0.5, device="cuda"),
    )  # fmt: skip
    kw.update(over())
    q = torch.randn(b, 1, hq, d, device="cuda", dtype=BF16)
    with pytest.raises(UnsupportedConfigError, match=rx):
        flash_attn_with_kvcache(q, k8, v8, **kw)
    torch.cuda.synchronize()
    assert torch.equal(k8.view(torch.uint8), before[0]) and torch.equal(v8.view(torch.uint8), before[1])
