"""The 8-bit forward on the device: quantize (:mod:`fa4_torch.quant`), compile (through the compile
cache), launch, and add smoothing's shift back into the LSE. Imports :mod:`fa4_torch.plan` and
:mod:`fa4_torch.validate` (below it) and the kernels' configs; the DSL only when compiling."""

from __future__ import annotations

import contextlib
import logging
import time

import torch

from fa4_sm120 import tiles
from fa4_torch import plan, quant
from fa4_torch.cache import CompileCache, dsl_version
from fa4_torch.validate import DTYPES, Q8Args

log = logging.getLogger("fa4.compile")

__all__ = ["Q8_CACHE", "q8_kernel", "quantize_for", "forward_quantized", "launch_quantized"]

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


def quantize_for(a: Q8Args, launch_smem: int = 0):
    """``(cfg, quantized tensors)`` of a validated call: the quantizer's blocks are the kernel's tiles."""
    cfg = tiles.q8_fwd_config(
        DTYPES[a.out_dtype],
        a.q.shape[-1],
        causal=a.causal,
        qk=a.qk,
        pv_accum=a.pv_accum,
        launch_smem=launch_smem,
    )
    if a.descales is not None:  # e4m3 inputs with descales: used as they are
        qkv = quant.from_fp8(a.q, a.k, a.v, *a.descales, block_q=cfg.tile_m, block_k=cfg.tile_n)
    else:
        qkv = quant.quantize(
            a.q, a.k, a.v, qk=a.qk, block_q=cfg.tile_m, block_k=cfg.tile_n, softmax_scale=a.softmax_scale,
            pv_accum=a.pv_accum,
        )  # fmt: skip
    return cfg, qkv


def launch_quantized(cfg, qkv: quant.QuantizedQKV, a: Q8Args):
    """The kernel on already quantized tensors: ``(out, lse)``, the LSE of the true scores."""
    q, v, dt = a.q, a.v, a.out_dtype
    b, sq, h, _ = q.shape
    dv = v.shape[-1]
    out = torch.empty(b, sq, h, dv, dtype=dt, device=q.device)
    lse = torch.empty(b, h, sq, dtype=torch.float32, device=q.device)
    if out.numel() == 0:
        return out, lse
    fn = q8_kernel(cfg, q.device)
    fn(
        qkv.q8.view(dt), qkv.k8.view(dt), qkv.vt8.view(dt), qkv.q_scale, qkv.k_scale,
        qkv.v_scale, out, lse, a.softmax_scale,
    )  # fmt: skip
    return out, lse + qkv.lse_shift


def forward_quantized(a: Q8Args):
    """Quantize and launch: ``(out, lse)``."""
    cfg, qkv = quantize_for(a)
    return launch_quantized(cfg, qkv, a)
