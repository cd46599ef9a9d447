"""The per-step chunk kernel of the ring: a small protocol and its two implementations.

A :class:`ChunkKernel` computes attention of a query chunk over a key chunk and the backward of it:

* ``forward(q, k, v, causal=, softmax_scale=, softcap=, cu_seqlens_q=, cu_seqlens_k=, max_seqlen_q=,
  max_seqlen_k=) -> (out, lse)``: ``out`` in any float dtype, ``lse`` fp32 (the merge upcasts);
* ``backward(dout, q, k, v, out, lse, dq, dk, dv, causal=, ..., sink=, dsink=)``: the gradients of that
  chunk given the **merged** ``out``/``lse`` of the whole row (``P = exp(S - lse)``, ``D = rowsum(dout ·
  out)``), **added** into the fp32 buffers ``dq``, ``dk``, ``dv`` (views of the ring's accumulators);
  with a learnable ``sink`` (its logit inside ``lse``), the chunk's share of the sink's gradient,
  ``-Σ_rows exp(sink - lse) · rowsum(P · dP)``, added into ``dsink``: the shares of the key chunks sum
  to the exact gradient (``rowsum(P · dP)`` summed over the chunks is the whole row's, which the
  16-bit ``out`` would only approximate).

Layouts are the kernels' (dense ``(batch, seqlen, heads, d)``, lse ``(batch, heads, seqlen)``; varlen
``(total, heads, d)``, lse ``(heads, total)`` with int32 ``cu_seqlens``); K/V carry their own (fewer)
heads (GQA); causal masks are bottom-right aligned when the chunks' lengths differ.

* :class:`Fa4Kernel`: fa4's kernels (:func:`fa4_torch.flash_attn_func` / ``flash_attn_varlen_func``
  with ``return_lse=True``, and :func:`fa4_torch.attention_backward`);
* :class:`ReferenceKernel`: plain PyTorch in fp32, any device (the CPU tests run the whole ring on it).
"""

from __future__ import annotations

from typing import Protocol

import torch

__all__ = ["ChunkKernel", "Fa4Kernel", "ReferenceKernel"]


class ChunkKernel(Protocol):
    def forward(self, q, k, v, *, causal, softmax_scale, softcap, cu_seqlens_q=None, cu_seqlens_k=None,
                max_seqlen_q=None, max_seqlen_k=None) -> tuple[torch.Tensor, torch.Tensor]: ...  # fmt: skip

    def backward(self, dout, q, k, v, out, lse, dq, dk, dv, *, causal, softmax_scale, softcap,
                 cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None, sink=None,
                 dsink=None) -> None: ...  # fmt: skip


class Fa4Kernel:
    """fa4's kernels as the chunk kernel (CUDA tensors, fp16/bf16); ``deterministic``: the backward's."""

    def __init__(self, deterministic: bool = False):
        self.deterministic = deterministic

    def forward(self, q, k, v, *, causal, softmax_scale, softcap, cu_seqlens_q=None, cu_seqlens_k=None,
                max_seqlen_q=None, max_seqlen_k=None):  # fmt: skip
        from fa4_torch.api import flash_attn_func, flash_attn_varlen_func

        with torch.no_grad():
            if cu_seqlens_q is None:
                return flash_attn_func(
                    q, k, v, softmax_scale=softmax_scale, causal=causal, softcap=softcap, return_lse=True
                )
            return flash_attn_varlen_func(
                q, k, v, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q,
                max_seqlen_k=max_seqlen_k, softmax_scale=softmax_scale, causal=causal, softcap=softcap,
                return_lse=True,
            )  # fmt: skip

    def backward(self, dout, q, k, v, out, lse, dq, dk, dv, *, causal, softmax_scale, softcap,
                 cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None, sink=None,
                 dsink=None):  # fmt: skip
        from fa4_torch.api import attention_backward

        attention_backward(
            dout.contiguous(), q, k, v, out.to(q.dtype).contiguous(), lse.contiguous(), softmax_scale=softmax_scale,
            causal=causal, softcap=softcap, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
            max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, deterministic=self.deterministic,
            learnable_sink=sink, dq=dq, dk=dk, dv=dv, dsink=dsink,
        )  # fmt: skip


