"""The 8-bit forward's quantizer kernels (``fa4_sm120.quantize``, through
``fa4_torch.launch_q8.quantize_device``) against their PyTorch reference ``fa4_torch.quant.quantize``:
the 8-bit values, the block and channel scales and V's transposed, permuted, zero-padded layout are
bit for bit the reference's given the statistics kernel's K mean (a sum in another order than
``torch.mean``'s); smoothing's LSE shift (a sum in another order) agrees to fp32 rounding. The
statistics themselves against fp64: V's channel scales bit for bit ``quant.v_channel_scales``, K's mean
within the fp32 summation bound, the same on every call; with per-sequence lengths (padded batches)
over each sequence's rows only. Both Q·Kᵀ formats, head dims 64/128, fp16/bf16, GQA, odd and empty
lengths, strided (SDPA-layout) inputs, all-zero blocks and "real-like" inputs with large channel
offsets."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fa4_sm120.tiles import q8_fwd_config  # noqa: E402
from fa4_torch import launch_q8  # noqa: E402
from fa4_torch.quant import quantize, real_like, v_channel_scales  # noqa: E402

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


def _quantize_device(q, k, v, **kw):
    """``quantize_device``'s tensors and the K mean its statistics kernel wrote (None without keys)."""
    seen = {}
    real = launch_q8.quantize_kernel

    def spy(cfg, dev):
        fn = real(cfg, dev)
        if cfg.role != "stats":
            return fn

        def call(*args):
            seen["mean"] = args[4]  # (k, v, partials, counter, mean, v_scale, seqused_k, 1 / v_max)
            return fn(*args)

        return call

    launch_q8.quantize_kernel = spy
    try:
        got = launch_q8.quantize_device(q, k, v, **kw)
    finally:
        launch_q8.quantize_kernel = real
    return got, seen.get("mean")


def _check_mean(mean, k, lens):
    """K's mean against fp64: sequence ``b`` over its first ``lens[b]`` keys (0 for none), within the
    fp32 bound of any summation order, ``(n - 1) u sum|k|`` for ``n`` keys (``u = 2^-24``), plus the
    division's rounding: ``(n + 1) u mean|k|``."""
    for i, n in enumerate(lens):
        if n == 0:
            assert torch.equal(mean[i], torch.zeros_like(mean[i])), f"sequence {i}: no keys, mean 0"
            continue
        kd = k[i, :n].double()
        ref, bound = kd.mean(0), (n + 1) * 2.0**-24 * kd.abs().mean(0)
        err = (mean[i].double() - ref).abs()
        assert (err <= bound).all(), f"sequence {i}: {(err / bound).max().item():.2f}x the fp32 bound"


def _compare(q, k, v, qk, pv_accum="fp32", causal=False):
    cfg = q8_fwd_config(str(q.dtype)[6:], q.shape[-1], causal=causal, qk=qk, pv_accum=pv_accum)
    scale = q.shape[-1] ** -0.5
    got, mean = _quantize_device(q, k, v, qk=qk, softmax_scale=scale, pv_accum=pv_accum)
    assert (got.block_q, got.block_k) == (cfg.tile_m, cfg.tile_n)  # the forward's tiles
    torch.cuda.synchronize()
    if k.shape[1] > 0:
        _check_mean(mean, k, [k.shape[1]] * k.shape[0])
    ref = quantize(
        q, k, v, qk=qk, block_q=cfg.tile_m, block_k=cfg.tile_n, softmax_scale=scale, pv_accum=pv_accum,
        mean=mean,
    )  # fmt: skip
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


STATS_CASES = [
    # (keys per sequence; None: a dense batch, else seqused_k over keys padded to the longest), nheads,
    # nheads_kv, d, dtype, pv_accum: lengths 0, 1, 77, 4097 (one CTA's rows plus one), GQA, both heads dims
    # and input types, and fp16 accumulation's V range
    ([4097, 0, 77, 1], 4, 2, 64, torch.bfloat16, "fp32"),
    ([1, 1000, 0], 8, 1, 128, torch.float16, "fp16"),
    ([300, 513], 2, 2, 64, torch.float16, "fp32"),
    (None, 6, 2, 128, torch.bfloat16, "fp16"),  # dense, 4097 keys
]


def _stats_id(c):
    lens, h, hkv, d, dt, pv = c
    return f"{'dense' if lens is None else '-'.join(map(str, lens))}-h{h}/{hkv}-d{d}-{str(dt)[6:]}-{pv}"


