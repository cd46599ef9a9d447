"""The 8-bit forward on the GPU against the fp32 emulation of its own recipe (``fa4_torch.quant``):
on the same quantized tensors, the kernel's relative L1 error against exact fp32 attention is at most
1.2x the emulation's (the kernel adds no error of its own), its LSE matches the emulation's, and on
standard-normal inputs the default recipe (INT8 Q·Kᵀ) keeps cosine >= 0.999. Head dims 64/128/256,
causal, GQA, odd lengths (1, 3, 77, 1000, 4097), both Q·Kᵀ formats, fp16 P·V accumulation, fp16 and
bf16 inputs, "real-like" inputs, local windows, the softcap and learnable sinks (against
``fa4_core.testing.attention_ref``); the varlen form sequence by sequence. Runs in well under two minutes
(most of it the 8-bit compiles)."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from fa4_core.testing import attention_ref  # noqa: E402
from fa4_torch import quantized_attn_func  # noqa: E402
from fa4_torch.launch_q8 import launch_quantized, quantize_for  # noqa: E402
from fa4_torch.quant import attention_fp32, emulate, errors, real_like  # noqa: E402
from fa4_torch.validate import quantized_args  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

CASES = [
    # (batch, seqlen_q, seqlen_k, nheads, nheads_kv, d, causal, qk, pv_accum, dtype)
    (2, 1, 1, 4, 4, 128, False, "int8", "fp32", torch.bfloat16),
    (2, 3, 3, 4, 2, 128, True, "int8", "fp32", torch.bfloat16),
    (2, 77, 77, 4, 1, 64, False, "int8", "fp32", torch.float16),
    (1, 77, 1000, 8, 2, 128, True, "int8", "fp32", torch.bfloat16),
    (1, 1000, 77, 4, 4, 64, True, "int8", "fp32", torch.bfloat16),  # rows before the last 77 see nothing
    (1, 1000, 1000, 4, 4, 128, False, "fp8", "fp32", torch.bfloat16),
    (1, 1000, 1000, 4, 2, 128, True, "int8", "fp16", torch.bfloat16),
    (1, 1000, 1000, 4, 4, 64, False, "int8", "fp16", torch.float16),
    (1, 4097, 4097, 2, 2, 128, False, "int8", "fp32", torch.bfloat16),
    (1, 4097, 4097, 2, 1, 64, True, "int8", "fp32", torch.bfloat16),
    (1, 1000, 1000, 4, 2, 256, False, "int8", "fp32", torch.bfloat16),
    (2, 77, 1000, 4, 4, 256, True, "fp8", "fp16", torch.float16),
    (1, 4097, 4097, 2, 1, 256, True, "int8", "fp16", torch.bfloat16),
]


def _id(c):
    b, sq, sk, h, hkv, d, causal, qk, acc, dt = c
    return f"b{b}-sq{sq}-sk{sk}-h{h}/{hkv}-d{d}-{'causal' if causal else 'full'}-{qk}-{acc}-{str(dt)[6:]}"


def _check(q, k, v, causal, qk, pv_accum, normal: bool, window=(None, None), softcap=0.0, sink=None):
    a = quantized_args(q, k, v, causal, None, window, sink, softcap, qk, pv_accum, True)
    cfg, qkv = quantize_for(a)
    out, lse = launch_quantized(cfg, qkv, a)
    torch.cuda.synchronize()
    assert out.dtype == q.dtype and out.shape == q.shape
    ref, ref_lse = attention_ref(
        q, k, v, causal=causal, window_size=window, softcap=softcap, learnable_sink=sink
    )
    emu, emu_lse = emulate(
        qkv, causal=causal, pv_accum=pv_accum, window_size=window, softcap=softcap, learnable_sink=sink
    )
    seen = torch.isfinite(ref_lse).permute(0, 2, 1)  # (b, sq, h): rows that see a key
    assert torch.equal(torch.isfinite(lse), torch.isfinite(ref_lse))
    assert (out[~seen] == 0).all()
    if not seen.any():
        return
    e_kernel = errors(out[seen].float(), ref[seen])
    e_emu = errors(emu[seen], ref[seen])
    assert e_kernel["rel_l1"] <= 1.2 * e_emu["rel_l1"] + 1e-3, (e_kernel, e_emu)
    if normal and qk == "int8":
        assert e_kernel["cosine"] >= 0.999, e_kernel
    # the LSE depends on the quantized scores only, which the kernel computes exactly (int32) or in
    # fp32: it matches the emulation's to fp32 rounding (and exp2/log2 approximations)
    fin = torch.isfinite(ref_lse)
    assert (lse[fin] - emu_lse[fin]).abs().max() < 5e-3


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_q8_matches_its_emulation(case):
    b, sq, sk, h, hkv, d, causal, qk, acc, dt = case
    g = torch.Generator(device="cuda").manual_seed(sq * 31 + sk)
    q = torch.randn(b, sq, h, d, device="cuda", dtype=dt, generator=g)
    k = torch.randn(b, sk, hkv, d, device="cuda", dtype=dt, generator=g)
    v = torch.randn(b, sk, hkv, d, device="cuda", dtype=dt, generator=g)
    _check(q, k, v, causal, qk, acc, normal=True)


FEATURE_CASES = [
    # (batch, seqlen_q, seqlen_k, nheads, nheads_kv, d, causal, window, softcap, sink, qk, pv_accum, dtype)
    (1, 1000, 1000, 4, 2, 128, False, (128, 64), 0.0, False, "int8", "fp32", torch.bfloat16),
    (1, 1000, 1000, 4, 4, 64, True, (200, None), 0.0, False, "fp8", "fp32", torch.bfloat16),
    (2, 77, 1000, 4, 1, 128, False, (100, 0), 0.0, False, "int8", "fp16", torch.float16),
    (1, 1000, 1000, 4, 2, 128, True, (None, None), 30.0, False, "int8", "fp32", torch.bfloat16),
    (1, 4097, 4097, 2, 1, 64, False, (None, None), 15.0, False, "int8", "fp16", torch.float16),
    (1, 1000, 1000, 4, 4, 128, False, (None, None), 20.0, False, "fp8", "fp32", torch.bfloat16),
    (2, 77, 77, 4, 2, 128, False, (None, None), 0.0, True, "int8", "fp32", torch.bfloat16),
    (
        1,
        1000,
        77,
        4,
        4,
        64,
        True,
        (None, None),
        0.0,
        True,
        "fp8",
        "fp32",
        torch.bfloat16,
    ),  # rows without keys
    (1, 3, 3, 4, 2, 64, False, (None, None), 0.0, True, "int8", "fp16", torch.bfloat16),
    (1, 1000, 1000, 4, 2, 128, True, (256, None), 20.0, True, "int8", "fp16", torch.bfloat16),
    (1, 1000, 1000, 8, 2, 64, False, (300, 300), 25.0, True, "fp8", "fp32", torch.float16),
    (1, 1000, 1000, 4, 2, 256, True, (200, None), 30.0, True, "int8", "fp32", torch.bfloat16),
    (1, 77, 77, 4, 4, 256, False, (None, None), 0.0, True, "fp8", "fp16", torch.bfloat16),
]


def _fid(c):
    b, sq, sk, h, hkv, d, causal, window, softcap, sink, qk, acc, dt = c
    return (
        _id((b, sq, sk, h, hkv, d, causal, qk, acc, dt))
        + f"-w{window[0]},{window[1]}-cap{softcap:g}"
        + ("-sink" if sink else "")
    )


@pytest.mark.parametrize("case", FEATURE_CASES, ids=_fid)
def test_q8_windows_softcap_sinks(case):
    """Local windows, the softcap and learnable sinks: the 1.2x rule against the emulation of the same
    features, the LSE (of the true scores, the sink's term included) within fp32 rounding of it."""
    b, sq, sk, h, hkv, d, causal, window, softcap, sink, qk, acc, dt = case
    g = torch.Generator(device="cuda").manual_seed(sq * 13 + sk + h)
    q = torch.randn(b, sq, h, d, device="cuda", dtype=dt, generator=g)
    k = torch.randn(b, sk, hkv, d, device="cuda", dtype=dt, generator=g) + 1.5  # smoothing matters
    v = torch.randn(b, sk, hkv, d, device="cuda", dtype=dt, generator=g)
    sinks = torch.randn(h, device="cuda", generator=g) * 2.0 if sink else None
    _check(q, k, v, causal, qk, acc, normal=True, window=window, softcap=softcap, sink=sinks)


@pytest.mark.parametrize("qk", ["int8", "fp8"])
def test_q8_real_like_softcap_and_sinks(qk):
    """K's large channel offsets make smoothing's shift large: the softcap and the sinks must see the
    true scores (the shift added back before the cap, subtracted from the sink logit)."""
    q, k, v = real_like(
        1, 1000, 1000, 4, 2, 128, generator=torch.Generator().manual_seed(5), dtype=torch.bfloat16,
        device="cuda",
    )  # fmt: skip
    sinks = torch.tensor([0.0, 3.0, -2.0, 8.0], device="cuda")
    _check(q, k, v, True, qk, "fp32", normal=False, window=(400, None), softcap=30.0, sink=sinks)
    _check(q, k, v, False, qk, "fp32", normal=False, sink=sinks)


@pytest.mark.parametrize("qk", ["int8", "fp8"])
def test_q8_real_like_inputs(qk):
    q, k, v = real_like(
        1,
        1000,
        1000,
        4,
        2,
        128,
        generator=torch.Generator().manual_seed(3),
        dtype=torch.bfloat16,
        device="cuda",
    )
    _check(q, k, v, False, qk, "fp32", normal=False)


def test_q8_public_function():
    q, k, v = (torch.randn(1, 300, 2, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    out = quantized_attn_func(q, k, v, causal=True)
    out2, lse = quantized_attn_func(q, k, v, causal=True, return_lse=True)
    assert torch.equal(out, out2) and lse.shape == (1, 2, 300)
    ref, _ = attention_fp32(q.float(), k.float(), v.float(), causal=True)
    assert errors(out.float(), ref)["cosine"] >= 0.999
    empty = quantized_attn_func(q[:, :0], k, v)
    assert empty.shape == (1, 0, 2, 64)
    no_keys, lse0 = quantized_attn_func(q, k[:, :0], v[:, :0], return_lse=True)
    assert (no_keys == 0).all() and torch.isinf(lse0).all() and (lse0 < 0).all()


def test_sdpa_dropin():
    from fa4_torch import scaled_dot_product_attention

    q = torch.randn(2, 8, 333, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(2, 2, 333, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.float(), v.float(), is_causal=True, enable_gqa=True
    )
    for precision, cos_min in (("int8", 0.999), ("fp8", 0.998), ("native", 0.99999)):
        out = scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, precision=precision)
        assert out.shape == q.shape and out.dtype == q.dtype
        assert errors(out.float(), ref)["cosine"] >= cos_min, precision


@pytest.mark.parametrize(
    "sq,sk,h,hkv,d,causal,scalar,features",
    [
        (77, 1000, 8, 2, 128, True, False, {}),
        (1000, 1000, 4, 4, 64, False, True, {}),
        (3, 4097, 4, 1, 128, False, False, {}),
        (1000, 1000, 4, 2, 128, True, False, dict(window_size=(300, None), softcap=20.0, sink=True)),
    ],
)
def test_fp8_inputs_flash_attn_func(sq, sk, h, hkv, d, causal, scalar, features):
    """FlashAttention-3's convention: float8_e4m3fn q, k, v with descales through ``flash_attn_func``:
    against the fp32 reference on the dequantized inputs, the kernel's relative L1 at most 1.2x the
    emulation's of the same tensors (``quant.from_fp8``), the LSE within fp32 rounding of it, bf16 out;
    with a window, the softcap and sinks too."""
    from fa4_torch import flash_attn_func
    from fa4_torch.quant import from_fp8

    g = torch.Generator(device="cuda").manual_seed(sq + sk)
    b = 2
    e4m3 = torch.float8_e4m3fn
    q = (torch.randn(b, sq, h, d, device="cuda", generator=g) * 40).to(e4m3)
    k = (torch.randn(b, sk, hkv, d, device="cuda", generator=g) * 40).to(e4m3)
    v = (torch.randn(b, sk, hkv, d, device="cuda", generator=g) * 40).to(e4m3)
    if scalar:
        qd, kd, vd = (torch.tensor(s, device="cuda") for s in (0.03, 0.02, 0.025))
        per = [x.reshape(1, 1).expand(b, hkv) for x in (qd, kd, vd)]
    else:
        qd, kd, vd = (torch.rand(b, hkv, device="cuda", generator=g) * 0.04 + 0.01 for _ in range(3))
        per = [qd, kd, vd]
    window, softcap = features.get("window_size", (None, None)), features.get("softcap", 0.0)
    sink = torch.randn(h, device="cuda", generator=g) if features.get("sink") else None
    out, lse = flash_attn_func(
        q, k, v, causal=causal, window_size=window, learnable_sink=sink, softcap=softcap, return_lse=True,
        q_descale=qd, k_descale=kd, v_descale=vd,
    )  # fmt: skip
    torch.cuda.synchronize()
    assert out.dtype == torch.bfloat16 and out.shape == (b, sq, h, d)
    rep = h // hkv
    qf = q.float() * per[0].repeat_interleave(rep, dim=1)[:, None, :, None]
    kf, vf = k.float() * per[1][:, None, :, None], v.float() * per[2][:, None, :, None]
    ref, ref_lse = attention_ref(
        qf, kf, vf, causal=causal, window_size=window, softcap=softcap, learnable_sink=sink
    )
    qkv = from_fp8(q, k, v, *per, block_q=64, block_k=64)
    emu, emu_lse = emulate(qkv, causal=causal, window_size=window, softcap=softcap, learnable_sink=sink)
    seen = torch.isfinite(ref_lse).permute(0, 2, 1)
    e_kernel, e_emu = errors(out[seen].float(), ref[seen]), errors(emu[seen], ref[seen])
    assert e_kernel["rel_l1"] <= 1.2 * e_emu["rel_l1"] + 1e-3, (e_kernel, e_emu)
    fin = torch.isfinite(ref_lse)
    assert (lse[fin] - emu_lse[fin]).abs().max() < 5e-3


@pytest.mark.parametrize(
    "d, causal, qk, features",
    [
        (128, False, "int8", {}),
        (128, True, "int8", {}),
        (64, True, "fp8", {}),
        (64, False, "int8", {}),
        (128, True, "int8", dict(window_size=(100, None), softcap=25.0, sink=True)),
        (64, False, "fp8", dict(window_size=(64, 32), sink=True)),
    ],
)
def test_quantized_varlen_matches_each_sequence(d, causal, qk, features):
    """``quantized_attn_varlen_func`` on packed sequences (empty ones, a query without keys, more keys
    than queries and the reverse, GQA): each sequence within the 1.2x rule against the emulation of
    that sequence quantized alone, its LSE within fp32 rounding of the emulation's, rows that see no
    key zero with LSE -inf (the sink's logit with a sink); with a window, the softcap and sinks too."""
    from fa4_sm120.tiles import q8_fwd_config
    from fa4_torch import quantized_attn_varlen_func
    from fa4_torch.quant import quantize

    lens = [(1, 77), (0, 5), (300, 300), (77, 0), (129, 1000), (64, 64)]
    h, hkv = 4, 2
    g = torch.Generator(device="cuda").manual_seed(d + causal)
    tq, tk = sum(x for x, _ in lens), sum(y for _, y in lens)
    q = torch.randn(tq + 3, h, d, device="cuda", dtype=torch.bfloat16, generator=g)
    k = torch.randn(tk, hkv, d, device="cuda", dtype=torch.bfloat16, generator=g) + 2.0
    v = torch.randn(tk, hkv, d, device="cuda", dtype=torch.bfloat16, generator=g)
    cu_q = torch.tensor(
        [0] + list(itertools.accumulate(x for x, _ in lens)), dtype=torch.int32, device="cuda"
    )
    cu_k = torch.tensor(
        [0] + list(itertools.accumulate(y for _, y in lens)), dtype=torch.int32, device="cuda"
    )
    window, softcap = features.get("window_size", (None, None)), features.get("softcap", 0.0)
    sink = torch.randn(h, device="cuda", generator=g) if features.get("sink") else None
    out, lse = quantized_attn_varlen_func(
        q, k, v, cu_q, cu_k, causal=causal, window_size=window, learnable_sink=sink, softcap=softcap, qk=qk,
        return_lse=True,
    )  # fmt: skip
    torch.cuda.synchronize()
    assert out.shape == q.shape and lse.shape == (h, q.shape[0])
    assert (out[tq:] == 0).all() and torch.isneginf(lse[:, tq:]).all()
    cfg = q8_fwd_config("bfloat16", d, causal=causal, qk=qk, pv_accum="fp32", seqused=True)
    for i, (nq, _nk) in enumerate(lens):
        if nq == 0:
            continue
        sq, sk = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        qi, ki, vi = q[sq][None], k[sk][None], v[sk][None]
        o_i, l_i = out[sq], lse[:, sq]
        ref, ref_lse = attention_ref(
            qi, ki, vi, causal=causal, window_size=window, softcap=softcap, learnable_sink=sink
        )
        seen = torch.isfinite(ref_lse[0]).t()  # (nq, h)
        assert torch.equal(torch.isfinite(l_i), torch.isfinite(ref_lse[0]))
        assert (o_i[~seen] == 0).all()
        if not seen.any():
            continue
        qkv = quantize(qi, ki, vi, qk=qk, block_q=cfg.tile_m, block_k=cfg.tile_n)
        emu, emu_lse = emulate(qkv, causal=causal, window_size=window, softcap=softcap, learnable_sink=sink)
        e_kernel = errors(o_i[seen].float(), ref[0][seen])
        e_emu = errors(emu[0][seen], ref[0][seen])
        assert e_kernel["rel_l1"] <= 1.2 * e_emu["rel_l1"] + 1e-3, (i, e_kernel, e_emu)
        fin = torch.isfinite(ref_lse[0])
        assert (l_i[fin] - emu_lse[0][fin]).abs().max() < 5e-3, i


@pytest.mark.parametrize("causal, features", [(True, {}), (False, dict(window_size=(64, 64), softcap=20.0))])
def test_fp8_inputs_flash_attn_varlen_func(causal, features):
    """FlashAttention-3's FP8 convention in ``flash_attn_varlen_func``: packed float8_e4m3fn sequences
    with ``(batch, nheads_kv)`` descales per sequence; each sequence within the 1.2x rule against the
    emulation of that sequence alone (``quant.from_fp8``), its LSE within fp32 rounding of it."""
    from fa4_torch import flash_attn_varlen_func
    from fa4_torch.quant import from_fp8

    lens = [(1, 77), (0, 5), (300, 300), (77, 0), (129, 1000)]
    h, hkv, d, b = 4, 2, 128, len(lens)
    g = torch.Generator(device="cuda").manual_seed(11 + causal)
    e4m3 = torch.float8_e4m3fn
    tq, tk = sum(x for x, _ in lens), sum(y for _, y in lens)
    q = (torch.randn(tq, h, d, device="cuda", generator=g) * 40).to(e4m3)
    k = (torch.randn(tk, hkv, d, device="cuda", generator=g) * 40).to(e4m3)
    v = (torch.randn(tk, hkv, d, device="cuda", generator=g) * 40).to(e4m3)
    qd, kd, vd = (torch.rand(b, hkv, device="cuda", generator=g) * 0.04 + 0.01 for _ in range(3))
    cu_q, cu_k = (
        torch.tensor([0, *itertools.accumulate(x)], dtype=torch.int32, device="cuda")
        for x in ([a for a, _ in lens], [c for _, c in lens])
    )
    window, softcap = features.get("window_size", (None, None)), features.get("softcap", 0.0)
    out, lse = flash_attn_varlen_func(
        q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, causal=causal, window_size=window, softcap=softcap,
        return_lse=True, q_descale=qd, k_descale=kd, v_descale=vd,
    )  # fmt: skip
    torch.cuda.synchronize()
    assert out.dtype == torch.bfloat16 and out.shape == (tq, h, d) and lse.shape == (h, tq)
    rep = h // hkv
    for i, (nq, _) in enumerate(lens):
        if nq == 0:
            continue
        sq, sk = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        qi, ki, vi = q[sq][None], k[sk][None], v[sk][None]
        per = [x[i : i + 1] for x in (qd, kd, vd)]
        qf = qi.float() * per[0].repeat_interleave(rep, dim=1)[:, None, :, None]
        kf, vf = ki.float() * per[1][:, None, :, None], vi.float() * per[2][:, None, :, None]
        ref, ref_lse = attention_ref(qf, kf, vf, causal=causal, window_size=window, softcap=softcap)
        o_i, l_i = out[sq], lse[:, sq]
        seen = torch.isfinite(ref_lse[0]).t()
        assert torch.equal(torch.isfinite(l_i), torch.isfinite(ref_lse[0]))
        assert (o_i[~seen] == 0).all()
        if not seen.any():
            continue
        emu, emu_lse = emulate(
            from_fp8(qi, ki, vi, *per, block_q=64, block_k=64), causal=causal, window_size=window,
            softcap=softcap,
        )  # fmt: skip
        e_kernel, e_emu = errors(o_i[seen].float(), ref[0][seen]), errors(emu[0][seen], ref[0][seen])
        assert e_kernel["rel_l1"] <= 1.2 * e_emu["rel_l1"] + 1e-3, (i, e_kernel, e_emu)
        fin = torch.isfinite(ref_lse[0])
        assert (l_i[fin] - emu_lse[0][fin]).abs().max() < 5e-3, i
