"""An FP8 (float8_e4m3fn) KV cache on the CPU: every bad argument raises a typed error naming it,
and the caches are bit for bit what they were (the quantizing append runs only after every check,
the descales' included). A valid CPU call ends at the device check (``q.device``), after which the
append would run.

Cases: cache dtypes (a mixed pair, an FP8 new k/v, e5m2), descale dtypes, shapes, devices, values
(<= 0, inf, nan: read on the CPU as the index tensors are), descales with a bf16 cache, head dims past
what fits, gradients; the tile choice and the quantizer are checked as plain functions.
"""

from __future__ import annotations

import re

import pytest
import torch

import fa4_torch
import fa4_torch.api as api
from fa4_core.errors import UnsupportedConfigError
from fa4_torch import launch, plan, validate

BF = torch.bfloat16
E4M3 = torch.float8_e4m3fn


def _kv8(paged=False, s_new=1, d=64):
    """A valid FP8-cache append-and-attend call on the CPU: batch 2, 4 query heads over 2 KV heads,
    caches of 32 rows (contiguous) or 4 pages of 16 rows per sequence, per-(batch, head) descales."""
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, dt=BF):
        return torch.randn(*shape, generator=g).to(dt)

    kw = dict(q=rnd(2, s_new, 4, d), k=rnd(2, s_new, 2, d), v=rnd(2, s_new, 2, d))
    if paged:
        kw.update(k_cache=rnd(10, 16, 2, d, dt=E4M3), v_cache=rnd(10, 16, 2, d, dt=E4M3))
        kw["page_table"] = torch.tensor([[3, 0, 7, 1], [2, 9, 4, 5]], dtype=torch.int32)
    else:
        kw.update(k_cache=rnd(2, 32, 2, d, dt=E4M3), v_cache=rnd(2, 32, 2, d, dt=E4M3))
    kw["cache_seqlens"] = torch.tensor([3, 17], dtype=torch.int32)
    kw["k_descale"] = torch.full((2, 2), 0.5)
    kw["v_descale"] = torch.tensor(0.25)
    return kw


def _with(kw, **over):
    out = dict(kw)
    out.update(over)
    return out


def _bits(t):
    return t.detach().view(torch.uint8).clone() if t.dtype == E4M3 else t.detach().clone()


_ERRORS = [
    ("valid-but-cpu", lambda kw: kw, UnsupportedConfigError, r"q\.device="),
    ("no-descales-is-one", lambda kw: _with(kw, k_descale=None, v_descale=None), UnsupportedConfigError,
     r"q\.device="),
    ("scalar-descale-1", lambda kw: _with(kw, k_descale=torch.ones(1)), UnsupportedConfigError, r"q\.device="),
    ("v-cache-bf16", lambda kw: _with(kw, v_cache=kw["v_cache"].to(BF)), UnsupportedConfigError,
     re.escape("(q.dtype, k_cache.dtype, v_cache.dtype)=")),
    ("e5m2-cache", lambda kw: _with(kw, k_cache=kw["k_cache"].to(torch.float8_e5m2),
     v_cache=kw["v_cache"].to(torch.float8_e5m2)), UnsupportedConfigError, r"k_cache\.dtype="),
    ("new-k-fp8", lambda kw: _with(kw, k=kw["k"].to(E4M3), v=kw["v"].to(E4M3)), UnsupportedConfigError,
     r"k\.dtype=torch\.float8_e4m3fn"),
    ("new-k-fp16", lambda kw: _with(kw, k=kw["k"].half(), v=kw["v"].half()), UnsupportedConfigError,
     r"k\.dtype="),
    ("k-descale-f16", lambda kw: _with(kw, k_descale=kw["k_descale"].half()), UnsupportedConfigError,
     r"k_descale\.dtype="),
    ("v-descale-f64", lambda kw: _with(kw, v_descale=torch.tensor(0.25, dtype=torch.float64)),
     UnsupportedConfigError, r"v_descale\.dtype="),
    ("k-descale-float", lambda kw: _with(kw, k_descale=0.5), UnsupportedConfigError, r"k_descale='float'"),
    ("k-descale-shape", lambda kw: _with(kw, k_descale=torch.ones(2, 4)), UnsupportedConfigError,
     re.escape("k_descale.shape=(2, 4)")),
    ("v-descale-shape-batch", lambda kw: _with(kw, v_descale=torch.ones(3, 2)), UnsupportedConfigError,
     re.escape("v_descale.shape=(3, 2)")),
    ("k-descale-device", lambda kw: _with(kw, k_descale=kw["k_descale"].to("meta")), UnsupportedConfigError,
     r"k_descale\.device="),
    ("k-descale-zero", lambda kw: _with(kw, k_descale=torch.zeros(2, 2)), UnsupportedConfigError,
     r"k_descale=\[0\.0"),
    ("v-descale-negative", lambda kw: _with(kw, v_descale=torch.tensor(-1.0)), UnsupportedConfigError,
     r"v_descale=\[-1\.0\]"),
    ("v-descale-inf", lambda kw: _with(kw, v_descale=torch.tensor([float("inf")])), UnsupportedConfigError,
     r"v_descale=\[inf\]"),
    ("k-descale-nan", lambda kw: _with(kw, k_descale=torch.tensor([[1.0, float("nan")], [1.0, 1.0]])),
     UnsupportedConfigError, r"k_descale=\[nan\]"),
    ("q-grad", lambda kw: _with(kw, q=kw["q"].clone().requires_grad_(True)), NotImplementedError, "gradients"),
    ("descale-grad", lambda kw: _with(kw, k_descale=kw["k_descale"].clone().requires_grad_(True)),
     NotImplementedError, "gradients"),
    ("seqlens-past-end", lambda kw: _with(kw, cache_seqlens=100), UnsupportedConfigError, "cache_seqlens=100"),
]  # fmt: skip


