"""The 8-bit recipe on the CPU: the quantizer's layouts (the key order of Vᵀ is the one the kernel's P
registers hold), the fp32 emulation against exact attention (the accuracy the docs state), and the
typed errors of ``quantized_attn_func`` (raised before anything is quantized or launched)."""

from __future__ import annotations

import itertools

import pytest
import torch

from fa4_core.errors import UnsupportedConfigError
from fa4_torch import quant, quantized_attn_func
from fa4_torch.quant import (
    KEY_PAD,
    P_SCALE,
    attention_fp32,
    emulate,
    errors,
    pv_key_order,
    quantize,
    real_like,
    v_max,
)


def test_pv_key_order_is_the_accumulator_order_of_the_a_fragment():
    order = pv_key_order().tolist()
    assert sorted(order) == list(range(32))
    # thread quad index t holds, in A-fragment register kh (rows gid), bytes e = 0..3 = positions
    # 16 kh + 4 t + e; its S accumulators are columns 2t, 2t + 1 of 8-column tiles 2 kh and 2 kh + 1
    for t in range(4):
        for kh in range(2):
            for e in range(4):
                tile, c = 2 * kh + e // 2, e % 2
                assert order[16 * kh + 4 * t + e] == 8 * tile + 2 * t + c


def _normal(b, sq, sk, h, hkv, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, sq, h, d, generator=g),
        torch.randn(b, sk, hkv, d, generator=g),
        torch.randn(b, sk, hkv, d, generator=g),
    )


