"""``torch.library`` custom ops, and the one place that routes a call to them or past them.

* ``torch.ops.fa4.fwd`` wraps the whole forward launch (validation, the kernel, the split-KV combine:
  :func:`fa4_torch.launch.forward`) -> ``(out, lse)``;
* ``torch.ops.fa4.bwd`` wraps the whole backward (preprocess, main kernel, postprocess, dsink:
  :func:`fa4_torch.launch_bwd.backward`) -> ``(dq, dk, dv, dsink)``, ``dsink`` an empty fp32 tensor
  unless ``want_dsink``.

Each has a fake (meta) implementation that only computes output shapes, so ``torch.compile(...,
fullgraph=True)`` traces a model that calls :func:`fa4_torch.flash_attn_func` (or the varlen / KV-cache
functions), forward and backward, with no graph break.

:func:`forward` and :func:`backward` are the routing, the pattern of quack's ``cute_op``
(``quack.dsl.torch_library_op``): while ``torch.compiler.is_compiling()`` (constant-folded to True by
Dynamo at trace time) a call becomes the op, a graph node; in eager it calls the launch directly, so
the eager path pays no custom-op dispatch. The schemas speak ``torch.library``'s types: an optional
int travels as ``-1`` (a window side without a bound, a ``max_seqlen`` not given, ``pack_gqa=None``);
:func:`backward` turns the canonical window (:data:`fa4_torch.validate.UNBOUNDED`) into that and
``fa4::bwd`` turns it back.

The fourth layer of fa4-torch (``validate -> plan -> launch, launch_bwd -> ops -> autograd -> api``).
"""

from __future__ import annotations

import torch

from fa4_torch import launch, launch_bwd, validate
from fa4_torch.validate import DEFAULT_NAMES, UNBOUNDED

__all__ = ["fwd_op", "bwd_op", "forward", "forward_kv8", "backward"]


# ---------------------------------------------------------------------------------- routing
def forward(
    q,
    k,
    v,
    softmax_scale,
    causal,
    window_size,
    pack_gqa,
    softcap=0.0,
    learnable_sink=None,
    num_splits=1,
    cu_seqlens_q=None,
    cu_seqlens_k=None,
    max_seqlen_q=None,
    max_seqlen_k=None,
    seqused_q=None,
    seqused_k=None,
    page_table=None,
    kv_batch_idx=None,
    before_launch=None,
    names=DEFAULT_NAMES,
):
    """The forward of every API function -> ``(out, lse)``: eager, :func:`fa4_torch.launch.forward`
    (its arguments, in its order); under ``torch.compile``, ``before_launch`` (traced as ordinary torch
    ops) and then ``torch.ops.fa4.fwd``, which validates and launches when the graph runs. An FP8 K/V
    cache goes through :func:`forward_kv8`."""
    if max_seqlen_q is not None or max_seqlen_k is not None:  # not in the memo keys: checked first
        validate.check_max_seqlen("max_seqlen_q", max_seqlen_q, "query")
        validate.check_max_seqlen("max_seqlen_k", max_seqlen_k, "key")
    if torch.compiler.is_compiling():
        if getattr(k, "dtype", None) in validate.KV8_DTYPES:
            raise validate.later("an FP8 K/V cache under torch.compile", None)
        if before_launch is not None:  # the KV-cache append is traced as ordinary torch ops
            before_launch()
        left, right = window_size if isinstance(window_size, (tuple, list)) else (None, None)
        return fwd_op(
            q,
            k,
            v,
            softmax_scale,
            bool(causal),
            -1 if left is None else left,
            -1 if right is None else right,
            -1 if pack_gqa is None else int(pack_gqa),
            float(softcap),
            learnable_sink,
            num_splits,
            cu_seqlens_q,
            cu_seqlens_k,
            -1 if max_seqlen_q is None else max_seqlen_q,
            -1 if max_seqlen_k is None else max_seqlen_k,
            seqused_q,
            seqused_k,
            page_table,
            kv_batch_idx,
        )
    return launch.forward(  # positional: each keyword costs a cached call time
        q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink, num_splits,
        cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k, page_table,
        kv_batch_idx, before_launch, names,
    )  # fmt: skip


