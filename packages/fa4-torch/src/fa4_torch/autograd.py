"""Autograd for ``flash_attn_func`` and ``flash_attn_varlen_func``: :class:`FlashAttnFunc` and
:class:`FlashAttnVarlenFunc` (forward through :func:`fa4_torch.api._flash_attn_fwd`, backward through
the kernels of :mod:`fa4_sm120.bwd`).

Backward, per call (all on the current stream):

1. preprocess: ``dPsum = rowsum(dO * O) - dLSE`` (the dLSE term when the returned LSE received a
   gradient), ``LSElog2 = LSE * log2(e)`` (``+inf`` for rows with no visible key), rows padded to a
   multiple of the kernel's ``tile_m``; the fp32 dQ accumulator ``(b, h, seqlen_q_pad, d)`` is zeroed
   (memory linear in the sequence length). Varlen: the packed ``(total_q, h, ·)`` tensors are one
   batch of ``total_q`` rows for the pre/postprocess (``(1, h, total_q_pad)`` buffers); the main
   kernel addresses each sequence at its ``cu_seqlens`` offset;
2. the main kernel: dK, dV (one CTA per key block and KV head, summed over the query heads of the
   group in registers: GQA/MQA need no extra buffer), dQ into the fp32 accumulator; local windows and
   softcap (``dS *= 1 - tanh²`` of the recomputed capped scores) inside the kernel;
3. postprocess: ``dQ = softmax_scale * dQaccum`` in the input dtype;
4. learnable sink: ``dsink[h] = -Σ_rows exp(sink[h] - LSE) * (D - dLSE)`` over the valid rows of head
   ``h`` (torch, fp32), with ``D = rowsum(P * dP)`` accumulated exactly by the main kernel
   (``has_dsink``). The preprocess's ``rowsum(dO * O)`` is the same number in exact arithmetic, but
   from the 16-bit O it summed over every row to up to 1.3x the DESIGN §4 bound (H200, 2026-12-01;
   reproduced on the CPU from the reference alone).

``deterministic=True``: the query-block counters order the dQ additions by key block, so two runs
give bit-identical dQ/dK/dV (dK/dV are written once per CTA in either mode); dsink is a torch sum
(deterministic).

Supported for gradients: what the backward tile table has a row for (head dims 32, 64, 96, 128, 160,
192, 224, 256 and 192/128), causal or not, local windows, softcap, learnable sink, MHA/GQA/MQA; varlen with
``cu_seqlens_q/k`` and ``seqused_q/k``. Paged K/V raises ``NotImplementedError`` and other head dims
``UnsupportedConfigError`` — when the forward is called, after its own checks and before it compiles
or launches anything, so no gradient is dropped and no forward runs for nothing.

Feature switches (module level): ``_BWD_WINDOW``, ``_BWD_SOFTCAP``, ``_BWD_SINK``, ``_BWD_VARLEN``.
Setting one to ``False`` turns that feature's gradient back into a ``NotImplementedError`` raised at
the forward (the escape hatch should a feature misbehave on some GPU).
"""

from __future__ import annotations

import contextlib
import math

import torch

from fa4_core.tile_scheduler import BwdLongestFirstScheduler
from fa4_torch import api
from fa4_torch.cache import CompileCache, dsl_version
from fa4_torch.dispatch import device_family

__all__ = ["FlashAttnFunc", "FlashAttnVarlenFunc", "BWD_CACHE"]

# Feature switches: False turns the feature's gradient back into a NotImplementedError at the forward.
_BWD_WINDOW = True  # local windows (window_size), with or without causal
_BWD_SOFTCAP = True  # softcap > 0
_BWD_SINK = True  # learnable_sink (and its gradient dsink)
_BWD_VARLEN = True  # flash_attn_varlen_func: cu_seqlens_q/k, seqused_q/k (not paged K/V)

BWD_CACHE = CompileCache()
_fast: dict[tuple, tuple] = {}
_NO_SEM: dict[torch.device, torch.Tensor] = {}  # the deterministic semaphores' stand-in (never touched)
_LATER = "the training release (backward)"


