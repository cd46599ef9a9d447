"""Autograd for ``flash_attn_func``: :class:`FlashAttnFunc` (forward through
:func:`fa4_torch.api._flash_attn_fwd`, backward through the kernels of :mod:`fa4_sm120.bwd`).

Backward, per call (all on the current stream):

1. preprocess: ``dPsum = rowsum(dO * O) - dLSE`` (the dLSE term when the returned LSE received a
   gradient), ``LSElog2 = LSE * log2(e)`` (``+inf`` for rows with no visible key), rows padded to a
   multiple of the kernel's ``tile_m``; the fp32 dQ accumulator ``(b, h, seqlen_q_pad, d)`` is zeroed
   (memory linear in the sequence length);
2. the main kernel: dK, dV (one CTA per key block and KV head, summed over the query heads of the
   group in registers: GQA/MQA need no extra buffer), dQ into the fp32 accumulator;
3. postprocess: ``dQ = softmax_scale * dQaccum`` in the input dtype.

``deterministic=True``: the query-block counters order the dQ additions by key block, so two runs
give bit-identical dQ/dK/dV (dK/dV are written once per CTA in either mode).

Supported for gradients: what the backward tile table has a row for (head dims 32, 64, 96, 128, 160
and 192/128), causal or not, MHA/GQA/MQA. Local windows raise ``NotImplementedError`` (planned) and
other head dims ``UnsupportedConfigError`` — when the forward is called, so no gradient is dropped.
"""

from __future__ import annotations

import math

import torch

from fa4_core.errors import unsupported
from fa4_torch import api
from fa4_torch.cache import CompileCache, dsl_version
from fa4_torch.dispatch import device_family

__all__ = ["FlashAttnFunc", "BWD_CACHE"]

BWD_CACHE = CompileCache()
_fast: dict[tuple, tuple] = {}


def _bwd_kernels(dtype, head_dim, head_dim_v, causal, deterministic, has_dlse, device):
    key = (dtype, head_dim, head_dim_v, causal, deterministic, has_dlse, device)
    fns = _fast.get(key)
    if fns is not None:
        return fns
    from fa4_sm120.bwd import compile_bwd
    from fa4_sm120.bwd_pre_post import PrePostConfig, compile_postprocess, compile_preprocess
    from fa4_sm120.bwd_tiles import bwd_config

    family = device_family(device)
    dt = api._DTYPES[dtype]
    cfg = bwd_config(family, dt, head_dim, head_dim_v, causal=causal, deterministic=deterministic)
    major, minor = torch.cuda.get_device_capability(device)
    target = f"sm_{major}{minor}"
    pre_cfg = PrePostConfig(dt, head_dim_v, has_dlse)
    post_cfg = PrePostConfig(dt, head_dim)

    def build(fn, c):
        def go():
            with torch.cuda.device(device):
                return fn(c, tvm_ffi=True)

        return go

    ver = dsl_version()
    main = BWD_CACHE.get_or_compile(("bwd", cfg, target, ver), build(compile_bwd, cfg))
    pre = BWD_CACHE.get_or_compile(("pre", pre_cfg, target, ver), build(compile_preprocess, pre_cfg))
    post = BWD_CACHE.get_or_compile(("post", post_cfg, target, ver), build(compile_postprocess, post_cfg))
    fns = (pre, main, post, cfg.tile_m)
    _fast[key] = fns
    return fns


def check_backward_supported(q, k, v, causal, window_size) -> None:
    """Raise now (at the forward) for what the backward cannot do."""
    from fa4_sm120.bwd_tiles import select_bwd_tile

    is_local, _, _ = api._canonical_window(window_size, bool(causal))
    if is_local:
        raise api._later("gradients with a local window (window_size)", "the training release (backward)")
    select_bwd_tile(device_family(q.device), q.shape[-1], v.shape[-1])


def _aligned(t: torch.Tensor) -> torch.Tensor:
    ok = t.stride(-1) == 1 and t.data_ptr() % 16 == 0
    ok = ok and all(t.stride(i) % 8 == 0 or t.shape[i] <= 1 for i in range(t.dim() - 1))
    return t if ok else t.contiguous()


class FlashAttnFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, softmax_scale=None, causal=False, window_size=(None, None), pack_gqa=None,
                deterministic=False, softcap=0.0, learnable_sink=None, num_splits=1):  # fmt: skip
        out, lse = api._flash_attn_fwd(
            q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap=softcap,
            learnable_sink=learnable_sink, num_splits=num_splits,
        )  # fmt: skip
        if softcap != 0.0:
            raise api._later("gradients with softcap", "the training release (backward)")
        if learnable_sink is not None:
            raise api._later("gradients with learnable_sink", "the training release (backward)")
        check_backward_supported(q, k, v, causal, window_size)
        if softmax_scale is None:
            softmax_scale = 1.0 / math.sqrt(q.shape[-1])
        if not isinstance(deterministic, bool):
            raise unsupported("deterministic", deterministic, "True or False")
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.softmax_scale = float(softmax_scale)
        ctx.causal = bool(causal)
        ctx.deterministic = deterministic
        ctx.set_materialize_grads(False)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        batch, seqlen_q, nheads, head_dim = q.shape
        seqlen_k, nheads_kv, head_dim_v = k.shape[1], k.shape[2], v.shape[3]
        dev = q.device
        if dout is None:
            dout = torch.zeros_like(out)
        dout = _aligned(dout)
        has_dlse = dlse is not None
        pre, main, post, tile_m = _bwd_kernels(
            q.dtype, head_dim, head_dim_v, ctx.causal, ctx.deterministic, has_dlse, dev
        )
        dq = torch.empty((batch, seqlen_q, nheads, head_dim), dtype=q.dtype, device=dev)
        dk = torch.empty((batch, seqlen_k, nheads_kv, head_dim), dtype=q.dtype, device=dev)
        dv = torch.empty((batch, seqlen_k, nheads_kv, head_dim_v), dtype=q.dtype, device=dev)
        if batch == 0 or nheads == 0 or seqlen_k == 0 or seqlen_q == 0:
            return dq.zero_(), dk.zero_(), dv.zero_(), *([None] * 8)
        num_m = (seqlen_q + tile_m - 1) // tile_m
        seqlen_pad = num_m * tile_m
        lse_log2 = torch.empty((batch, nheads, seqlen_pad), dtype=torch.float32, device=dev)
        dpsum = torch.empty_like(lse_log2)
        dq_accum = torch.zeros((batch, nheads, seqlen_pad, head_dim), dtype=torch.float32, device=dev)
        if ctx.deterministic:
            sem = torch.zeros((batch, nheads, num_m), dtype=torch.int32, device=dev)
        else:
            sem = torch.zeros((1, 1, 1), dtype=torch.int32, device=dev)
        dlse_arg = dlse.float().contiguous() if has_dlse else lse
        pre(out, dout, lse, dlse_arg, lse_log2, dpsum)
        main(
            _aligned(q), _aligned(k), _aligned(v), dout, lse_log2, dpsum, dk, dv, dq_accum, sem,
            ctx.softmax_scale,
        )  # fmt: skip
        post(dq_accum, dq, ctx.softmax_scale)
        return dq, dk, dv, *([None] * 8)


def _reset_caches() -> None:
    BWD_CACHE.clear()
    _fast.clear()
