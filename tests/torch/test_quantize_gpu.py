"""The 8-bit forward's quantizer kernels (``fa4_sm120.quantize``, through
``fa4_torch.launch_q8.quantize_device``) against their PyTorch reference ``fa4_torch.quant.quantize``:
the 8-bit values, the block and channel scales and V's transposed, permuted, zero-padded layout are
bit for bit the reference's; smoothing's LSE shift (a sum in another order) agrees to fp32 rounding.
Both Q·Kᵀ formats, head dims 64/128, fp16/bf16, GQA, odd and empty lengths, strided (SDPA-layout)
inputs, all-zero blocks and "real-like" inputs with large channel offsets."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fa4_sm120.tiles import q8_fwd_config  # noqa: E402
from fa4_torch.launch_q8 import quantize_device  # noqa: E402
from fa4_torch.quant import quantize, real_like  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

CASES = [
    # (batch, seqlen_q, seqlen_k, nheads, nheads_kv, d, qk, dtype)
    (2, 1, 1, 4, 4, 128, "int8", torch.bfloat16),
    (2, 3, 77, 4, 2, 128, "fp8", torch.bfloat16),
    (1, 77, 1000, 8, 2, 64, "int8", torch.float16),
    (1, 1000, 77, 4, 1, 64, "fp8", torch.bfloat16),
    (2, 1000, 1000, 4, 4, 128, "int8", torch.float16),
    (1, 4097, 4097, 2, 1, 128, "int8", torch.bfloat16),
    (1, 5, 0, 2, 2, 128, "int8", torch.bfloat16),  # no keys: no smoothing, V all padding
]


def _id(c):
    b, sq, sk, h, hkv, d, qk, dt = c
    return f"b{b}-sq{sq}-sk{sk}-h{h}/{hkv}-d{d}-{qk}-{str(dt)[6:]}"


def _compare(q, k, v, qk, pv_accum="fp32", causal=False):
    cfg = q8_fwd_config(str(q.dtype)[6:], q.shape[-1], causal=causal, qk=qk, pv_accum=pv_accum)
    scale = q.shape[-1] ** -0.5
    got = quantize_device(q, k, v, qk=qk, softmax_scale=scale, pv_accum=pv_accum)
    assert (got.block_q, got.block_k) == (cfg.tile_m, cfg.tile_n)  # the forward's tiles
    ref = quantize(
        q, k, v, qk=qk, block_q=cfg.tile_m, block_k=cfg.tile_n, softmax_scale=scale, pv_accum=pv_accum
    )
    torch.cuda.synchronize()
    for name in ("q8", "k8", "vt8"):
        a, b = getattr(got, name), getattr(ref, name)
        assert a.shape == b.shape and a.dtype == b.dtype, name
        mismatch = (a.view(torch.uint8) != b.view(torch.uint8)).sum().item()
        assert mismatch == 0, f"{name}: {mismatch} of {a.numel()} bytes differ"
    for name in ("q_scale", "k_scale", "v_scale"):
        assert torch.equal(getattr(got, name), getattr(ref, name)), name
    torch.testing.assert_close(got.lse_shift, ref.lse_shift, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_quantizer_matches_reference(case):
    b, sq, sk, h, hkv, d, qk, dt = case
    g = torch.Generator(device="cuda").manual_seed(sq * 7 + sk)
    q = torch.randn(b, sq, h, d, device="cuda", dtype=dt, generator=g)
    k = torch.randn(b, sk, hkv, d, device="cuda", dtype=dt, generator=g) + 3.0  # smoothing has work
    v = torch.randn(b, sk, hkv, d, device="cuda", dtype=dt, generator=g)
    _compare(q, k, v, qk)


@pytest.mark.parametrize("qk", ["int8", "fp8"])
def test_quantizer_real_like_and_fp16_accumulation(qk):
    q, k, v = real_like(
        2,
        333,
        1000,
        4,
        2,
        128,
        generator=torch.Generator().manual_seed(5),
        dtype=torch.bfloat16,
        device="cuda",
    )
    _compare(q, k, v, qk, pv_accum="fp16")


def test_quantizer_strided_inputs_and_zero_blocks():
    """SDPA-layout views (``(b, h, s, d)`` transposed: strided, not contiguous) and blocks of zeros
    (scale 1, all-zero values) in Q, K and V."""
    q, k, v = (
        torch.randn(2, 4, 700, 64, device="cuda", dtype=torch.float16).transpose(1, 2) for _ in range(3)
    )
    q[:, :128] = 0
    k[:, 64:192] = 0
    v[:, :, 1] = 0  # an all-zero channel: scale 1
    _compare(q, k, v, "int8")
    _compare(q, k, v, "fp8")
