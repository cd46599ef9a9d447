"""The backward on the device: the kernels of :mod:`fa4_sm120.bwd` and :mod:`fa4_sm120.bwd_pre_post`,
compiled through the compile cache (:data:`BWD_CACHE`, memory then disk) and launched on the tensors
the autograd functions saved.

The backward counterpart of :mod:`fa4_torch.launch` (``validate -> plan -> launch, launch_bwd -> ops ->
autograd -> api``). :func:`backward` is the eager backward and the body of ``torch.ops.fa4.bwd``, per
call (all on the current stream):

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
   from the 16-bit O it summed over every row to up to 1.3x the bound of docs/testing.md (H200, 2026-12-01;
   reproduced on the CPU from the reference alone).

``deterministic=True``: the query-block counters order the dQ additions by key block, so two runs
give bit-identical dQ/dK/dV (dK/dV are written once per CTA in either mode); dsink is a torch sum
(deterministic).

Seams: :data:`BWD_CACHE`, :func:`backward_kernels` (``device=None`` with a family and target: compile
for a GPU that is not here, ``fa4 warmup --for-gpu``), :func:`reset_caches`.
"""

from __future__ import annotations

import contextlib
import logging
import time

import torch

from fa4_core.tile_scheduler import BwdLongestFirstScheduler
from fa4_torch import plan
from fa4_torch.cache import CompileCache, dsl_version
from fa4_torch.plan import BwdKey

log = logging.getLogger("fa4.compile")  # one INFO record per compile (only on a cache miss)

__all__ = ["BWD_CACHE", "KERNELS", "backward", "backward_kernels", "reset_caches"]

BWD_CACHE = CompileCache()
KERNELS: dict[tuple, tuple] = {}  # (BwdKey, device) -> backward_kernels' answer
_NO_SEM: dict[torch.device, torch.Tensor] = {}  # the deterministic semaphores' stand-in (never touched)


def backward_kernels(key: BwdKey, device, *, family: str | None = None, target: str | None = None):
    """-> ``(pre, main, post, tile_m, sdp_wn, tile_n)`` of ``key`` (``sdp_wn``: warp columns of the S/dP
    grid, the first dimension of the sink's per-warp-column row sums). ``family``/``target`` default to
    the device's; ``device=None`` with both given: no GPU here (the CLI's warmup filling the disk cache
    for another machine's GPU; nothing is kept in :data:`KERNELS`)."""
    fns = KERNELS.get((key, device)) if device is not None else None
    if fns is not None:
        return fns
    family = family or plan.device_family(device)
    if target is None:
        target = plan.compile_target(device)
    cfg, pre_cfg, post_cfg = plan.bwd_configs(key, family, target)

    def build(kind, c):
        def go():
            from fa4_sm120 import bwd, bwd_pre_post  # the DSL: only when compiling (not on a disk hit)

            compile_fn = {
                "bwd": bwd.compile_bwd,
                "pre": bwd_pre_post.compile_preprocess,
                "post": bwd_pre_post.compile_postprocess,
            }[kind]
            t0 = time.perf_counter()
            with torch.cuda.device(device) if device is not None else contextlib.nullcontext():
                fn = compile_fn(c, tvm_ffi=True)
            flags = "".join(f" {f}" for f in BwdKey._fields[4:] if getattr(key, f) is True)
            log.info(
                "compiled backward %s %s d%d/%d causal=%s%s for %s in %.2f s", kind, plan.DTYPES[key.dtype],
                key.head_dim, key.head_dim_v, key.causal, flags, target, time.perf_counter() - t0,
            )  # fmt: skip
            return fn

        return go

    ver = dsl_version()
    main = BWD_CACHE.get_or_compile(("bwd", cfg, target, ver), build("bwd", cfg))
    pre = BWD_CACHE.get_or_compile(("pre", pre_cfg, target, ver), build("pre", pre_cfg))
    post = BWD_CACHE.get_or_compile(("post", post_cfg, target, ver), build("post", post_cfg))
    fns = (pre, main, post, cfg.tile_m, cfg.sdp_wn, cfg.tile_n)
    if device is not None:
        KERNELS[(key, device)] = fns
    return fns


def backward(dout, q, k, v, out, lse, dlse, sink, cu_q, cu_k, used_q, used_k, softmax_scale, causal, is_local,
         wl, wr, softcap, deterministic, max_seqlen_q, max_seqlen_k, want_dsink):  # fmt: skip
    """The backward on plain tensors and scalars (the eager path and the body of ``fa4::bwd``):
    ``wl``/``wr`` the kernel's window bounds (:data:`~fa4_torch.validate.UNBOUNDED` for none), ``max_seqlen_q/k`` None
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
    key = BwdKey(
        q.dtype, head_dim, head_dim_v, causal, deterministic, has_dlse, is_local, softcap > 0, varlen_q,
        varlen_k, used_q is not None, used_k is not None, want_dsink,
    )  # fmt: skip
    pre, main, post, tile_m, warps_n, tile_n = backward_kernels(key, dev)
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
            pair_bytes, batch * nheads_kv, (max_k + tile_n - 1) // tile_n, plan.num_sms(dev)
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


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself if the kernels can read it (16-byte aligned rows, strides in whole 16-byte steps),
    else a contiguous copy; a contiguous tensor of whole 16-byte rows takes the fast path."""
    if t.shape[-1] % 8 == 0 and t.is_contiguous() and t.data_ptr() % 16 == 0:
        return t
    ok = t.stride(-1) == 1 and t.data_ptr() % 16 == 0
    ok = ok and all(t.stride(i) % 8 == 0 or t.shape[i] <= 1 for i in range(t.dim() - 1))
    return t if ok else t.contiguous()


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


def reset_caches() -> None:
    """Forget every compiled backward function of this process (the disk cache stays)."""
    BWD_CACHE.clear()
    KERNELS.clear()
    _NO_SEM.clear()