def _bwd_kernels(
    dtype,
    head_dim,
    head_dim_v,
    causal,
    deterministic,
    has_dlse,
    device,
    flags=(),
    *,
    family=None,
    target=None,
):
    """``flags = (local, softcap, varlen_q, varlen_k, seqused_q, seqused_k, dsink)`` (all False if
    empty) -> ``(pre, main, post, tile_m, sdp_wn, tile_n)`` (``sdp_wn``: warp columns of the S/dP grid, the
    first dimension of the sink's per-warp-column row sums). ``family``/``target`` default to the
    device's; ``device=None`` with both given: no GPU here (the CLI's warmup filling the disk cache
    for another machine's GPU; nothing is memoised)."""
    key = (dtype, head_dim, head_dim_v, causal, deterministic, has_dlse, device, flags)
    fns = _fast.get(key) if device is not None else None
    if fns is not None:
        return fns
    from fa4_sm120.bwd_tiles import bwd_config
    from fa4_sm120.configs import PrePostConfig

    local, softcap, varlen_q, varlen_k, used_q, used_k, dsink = flags or (False,) * 7
    family = family or device_family(device)
    dt = api._DTYPES[dtype]
    if target is None:
        major, minor = torch.cuda.get_device_capability(device)
        target = f"sm_{major}{minor}"
    cfg = bwd_config(
        family, dt, head_dim, head_dim_v, causal=causal, deterministic=deterministic, local=local,
        softcap=softcap, varlen_q=varlen_q, varlen_k=varlen_k, seqused_q=used_q, seqused_k=used_k,
        dsink=dsink, target=target,
    )  # fmt: skip
    pre_cfg = PrePostConfig(dt, head_dim_v, has_dlse)
    post_cfg = PrePostConfig(dt, head_dim)

    def build(kind, c):
        def go():
            from fa4_sm120 import bwd, bwd_pre_post  # the DSL: only when compiling (not on a disk hit)

            compile_fn = {
                "bwd": bwd.compile_bwd,
                "pre": bwd_pre_post.compile_preprocess,
                "post": bwd_pre_post.compile_postprocess,
            }[kind]
            with torch.cuda.device(device) if device is not None else contextlib.nullcontext():
                return compile_fn(c, tvm_ffi=True)

        return go

    ver = dsl_version()
    main = BWD_CACHE.get_or_compile(("bwd", cfg, target, ver), build("bwd", cfg))
    pre = BWD_CACHE.get_or_compile(("pre", pre_cfg, target, ver), build("pre", pre_cfg))
    post = BWD_CACHE.get_or_compile(("post", post_cfg, target, ver), build("post", post_cfg))
    fns = (pre, main, post, cfg.tile_m, cfg.sdp_wn, cfg.tile_n)
    if device is not None:
        _fast[key] = fns
    return fns


def check_backward_supported(
    q, k, v, causal, window_size, softcap=0.0, learnable_sink=None, varlen=False, paged=False
) -> None:
    """Raise now (at the forward, before it compiles or launches) for what the backward cannot do (or
    is switched off)."""
    from fa4_sm120.bwd_tiles import select_bwd_tile

    is_local, _, _ = api._canonical_window(window_size, bool(causal))
    if paged:
        raise api._later("gradients with paged K/V (page_table)", _LATER)
    if varlen and not _BWD_VARLEN:
        raise api._later("the varlen backward (inputs that require grad)", _LATER)
    if is_local and not _BWD_WINDOW:
        raise api._later("gradients with a local window (window_size)", _LATER)
    if softcap and not _BWD_SOFTCAP:
        raise api._later("gradients with softcap", _LATER)
    if learnable_sink is not None and not _BWD_SINK:
        raise api._later("gradients with learnable_sink", _LATER)
    select_bwd_tile(_family(q.device), q.shape[-1], v.shape[-1])


def _assume_constant_result(fn):
    """``torch.compiler.assume_constant_result`` without its import of ``torch._dynamo`` (1-4 s, the
    bulk of a warm first call that needs gradients): it marks the function with this attribute and
    nothing else (read in torch 2.13, used on the GPU machine's 2.11; ``tests/torch/test_compile_paths.py``
    checks that torch still does only that)."""
    fn._dynamo_marked_constant = True
    return fn