def _scores(q, k, softmax_scale, softcap, causal):
    """fp32 scores ``(b, h, sq, sk)`` of ``q (b, sq, h, d)`` and ``k (b, sk, hk, d)`` (K heads repeated),
    softcapped, with the bottom-right causal mask as ``-inf``; and the pre-cap ``tanh`` for the backward."""
    g = q.shape[2] // k.shape[2]
    kf = k.float().repeat_interleave(g, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q.float(), kf) * softmax_scale
    t = None
    if softcap > 0:
        t = torch.tanh(s / softcap)
        s = softcap * t
    if causal:
        sq, sk = q.shape[1], k.shape[1]
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s.masked_fill(j > i + (sk - sq), float("-inf"))
    return s, t


def _segments(cu_q, cu_k):
    cq, ck = cu_q.tolist(), cu_k.tolist()
    return [(cq[i], cq[i + 1], ck[i], ck[i + 1]) for i in range(len(cq) - 1)]


class ReferenceKernel:
    """The chunk kernel in plain PyTorch, fp32 (any device; varlen by a loop over the documents)."""

    def forward(self, q, k, v, *, causal, softmax_scale, softcap, cu_seqlens_q=None, cu_seqlens_k=None,
                max_seqlen_q=None, max_seqlen_k=None):  # fmt: skip
        if cu_seqlens_q is not None:
            out = torch.zeros((*q.shape[:-1], v.shape[-1]), dtype=torch.float32, device=q.device)
            lse = torch.full((q.shape[1], q.shape[0]), float("-inf"), dtype=torch.float32, device=q.device)
            for q0, q1, k0, k1 in _segments(cu_seqlens_q, cu_seqlens_k):
                o, m = self.forward(
                    q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], causal=causal, softmax_scale=softmax_scale,
                    softcap=softcap,
                )  # fmt: skip
                out[q0:q1] = o[0]
                lse[:, q0:q1] = m[0]
            return out, lse
        s, _ = _scores(q, k, softmax_scale, softcap, causal)
        lse = torch.logsumexp(s, dim=-1)  # (b, h, sq); -inf for a row with no visible key
        base = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)
        p = torch.exp(s - base[..., None])
        g = q.shape[2] // k.shape[2]
        vf = v.float().repeat_interleave(g, dim=2)
        out = torch.einsum("bhqk,bkhd->bqhd", p, vf)
        return out, lse

    def backward(self, dout, q, k, v, out, lse, dq, dk, dv, *, causal, softmax_scale, softcap,
                 cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None, sink=None,
                 dsink=None):  # fmt: skip
        if cu_seqlens_q is not None:
            for q0, q1, k0, k1 in _segments(cu_seqlens_q, cu_seqlens_k):
                self.backward(
                    dout[None, q0:q1], q[None, q0:q1], k[None, k0:k1], v[None, k0:k1], out[None, q0:q1],
                    lse[None, :, q0:q1], dq[None, q0:q1], dk[None, k0:k1], dv[None, k0:k1], causal=causal,
                    softmax_scale=softmax_scale, softcap=softcap, sink=sink, dsink=dsink,
                )  # fmt: skip
            return
        g = q.shape[2] // k.shape[2]
        s, t = _scores(q, k, softmax_scale, softcap, causal)
        lse = lse.float()
        base = torch.where(torch.isneginf(lse), torch.zeros_like(lse), lse)
        p = torch.exp(s - base[..., None])  # (b, h, sq, sk), from the merged lse
        do = dout.float()
        vf = v.float().repeat_interleave(g, dim=2)
        kf = k.float().repeat_interleave(g, dim=2)
        d = (do * out.float()).sum(-1).transpose(1, 2)  # (b, h, sq)
        dp = torch.einsum("bqhd,bkhd->bhqk", do, vf)
        if sink is not None and dsink is not None:  # this chunk's share, from rowsum(P * dP)
            dsink.sub_((torch.exp(sink.float()[None, :, None] - lse) * (p * dp).sum(-1)).sum((0, 2)))
        ds = p * (dp - d[..., None])
        if t is not None:
            ds = ds * (1 - t * t)
        ds = ds * softmax_scale
        b, sk, hk = k.shape[0], k.shape[1], k.shape[2]
        dq.add_(torch.einsum("bhqk,bkhd->bqhd", ds, kf))
        dk.add_(torch.einsum("bhqk,bqhd->bkhd", ds, q.float()).reshape(b, sk, hk, g, -1).sum(3))
        dv.add_(torch.einsum("bhqk,bqhd->bkhd", p, do).reshape(b, sk, hk, g, -1).sum(3))
