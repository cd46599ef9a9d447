"""The 8-bit forward on the GPU against the fp32 emulation of its own recipe (``fa4_torch.quant``):
on the same quantized tensors, the kernel's relative L1 error against exact fp32 attention is at most
1.2x the emulation's (the kernel adds no error of its own), its LSE matches the emulation's, and on
standard-normal inputs the default recipe (INT8 Q·Kᵀ) keeps cosine >= 0.999. Head dims 64/128,
causal, GQA, odd lengths (1, 3, 77, 1000, 4097), both Q·Kᵀ formats, fp16 P·V accumulation, fp16 and
bf16 inputs, "real-like" inputs; the varlen form sequence by sequence. Runs in well under two minutes
(most of it the 8-bit compiles)."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

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
]


def _id(c):
    b, sq, sk, h, hkv, d, causal, qk, acc, dt = c
    return f"b{b}-sq{sq}-sk{sk}-h{h}/{hkv}-d{d}-{'causal' if causal else 'full'}-{qk}-{acc}-{str(dt)[6:]}"


def _check(q, k, v, causal, qk, pv_accum, normal: bool):
    a = quantized_args(q, k, v, causal, None, (None, None), qk, pv_accum, True)
    cfg, qkv = quantize_for(a)
    out, lse = launch_quantized(cfg, qkv, a)
    torch.cuda.synchronize()
    assert out.dtype == q.dtype and out.shape == q.shape
    ref, ref_lse = attention_fp32(q.float(), k.float(), v.float(), causal=causal)
    emu, emu_lse = emulate(qkv, causal=causal, pv_accum=pv_accum)
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
    "sq,sk,h,hkv,d,causal,scalar",
    [
        (77, 1000, 8, 2, 128, True, False),
        (1000, 1000, 4, 4, 64, False, True),
        (3, 4097, 4, 1, 128, False, False),
    ],
)
def test_fp8_inputs_flash_attn_func(sq, sk, h, hkv, d, causal, scalar):
    """FlashAttention-3's convention: float8_e4m3fn q, k, v with descales through ``flash_attn_func``:
    against the fp32 reference on the dequantized inputs, the kernel's relative L1 at most 1.2x the
    emulation's of the same tensors (``quant.from_fp8``), the LSE within fp32 rounding of it, bf16 out."""
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
    out, lse = flash_attn_func(
        q, k, v, causal=causal, return_lse=True, q_descale=qd, k_descale=kd, v_descale=vd
    )
    torch.cuda.synchronize()
    assert out.dtype == torch.bfloat16 and out.shape == (b, sq, h, d)
    rep = h // hkv
    qf = q.float() * per[0].repeat_interleave(rep, dim=1)[:, None, :, None]
    kf, vf = k.float() * per[1][:, None, :, None], v.float() * per[2][:, None, :, None]
    ref, ref_lse = attention_fp32(qf, kf, vf, causal=causal)
    qkv = from_fp8(q, k, v, *per, block_q=64, block_k=64)
    emu, emu_lse = emulate(qkv, causal=causal)
    seen = torch.isfinite(ref_lse).permute(0, 2, 1)
    e_kernel, e_emu = errors(out[seen].float(), ref[seen]), errors(emu[seen], ref[seen])
    assert e_kernel["rel_l1"] <= 1.2 * e_emu["rel_l1"] + 1e-3, (e_kernel, e_emu)
    fin = torch.isfinite(ref_lse)
    assert (lse[fin] - emu_lse[fin]).abs().max() < 5e-3


@pytest.mark.parametrize(
    "d, causal, qk",
    [(128, False, "int8"), (128, True, "int8"), (64, True, "fp8"), (64, False, "int8")],
)
def test_quantized_varlen_matches_each_sequence(d, causal, qk):
    """``quantized_attn_varlen_func`` on packed sequences (empty ones, a query without keys, more keys
    than queries and the reverse, GQA): each sequence within the 1.2x rule against the emulation of
    that sequence quantized alone, its LSE within fp32 rounding of the emulation's, rows that see no
    key zero with LSE -inf."""
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
    out, lse = quantized_attn_varlen_func(q, k, v, cu_q, cu_k, causal=causal, qk=qk, return_lse=True)
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
        ref, ref_lse = attention_fp32(qi.float(), ki.float(), vi.float(), causal=causal)
        seen = torch.isfinite(ref_lse[0]).t()  # (nq, h)
        assert torch.equal(torch.isfinite(l_i), torch.isfinite(ref_lse[0]))
        assert (o_i[~seen] == 0).all()
        if not seen.any():
            continue
        qkv = quantize(qi, ki, vi, qk=qk, block_q=cfg.tile_m, block_k=cfg.tile_n)
        emu, emu_lse = emulate(qkv, causal=causal)
        e_kernel = errors(o_i[seen].float(), ref[0][seen])
        e_emu = errors(emu[0][seen], ref[0][seen])
        assert e_kernel["rel_l1"] <= 1.2 * e_emu["rel_l1"] + 1e-3, (i, e_kernel, e_emu)
        fin = torch.isfinite(ref_lse[0])
        assert (l_i[fin] - emu_lse[0][fin]).abs().max() < 5e-3, i
