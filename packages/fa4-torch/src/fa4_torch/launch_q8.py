"""The 8-bit forward on the device: quantize (the kernels of :mod:`fa4_sm120.quantize`, which write
what :func:`fa4_torch.quant.quantize`, their PyTorch reference, writes), compile (through the compile
cache), launch, and add smoothing's shift back into the LSE. Imports :mod:`fa4_torch.plan` and
:mod:`fa4_torch.validate` (below it) and the kernels' configs; the DSL only when compiling."""

from __future__ import annotations

import contextlib
import functools
import logging
import struct
import time

import torch

from fa4_sm120 import tiles
from fa4_torch import plan, quant
from fa4_torch.cache import CompileCache, dsl_version
from fa4_torch.validate import DTYPES, Q8Args, Q8VarlenArgs

log = logging.getLogger("fa4.compile")

__all__ = [
    "Q8_CACHE",
    "q8_kernel",
    "quantize_kernel",
    "quantize_device",
    "quantize_for",
    "fp8_v_layout_device",
    "forward_quantized",
    "forward_quantized_varlen",
    "launch_quantized",
]

Q8_CACHE = CompileCache()


def q8_kernel(cfg, device: torch.device | None):
    """The compiled 8-bit forward of ``cfg`` for ``device`` (memory, then disk cache)."""

    def build():
        from fa4_sm120.fwd_q8 import FlashAttentionForwardQ8Sm120

        t0 = time.perf_counter()
        with torch.cuda.device(device) if device is not None else contextlib.nullcontext():
            fn = FlashAttentionForwardQ8Sm120.compile(cfg, tvm_ffi=True)
        log.info("compiled 8-bit forward %s in %.2f s", cfg, time.perf_counter() - t0)
        return fn

    target = plan.compile_target(device) if device is not None else None
    index = device.index if device is not None else None
    return Q8_CACHE.get_or_compile((cfg, target, dsl_version(), index), build)


def quantize_kernel(cfg, device: torch.device | None):
    """The compiled quantizer of ``cfg`` (a :class:`~fa4_sm120.configs.QuantizeConfig`) for ``device``."""

    def build():
        from fa4_sm120.quantize import Quantize8Sm120

        with torch.cuda.device(device) if device is not None else contextlib.nullcontext():
            return Quantize8Sm120.compile(cfg, tvm_ffi=True)

    target = plan.compile_target(device) if device is not None else None
    index = device.index if device is not None else None
    return Q8_CACHE.get_or_compile((cfg, target, dsl_version(), index), build)


