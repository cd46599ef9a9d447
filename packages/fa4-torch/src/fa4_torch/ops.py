"""``torch.library`` custom ops: how fa4 appears inside ``torch.compile`` graphs.

* ``torch.ops.fa4.fwd`` wraps the whole forward launch (validation, the kernel, the split-KV combine)
  -> ``(out, lse)``;
* ``torch.ops.fa4.bwd`` wraps the whole backward (preprocess, main kernel, postprocess, dsink)
  -> ``(dq, dk, dv, dsink)``, ``dsink`` an empty fp32 tensor unless ``want_dsink``.

Each has a fake (meta) implementation that only computes output shapes, so ``torch.compile(...,
fullgraph=True)`` traces a model that calls :func:`fa4_torch.flash_attn_func` (or the varlen / KV-cache
functions), forward and backward, with no graph break. Eager calls do not go through the ops:
:func:`fa4_torch.api._flash_attn_fwd` and :func:`fa4_torch.autograd._backward` route here only while
``torch.compiler.is_compiling()``, so the eager path pays no custom-op dispatch. Optional ints travel
as ``-1`` (a window side without a bound, a ``max_seqlen`` not given).
"""

from __future__ import annotations

import torch

__all__ = ["fwd_op", "bwd_op"]


@torch.library.custom_op("fa4::fwd", mutates_args=(), device_types="cuda")
def fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    softmax_scale: float | None,
    causal: bool,
    window_left: int,
    window_right: int,
    pack_gqa: int,
    softcap: float,
    learnable_sink: torch.Tensor | None,
    num_splits: int,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    max_seqlen_q: int,
    max_seqlen_k: int,
    seqused_q: torch.Tensor | None,
    seqused_k: torch.Tensor | None,
    page_table: torch.Tensor | None,
    kv_batch_idx: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    from fa4_torch.api import _flash_attn_fwd

    return _flash_attn_fwd(
        q,
        k,
        v,
        softmax_scale,
        causal,
        (None if window_left < 0 else window_left, None if window_right < 0 else window_right),
        None if pack_gqa < 0 else bool(pack_gqa),
        softcap=softcap,
        learnable_sink=learnable_sink,
        num_splits=num_splits,
        cu_seqlens_q=cu_seqlens_q,
        cu_seqlens_k=cu_seqlens_k,
        max_seqlen_q=None if max_seqlen_q < 0 else max_seqlen_q,
        max_seqlen_k=None if max_seqlen_k < 0 else max_seqlen_k,
        seqused_q=seqused_q,
        seqused_k=seqused_k,
        page_table=page_table,
        kv_batch_idx=kv_batch_idx,
        _eager=True,
    )


@fwd_op.register_fake
def _fwd_fake(
    q,
    k,
    v,
    softmax_scale,
    causal,
    window_left,
    window_right,
    pack_gqa,
    softcap,
    learnable_sink,
    num_splits,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    seqused_q,
    seqused_k,
    page_table,
    kv_batch_idx,
):
    out = q.new_empty((*q.shape[:-1], v.shape[-1]))
    if cu_seqlens_q is not None:
        lse = q.new_empty((q.shape[1], q.shape[0]), dtype=torch.float32)
    else:
        lse = q.new_empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32)
    return out, lse


@torch.library.custom_op("fa4::bwd", mutates_args=(), device_types="cuda")
def bwd_op(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    dlse: torch.Tensor | None,
    learnable_sink: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor | None,
    cu_seqlens_k: torch.Tensor | None,
    seqused_q: torch.Tensor | None,
    seqused_k: torch.Tensor | None,
    softmax_scale: float,
    causal: bool,
    window_left: int,
    window_right: int,
    softcap: float,
    deterministic: bool,
    max_seqlen_q: int,
    max_seqlen_k: int,
    want_dsink: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward of :class:`fa4_torch.autograd.FlashAttnFunc` / ``FlashAttnVarlenFunc`` on the
    tensors they saved. The window is the canonical one (causal folded in: ``right = 0``)."""
    from fa4_torch.api import _UNBOUNDED
    from fa4_torch.autograd import _bwd

    is_local = window_left >= 0 or (window_right >= 0 and not causal)
    want_dsink = want_dsink and learnable_sink is not None
    dq, dk, dv, dsink = _bwd(
        dout,
        q,
        k,
        v,
        out,
        lse,
        dlse,
        learnable_sink,
        cu_seqlens_q,
        cu_seqlens_k,
        seqused_q,
        seqused_k,
        softmax_scale,
        causal,
        is_local,
        _UNBOUNDED if window_left < 0 else window_left,
        _UNBOUNDED if window_right < 0 else window_right,
        softcap,
        deterministic,
        None if max_seqlen_q < 0 else max_seqlen_q,
        None if max_seqlen_k < 0 else max_seqlen_k,
        want_dsink,
    )
    if dsink is None:
        dsink = torch.empty((0,), dtype=torch.float32, device=q.device)
    return dq, dk, dv, dsink


@bwd_op.register_fake
def _bwd_fake(
    dout,
    q,
    k,
    v,
    out,
    lse,
    dlse,
    learnable_sink,
    cu_seqlens_q,
    cu_seqlens_k,
    seqused_q,
    seqused_k,
    softmax_scale,
    causal,
    window_left,
    window_right,
    softcap,
    deterministic,
    max_seqlen_q,
    max_seqlen_k,
    want_dsink,
):
    dq = q.new_empty(q.shape)
    dk = q.new_empty(k.shape)
    dv = q.new_empty(v.shape)
    if want_dsink and learnable_sink is not None:
        dsink = learnable_sink.new_empty(learnable_sink.shape, dtype=torch.float32)
    else:
        dsink = q.new_empty((0,), dtype=torch.float32)
    return dq, dk, dv, dsink
