"""Autograd for ``flash_attn_func`` and ``flash_attn_varlen_func``: :class:`FlashAttnFunc` and
:class:`FlashAttnVarlenFunc` (``torch.autograd.Function``), forward and backward through the routing of
:mod:`fa4_torch.ops` (eager: the launch; under ``torch.compile``: ``torch.ops.fa4.fwd`` / ``fa4.bwd``).
The kernels' steps are in :mod:`fa4_torch.launch_bwd`.

The fifth layer of fa4-torch (``validate -> plan -> launch, launch_bwd -> ops -> autograd -> api``).

Supported for gradients: what the backward tile table has a row for (head dims 32, 64, 96, 128, 160,
192, 224, 256 and 192/128), causal or not, local windows, softcap, learnable sink, MHA/GQA/MQA; varlen
with ``cu_seqlens_q/k`` and ``seqused_q/k``. Paged K/V raises ``NotImplementedError`` and other head
dims ``UnsupportedConfigError`` (:func:`check_backward_supported`) — when the forward is called, after
its own checks and before it compiles or launches anything, so no gradient is dropped and no forward
runs for nothing. Under ``torch.compile`` that check runs at trace time; the dispatch family it reads
comes from a function Dynamo calls instead of tracing (``torch.cuda`` queries would break the graph).

The context keeps the canonical window (:func:`fa4_torch.validate.canonical_window`), the scale as a
float and the lengths as given. Seams: :func:`save_context` and :func:`backward` (the context's side
of the two functions), ``device_family`` (this module's name of the dispatch lookup),
:func:`assume_constant_result` (it sets what ``torch.compiler``'s sets: a test compares them).
"""

from __future__ import annotations

import math

import torch

from fa4_core.errors import unsupported
from fa4_sm120 import bwd_tiles
from fa4_torch import ops
from fa4_torch.dispatch import device_family
from fa4_torch.validate import KV8_DTYPES, canonical_window, check_flag, later

__all__ = ["FlashAttnFunc", "FlashAttnVarlenFunc", "check_backward_supported", "save_context", "backward"]

_LATER = "the training release (backward)"


def check_backward_supported(
    q, k, v, causal, window_size, softcap=0.0, learnable_sink=None, varlen=False, paged=False
) -> None:
    """Raise now (at the forward, before it compiles or launches) for what the backward cannot do."""
    canonical_window(window_size, bool(causal))  # under torch.compile the forward has not checked it yet
    if k.dtype in KV8_DTYPES or v.dtype in KV8_DTYPES:
        raise unsupported("requires_grad", True, "False with an FP8 K/V cache (forward only)")
    if paged:
        raise later("gradients with paged K/V (page_table)", _LATER)
    bwd_tiles.select_bwd_tile(_family(q.device), q.shape[-1], v.shape[-1])  # the table of this call


def assume_constant_result(fn):
    """``torch.compiler.assume_constant_result`` without its import of ``torch._dynamo`` (1-4 s, the
    bulk of a warm first call that needs gradients): it marks the function with this attribute and
    nothing else (read in torch 2.13, used on the GPU machine's 2.11; ``tests/torch/test_compile_paths.py``
    checks that torch still does only that)."""
    fn._dynamo_marked_constant = True
    return fn


@assume_constant_result
def _family(device: torch.device) -> str:
    """:func:`fa4_torch.dispatch.device_family`, which Dynamo calls at trace time instead of tracing
    it (``torch.cuda.get_device_capability`` inside would be a graph break)."""
    return device_family(device)