def _kernel_view(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself when the quantizer's placeholders accept its strides (the last one 1, the others
    multiples of 8 elements, a 16-byte aligned base), else a contiguous copy."""
    ok = t.stride(-1) == 1 and t.data_ptr() % 16 == 0 and all(s % 8 == 0 for s in t.stride()[:-1])
    return t if ok else t.contiguous()


def quantize_device(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    qk: str,
    softmax_scale: float,
    pv_accum: str,
    seqused: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> quant.QuantizedQKV:
    """:func:`fa4_torch.quant.quantize` (smoothing on, the forward's tiles as blocks) by the
    quantizer kernels: K's mean and V's channel scales from one kernel that reads K and V once (the
    mean a sum in another order than ``torch.mean``'s, deterministic; the scales bit for bit
    :func:`~fa4_torch.quant.v_channel_scales`'), then one kernel for each of Q, K and V. ``seqused =
    (seqused_q, seqused_k)`` (int32 ``(batch,)``): padded batches, sequence ``b`` the first
    ``seqused_q[b]`` / ``seqused_k[b]`` rows (the rows past them are not read)."""
    b, sq, h, d = q.shape
    sk, hkv = k.shape[1], k.shape[2]
    dev = q.device
    smooth = sk > 0  # smoothing (K's mean subtracted, the LSE shift q·mean written by Q's quantizer)
    cfgs = tiles.q8_quantize_configs(
        str(q.dtype).removeprefix("torch."), d, qk=qk, smooth=smooth, seqused=seqused is not None
    )
    block_q, block_k = cfgs["q"].block, cfgs["k"].block
    dt8 = torch.int8 if qk == "int8" else torch.float8_e4m3fn
    q8 = torch.empty(b, sq, h, d, dtype=dt8, device=dev)
    k8 = torch.empty(b, sk, hkv, d, dtype=dt8, device=dev)
    skp = max(-(-sk // quant.KEY_PAD), 1) * quant.KEY_PAD
    vt8 = torch.empty(b, hkv, d, skp, dtype=torch.float8_e4m3fn, device=dev)
    # scales of blocks without rows (empty sequences) are 1, as the reference's; the kernels write the rest
    q_scale = (torch.empty if sq > 0 else torch.ones)(
        b, h, max(-(-sq // block_q), 1), dtype=torch.float32, device=dev
    )
    k_scale = (torch.empty if sk > 0 else torch.ones)(
        b, hkv, max(-(-sk // block_k), 1), dtype=torch.float32, device=dev
    )
    # V's channel scales (1 without keys) and K's mean, by the statistics kernel when there are keys
    v_scale = (torch.empty if b > 0 and sk > 0 else torch.ones)(b, hkv, d, dtype=torch.float32, device=dev)
    shift = (torch.empty if smooth else torch.zeros)(b, h, sq, dtype=torch.float32, device=dev)
    qkv = quant.QuantizedQKV(q8, k8, vt8, q_scale, k_scale, v_scale, shift, qk, block_q, block_k, sk)
    if b == 0:
        return qkv
    used_q, used_k = seqused if seqused is not None else (None, None)
    kx, vx = _kernel_view(k), _kernel_view(v)  # read by the statistics and by their quantizers
    mean = None
    if smooth:  # over each sequence's keys (the first seqused_k[b] with seqused); 0 for none
        stats = cfgs["stats"]
        part = torch.empty(b, hkv, -(-sk // stats.block), 2 * d, dtype=torch.float32, device=dev)
        count = torch.zeros(b, hkv, dtype=torch.int32, device=dev)  # the CTAs done, per (batch, head)
        mean = torch.empty(b, hkv, d, dtype=torch.float32, device=dev)
        fn = quantize_kernel(stats, dev)
        fn(kx, vx, part, count, mean, v_scale, used_k, _v_inv(pv_accum, block_k))
    launches = [("v", vx, vt8, v_scale, None, None, used_k)]
    if sq > 0:
        launches.append(("q", q, q8, q_scale, mean, shift if smooth else None, used_q))
    if sk > 0:
        launches.append(("k", kx, k8, k_scale, mean, None, used_k))
    for role, x, x8, scale, mean_, shift_, used in launches:
        fn = quantize_kernel(cfgs[role], dev)
        fn(_kernel_view(x), x8.view(torch.int32), scale, mean_, shift_, used, softmax_scale)
    return qkv


@functools.cache
def _v_inv(pv_accum: str, block_k: int) -> float:
    """The fp32 reciprocal of V's fp32 range ``quant.v_max``: PyTorch's ``vmax / v_max`` on the GPU
    multiplies by it (the double quotient of fp32 values rounded to fp32 is the fp32 quotient)."""
    vm = struct.unpack("f", struct.pack("f", quant.v_max(pv_accum, block_k)))[0]
    return struct.unpack("f", struct.pack("f", 1.0 / vm))[0]


def fp8_v_layout_device(v: torch.Tensor, seqused_k: torch.Tensor | None) -> torch.Tensor:
    """e4m3 ``v (batch, seqlen_k, nheads_kv, d)`` in the kernel's ``vt8`` layout
    (``fa4_torch.quant``'s ``_v_layout``, byte for byte: the bytes are moved, not converted) by V's
    quantizer (its channel scales unused: an unfilled tensor); ``seqused_k``: padded batches (keys past
    a sequence's length written as zeros)."""
    b, sk, hkv, d = v.shape
    skp = max(-(-sk // quant.KEY_PAD), 1) * quant.KEY_PAD
    vt8 = torch.empty(b, hkv, d, skp, dtype=torch.float8_e4m3fn, device=v.device)
    if b == 0:
        return vt8
    fn = quantize_kernel(tiles.q8_fp8_v_config(d, seqused=seqused_k is not None), v.device)
    unused = torch.empty(b, hkv, d, dtype=torch.float32, device=v.device)
    fn(_kernel_view(v), vt8.view(torch.int32), unused, None, None, seqused_k, 1.0)
    return vt8


def quantize_for(a: Q8Args, launch_smem: int = 0):
    """``(cfg, quantized tensors)`` of a validated call: the quantizer's blocks are the kernel's tiles."""
    cfg = tiles.q8_fwd_config(
        DTYPES[a.out_dtype],
        a.q.shape[-1],
        causal=a.causal,
        qk=a.qk,
        pv_accum=a.pv_accum,
        seqused=a.seqused is not None,
        local=a.window is not None,
        softcap=a.softcap > 0,
        sink=a.learnable_sink is not None,
        launch_smem=launch_smem,
    )
    if a.descales is not None:  # e4m3 inputs with descales: used as they are, V moved by its quantizer
        vt8 = fp8_v_layout_device(a.v, a.seqused[1] if a.seqused is not None else None)
        qkv = quant.from_fp8(a.q, a.k, a.v, *a.descales, block_q=cfg.tile_m, block_k=cfg.tile_n, vt8=vt8)
    else:
        qkv = quantize_device(
            a.q, a.k, a.v, qk=a.qk, softmax_scale=a.softmax_scale, pv_accum=a.pv_accum, seqused=a.seqused
        )
    return cfg, qkv


def launch_quantized(cfg, qkv: quant.QuantizedQKV, a: Q8Args):
    """The kernel on already quantized tensors: ``(out, lse)``, the LSE of the true scores (the
    kernel's own with the softcap or sinks, which read smoothing's shift; else the shift added)."""
    q, v, dt = a.q, a.v, a.out_dtype
    b, sq, h, _ = q.shape
    dv = v.shape[-1]
    out = torch.empty(b, sq, h, dv, dtype=dt, device=q.device)
    lse = torch.empty(b, h, sq, dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse
    used_q, used_k = a.seqused if a.seqused is not None else (None, None)
    left, right = a.window if a.window is not None else (-1, -1)
    fn = q8_kernel(cfg, q.device)
    fn(
        qkv.q8.view(dt), qkv.k8.view(dt), qkv.vt8.view(dt), qkv.q_scale, qkv.k_scale, qkv.v_scale, out, lse,
        used_q, used_k, qkv.lse_shift if cfg.reads_lse_shift else None, a.learnable_sink, a.softmax_scale,
        left, right, a.softcap,
    )  # fmt: skip
    return out, (lse if cfg.reads_lse_shift else lse + qkv.lse_shift)


def forward_quantized(a: Q8Args):
    """Quantize and launch: ``(out, lse)``."""
    cfg, qkv = quantize_for(a)
    return launch_quantized(cfg, qkv, a)


def forward_quantized_varlen(v: Q8VarlenArgs):
    """The varlen form: the packed sequences scattered into zero-padded ``(batch, max_seqlen, heads,
    d)`` tensors, the padded batch quantized and attended with per-sequence lengths (``seqused``),
    the rows gathered back. Returns ``(out (total_q, nheads, d), lse (nheads, total_q))``; packed rows
    past ``cu_seqlens_q[-1]`` are zero in ``out`` and ``-inf`` in ``lse``."""
    a = v.args
    q, k, val = a.q, a.k, a.v
    dev = q.device
    b = v.lens_q.numel()

    def rows(lens: torch.Tensor, cu: torch.Tensor):
        """(batch index, position in its sequence) of each packed row of the sequences, on the device
        without a synchronisation (the total is known from the host's copy of the lengths)."""
        total = int(lens.sum())
        batch = torch.repeat_interleave(torch.arange(b, device=dev), cu[1:] - cu[:-1], output_size=total)
        return batch, torch.arange(total, device=dev) - cu.long()[batch]

    def pad(x: torch.Tensor, idx, max_len: int) -> torch.Tensor:
        xp = x.new_zeros(b, max_len, *x.shape[1:])
        src = x[: idx[0].numel()]
        if x.element_size() == 1:  # FP8 inputs: moved as bytes (no float8 index_put)
            xp, src = xp.view(torch.uint8), src.contiguous().view(torch.uint8)
        xp[idx] = src
        return xp.view(x.dtype)

    iq, ik = rows(v.lens_q, v.cu_seqlens_q), rows(v.lens_k, v.cu_seqlens_k)
    used = (v.cu_seqlens_q[1:] - v.cu_seqlens_q[:-1], v.cu_seqlens_k[1:] - v.cu_seqlens_k[:-1])  # int32
    padded = a._replace(
        q=pad(q, iq, v.max_seqlen_q),
        k=pad(k, ik, v.max_seqlen_k),
        v=pad(val, ik, v.max_seqlen_k),
        seqused=used,
    )
    out_p, lse_p = forward_quantized(padded)
    out = torch.zeros(q.shape[0], *out_p.shape[2:], dtype=out_p.dtype, device=dev)
    lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), dtype=torch.float32, device=dev)
    n = iq[0].numel()
    out[:n] = out_p[iq]
    lse[:, :n] = lse_p.permute(0, 2, 1)[iq].t()
    return out, lse