def test_quantizer_layouts():
    q, k, v = _normal(2, 77, 100, 4, 2, 64)
    x = quantize(q, k, v, qk="int8", block_q=64, block_k=64)
    assert x.q8.dtype == torch.int8 and x.q8.shape == q.shape
    assert x.k8.dtype == torch.int8 and x.k8.shape == k.shape
    assert x.vt8.dtype == torch.float8_e4m3fn and x.vt8.shape == (2, 2, 64, KEY_PAD)
    assert x.q_scale.shape == (2, 4, 2) and x.k_scale.shape == (2, 2, 2) and x.v_scale.shape == (2, 2, 64)
    assert x.lse_shift.shape == (2, 4, 77)
    keys = x.vt8.float().view(2, 2, 64, KEY_PAD // 32, 32)[..., torch.argsort(pv_key_order())]
    keys = keys.reshape(2, 2, 64, KEY_PAD)  # Vᵀ in key order again
    assert (keys[..., 100:] == 0).all()  # the padding keys are zero
    assert torch.allclose(keys[..., :100] * x.v_scale[..., None], v.permute(0, 2, 3, 1), rtol=0.07, atol=1e-2)
    y = quantize(q, k, v, qk="fp8")
    assert y.q8.dtype == torch.float8_e4m3fn and y.k8.dtype == torch.float8_e4m3fn


@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("qk, cos_min, l1_max", [("int8", 0.999, 0.045), ("fp8", 0.998, 0.06)])
def test_emulation_accuracy_standard_normal(d, qk, cos_min, l1_max):
    q, k, v = _normal(1, 512, 512, 2, 2, d)
    ref, ref_lse = attention_fp32(q.double(), k.double(), v.double())
    out, lse = emulate(quantize(q, k, v, qk=qk))
    e = errors(out, ref)
    assert e["cosine"] >= cos_min and e["rel_l1"] <= l1_max, e
    assert (lse.double() - ref_lse).abs().max() < 0.05


def test_smoothing_and_its_lse_shift_on_real_like_inputs():
    q, k, v = real_like(1, 256, 256, 2, 2, 128, generator=torch.Generator().manual_seed(1))
    ref, ref_lse = attention_fp32(q.double(), k.double(), v.double())
    smooth = errors(emulate(quantize(q, k, v, qk="int8"))[0], ref)
    plain = errors(emulate(quantize(q, k, v, qk="int8", smooth_k=False))[0], ref)
    assert smooth["rel_l1"] < 0.6 * plain["rel_l1"], (smooth, plain)
    _, lse = emulate(quantize(q, k, v, qk="int8"))
    assert (lse.double() - ref_lse).abs().max() < 0.1  # the shift q·mean added back


@pytest.mark.parametrize(
    "causal, window, softcap, sink",
    [(False, (None, None), 20.0, False), (False, (None, None), 0.0, True), (True, (64, None), 15.0, True)],
)
def test_emulation_softcap_and_sinks_see_the_true_scores(causal, window, softcap, sink):
    # real-like K: smoothing shifts every row's scores by q·mean (large here); the softcap and the sink
    # logit must see the scores with that shift added back, or the result is far from the reference
    from fa4_core.testing import attention_ref

    q, k, v = real_like(1, 256, 256, 4, 2, 128, generator=torch.Generator().manual_seed(2))
    sinks = torch.tensor([0.0, 4.0, -3.0, 12.0]) if sink else None
    ref, ref_lse = attention_ref(
        q.double(), k.double(), v.double(), causal=causal, window_size=window, softcap=softcap,
        learnable_sink=sinks,
    )  # fmt: skip
    x = quantize(q, k, v, qk="int8")
    assert x.lse_shift.abs().max() > 5.0  # the case smoothing changes
    out, lse = emulate(x, causal=causal, window_size=window, softcap=softcap, learnable_sink=sinks)
    e = errors(out, ref)
    assert e["cosine"] >= 0.998, e
    assert (lse.double() - ref_lse).abs().max() < 0.1


def test_emulation_without_keys():
    # no key: out 0, lse -inf, or the sink's logit with a sink (as the reference)
    from fa4_core.testing import attention_ref

    q, k, v = _normal(1, 5, 0, 4, 2, 64)
    x = quantize(q, k, v, qk="int8")
    out, lse = emulate(x)
    assert (out == 0).all() and torch.isneginf(lse).all()
    sinks = torch.tensor([0.5, -1.0, 3.0, 0.0])
    out, lse = emulate(x, learnable_sink=sinks)
    _, ref_lse = attention_ref(q, k, v, learnable_sink=sinks)
    assert (out == 0).all() and torch.equal(lse, ref_lse)


@pytest.mark.parametrize("sq, sk", [(1, 1), (3, 77), (77, 3), (1000, 1000)])
def test_emulation_causal_gqa_odd_lengths(sq, sk):
    q, k, v = _normal(1, sq, sk, 4, 2, 64, seed=sq + sk)
    ref, ref_lse = attention_fp32(q.double(), k.double(), v.double(), causal=True)
    out, lse = emulate(quantize(q, k, v, qk="int8"), causal=True)
    seen = torch.isfinite(ref_lse)  # bottom-right causal: rows before the last sk see no key
    assert torch.equal(torch.isfinite(lse), seen)
    assert (out.permute(0, 2, 1, 3)[~seen] == 0).all()
    if seen.any():
        e = errors(out.permute(0, 2, 1, 3)[seen], ref.permute(0, 2, 1, 3)[seen])
        assert e["cosine"] >= 0.998, e


def test_fp16_accumulation_cannot_overflow():
    # every key equally likely (q = 0) and every V at its channel maximum: the largest block sum
    d, s = 128, 1024
    q = torch.zeros(1, s, 1, d)
    k = torch.randn(1, s, 1, d)
    v = torch.ones(1, s, 1, d) * 3.0
    x = quantize(q, k, v, qk="int8", pv_accum="fp16", block_k=128)
    assert v_max("fp16", 128) * 128 * 2**0.5 * P_SCALE < 65504
    out, _ = emulate(x, pv_accum="fp16")
    assert torch.isfinite(out).all()
    ref, _ = emulate(x, pv_accum="fp32")  # the same 8-bit values, fp32 sums
    assert torch.allclose(out, ref, rtol=2e-3)


def _qkv(**kw):
    shape = kw.pop("shape", (1, 8, 2, 64))
    dtype = kw.pop("dtype", torch.bfloat16)
    return [torch.randn(shape, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"qk": "int4"}, "qk"),
        ({"pv_accum": "bf16"}, "pv_accum"),
        ({"window_size": (-2, 0)}, r"window_size\[0\]"),
        ({"window_size": (16,)}, "window_size"),
        ({"softmax_scale": -1.0}, "softmax_scale"),
        ({"softcap": -1.0}, "softcap"),
        ({"softcap": float("inf")}, "softcap"),
        ({"learnable_sink": torch.zeros(3)}, r"learnable_sink.shape"),
        ({"learnable_sink": torch.zeros(2, dtype=torch.float64)}, r"learnable_sink.dtype"),
    ],
)
def test_quantized_attn_func_typed_errors(kwargs, match):
    q, k, v = _qkv()
    with pytest.raises(UnsupportedConfigError, match=match):
        quantized_attn_func(q, k, v, **kwargs)


def test_quantized_attn_func_rejects_shapes_and_dtypes():
    q, k, v = _qkv(shape=(1, 8, 2, 96))
    with pytest.raises(UnsupportedConfigError, match=r"one of \(64, 128, 256\)"):
        quantized_attn_func(q, k, v)
    q, k, v = _qkv(dtype=torch.float32)
    with pytest.raises(UnsupportedConfigError, match="dtype"):
        quantized_attn_func(q, k, v)
    q, k, v = _qkv()
    with pytest.raises(UnsupportedConfigError, match="nheads"):
        quantized_attn_func(torch.randn(1, 8, 3, 64, dtype=torch.bfloat16), k, v)
    with pytest.raises(TypeError, match="causal"):
        quantized_attn_func(q, k, v, causal="yes")