def save_context(ctx, q, k, v, out, lse, *, softmax_scale, causal, window_size, softcap, learnable_sink,
                 deterministic, cu_seqlens_q=None, cu_seqlens_k=None, seqused_q=None, seqused_k=None,
                 max_seqlen_q=None, max_seqlen_k=None, sink_index=9):  # fmt: skip
    """What :func:`backward` needs, on ``ctx``: the tensors, the canonical window, the scalars;
    ``sink_index``: the position of ``learnable_sink`` among the Function's inputs."""
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(q.shape[-1])
    is_local, left, right = canonical_window(window_size, bool(causal))
    ctx.save_for_backward(q, k, v, out, lse, learnable_sink, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k)
    ctx.softmax_scale = float(softmax_scale)
    ctx.causal = bool(causal)
    ctx.is_local = is_local
    ctx.window = (left, right)
    ctx.softcap = float(softcap)
    ctx.deterministic = deterministic
    ctx.max_seqlen_q = max_seqlen_q
    ctx.max_seqlen_k = max_seqlen_k
    ctx.sink_index = sink_index
    ctx.set_materialize_grads(False)


def backward(ctx, dout, dlse):
    """-> ``(dq, dk, dv, dsink)`` from a context :func:`save_context` filled; ``dsink`` None unless the
    sink needs a gradient."""
    q, k, v, out, lse, sink, cu_q, cu_k, used_q, used_k = ctx.saved_tensors
    want_dsink = sink is not None and ctx.needs_input_grad[ctx.sink_index]
    wl, wr = ctx.window
    return ops.backward(
        dout, q, k, v, out, lse, dlse, sink, cu_q, cu_k, used_q, used_k, ctx.softmax_scale, ctx.causal,
        ctx.is_local, wl, wr, ctx.softcap, ctx.deterministic, ctx.max_seqlen_q, ctx.max_seqlen_k, want_dsink,
    )  # fmt: skip


class FlashAttnFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, softmax_scale=None, causal=False, window_size=(None, None), pack_gqa=None,
                deterministic=False, softcap=0.0, learnable_sink=None, num_splits=1):  # fmt: skip
        check_flag("deterministic", deterministic)

        def bwd_supported():  # after the forward's checks, before it compiles or launches
            check_backward_supported(q, k, v, causal, window_size, softcap, learnable_sink)

        out, lse = ops.forward(
            q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap=softcap,
            learnable_sink=learnable_sink, num_splits=num_splits, before_launch=bwd_supported,
        )  # fmt: skip
        save_context(
            ctx, q, k, v, out, lse, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
            softcap=softcap, learnable_sink=learnable_sink, deterministic=deterministic,
        )  # fmt: skip
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        dq, dk, dv, dsink = backward(ctx, dout, dlse)
        return dq, dk, dv, None, None, None, None, None, None, dsink, None


class FlashAttnVarlenFunc(torch.autograd.Function):
    """``flash_attn_varlen_func`` with gradients for q, k, v (and the learnable sink): packed
    ``(total, heads, d)`` sequences through ``cu_seqlens_q/k``, ``seqused_q/k``; not paged K/V."""

    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None,
                seqused_q=None, seqused_k=None, page_table=None, softmax_scale=None, causal=False,
                window_size=(None, None), learnable_sink=None, softcap=0.0, num_splits=1, pack_gqa=None,
                deterministic=False):  # fmt: skip
        check_flag("deterministic", deterministic)
        paged = page_table is not None

        def bwd_supported():  # after the forward's checks, before it compiles or launches
            check_backward_supported(q, k, v, causal, window_size, softcap, learnable_sink, True, paged)

        out, lse = ops.forward(
            q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap=softcap,
            learnable_sink=learnable_sink, num_splits=num_splits, cu_seqlens_q=cu_seqlens_q,
            cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
            seqused_q=seqused_q, seqused_k=seqused_k, page_table=page_table, before_launch=bwd_supported,
        )  # fmt: skip
        save_context(
            ctx, q, k, v, out, lse, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
            softcap=softcap, learnable_sink=learnable_sink, deterministic=deterministic,
            cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, seqused_q=seqused_q,
            seqused_k=seqused_k, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, sink_index=13,
        )  # fmt: skip
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        dq, dk, dv, dsink = backward(ctx, dout, dlse)
        return (dq, dk, dv, *([None] * 10), dsink, *([None] * 4))