@_assume_constant_result
def _family(device: torch.device) -> str:
    """:func:`fa4_torch.dispatch.device_family`, which Dynamo calls at trace time instead of tracing
    it (``torch.cuda.get_device_capability`` inside would be a graph break)."""
    return device_family(device)


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself if the kernels can read it (16-byte aligned rows, strides in whole 16-byte steps),
    else a contiguous copy; a contiguous tensor of whole 16-byte rows takes the fast path."""
    if t.shape[-1] % 8 == 0 and t.is_contiguous() and t.data_ptr() % 16 == 0:
        return t
    ok = t.stride(-1) == 1 and t.data_ptr() % 16 == 0
    ok = ok and all(t.stride(i) % 8 == 0 or t.shape[i] <= 1 for i in range(t.dim() - 1))
    return t if ok else t.contiguous()


def _save(ctx, q, k, v, out, lse, *, softmax_scale, causal, window_size, softcap, learnable_sink,
          deterministic, cu_seqlens_q=None, cu_seqlens_k=None, seqused_q=None, seqused_k=None,
          max_seqlen_q=None, max_seqlen_k=None, sink_index=9):  # fmt: skip
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    is_local, left, right = api._canonical_window(window_size, bool(causal))
    ctx.save_for_backward(q, k, v, out, lse, learnable_sink, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k)
    ctx.softmax_scale = float(softmax_scale)
    ctx.causal = bool(causal)
    ctx.is_local = is_local
    ctx.window = (
        left if left is not None else api._UNBOUNDED,
        right if right is not None else api._UNBOUNDED,
    )
    ctx.softcap = float(softcap)
    ctx.deterministic = deterministic
    ctx.max_seqlen_q = max_seqlen_q
    ctx.max_seqlen_k = max_seqlen_k
    ctx.sink_index = sink_index  # position of learnable_sink among the Function's inputs
    ctx.set_materialize_grads(False)


class FlashAttnFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, softmax_scale=None, causal=False, window_size=(None, None), pack_gqa=None,
                deterministic=False, softcap=0.0, learnable_sink=None, num_splits=1):  # fmt: skip
        api._check_flag("deterministic", deterministic)

        def bwd_supported():  # after the forward's checks, before it compiles or launches
            check_backward_supported(q, k, v, causal, window_size, softcap, learnable_sink)

        out, lse = api._flash_attn_fwd(
            q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap=softcap,
            learnable_sink=learnable_sink, num_splits=num_splits, before_launch=bwd_supported,
        )  # fmt: skip
        _save(
            ctx, q, k, v, out, lse, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
            softcap=softcap, learnable_sink=learnable_sink, deterministic=deterministic,
        )  # fmt: skip
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        dq, dk, dv, dsink = _backward(ctx, dout, dlse)
        return dq, dk, dv, None, None, None, None, None, None, dsink, None


class FlashAttnVarlenFunc(torch.autograd.Function):
    """``flash_attn_varlen_func`` with gradients for q, k, v (and the learnable sink): packed
    ``(total, heads, d)`` sequences through ``cu_seqlens_q/k``, ``seqused_q/k``; not paged K/V."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None,
                seqused_q=None, seqused_k=None, page_table=None, softmax_scale=None, causal=False,
                window_size=(None, None), learnable_sink=None, softcap=0.0, num_splits=1, pack_gqa=None,
                deterministic=False):  # fmt: skip
        api._check_flag("deterministic", deterministic)
        paged = page_table is not None

        def bwd_supported():  # after the forward's checks, before it compiles or launches
            check_backward_supported(q, k, v, causal, window_size, softcap, learnable_sink, True, paged)

        out, lse = api._flash_attn_fwd(
            q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap=softcap,
            learnable_sink=learnable_sink, num_splits=num_splits, cu_seqlens_q=cu_seqlens_q,
            cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
            seqused_q=seqused_q, seqused_k=seqused_k, page_table=page_table, before_launch=bwd_supported,
        )  # fmt: skip
        _save(
            ctx, q, k, v, out, lse, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
            softcap=softcap, learnable_sink=learnable_sink, deterministic=deterministic,
            cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, seqused_q=seqused_q,
            seqused_k=seqused_k, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, sink_index=13,
        )  # fmt: skip
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        dq, dk, dv, dsink = _backward(ctx, dout, dlse)
        return (dq, dk, dv, *([None] * 10), dsink, *([None] * 4))