def forward_kv8(
    q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink, num_splits, cu_seqlens_q,
    cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k, page_table, kv_batch_idx, before_launch,
    names, k_descale, v_descale,
):  # fmt: skip
    """The forward over an FP8 K/V cache (or with descales given) -> ``(out, lse)``: eager only
    (:func:`fa4_torch.launch.forward_kv8`); under ``torch.compile`` a ``NotImplementedError``."""
    if torch.compiler.is_compiling():
        raise validate.later("an FP8 K/V cache under torch.compile", None)
    if max_seqlen_q is not None or max_seqlen_k is not None:
        validate.check_max_seqlen("max_seqlen_q", max_seqlen_q, "query")
        validate.check_max_seqlen("max_seqlen_k", max_seqlen_k, "key")
    return launch.forward_kv8(
        q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink, num_splits,
        cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k, page_table,
        kv_batch_idx, before_launch, names, k_descale, v_descale,
    )  # fmt: skip


def backward(dout, q, k, v, out, lse, dlse, sink, cu_q, cu_k, used_q, used_k, softmax_scale, causal, is_local,
             wl, wr, softcap, deterministic, max_seqlen_q, max_seqlen_k, want_dsink):  # fmt: skip
    """The backward on the tensors the autograd functions saved -> ``(dq, dk, dv, dsink)``, ``dsink``
    None unless ``want_dsink``: eager, :func:`fa4_torch.launch_bwd.backward` (its arguments: the
    canonical window ``wl``/``wr``, ``max_seqlen_q/k`` None when not given); under ``torch.compile``,
    ``torch.ops.fa4.bwd``."""
    if torch.compiler.is_compiling():
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv, dsink = bwd_op(
            dout, q, k, v, out, lse, dlse, sink, cu_q, cu_k, used_q, used_k, softmax_scale, causal,
            -1 if wl >= UNBOUNDED else wl, -1 if wr >= UNBOUNDED else wr, softcap, deterministic,
            -1 if max_seqlen_q is None else max_seqlen_q, -1 if max_seqlen_k is None else max_seqlen_k,
            want_dsink,
        )  # fmt: skip
        return dq, dk, dv, (dsink if want_dsink else None)
    return launch_bwd.backward(
        dout, q, k, v, out, lse, dlse, sink, cu_q, cu_k, used_q, used_k, softmax_scale, causal, is_local,
        wl, wr, softcap, deterministic, max_seqlen_q, max_seqlen_k, want_dsink,
    )  # fmt: skip


# ---------------------------------------------------------------------------------- fa4::fwd
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
    """The forward of a compiled graph: :func:`fa4_torch.launch.forward` on the schema's arguments."""
    max_seqlen_q = None if max_seqlen_q < 0 else max_seqlen_q
    max_seqlen_k = None if max_seqlen_k < 0 else max_seqlen_k
    if max_seqlen_q is not None or max_seqlen_k is not None:
        validate.check_max_seqlen("max_seqlen_q", max_seqlen_q, "query")
        validate.check_max_seqlen("max_seqlen_k", max_seqlen_k, "key")
    return launch.forward(
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
        max_seqlen_q=max_seqlen_q,
        max_seqlen_k=max_seqlen_k,
        seqused_q=seqused_q,
        seqused_k=seqused_k,
        page_table=page_table,
        kv_batch_idx=kv_batch_idx,
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


# ---------------------------------------------------------------------------------- fa4::bwd
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
    is_local = window_left >= 0 or (window_right >= 0 and not causal)
    want_dsink = want_dsink and learnable_sink is not None
    dq, dk, dv, dsink = launch_bwd.backward(
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
        UNBOUNDED if window_left < 0 else window_left,
        UNBOUNDED if window_right < 0 else window_right,
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