@pytest.mark.parametrize("case", STATS_CASES, ids=_stats_id)
def test_statistics_against_fp64(case):
    """K's mean and V's channel scales of the statistics kernel, over each sequence's keys only (the
    padding past them holds large values that would show if read), the same on every call; with
    per-sequence lengths also the 8-bit K and V of each sequence bit for bit the reference's on its
    keys given that mean."""
    lens, h, hkv, d, dt, pv_accum = case
    b, sk = (2, 4097) if lens is None else (len(lens), max(lens))
    lens = [sk] * b if lens is None else lens
    g = torch.Generator(device="cuda").manual_seed(sk + d)
    q = torch.randn(b, 5, h, d, device="cuda", dtype=dt, generator=g)
    k = torch.randn(b, sk, hkv, d, device="cuda", dtype=dt, generator=g) + 3.0
    v = torch.randn(b, sk, hkv, d, device="cuda", dtype=dt, generator=g)
    used = None
    if case[0] is not None:
        for i, n in enumerate(lens):
            k[i, n:] = 1000.0
            v[i, n:] = -1000.0
        used = (
            torch.full((b,), 5, dtype=torch.int32, device="cuda"),
            torch.tensor(lens, dtype=torch.int32, device="cuda"),
        )
    kw = dict(qk="int8", softmax_scale=d**-0.5, pv_accum=pv_accum, seqused=used)
    got, mean = _quantize_device(q, k, v, **kw)
    again, mean2 = _quantize_device(q, k, v, **kw)
    torch.cuda.synchronize()
    assert torch.equal(mean, mean2) and torch.equal(got.v_scale, again.v_scale)  # deterministic
    _check_mean(mean, k, lens)
    block_k = got.block_k
    for i, n in enumerate(lens):
        ref_scale = v_channel_scales(v[i : i + 1, :n], pv_accum, block_k)[0]
        assert torch.equal(got.v_scale[i], ref_scale), f"sequence {i}: V's channel scales"
        if n == 0 or used is None:
            continue
        ref = quantize(
            q[i : i + 1], k[i : i + 1, :n], v[i : i + 1, :n], qk="int8", block_q=got.block_q,
            block_k=block_k, softmax_scale=d**-0.5, pv_accum=pv_accum, mean=mean[i : i + 1],
        )  # fmt: skip
        assert torch.equal(got.k8[i, :n].view(torch.uint8), ref.k8[0].view(torch.uint8)), f"sequence {i}: k8"
        assert torch.equal(got.k_scale[i, :, : ref.k_scale.shape[-1]], ref.k_scale[0]), f"sequence {i}"
        skp = ref.vt8.shape[-1]
        assert torch.equal(got.vt8[i, ..., :skp].view(torch.uint8), ref.vt8[0].view(torch.uint8)), i
        assert not got.vt8[i, ..., skp:].view(torch.uint8).any(), f"sequence {i}: V's padding"


@pytest.mark.parametrize("d, sk, used", [(64, 77, None), (128, 4097, None), (256, 300, [300, 0, 129])])
def test_fp8_v_layout_matches_reference(d, sk, used):
    """FlashAttention-3's FP8 inputs: V's quantizer on e4m3 values writes ``quant._v_layout``'s bytes
    (transposed, key-permuted, zero-padded; with per-sequence lengths, the keys past them zero), every
    byte as given (NaNs of either sign, negative zeros, the largest values included)."""
    from fa4_torch.launch_q8 import fp8_v_layout_device
    from fa4_torch.quant import _v_layout

    b = 3 if used else 2
    g = torch.Generator(device="cuda").manual_seed(d + sk)
    v = (torch.randn(b, sk, 2, d, device="cuda", generator=g) * 100).to(torch.float8_e4m3fn)
    special = torch.tensor([0xFF, 0x7F, 0x80, 0x7E, 0xFE, 0x01], dtype=torch.uint8, device="cuda")
    v.view(torch.uint8)[0, : special.numel(), 1, 3] = special
    seqused = None
    if used:
        seqused = torch.tensor(used, dtype=torch.int32, device="cuda")
        ref_in = v.clone()
        for i, n in enumerate(used):
            ref_in.view(torch.uint8)[i, n:] = 0
    else:
        ref_in = v
    got = fp8_v_layout_device(v, seqused)
    ref = _v_layout(ref_in)
    torch.cuda.synchronize()
    assert got.shape == ref.shape and got.dtype == ref.dtype
    mismatch = (got.view(torch.uint8) != ref.view(torch.uint8)).sum().item()
    assert mismatch == 0, f"{mismatch} of {got.numel()} bytes differ"