def _valid_rows(lse, cu_seqlens_q, seqused_q):
    """Bool mask broadcastable to ``lse`` of the rows the forward computed (device ops only), or
    None when every row is valid."""
    if cu_seqlens_q is not None:  # lse (h, total_q)
        total = lse.shape[-1]
        batch = cu_seqlens_q.shape[0] - 1
        t = torch.arange(total, device=lse.device)
        cu = cu_seqlens_q.long()
        b = torch.searchsorted(cu[1:], t, right=True)
        valid = b < batch
        bc = b.clamp(max=max(batch - 1, 0))
        if seqused_q is not None:
            valid = valid & (t - cu[bc] < seqused_q.long()[bc])
        return valid[None, :]
    if seqused_q is not None:  # lse (b, h, s)
        t = torch.arange(lse.shape[-1], device=lse.device)
        return (t[None, :] < seqused_q.long()[:, None])[:, None, :]
    return None


def _dsink(sink, lse, dpsum, valid):
    """``dsink[h] = -Σ_rows exp(sink[h] - lse) * dPsum`` (rows of head h over the batch)."""
    if lse.dim() == 2:  # varlen: (h, total)
        term = torch.exp(sink[:, None] - lse) * dpsum
        if valid is not None:
            term = torch.where(valid, term, torch.zeros_like(term))
        return -term.sum(1)
    term = torch.exp(sink[None, :, None] - lse) * dpsum
    if valid is not None:
        term = torch.where(valid, term, torch.zeros_like(term))
    return -term.sum((0, 2))


def _backward(ctx, dout, dlse):
    """-> ``(dq, dk, dv, dsink)``; ``dsink`` None unless the sink needs a gradient. Eager: the kernels
    directly (:func:`_bwd`); under ``torch.compile``: the custom op ``torch.ops.fa4.bwd``."""
    q, k, v, out, lse, sink, cu_q, cu_k, used_q, used_k = ctx.saved_tensors
    want_dsink = sink is not None and ctx.needs_input_grad[ctx.sink_index]
    if torch.compiler.is_compiling():
        from fa4_torch.ops import bwd_op

        if dout is None:
            dout = torch.zeros_like(out)
        wl, wr = ctx.window
        dq, dk, dv, dsink = bwd_op(
            dout, q, k, v, out, lse, dlse, sink, cu_q, cu_k, used_q, used_k, ctx.softmax_scale,
            ctx.causal, -1 if wl >= api._UNBOUNDED else wl, -1 if wr >= api._UNBOUNDED else wr,
            ctx.softcap, ctx.deterministic, -1 if ctx.max_seqlen_q is None else ctx.max_seqlen_q,
            -1 if ctx.max_seqlen_k is None else ctx.max_seqlen_k, want_dsink,
        )  # fmt: skip
        return dq, dk, dv, (dsink if want_dsink else None)
    wl, wr = ctx.window
    return _bwd(
        dout, q, k, v, out, lse, dlse, sink, cu_q, cu_k, used_q, used_k, ctx.softmax_scale, ctx.causal,
        ctx.is_local, wl, wr, ctx.softcap, ctx.deterministic, ctx.max_seqlen_q, ctx.max_seqlen_k, want_dsink,
    )  # fmt: skip