def test_quantized_attn_func_is_forward_only():
    q, k, v = _qkv()
    q.requires_grad_(True)
    with pytest.raises(UnsupportedConfigError, match="forward only"):
        quantized_attn_func(q, k, v)
    with torch.no_grad():  # grad mode off: the check passes, the CPU device is what fails then
        with pytest.raises(UnsupportedConfigError, match="CUDA"):
            quantized_attn_func(q, k, v)
    q, k, v = _qkv()  # a sink that requires grad: no gradient would reach it
    sink = torch.zeros(2, requires_grad=True)
    with pytest.raises(UnsupportedConfigError, match="forward only"):
        quantized_attn_func(q, k, v, learnable_sink=sink)


def test_quantizer_takes_sdpa_layout_views():
    # (batch, heads, seqlen, dim) tensors transposed to fa4's layout: non-contiguous, same result
    q, k, v = (torch.randn(1, 4, 100, 64) for _ in range(3))
    views = [t.transpose(1, 2) for t in (q, k, v)]
    copies = [t.contiguous() for t in views]
    a, b = quantize(*views), quantize(*copies)
    assert all(torch.equal(x.float(), y.float()) for x, y in zip(a[:7], b[:7], strict=True))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"attn_mask": torch.ones(8, 8, dtype=torch.bool)}, "attn_mask"),
        ({"dropout_p": 0.1}, "dropout_p"),
        ({"precision": "fp4"}, "precision"),
    ],
)
def test_sdpa_dropin_typed_errors(kwargs, match):
    from fa4_torch import scaled_dot_product_attention

    q, k, v = (torch.randn(1, 2, 8, 64, dtype=torch.bfloat16) for _ in range(3))
    with pytest.raises(UnsupportedConfigError, match=match):
        scaled_dot_product_attention(q, k, v, **kwargs)


@pytest.mark.parametrize("precision", ["int8", "native"])
def test_sdpa_dropin_refuses_causal_masks_it_would_align_differently(precision):
    """SDPA aligns ``is_causal`` top-left, fa4's kernels bottom-right: with different query and key
    lengths the drop-in raises instead of answering differently from SDPA; square masks go through."""
    from fa4_torch import scaled_dot_product_attention

    q = torch.randn(1, 2, 8, 64, dtype=torch.bfloat16)
    k, v = (torch.randn(1, 2, 24, 64, dtype=torch.bfloat16) for _ in range(2))
    with pytest.raises(UnsupportedConfigError, match="is_causal"):
        scaled_dot_product_attention(q, k, v, is_causal=True, precision=precision)
    with pytest.raises(TypeError, match="is_causal"):
        scaled_dot_product_attention(q, k, v, is_causal="yes", precision=precision)
    with pytest.raises(UnsupportedConfigError, match="CUDA"):  # past the checks: the CPU device fails
        scaled_dot_product_attention(q, k[:, :, :8], v[:, :, :8], is_causal=True, precision=precision)


def test_sdpa_dropin_gqa_needs_enable_gqa():
    from fa4_torch import scaled_dot_product_attention

    q = torch.randn(1, 4, 8, 64, dtype=torch.bfloat16)
    k, v = (torch.randn(1, 2, 8, 64, dtype=torch.bfloat16) for _ in range(2))
    with pytest.raises(UnsupportedConfigError, match="enable_gqa"):
        scaled_dot_product_attention(q, k, v)
    with pytest.raises(UnsupportedConfigError, match="CUDA"):  # past the checks: the CPU device fails
        scaled_dot_product_attention(q, k, v, enable_gqa=True)


