"""Context parallelism for packed variable-length documents: the all-gather form (Llama 3's).

The packed sequence ``(total, heads, d)`` (documents back to back, ``cu_seqlens`` of the whole
pack) is cut into ``W`` equal contiguous parts, rank ``r`` holding tokens ``[r·L, (r+1)·L)``,
``L = total / W``. A document may span several ranks. Each rank all-gathers K/V (``heads_k_stride``
K/V heads at a time, to bound the memory of the gathered copy) and attends its local queries to the
keys they see: per document, from the document's start up to the end of the rank's part (causal) or
to the document's end (not causal). :func:`llama3_flash_attn_prepare_cu_seqlens` computes the
local ``cu_seqlens`` of both and the slice of the gathered K/V they address; the causal mask,
bottom-right aligned, puts each document's last local query row against its last visible key, which
is exactly the per-document causal mask of the whole pack. The backward gathers K/V again, computes
dK/dV of the whole pack from this rank's queries, and reduce-scatters them back to their owners.

Communication is an all-gather of K/V per head group (forward and backward) plus a reduce-scatter
of fp32 dK/dV: more bytes than the ring, but no per-document bookkeeping across ranks; it is the
common choice for packed fine-tuning batches.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from fa4_core.errors import unsupported
from fa4_torch.distributed.checks import check_ring_args
from fa4_torch.distributed.comm import all_gather, reduce_scatter
from fa4_torch.distributed.kernels import ChunkKernel, Fa4Kernel
from fa4_torch.distributed.merge import apply_sink, new_accumulators

__all__ = ["llama3_flash_attn_prepare_cu_seqlens", "llama3_flash_attn_varlen_func"]


def llama3_flash_attn_prepare_cu_seqlens(cu_seqlens: torch.Tensor, causal: bool, rank: int, world_size: int):
    """From the int32 ``cu_seqlens`` of the whole pack (its total a multiple of ``world_size``) ->
    ``(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, local_k_slice)`` of ``rank``: the local
    queries' documents, the keys they see within the gathered K/V, the two maxima (ints) and the
    slice of the gathered K/V (dim 0) that ``cu_seqlens_k`` indexes. Reads ``cu_seqlens`` on the host."""
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dtype != torch.int32 or cu_seqlens.dim() != 1:
        raise unsupported("cu_seqlens", getattr(cu_seqlens, "dtype", cu_seqlens), "a 1-D int32 tensor")
    cu = cu_seqlens.tolist()
    total = cu[-1] if cu else 0
    if total <= 0 or total % world_size:
        raise unsupported("cu_seqlens[-1]", total, f"a positive multiple of world_size = {world_size}")
    per = total // world_size
    lo, hi = rank * per, (rank + 1) * per
    docs = [(s, e) for s, e in zip(cu[:-1], cu[1:]) if e > s and e > lo and s < hi]
    k_lo = docs[0][0]
    q_cu, k_cu = [0], [0]
    for s, e in docs:
        q_cu.append(q_cu[-1] + min(e, hi) - max(s, lo))
        k_cu.append((min(e, hi) if causal else e) - k_lo)
    k_hi = k_lo + k_cu[-1]
    dev = cu_seqlens.device
    cu_q = torch.tensor(q_cu, dtype=torch.int32, device=dev)
    cu_k = torch.tensor(k_cu, dtype=torch.int32, device=dev)
    max_q = max(b - a for a, b in zip(q_cu[:-1], q_cu[1:]))
    max_k = max(b - a for a, b in zip(k_cu[:-1], k_cu[1:]))
    return cu_q, cu_k, max_q, max_k, slice(k_lo, k_hi)


def _head_groups(nheads_kv: int, stride: int):
    return [(h, min(h + stride, nheads_kv)) for h in range(0, nheads_kv, stride)]


class Llama3VarlenFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sink, cu_q, cu_k, max_q, max_k, stride, k_slice, scale, causal, softcap, group,
                kernel):  # fmt: skip
        g = q.shape[1] // k.shape[1]
        out, lse = new_accumulators(q, v.shape[-1], varlen=True)
        for h0, h1 in _head_groups(k.shape[1], stride):
            kf = all_gather(k[:, h0:h1], group)[k_slice]
            vf = all_gather(v[:, h0:h1], group)[k_slice]
            o, m = kernel.forward(
                q[:, h0 * g : h1 * g].contiguous(), kf, vf, causal=causal, softmax_scale=scale, softcap=softcap,
                cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q, max_seqlen_k=max_k,
            )  # fmt: skip
            out[:, h0 * g : h1 * g] = o
            lse[h0 * g : h1 * g] = m
        if sink is not None:
            apply_sink(out, lse, sink)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse, sink, cu_q, cu_k)
        ctx.args = (max_q, max_k, stride, k_slice, scale, causal, softcap, group, kernel)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, sink, cu_q, cu_k = ctx.saved_tensors
        max_q, max_k, stride, k_slice, scale, causal, softcap, group, kernel = ctx.args
        g = q.shape[1] // k.shape[1]
        world = dist.get_world_size(group)
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        rows = k.shape[0] * world
        want_dsink = sink is not None and ctx.needs_input_grad[3]
        dsink = torch.zeros(sink.shape, dtype=torch.float32, device=sink.device) if want_dsink else None
        for h0, h1 in _head_groups(k.shape[1], stride):
            qh = slice(h0 * g, h1 * g)
            kf = all_gather(k[:, h0:h1], group)
            vf = all_gather(v[:, h0:h1], group)
            dkf = torch.zeros((rows, h1 - h0, k.shape[-1]), dtype=torch.float32, device=k.device)
            dvf = torch.zeros((rows, h1 - h0, v.shape[-1]), dtype=torch.float32, device=v.device)
            kernel.backward(
                dout[:, qh].contiguous(), q[:, qh].contiguous(), kf[k_slice], vf[k_slice], out[:, qh].contiguous(),
                lse[qh], dq[:, qh], dkf[k_slice], dvf[k_slice], causal=causal, softmax_scale=scale,
                softcap=softcap, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q, max_seqlen_k=max_k,
                sink=sink[qh] if want_dsink else None, dsink=dsink[qh] if want_dsink else None,
            )  # fmt: skip
            dk[:, h0:h1] = reduce_scatter(dkf, group)
            dv[:, h0:h1] = reduce_scatter(dvf, group)
        return (dq.to(q.dtype), dk, dv, dsink, *([None] * 11))


def llama3_flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                  heads_k_stride, local_k_slice, dropout_p=0.0, softmax_scale=None,
                                  causal=False, window_size=(-1, -1), alibi_slopes=None, deterministic=False,
                                  return_attn_probs=False, group=None, *, softcap=0.0, learnable_sink=None,
                                  kernel: ChunkKernel | None = None):  # fmt: skip
    """Varlen context parallelism (module docstring): ``q (local_total, nheads, d)``, ``k``/``v
    (local_total, nheads_kv, d)``, the local part of the pack on every rank (equal lengths);
    ``cu_seqlens_q/k``, ``max_seqlen_q/k`` and ``local_k_slice`` from
    :func:`llama3_flash_attn_prepare_cu_seqlens`; ``heads_k_stride`` K/V heads gathered at a time.
    Returns ``out``, or ``(out, lse, None)`` with ``return_attn_probs=True`` (``lse (nheads,
    local_total)``). Options as in :func:`~fa4_torch.distributed.ring_flash_attn_func`."""
    scale = check_ring_args(
        q, k, v, dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
        alibi_slopes=alibi_slopes, deterministic=deterministic, return_attn_probs=return_attn_probs,
        softcap=softcap, learnable_sink=learnable_sink, varlen=True,
    )  # fmt: skip
    nheads_kv = k.shape[1]
    if isinstance(heads_k_stride, bool) or not isinstance(heads_k_stride, int) or not 1 <= heads_k_stride:
        raise unsupported("heads_k_stride", heads_k_stride, f"an int in [1, nheads_kv = {nheads_kv}]")
    if not isinstance(local_k_slice, slice):
        raise unsupported(
            "local_k_slice", type(local_k_slice).__name__, "the slice from the prepare function"
        )
    if kernel is None:
        kernel = Fa4Kernel(deterministic=deterministic)
    if group is None:
        group = dist.group.WORLD
    out, lse = Llama3VarlenFunc.apply(
        q, k, v, learnable_sink, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        min(heads_k_stride, nheads_kv), local_k_slice, scale, causal, float(softcap), group, kernel,
    )  # fmt: skip
    return (out, lse, None) if return_attn_probs else out