def _bwd(dout, q, k, v, out, lse, dlse, sink, cu_q, cu_k, used_q, used_k, softmax_scale, causal, is_local,
         wl, wr, softcap, deterministic, max_seqlen_q, max_seqlen_k, want_dsink):  # fmt: skip
    """The backward on plain tensors and scalars (the eager path and the body of ``fa4::bwd``):
    ``wl``/``wr`` the kernel's window bounds (``api._UNBOUNDED`` for none), ``max_seqlen_q/k`` None
    when not given. -> ``(dq, dk, dv, dsink)`` with ``dsink`` None unless ``want_dsink``."""
    varlen_q, varlen_k = cu_q is not None, cu_k is not None
    nheads, head_dim = q.shape[-2:]
    nheads_kv, head_dim_v = v.shape[-2:]
    dev = q.device
    if dout is None:
        dout = torch.zeros_like(out)
    dout = _aligned(dout)
    has_dlse = dlse is not None
    dq = torch.empty(q.shape, dtype=q.dtype, device=dev)
    kv_zero = varlen_k or used_k is not None  # rows outside every sequence are never written
    alloc = torch.zeros if kv_zero else torch.empty
    dk = alloc(k.shape, dtype=q.dtype, device=dev)
    dv = alloc(v.shape, dtype=q.dtype, device=dev)
    if varlen_q:
        batch, rows_q = cu_q.shape[0] - 1, q.shape[0]
        max_q = max_seqlen_q if max_seqlen_q is not None else rows_q
    else:
        batch, rows_q = q.shape[0], q.shape[1]
        max_q = rows_q
    if varlen_k:
        max_k = max_seqlen_k if max_seqlen_k is not None else k.shape[0]
    else:
        max_k = k.shape[1]
    valid = _valid_rows(lse, cu_q, used_q) if want_dsink else None
    if batch == 0 or nheads == 0 or rows_q == 0 or max_q == 0 or max_k == 0 or k.shape[-3] == 0:
        # nothing attends (or to nothing): dq, dk, dv = 0; the sink still sees the LSE gradient
        dsink = None
        if want_dsink:
            dps = (dout.float() * out.float()).sum(-1)  # (b, s, h) or (t, h)
            dps = dps.transpose(-1, -2) if varlen_q else dps.permute(0, 2, 1)
            if has_dlse:
                dps = dps - dlse.float()
            dsink = _dsink(sink, lse, dps, valid)
        return dq.zero_(), dk.zero_(), dv.zero_(), dsink
    flags = (is_local, softcap > 0, varlen_q, varlen_k, used_q is not None, used_k is not None, want_dsink)
    pre, main, post, tile_m, warps_n, tile_n = _bwd_kernels(
        q.dtype, head_dim, head_dim_v, causal, deterministic, has_dlse, dev, flags
    )
    # varlen_q: the pre/postprocess see one batch of rows_q rows (the packed tensors, unsqueezed)
    b_acc = 1 if varlen_q else batch
    seqlen_pad = (rows_q + tile_m - 1) // tile_m * tile_m
    lse_log2, dpsum = torch.empty((2, b_acc, nheads, seqlen_pad), dtype=torch.float32, device=dev)
    dq_accum = torch.zeros((b_acc, nheads, seqlen_pad, head_dim), dtype=torch.float32, device=dev)
    if deterministic:
        sem = torch.zeros((batch, nheads, (max_q + tile_m - 1) // tile_m), dtype=torch.int32, device=dev)
    else:  # never read nor written without determinism: one per device, not one per call
        sem = _NO_SEM.get(dev)
        if sem is None:
            sem = _NO_SEM[dev] = torch.zeros((1, 1, 1), dtype=torch.int32, device=dev)
    # the sink's gradient needs D = rowsum(P * dP) exactly: the kernel adds it per warp column
    pdp = (
        torch.zeros((warps_n, b_acc, nheads, seqlen_pad), dtype=torch.float32, device=dev)
        if want_dsink
        else None
    )
    u = (lambda t: t.unsqueeze(0)) if varlen_q else (lambda t: t)
    dlse_arg = u(dlse.float().contiguous()) if has_dlse else u(lse)
    pre(u(out), u(dout), u(lse), dlse_arg, lse_log2, dpsum)
    # causal: the longest key blocks first, in groups of (batch, KV head) pairs whose Q, dO and dQ
    # accumulator (per pair: the group's query heads times the rows of one sequence) share L2, each
    # group still a few waves of CTAs
    lpt_group = 1
    if causal:
        pair_bytes = nheads // nheads_kv * (rows_q // batch) * (2 * (head_dim + head_dim_v) + 4 * head_dim)
        lpt_group = BwdLongestFirstScheduler.group_size(
            pair_bytes, batch * nheads_kv, (max_k + tile_n - 1) // tile_n, api._num_sms(dev)
        )
    main(
        _aligned(q), _aligned(k), _aligned(v), dout, lse_log2, dpsum, dk, dv, dq_accum, sem,
        softmax_scale, wl, wr, softcap, max_k, lpt_group, cu_q, cu_k, used_q, used_k, pdp,
    )  # fmt: skip
    post(dq_accum, u(dq), softmax_scale)
    dsink = None
    if want_dsink:
        d_rows = pdp.sum(0)
        dps = d_rows[0, :, :rows_q] if varlen_q else d_rows[:, :, :rows_q]
        if has_dlse:
            dps = dps - dlse.float()
        dsink = _dsink(sink, lse, dps, valid)
    return dq, dk, dv, dsink


def _reset_caches() -> None:
    BWD_CACHE.clear()
    _fast.clear()
    _NO_SEM.clear()