@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("label, change, exc, rx", _ERRORS, ids=[e[0] for e in _ERRORS])
def test_kv8_caches_are_bit_identical_after_each_error(paged, label, change, exc, rx):
    kw = change(_kv8(paged))
    kc, vc = kw["k_cache"], kw["v_cache"]
    before = (_bits(kc), _bits(vc))
    args = dict(kw)
    with pytest.raises(exc, match=rx):
        api.flash_attn_with_kvcache(args.pop("q"), args.pop("k_cache"), args.pop("v_cache"), **args)
    assert torch.equal(_bits(kc), before[0]) and torch.equal(_bits(vc), before[1])


def test_descales_without_an_fp8_cache_are_an_error():
    kw = _kv8()
    kw.update(k_cache=kw["k_cache"].to(BF), v_cache=kw["v_cache"].to(BF))
    before = _bits(kw["k_cache"])
    kc = kw["k_cache"]
    with pytest.raises(UnsupportedConfigError, match=r"k_descale='a tensor'.*float8_e4m3fn"):
        api.flash_attn_with_kvcache(kw.pop("q"), kw.pop("k_cache"), kw.pop("v_cache"), **kw)
    assert torch.equal(_bits(kc), before)


def test_fp8_head_dims_past_192_are_an_error_before_the_append():
    kw = _kv8(d=256)
    kc = kw["k_cache"]
    before = _bits(kc)
    with pytest.raises(UnsupportedConfigError, match=re.escape("head_dim=256") + ".*FP8"):
        api.flash_attn_with_kvcache(kw.pop("q"), kw.pop("k_cache"), kw.pop("v_cache"), **kw)
    assert torch.equal(_bits(kc), before)


def _varlen8():
    g = torch.Generator().manual_seed(1)
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    q = torch.randn(5, 4, 64, generator=g).to(BF)
    k = torch.randn(5, 2, 64, generator=g).to(E4M3)
    v = torch.randn(5, 2, 64, generator=g).to(E4M3)
    return dict(q=q, k=k, v=v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=3, max_seqlen_k=3)


@pytest.mark.parametrize(
    "over, exc, rx",
    [
        ({}, UnsupportedConfigError, r"q\.device="),
        ({"k_descale": torch.ones(2, 2)}, UnsupportedConfigError, r"q\.device="),
        ({"k_descale": torch.ones(3, 2)}, UnsupportedConfigError, re.escape("k_descale.shape=(3, 2)")),
        ({"v_descale": torch.tensor(0.0)}, UnsupportedConfigError, r"v_descale=\[0\.0\]"),
        ({"v_descale": torch.ones((), dtype=torch.float16)}, UnsupportedConfigError, r"v_descale\.dtype="),
    ],
)
def test_varlen_accepts_an_fp8_cache_with_checked_descales(over, exc, rx):
    with pytest.raises(exc, match=rx):
        api.flash_attn_varlen_func(**_varlen8(), **over)


def test_varlen_fp8_with_gradients_is_a_typed_error():
    kw = _varlen8()
    kw["q"] = kw["q"].requires_grad_(True)
    with pytest.raises(UnsupportedConfigError, match="requires_grad.*FP8"):
        api.flash_attn_varlen_func(**kw)


def test_fp8_strides_must_be_16_byte_multiples():
    kw = _varlen8()
    big = torch.zeros(5, 2, 72, dtype=torch.uint8).view(E4M3)  # rows of 72 bytes: stride(1) = 72
    kw["k"] = big[..., :64]
    with pytest.raises(UnsupportedConfigError, match=r"k\.stride\(1\)=72.*16 elements"):
        api.flash_attn_varlen_func(**kw)


def test_quantize_saturates_and_divides_by_the_descale():
    x = torch.tensor([1.0, -3.0, 1000.0, -1e6], dtype=BF).reshape(1, 1, 1, 4)
    q = validate.quantize_kv8(x, torch.full((1, 1), 2.0), E4M3)
    assert q.dtype == E4M3
    assert q.float().flatten().tolist() == [0.5, -1.5, 448.0, -448.0]


