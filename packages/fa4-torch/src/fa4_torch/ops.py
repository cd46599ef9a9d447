"""``torch.library`` custom ops: how fa4 appears inside ``torch.compile`` graphs.

``torch.ops.fa4.fwd`` wraps the whole forward launch (validation, the kernel, the split-KV combine)
behind a fake (meta) implementation that only computes output shapes, so ``torch.compile(...,
fullgraph=True)`` traces a model that calls :func:`fa4_torch.flash_attn_func` (or the varlen / KV-cache
functions) with no graph break. Eager calls do not go through the op: :func:`fa4_torch.api._flash_attn_fwd`
routes here only while ``torch.compiler.is_compiling()``, so the eager path pays no custom-op
dispatch. Optional ints travel as ``-1``.
"""

from __future__ import annotations

import torch

__all__ = ["fwd_op"]


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
