"""8-bit attention's quantization, in PyTorch: the quantizer whose tensors the 8-bit forward kernel
(:mod:`fa4_sm120.fwd_q8`) reads, and the fp32 emulation of the same recipe (the reference of the
tests and of the accuracy tables of ``docs/quantized.md``).

The recipe (``docs/quantized.md`` has the measurements behind each choice):

* ``S = Q·Kᵀ`` in 8 bits with one scale per block of query rows (``block_q`` rows of one head) and one
  per block of keys (``block_k`` keys of one KV head): ``x8 = round(x * (1 / s))`` with ``s = amax(|x|)
  * (1 / max8)`` over the block (``max8``: 448 for FP8 e4m3, 127 for INT8; the reciprocals in fp32).
  K is first **smoothed**: its mean over the sequence, per KV head and channel, is subtracted; that shifts each query row's scores by
  one constant (``q·mean``), which the softmax cancels, and removes the channel offsets that would
  otherwise set the scale of every block. The LSE of the smoothed scores is off by that constant
  times the softmax scale: :class:`QuantizedQKV` carries it (``lse_shift``), and the API adds it back.
* ``P`` (``exp2`` of the scaled scores minus the running row max, so ``<= 2^0.5`` with the lazy
  rescale) times :data:`P_SCALE` in FP8 e4m3, ``V`` in FP8 e4m3 with one scale per channel (over the
  sequence, per KV head); fp32 accumulation, or fp16 per key block (added into the fp32 O after each
  block): V's channels then span ``±v_max(block_k)`` instead of e4m3's ``±448``, so that a block's sum
  (at most ``block_k * 2^0.5 * P_SCALE * v_max``) stays below fp16's 65,504; ``O`` is divided by the
  row sum of the fp32 ``P`` and multiplied by the channel scales of V in the epilogue.

Layouts the kernel reads (:func:`quantize`): ``q8 (batch, seqlen_q, nheads, d)`` and ``k8 (batch,
seqlen_k, nheads_kv, d)`` as 8-bit values in the caller's layout; ``vt8 (batch, nheads_kv, dv,
seqlen_k_padded)``: V transposed (keys contiguous, padded with zeros to a multiple of
:data:`KEY_PAD`) so its tiles load with the 16-bit ``ldmatrix`` like K's, and with the keys of every
32-key group permuted by :func:`pv_key_order`, so that the P·V MMA reads P straight from the S
accumulator registers; scales fp32 ``q_scale (batch, nheads, ceil(seqlen_q / block_q))``, ``k_scale
(batch, nheads_kv, ceil(seqlen_k / block_k))``, ``v_scale (batch, nheads_kv, dv)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from fa4_sm120.limits import Q8_P_SCALE, Q8_PV_ACCUMS, Q8_QK_FORMATS

__all__ = [
    "QK_FORMATS",
    "PV_ACCUMS",
    "P_SCALE",
    "KEY_PAD",
    "QuantizedQKV",
    "pv_key_order",
    "quantize",
    "k_mean",
    "v_channel_scales",
    "from_fp8",
    "emulate",
    "attention_fp32",
    "real_like",
    "v_max",
    "errors",
]

QK_FORMATS = Q8_QK_FORMATS
PV_ACCUMS = Q8_PV_ACCUMS
# P (<= 2^0.5 with the lazy rescale) times 2^8 stays below e4m3's 448 and keeps P >= 2^-17 nonzero
P_SCALE = Q8_P_SCALE
# vt8's key dimension is padded to a multiple of this (every tile_n of the tile table divides it)
KEY_PAD = 128
_FP8 = torch.float8_e4m3fn
_FP16_MAX_SUM = 60000.0  # a key block's P·V partial sums stay below this with fp16 accumulation
_MAX8 = {"fp8": 448.0, "int8": 127.0}
# a block's scale is amax times the fp32 reciprocal of max8: one rounding, the same on every device and
# in the quantizer kernels (PyTorch's division by a Python scalar multiplies by its reciprocal on CUDA
# and divides on the CPU)
_INV_MAX8 = {f: torch.tensor(1.0 / m, dtype=torch.float32).item() for f, m in _MAX8.items()}


class QuantizedQKV(NamedTuple):
    """What :func:`quantize` returns (the module docstring has the layouts)."""

    q8: torch.Tensor
    k8: torch.Tensor
    vt8: torch.Tensor
    q_scale: torch.Tensor
    k_scale: torch.Tensor
    v_scale: torch.Tensor
    lse_shift: torch.Tensor  # (batch, nheads, seqlen_q) fp32: add to the smoothed scores' LSE
    qk: str
    block_q: int
    block_k: int
    seqlen_k: int


def pv_key_order(n: int = 32) -> torch.Tensor:
    """The keys of a 32-key group in the order P·V's ``mma.m16n8k32`` reads them: position ``p`` holds
    key ``16 * (p // 16) + 8 * (e // 2) + 2 * t + e % 2`` with ``t = p % 16 // 4``, ``e = p % 4``,
    which is the key of the S accumulator element that a thread holds in A-fragment slot ``p``."""
    p = torch.arange(n)
    kh, t, e = p // 16, p % 16 // 4, p % 4
    return 16 * kh + 8 * (e // 2) + 2 * t + e % 2


def v_max(pv_accum: str, block_k: int) -> float:
    """The largest magnitude of V's 8-bit values: e4m3's 448 with fp32 accumulation; with fp16
    accumulation what keeps a ``block_k``-key block's ``P·V`` (``P * P_SCALE <= 2^0.5 * P_SCALE``)
    below :data:`_FP16_MAX_SUM`."""
    if pv_accum == "fp32":
        return 448.0
    return min(448.0, _FP16_MAX_SUM / (block_k * math.sqrt(2.0) * P_SCALE))


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """``(batch, seqlen, heads, d)`` -> ``(batch, nblocks, block, heads, d)`` (a view when ``block``
    divides ``seqlen``, else a zero-padded copy)."""
    b, s, h, d = x.shape
    nb = max(math.ceil(s / block), 1)
    if s == nb * block:
        return x.reshape(b, nb, block, h, d)
    xp = torch.zeros(b, nb * block, h, d, dtype=x.dtype, device=x.device)
    xp[:, :s] = x
    return xp.view(b, nb, block, h, d)


def _quantize_blocks(x: torch.Tensor, block: int, qk: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block 8-bit values (x's layout, contiguous) and fp32 scales ``(batch, heads, nblocks)``:
    the block maximum from ``amax``/``amin`` in x's dtype (exact), the division in fp32."""
    b, s, h, d = x.shape
    xb = _blocks(x, block)
    amax = torch.maximum(xb.amax(dim=(2, 4)), -xb.amin(dim=(2, 4))).float()  # (b, nb, h)
    scale = torch.where(amax > 0, amax * _INV_MAX8[qk], torch.ones_like(amax))
    inv = 1.0 / scale  # the values are x times the fp32 reciprocal, as the quantizer kernels'
    y = torch.mul(xb, inv[:, :, None, :, None])  # fp32 (type promotion): one pass, a new tensor
    if qk == "int8":
        y = y.round_().clamp_(-127, 127).to(torch.int8)
    else:
        y = y.to(_FP8)
    y = y.view(b, -1, h, d)
    if y.shape[1] != s:
        y = y[:, :s].contiguous()
    return y, scale.permute(0, 2, 1).contiguous()


def quantize(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    qk: str = "fp8",
    block_q: int = 128,
    block_k: int = 128,
    softmax_scale: float | None = None,
    smooth_k: bool = True,
    pv_accum: str = "fp32",
    mean: torch.Tensor | None = None,
) -> QuantizedQKV:
    """Quantize bf16/fp16/fp32 ``q (batch, seqlen_q, nheads, d)``, ``k``, ``v (batch, seqlen_k,
    nheads_kv, d/dv)`` for the 8-bit forward (the module docstring has the recipe and layouts).
    ``mean``: K's smoothing mean ``(batch, nheads_kv, d)`` fp32 to use instead of :func:`k_mean`'s
    (the quantizer kernels', a sum in another order, to compare their bytes with)."""
    b, sq, h, d = q.shape
    hkv, sk = k.shape[2], k.shape[1]
    scale = d**-0.5 if softmax_scale is None else softmax_scale
    kf = k.float()
    if smooth_k and sk > 0:
        mean = k_mean(k) if mean is None else mean
        kf = kf - mean[:, None]
        qg = q.float().reshape(b, sq, hkv, h // hkv, d)
        shift = torch.einsum("bsgrd,bgd->bgrs", qg, mean).reshape(b, h, sq) * scale
    else:
        shift = torch.zeros(b, h, sq, dtype=torch.float32, device=q.device)
    q8, q_scale = _quantize_blocks(q, block_q, qk)
    k8, k_scale = _quantize_blocks(kf, block_k, qk)
    v_scale = v_channel_scales(v, pv_accum, block_k)
    vt = _v_layout(torch.mul(v, (1.0 / v_scale)[:, None]).to(_FP8))
    return QuantizedQKV(q8, k8, vt, q_scale, k_scale, v_scale, shift.contiguous(), qk, block_q, block_k, sk)


def k_mean(k: torch.Tensor) -> torch.Tensor:
    """K's smoothing mean: ``(batch, nheads_kv, d)`` fp32, over the sequence (``seqlen_k > 0``)."""
    return torch.mean(k, dim=1, dtype=torch.float32)


def v_channel_scales(v: torch.Tensor, pv_accum: str, block_k: int) -> torch.Tensor:
    """V's channel scales ``(batch, nheads_kv, dv)`` fp32: each channel's ``amax`` over the sequence
    (exact in v's dtype) over :func:`v_max`; 1 for an all-zero channel (or an empty sequence)."""
    b, sk, hkv, dv = v.shape
    if sk > 0:
        lo, hi = torch.aminmax(v, dim=1)
        vmax = torch.maximum(hi, -lo).float()
    else:
        vmax = torch.zeros(b, hkv, dv, device=v.device)
    return torch.where(vmax > 0, vmax / v_max(pv_accum, block_k), torch.ones_like(vmax)).contiguous()


def _v_layout(v8: torch.Tensor) -> torch.Tensor:
    """e4m3 ``v8 (batch, seqlen_k, nheads_kv, dv)`` -> the kernel's ``vt8 (batch, nheads_kv, dv,
    seqlen_k_padded)``: keys contiguous, zero-padded to :data:`KEY_PAD`, permuted by
    :func:`pv_key_order` within each 32-key group."""
    b, sk, hkv, dv = v8.shape
    skp = max(math.ceil(sk / KEY_PAD), 1) * KEY_PAD
    vt = torch.zeros(b, hkv, dv, skp, dtype=torch.uint8, device=v8.device)  # the moves on bytes
    vt[..., :sk] = v8.view(torch.uint8).permute(0, 2, 3, 1)
    order = pv_key_order().to(v8.device)
    return vt.view(b, hkv, dv, skp // 32, 32)[..., order].reshape(b, hkv, dv, skp).view(_FP8).contiguous()


def from_fp8(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_descale: torch.Tensor,
    k_descale: torch.Tensor,
    v_descale: torch.Tensor,
    *,
    block_q: int,
    block_k: int,
    vt8: torch.Tensor | None = None,
) -> QuantizedQKV:
    """The kernel's tensors for inputs already in e4m3 (FlashAttention-3's convention): attention on
    ``q * q_descale``, ``k * k_descale``, ``v * v_descale`` with ``(batch, nheads_kv)`` descales (a
    query head takes its KV head's ``q_descale``). The values are used as they are (no requantization,
    no smoothing: ``lse_shift`` is zero); every block scale of a head is its descale, V's channel
    scales are ``v_descale``; only V is moved, into the kernel's transposed layout (``vt8``: that
    layout already made, by the quantizer kernel on the GPU)."""
    b, sq, h, _ = q.shape
    sk, hkv, dv = k.shape[1], k.shape[2], v.shape[-1]
    nbq, nbk = max(math.ceil(sq / block_q), 1), max(math.ceil(sk / block_k), 1)
    q_scale = q_descale.float().repeat_interleave(h // hkv, dim=1)[:, :, None].expand(b, h, nbq)
    k_scale = k_descale.float()[:, :, None].expand(b, hkv, nbk)
    v_scale = v_descale.float()[:, :, None].expand(b, hkv, dv)
    return QuantizedQKV(
        q.contiguous(), k.contiguous(), _v_layout(v) if vt8 is None else vt8, q_scale.contiguous(),
        k_scale.contiguous(),
        v_scale.contiguous(), torch.zeros(b, h, sq, dtype=torch.float32, device=q.device), "fp8",
        block_q, block_k, sk,
    )  # fmt: skip


def _dequant_blocks(x8: torch.Tensor, scale: torch.Tensor, block: int) -> torch.Tensor:
    """``(batch, seqlen, heads, d)`` fp32 values of 8-bit ``x8`` with block scales."""
    s = x8.shape[1]
    rows = torch.arange(s, device=x8.device) // block
    return x8.float() * scale[:, :, rows].permute(0, 2, 1)[..., None]


def emulate(
    qkv: QuantizedQKV,
    *,
    causal: bool = False,
    softmax_scale: float | None = None,
    pv_accum: str = "fp32",
    window_size: tuple[int | None, int | None] = (None, None),
    softcap: float = 0.0,
    learnable_sink: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8-bit recipe in fp32 on quantized inputs: ``(out (batch, seqlen_q, nheads, dv) fp32, lse
    (batch, nheads, seqlen_q) fp32)``, the LSE of the true scores (smoothing undone: the scores are
    the dequantized ones plus ``lse_shift``, before the softcap ``softcap * tanh(s / softcap)``). A
    ``learnable_sink (nheads,)`` logit joins each row's normaliser; P is still the scores' ``exp``
    relative to the row maximum of the scores alone (as the kernel's). ``pv_accum = "fp16"`` rounds
    each key block's ``P·V`` partial sums to fp16 (blocks of ``block_k`` keys)."""
    q8, k8, vt8 = qkv.q8, qkv.k8, qkv.vt8
    b, sq, h, d = q8.shape
    hkv, sk = k8.shape[2], qkv.seqlen_k
    dv = vt8.shape[2]
    scale = d**-0.5 if softmax_scale is None else softmax_scale
    qf = _dequant_blocks(q8, qkv.q_scale, qkv.block_q)
    kf = _dequant_blocks(k8, qkv.k_scale, qkv.block_k)
    skp = vt8.shape[-1]
    inv = torch.argsort(pv_key_order().to(vt8.device))
    v8 = vt8.float().view(b, hkv, dv, skp // 32, 32)[..., inv].reshape(b, hkv, dv, skp)[..., :sk]
    rep = h // hkv
    kf = kf.repeat_interleave(rep, dim=2)
    v8 = v8.repeat_interleave(rep, dim=1)  # (b, h, dv, sk)
    s = torch.einsum("bqhd,bkhd->bhqk", qf, kf) * scale + qkv.lse_shift[..., None]
    if softcap > 0:
        s = softcap * torch.tanh(s / softcap)
    mask = _mask(sq, sk, causal, window_size, q8.device)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    # -inf on rows that see no key
    m = s.amax(dim=-1, keepdim=True) if sk > 0 else s.new_full((b, h, sq, 1), float("-inf"))
    if learnable_sink is not None:
        m_all = torch.maximum(m, learnable_sink.float()[None, :, None, None])  # with the sink
    else:
        m_all = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    m = torch.where(torch.isfinite(m), m, m_all)
    p = torch.exp(s - m)
    # the normaliser relative to m_all (the sink's term included), P·V relative to m
    row_sum = p.sum(dim=-1, keepdim=True) * torch.exp(m - m_all)
    if learnable_sink is not None:
        row_sum = row_sum + torch.exp(learnable_sink.float()[None, :, None, None] - m_all)
    p8 = (p * P_SCALE).to(_FP8).float()
    if pv_accum == "fp16":
        o = torch.zeros(b, h, sq, dv, dtype=torch.float32, device=q8.device)
        for j in range(0, sk, qkv.block_k):
            acc = torch.zeros_like(o)
            for c in range(j, min(j + qkv.block_k, sk), 32):
                part = torch.einsum("bhqk,bhdk->bhqd", p8[..., c : c + 32], v8[..., c : c + 32])
                acc = (acc + part).to(torch.float16).float()
            o += acc
    else:
        o = torch.einsum("bhqk,bhdk->bhqd", p8, v8)
    o = o / P_SCALE * qkv.v_scale.repeat_interleave(rep, dim=1)[:, :, None, :] * torch.exp(m - m_all)
    safe = torch.where(row_sum > 0, row_sum, torch.ones_like(row_sum))
    o = torch.where(row_sum > 0, o / safe, torch.zeros_like(o))
    lse = torch.where(row_sum[..., 0] > 0, m_all[..., 0] + torch.log(safe[..., 0]), float("-inf"))
    return o.permute(0, 2, 1, 3).contiguous(), lse


def _mask(sq: int, sk: int, causal: bool, window_size, device) -> torch.Tensor | None:
    """(sq, sk) keep-mask, bottom-right aligned (fa4's convention), or None."""
    left, right = window_size
    if causal:
        right = 0
    if left is None and right is None:
        return None
    i = torch.arange(sq, device=device)[:, None] + (sk - sq)
    j = torch.arange(sk, device=device)[None, :]
    keep = torch.ones(sq, sk, dtype=torch.bool, device=device)
    if right is not None and right >= 0:
        keep &= j <= i + right
    if left is not None and left >= 0:
        keep &= j >= i - left
    return keep


def attention_fp32(q, k, v, *, causal=False, softmax_scale=None, window_size=(None, None)):
    """Exact attention in fp32 (or the inputs' precision when they are fp64): ``(out, lse)``."""
    b, sq, h, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    scale = d**-0.5 if softmax_scale is None else softmax_scale
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    rep = h // hkv
    kf = k.to(dt).repeat_interleave(rep, dim=2)
    vf = v.to(dt).repeat_interleave(rep, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q.to(dt), kf) * scale
    mask = _mask(sq, sk, causal, window_size, q.device)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))[..., None])
    o = torch.einsum("bhqk,bkhd->bqhd", p, vf)
    return o, lse


def real_like(b, sq, sk, h, hkv, d, *, generator=None, dtype=torch.float32, device="cpu"):
    """Inputs shaped like LLM / DiT activations: K with per-channel mean offsets of 5-10 (random sign)
    on half the channels and 4 consistent "massive" channels of 20-40; Q normal with 4 channels 5x
    larger; V standard normal. Returns ``(q, k, v)``."""
    g = generator
    q = torch.randn(b, sq, h, d, generator=g)
    k = torch.randn(b, sk, hkv, d, generator=g)
    v = torch.randn(b, sk, hkv, d, generator=g)
    perm = torch.randperm(d, generator=g)
    half, massive, qbig = perm[: d // 2], perm[d // 2 : d // 2 + 4], perm[-4:]
    sign = torch.randint(0, 2, (hkv, d // 2), generator=g) * 2 - 1
    k[..., half] += sign * (5 + 5 * torch.rand(hkv, d // 2, generator=g))
    k[..., massive] += 20 + 20 * torch.rand(hkv, 4, generator=g)
    q[..., qbig] *= 5
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def errors(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """Cosine similarity, relative L1 (``sum|out - ref| / sum|ref|``) and max absolute error."""
    o, r = out.double().flatten(), ref.double().flatten()
    cos = torch.nn.functional.cosine_similarity(o, r, dim=0).item()
    rel_l1 = ((o - r).abs().sum() / r.abs().sum().clamp_min(1e-30)).item()
    return {"cosine": cos, "rel_l1": rel_l1, "max_err": (o - r).abs().max().item()}