def test_the_fp8_key_names_its_config():
    key = plan.FwdKey(
        BF, 128, 128, True, False, True, 4, seqused_k=True, paged_kv=True, small_m=True, kv8=True
    )
    cfg = plan.fwd_config(key, "sm120")
    assert cfg.kv_dtype == "float8_e4m3fn" and (cfg.tile_m, cfg.tile_n) == (64, 64)
    assert plan.fwd_config(key._replace(kv8=False), "sm120").kv_dtype is None
    assert launch.forward  # the launch path exists (its GPU half is tests/torch/test_kv8_gpu.py)


@pytest.mark.parametrize("paged", [False, True])
def test_append_quantizes_the_new_rows_into_the_fp8_cache(paged):
    """``launch.append_kv`` (what ``flash_attn_with_kvcache`` runs once every check passed) on CPU
    tensors: the new rows land at ``cache_seqlens`` as saturated e4m3 of ``k / k_descale``, per
    (batch, head) scale; nothing else changes."""
    kw = _kv8(paged, s_new=3)
    kc, vc = kw["k_cache"].clone(), kw["v_cache"].clone()
    k, v = kw["k"] * 300, kw["v"]  # some rows saturate at 448
    kd = torch.tensor([[0.5, 0.25], [2.0, 1.0]])
    vd = torch.full((2, 2), 0.125)
    launch.append_kv(kc, vc, k, v, kw["cache_seqlens"], kw.get("page_table"), None, kd, vd)
    k_exp, v_exp = kw["k_cache"].clone(), kw["v_cache"].clone()
    for b in range(2):
        for j in range(3):
            pos = int(kw["cache_seqlens"][b]) + j
            if paged:
                idx = (int(kw["page_table"][b, pos // 16]), pos % 16)
            else:
                idx = (b, pos)
            k_exp[idx] = validate.quantize_kv8(k[b : b + 1, j : j + 1], kd[b : b + 1], E4M3)[0, 0]
            v_exp[idx] = validate.quantize_kv8(v[b : b + 1, j : j + 1], vd[b : b + 1], E4M3)[0, 0]
    assert torch.equal(_bits(kc), _bits(k_exp)) and torch.equal(_bits(vc), _bits(v_exp))
    assert kc.float().abs().max() == 448.0


def test_fp8_kv_without_descales_in_the_dense_function_is_refused():
    """``flash_attn_func`` has no descales: FP8 K/V there is a typed error naming the dtypes."""
    q = torch.randn(1, 16, 2, 64, dtype=torch.bfloat16)
    k = torch.randn(1, 16, 2, 64).to(torch.float8_e4m3fn)
    with pytest.raises(UnsupportedConfigError, match=r"\(k.dtype, v.dtype\)"):
        fa4_torch.flash_attn_func(q, k, k.clone())
    with pytest.raises(UnsupportedConfigError, match=r"\(k.dtype, v.dtype\)"):
        fa4_torch.flash_attn_func(q.requires_grad_(), k, k.clone())


def test_fp8_kv_has_no_backward():
    """The backward seam and the autograd check refuse FP8 K/V before anything compiles."""
    from fa4_torch.autograd import check_backward_supported

    q = torch.randn(1, 16, 2, 64, dtype=torch.bfloat16)
    k = torch.randn(1, 16, 2, 64).to(torch.float8_e4m3fn)
    with pytest.raises(UnsupportedConfigError, match="requires_grad"):
        check_backward_supported(q, k, k.clone(), False, (None, None))


@pytest.mark.parametrize(
    "name, dim, shape, stride",
    [
        ("k_cache", 0, (10, 16, 2, 64), (2**31, 128, 64, 1)),  # the page stride
        ("v_cache", 1, (10, 16, 2, 64), (128, 2**28, 64, 1)),  # a page's last row: 15 * 2^28
        ("k_cache", 2, (10, 16, 2, 64), (2048, 128, 2**31, 1)),  # the last KV head
    ],
    ids=["page", "row", "head"],
)
def test_paged_fp8_cache_offsets_past_32_bits_are_an_error(name, dim, shape, stride):
    """A paged FP8 cache's rows are addressed from their KV head's element 0 in 32-bit products
    (``FwdCodegen.page_offsets32``): a stride that puts a page, a page's last row or the last KV head
    2^31 elements or more away is a typed error naming it (the caches are views over no memory: the
    check reads only their metadata; no rows appended)."""
    kw = _with(_kv8(paged=True), k=None, v=None)
    kw[name] = torch.empty_strided(shape, stride, dtype=E4M3, device="meta")
    with pytest.raises(
        UnsupportedConfigError, match=re.escape(f"{name}.stride({dim})={stride[dim]}") + ".*2\\*\\*31"
    ):
        api.flash_attn_with_kvcache(kw.pop("q"), kw.pop("k_cache"), kw.pop("v_cache"), **kw)
    below = list(stride)
    below[dim] //= 2  # inside: the call goes on to the device check
    kw = _with(_kv8(paged=True), k=None, v=None)
    kw[name] = torch.empty_strided(shape, below, dtype=E4M3, device="meta")
    with pytest.raises(UnsupportedConfigError, match=r"\.device="):
        api.flash_attn_with_kvcache(kw.pop("q"), kw.pop("k_cache"), kw.pop("v_cache"), **kw)