@pytest.mark.parametrize("qk", ["int8", "fp8"])
@pytest.mark.parametrize("s", [64, 100])
def test_block_quantization_is_the_formula(qk, s):
    # every block of 32 rows of a head: scale = amax * (1 / max8), values = round(x * (1 / scale))
    # (e4m3: to nearest; the reciprocals in fp32)
    q, k, v = _normal(2, s, 48, 3, 1, 64, seed=s)
    q = q.to(torch.bfloat16)
    x = quantize(q, k, v, qk=qk, block_q=32, block_k=32, smooth_k=False)
    max8 = 127.0 if qk == "int8" else 448.0
    for bi in range(2):
        for h in range(3):
            for blk in range((s + 31) // 32):
                rows = q[bi, blk * 32 : (blk + 1) * 32, h].float()
                scale = rows.abs().max() * torch.tensor(1.0 / max8, dtype=torch.float32)
                assert x.q_scale[bi, h, blk] == scale
                want = (
                    (rows * (1 / scale)).round()
                    if qk == "int8"
                    else (rows * (1 / scale)).to(torch.float8_e4m3fn).float()
                )
                assert torch.equal(x.q8[bi, blk * 32 : (blk + 1) * 32, h].float(), want)


@pytest.mark.parametrize("d, causal", [(64, False), (128, True)])
def test_launch_passes_the_kernels_arguments(monkeypatch, d, causal):
    # the launch with the compiled kernel stubbed: what it is given matches the kernel's fake_args
    from fa4_torch import launch_q8, validate
    from fa4_torch.validate import quantized_args

    seen = {}

    def fake_kernel(cfg, device):
        def fn(*args):
            seen["cfg"], seen["args"] = cfg, args
            args[7].fill_(1.5)  # the kernel writes the LSE (torch.empty may hold NaN otherwise)

        return fn

    quantizers = {}

    def fake_quantizer(cfg, device):
        if cfg.role == "stats":  # K's mean and V's channel scales

            def stats(k_, v_, part, count, mean, v_scale, used, v_inv):
                quantizers[cfg.role] = (cfg, k_, v_, part, count, mean, v_scale, used, v_inv)
                mean.copy_(k_.float().mean(dim=1))
                v_scale.fill_(2.0)

            return stats

        def fn(x, x8, scale, mean, shift, used, softmax_scale):
            quantizers[cfg.role] = (cfg, x, x8, scale, mean, shift, softmax_scale)
            x8.zero_()
            if cfg.role != "v":
                scale.fill_(1.0)
            if shift is not None:
                shift.fill_(0.5)

        return fn

    monkeypatch.setattr(launch_q8, "q8_kernel", fake_kernel)
    monkeypatch.setattr(launch_q8, "quantize_kernel", fake_quantizer)
    monkeypatch.setattr(validate, "check_devices", lambda q, named: None)  # the seam: CPU tensors
    q = torch.randn(2, 77, 4, d, dtype=torch.bfloat16)
    k, v = (torch.randn(2, 100, 2, d, dtype=torch.bfloat16) for _ in range(2))
    a = quantized_args(q, k, v, causal, None, (None, None), None, 0.0, "int8", "fp32", True)
    cfg, qkv = launch_q8.quantize_for(a)
    out, lse = launch_q8.launch_quantized(cfg, qkv, a)
    q8, k8, vt, qs, ks, vs, o, l_, used_q, used_k, shift, sink, scale, left, right, softcap = seen["args"]
    assert used_q is None and used_k is None and not seen["cfg"].has_seqused_q
    assert shift is None and sink is None and (left, right, softcap) == (-1, -1, 0.0)
    assert seen["cfg"].is_causal == causal and seen["cfg"].head_dim == d
    assert q8.dtype == k8.dtype == vt.dtype == o.dtype == torch.bfloat16
    assert q8.shape == (2, 77, 4, d // 2) and k8.shape == (2, 100, 2, d // 2)
    assert vt.shape == (2, 2, d, 64) and vt.is_contiguous()  # 100 keys padded to 128, two per element
    assert qs.shape == (2, 4, -(-77 // cfg.tile_m)) and ks.shape == (2, 2, -(-100 // cfg.tile_n))
    assert vs.shape == (2, 2, d) and o is out and l_.shape == (2, 4, 77) and scale == pytest.approx(d**-0.5)
    for t in (q8, k8, vt, o):  # the kernel's assumptions: 16-byte aligned rows
        assert t.stride(-1) == 1 and all(st % 8 == 0 for st in t.stride()[:-1])
    assert torch.equal(lse, l_ + qkv.lse_shift) and (qkv.lse_shift == 0.5).all()
    # the quantizers: one per tensor, the 8-bit outputs as int32 views, blocks = the kernel's tiles
    assert set(quantizers) == {"q", "k", "v", "stats"}
    cs, ks_, vs_, part, count, smean, svs, sused, v_inv = quantizers["stats"]
    assert ks_ is k and vs_ is v and sused is None and svs is qkv.v_scale and (svs == 2.0).all()
    assert part.dtype == torch.float32 and part.shape == (2, 2, -(-100 // cs.block), 2 * d)
    assert count.dtype == torch.int32 and count.shape == (2, 2) and v_inv == pytest.approx(1 / 448)
    cq, xq, q8i, qsc, mean, shift, sc = quantizers["q"]
    assert (
        cq.block == cfg.tile_m and cq.fmt == "int8" and cq.smooth and xq is q and sc == pytest.approx(d**-0.5)
    )
    assert q8i.dtype == torch.int32 and q8i.shape == (2, 77, 4, d // 4) and shift is qkv.lse_shift
    assert mean.shape == (2, 2, d) and torch.allclose(mean, k.float().mean(dim=1))
    assert mean is smean
    ck, xk, k8i, ksc, kmean, kshift, _ = quantizers["k"]
    assert ck.block == cfg.tile_n and ck.smooth and xk is k and kmean is mean and kshift is None
    cv, xv, vti, vsc, _, _, _ = quantizers["v"]
    assert cv.fmt == "fp8" and xv is v and vti.shape == (2, 2, d, 32) and vsc is qkv.v_scale


def test_from_fp8_is_the_dequantized_inputs():
    """FlashAttention-3's FP8 inputs: the kernel's tensors hold q, k, v as given, every block scale of a
    head is its descale (a query head takes its KV head's), V's channel scales are ``v_descale``, V
    moves into the kernel's layout, no LSE shift: dequantized, they are exactly ``x * x_descale``."""
    from fa4_torch.quant import _dequant_blocks, from_fp8, pv_key_order

    g = torch.Generator().manual_seed(0)
    b, sq, sk, h, hkv, d = 2, 77, 200, 4, 2, 64
    e4m3 = torch.float8_e4m3fn
    q, k, v = (
        (torch.randn(b, s, n, d, generator=g) * 9).to(e4m3) for s, n in ((sq, h), (sk, hkv), (sk, hkv))
    )
    qd, kd, vd = (torch.rand(b, hkv, generator=g) + 0.1 for _ in range(3))
    qkv = from_fp8(q, k, v, qd, kd, vd, block_q=64, block_k=32)
    assert qkv.qk == "fp8" and qkv.seqlen_k == sk and not qkv.lse_shift.any()
    qf = q.float() * qd.repeat_interleave(h // hkv, dim=1)[:, None, :, None]
    assert torch.equal(_dequant_blocks(qkv.q8, qkv.q_scale, 64), qf)
    assert torch.equal(_dequant_blocks(qkv.k8, qkv.k_scale, 32), k.float() * kd[:, None, :, None])
    skp = qkv.vt8.shape[-1]
    inv = torch.argsort(pv_key_order())
    vt = qkv.vt8.float().view(b, hkv, d, skp // 32, 32)[..., inv].reshape(b, hkv, d, skp)
    assert not vt[..., sk:].any()
    assert torch.equal(
        vt[..., :sk].permute(0, 3, 1, 2) * qkv.v_scale[:, None], v.float() * vd[:, None, :, None]
    )


def test_from_fp8_emulation_is_attention_on_the_dequantized_inputs():
    """The recipe on FP8 inputs adds only P's e4m3 rounding to attention on the dequantized inputs."""
    from fa4_torch.quant import from_fp8

    g = torch.Generator().manual_seed(1)
    b, sq, sk, h, hkv, d = 1, 100, 300, 4, 1, 128
    e4m3 = torch.float8_e4m3fn
    q, k, v = (
        (torch.randn(b, s, n, d, generator=g) * 40).to(e4m3) for s, n in ((sq, h), (sk, hkv), (sk, hkv))
    )
    qd, kd, vd = (torch.full((b, hkv), 0.03) for _ in range(3))
    out, lse = emulate(from_fp8(q, k, v, qd, kd, vd, block_q=64, block_k=64), causal=True)
    ref, ref_lse = attention_fp32(q.float() * 0.03, k.float() * 0.03, v.float() * 0.03, causal=True)
    assert errors(out, ref)["cosine"] >= 0.999
    assert (lse - ref_lse).abs().max() < 1e-4


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(learnable_sink=torch.zeros(3)), UnsupportedConfigError, "learnable_sink.shape"),
        (dict(softcap=-5.0), UnsupportedConfigError, "softcap"),
        (dict(num_splits=2), UnsupportedConfigError, "num_splits"),
        (dict(window_size=(8, -3)), UnsupportedConfigError, r"window_size\[1\]"),
        (dict(k_descale=torch.ones(2, 2)), UnsupportedConfigError, r"k_descale.shape=\(2, 2\)"),
        (dict(v_descale=torch.ones(1, 2, dtype=torch.float64)), UnsupportedConfigError, "v_descale.dtype"),
        (dict(q_descale=-torch.ones(1, 2)), UnsupportedConfigError, "q_descale"),
        (dict(q_descale=torch.ones(1, 2), causal="yes"), TypeError, "causal"),
    ],
)
def test_fp8_inputs_typed_errors(kwargs, exc, match):
    """float8_e4m3fn q, k, v in ``flash_attn_func``: what the 8-bit forward cannot do, and bad descales,
    raise naming the argument (before the device check: reachable on the CPU)."""
    from fa4_torch import flash_attn_func

    e4m3 = torch.float8_e4m3fn
    q = torch.randn(1, 16, 4, 64).to(e4m3)
    k = torch.randn(1, 16, 2, 64).to(e4m3)
    with pytest.raises(exc, match=match):
        flash_attn_func(q, k, k.clone(), **kwargs)


def test_fp8_inputs_need_all_three_in_fp8():
    from fa4_torch import flash_attn_func

    e4m3 = torch.float8_e4m3fn
    q8, k8 = torch.randn(1, 16, 4, 64).to(e4m3), torch.randn(1, 16, 2, 64).to(e4m3)
    with pytest.raises(UnsupportedConfigError, match="q.dtype"):  # an 8-bit q alone: q's dtype is wrong
        flash_attn_func(q8, k8.bfloat16(), k8.bfloat16())
    with pytest.raises(UnsupportedConfigError, match=r"\(q.dtype, k.dtype, v.dtype\)"):
        flash_attn_func(q8, k8.bfloat16(), k8, q_descale=torch.ones(1, 2))
    with pytest.raises(UnsupportedConfigError, match="q.dtype"):  # descales with a bf16 q
        flash_attn_func(q8.bfloat16(), k8, k8, q_descale=torch.ones(1, 2))


# ---------------------------------------------------------------------------------- the varlen form
def _varlen(lens_q, lens_k, h=4, hkv=2, d=64, extra=0):
    g = torch.Generator().manual_seed(len(lens_q))
    tq, tk = sum(lens_q) + extra, sum(lens_k) + extra
    q = torch.randn(tq, h, d, generator=g).to(torch.bfloat16)
    k, v = (torch.randn(tk, hkv, d, generator=g).to(torch.bfloat16) for _ in range(2))
    cu = [torch.tensor([0, *itertools.accumulate(x)], dtype=torch.int32) for x in (lens_q, lens_k)]
    return q, k, v, cu[0], cu[1]


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (dict(q=torch.zeros(1, 8, 4, 64, dtype=torch.bfloat16)), UnsupportedConfigError, r"q\.dim\(\)"),
        (dict(cu_seqlens_q=torch.tensor([0, 3, 8])), UnsupportedConfigError, r"cu_seqlens_q\.dtype"),
        (dict(cu_seqlens_k=torch.tensor([0, 5], dtype=torch.int32)), UnsupportedConfigError, "cu_seqlens_k"),
        (dict(cu_seqlens_q=torch.tensor([0, 5, 3], dtype=torch.int32)), UnsupportedConfigError, "monotone"),
        (
            dict(cu_seqlens_k=torch.tensor([0, 5, 99], dtype=torch.int32)),
            UnsupportedConfigError,
            "packed length",
        ),
        (
            dict(cu_seqlens_q=torch.tensor([1, 5, 8], dtype=torch.int32)),
            UnsupportedConfigError,
            r"cu_seqlens_q\[0\]",
        ),
        (dict(max_seqlen_q=4), UnsupportedConfigError, "longest query sequence"),
        (dict(max_seqlen_k=-1), UnsupportedConfigError, "max_seqlen_k"),
        (dict(qk="int4"), UnsupportedConfigError, "qk"),
        (dict(window_size=(8, 0, 1)), UnsupportedConfigError, "window_size"),
        (dict(learnable_sink=torch.zeros(2)), UnsupportedConfigError, "learnable_sink.shape"),
        (dict(softcap=-1.0), UnsupportedConfigError, "softcap"),
    ],
)
def test_quantized_varlen_typed_errors(monkeypatch, change, exc, match):
    from fa4_torch import quantized_attn_varlen_func, validate

    monkeypatch.setattr(validate, "check_devices", lambda q, named: None)  # the seam: CPU tensors
    q, k, v, cu_q, cu_k = _varlen([3, 5], [4, 6])
    kw = dict(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k) | change
    with pytest.raises(exc, match=match):
        quantized_attn_varlen_func(**kw)


def test_quantized_varlen_needs_cuda():
    from fa4_torch import quantized_attn_varlen_func

    q, k, v, cu_q, cu_k = _varlen([3, 5], [4, 6])
    with pytest.raises(UnsupportedConfigError, match="CUDA"):
        quantized_attn_varlen_func(q, k, v, cu_q, cu_k)


@pytest.mark.parametrize("causal", [False, True])
def test_quantized_varlen_scatters_and_gathers(monkeypatch, causal):
    """The varlen form with the kernels stubbed: each packed sequence lands at the start of its row of
    the zero-padded batch the quantizers see, the kernel gets the lengths, and the padded output's rows
    come back to the packed positions (rows past cu_seqlens_q[-1]: zero, LSE -inf)."""
    from fa4_torch import launch_q8, quantized_attn_varlen_func, validate

    lens_q, lens_k = [3, 0, 70, 1], [5, 4, 0, 33]
    q, k, v, cu_q, cu_k = _varlen(lens_q, lens_k, extra=2)
    seen, quantized = {}, {}

    def fake_quantizer(cfg, device):
        if cfg.role == "stats":  # K's mean and V's channel scales: over the padded K and V

            def stats(k_, v_, part, count, mean, v_scale, used, v_inv):
                quantized[cfg.role] = (cfg, k_.clone(), used.clone())
                quantized["stats-v"] = (cfg, v_.clone(), used.clone())
                mean.zero_()
                v_scale.fill_(1.0)

            return stats

        def fn(x, x8, scale, mean, shift, used, softmax_scale):
            quantized[cfg.role] = (cfg, x.clone(), used.clone())
            x8.zero_()
            if cfg.role != "v":
                scale.fill_(1.0)
            if shift is not None:
                shift.fill_(0.25)

        return fn

    def fake_kernel(cfg, device):
        def fn(q8, k8, vt, qs, ks, vs, out, lse, used_q, used_k, shift, sink, scale, left, right, softcap):
            seen.update(cfg=cfg, used_q=used_q.clone(), used_k=used_k.clone())
            b, s, h, d = out.shape
            val = (
                1000 * torch.arange(b)[:, None, None] + torch.arange(s)[None, :, None]
            ) + 0.5 * torch.arange(h)
            out.copy_(val[..., None].expand(b, s, h, d))
            lse.copy_(val.permute(0, 2, 1))

        return fn

    monkeypatch.setattr(launch_q8, "q8_kernel", fake_kernel)
    monkeypatch.setattr(launch_q8, "quantize_kernel", fake_quantizer)
    monkeypatch.setattr(validate, "check_devices", lambda q, named: None)
    out, lse = quantized_attn_varlen_func(q, k, v, cu_q, cu_k, causal=causal, return_lse=True)
    assert seen["cfg"].has_seqused_q and seen["cfg"].has_seqused_k and seen["cfg"].is_causal == causal
    assert seen["used_q"].tolist() == lens_q and seen["used_k"].tolist() == lens_k
    # the padded batch the quantizers saw: (4, 70, heads, d), each sequence first, zeros after it
    for role, x, lens, cu in (
        ("q", q, lens_q, cu_q),
        ("k", k, lens_k, cu_k),
        ("v", v, lens_k, cu_k),
        ("stats", k, lens_k, cu_k),
        ("stats-v", v, lens_k, cu_k),
    ):
        cfg, xp, used = quantized[role]
        assert cfg.seqused and used.tolist() == lens and xp.shape == (4, max(lens), *x.shape[1:])
        for i, n in enumerate(lens):
            assert torch.equal(xp[i, :n], x[cu[i] : cu[i] + n]) and (xp[i, n:] == 0).all()
    assert out.shape == q.shape and out.dtype == q.dtype and lse.shape == (4, q.shape[0])
    for i, n in enumerate(lens_q):
        rows = torch.arange(n)
        want = (1000 * i + rows)[:, None] + 0.5 * torch.arange(4)
        assert torch.equal(
            out[cu_q[i] : cu_q[i] + n].float(), want[..., None].expand(n, 4, 64).to(torch.bfloat16).float()
        )
        assert torch.equal(lse[:, cu_q[i] : cu_q[i] + n], want.t() + 0.25)
    assert (out[sum(lens_q) :] == 0).all() and torch.isneginf(lse[:, sum(lens_q) :]).all()


# ---------------------------------------------------------------------------------- FP8 inputs, varlen
def _fp8_varlen(lens_q, lens_k):
    q, k, v, cu_q, cu_k = _varlen(lens_q, lens_k)
    e4m3 = torch.float8_e4m3fn
    return (q * 8).to(e4m3), (k * 8).to(e4m3), (v * 8).to(e4m3), cu_q, cu_k


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(cu_seqlens_q=None), "cu_seqlens_q"),
        (dict(seqused_k=torch.tensor([4, 6], dtype=torch.int32)), "seqused_k"),
        (dict(page_table=torch.zeros(2, 1, dtype=torch.int32)), "page_table"),
        (dict(num_splits=2), "num_splits"),
        (dict(q_descale=torch.ones(1, 2)), r"q_descale.shape=\(1, 2\)"),  # one per sequence: (2, 2)
        (dict(k_descale=torch.ones(2, 2, dtype=torch.float64)), "k_descale.dtype"),
        (dict(v=torch.zeros(10, 2, 64, dtype=torch.bfloat16)), r"\(q.dtype, k.dtype, v.dtype\)"),
        (dict(window_size=(8, -3)), r"window_size\[1\]"),
        (dict(learnable_sink=torch.zeros(3)), "learnable_sink.shape"),
    ],
)
def test_fp8_inputs_varlen_typed_errors(monkeypatch, change, match):
    """float8_e4m3fn q, k, v in ``flash_attn_varlen_func``: packed sequences only, descales of shape
    (number of sequences, nheads_kv), one FP8 dtype for all three; each a typed error naming the
    argument."""
    from fa4_torch import flash_attn_varlen_func, validate

    monkeypatch.setattr(validate, "check_devices", lambda q, named: None)  # the seam: CPU tensors
    q, k, v, cu_q, cu_k = _fp8_varlen([3, 5], [4, 6])
    kw = dict(q=q, k=k, v=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, q_descale=torch.ones(2, 2)) | change
    with pytest.raises(UnsupportedConfigError, match=match):
        flash_attn_varlen_func(**kw)


def test_fp8_inputs_varlen_scatter_the_bytes(monkeypatch):
    """The FP8 varlen path with the kernel stubbed: the kernel sees each sequence's e4m3 bytes at the
    start of its row of the zero-padded batch, every block scale of a sequence's head its descale, and
    the sequences' lengths; bf16 out gathered back."""
    from fa4_torch import flash_attn_varlen_func, launch_q8, validate

    lens_q, lens_k = [3, 0, 7], [5, 2, 0]
    q, k, v, cu_q, cu_k = _fp8_varlen(lens_q, lens_k)
    qd, kd, vd = (torch.rand(3, 2) + 0.5 for _ in range(3))
    seen = {}

    def fake_kernel(cfg, device):
        def fn(q8, k8, vt, qs, ks, vs, out, lse, used_q, used_k, *rest):
            seen.update(cfg=cfg, q8=q8.clone(), k8=k8.clone(), qs=qs.clone(), ks=ks.clone(), vs=vs.clone())
            seen.update(used_q=used_q.tolist(), used_k=used_k.tolist())
            out.fill_(1.0)
            lse.fill_(0.5)

        return fn

    def fake_v_layout(cfg, device):  # V's quantizer on e4m3 values: the reference layout
        def fn(x, x8, scale, mean, shift, used, softmax_scale):
            assert cfg.dtype == "float8_e4m3fn" and cfg.role == "v" and cfg.seqused
            seen["used_v"] = used.tolist()
            x8.copy_(quant._v_layout(x).view(torch.int32))

        return fn

    monkeypatch.setattr(launch_q8, "q8_kernel", fake_kernel)
    monkeypatch.setattr(launch_q8, "quantize_kernel", fake_v_layout)
    monkeypatch.setattr(validate, "check_devices", lambda q, named: None)
    out, lse = flash_attn_varlen_func(
        q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=True, return_lse=True, q_descale=qd,
        k_descale=kd, v_descale=vd,
    )  # fmt: skip
    assert seen["cfg"].qk == "fp8" and seen["cfg"].has_seqused_q and seen["used_q"] == lens_q
    assert seen["used_k"] == lens_k == seen["used_v"]
    q8, k8 = seen["q8"].view(torch.uint8), seen["k8"].view(torch.uint8)
    assert q8.shape == (3, 7, 4, 64) and k8.shape == (3, 5, 2, 64)
    for i, (nq, nk) in enumerate(zip(lens_q, lens_k)):
        assert (
            torch.equal(q8[i, :nq], q.view(torch.uint8)[cu_q[i] : cu_q[i] + nq]) and (q8[i, nq:] == 0).all()
        )
        assert (
            torch.equal(k8[i, :nk], k.view(torch.uint8)[cu_k[i] : cu_k[i] + nk]) and (k8[i, nk:] == 0).all()
        )
        assert torch.equal(seen["qs"][i], qd[i].repeat_interleave(2)[:, None].expand_as(seen["qs"][i]))
        assert torch.equal(seen["ks"][i], kd[i][:, None].expand_as(seen["ks"][i]))
        assert torch.equal(seen["vs"][i], vd[i][:, None].expand_as(seen["vs"][i]))
    assert out.dtype == torch.bfloat16 and out.shape == (10, 4, 64) and (out == 1).all()
    assert lse.shape == (4, 10) and (lse == 0.5).all()
