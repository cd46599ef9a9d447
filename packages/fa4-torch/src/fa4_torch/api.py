"""The user API: drop-in for ``flash_attn.cute`` (FlashAttention-4's interface).

* ``flash_attn_func(q, k, v, ...) -> (out, lse)``: ``q (batch, seqlen_q, nheads, head_dim)``,
  ``k (batch, seqlen_k, nheads_kv, head_dim)``, ``v (batch, seqlen_k, nheads_kv, head_dim_v)``;
  ``out (batch, seqlen_q, nheads, head_dim_v)``; ``lse`` fp32 ``(batch, nheads, seqlen_q)``.
* ``flash_attn_varlen_func(q, k, v, qv, cu_seqlens_q, cu_seqlens_k, ...) -> (out, lse)``: packed
  ``(total, nheads, head_dim)`` sequences (int32 ``cu_seqlens`` of length ``batch + 1``),
  ``seqused_q/k`` (int32 ``(batch,)``) taking priority over ``cu_seqlens``; paged K/V
  ``(num_pages, page_size, nheads_kv, head_dim)`` with an int32 ``page_table (batch, max_pages)``;
  ``lse (nheads, total_q)``.
* ``flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, ...)``:
  FlashAttention-2 semantics (new K/V appended in place at ``cache_seqlens``, then attention over the
  first ``cache_seqlens + seqlen_new`` keys; the query aligned to the end of each cache).

``lse`` is the natural-log sum-exp. It is returned (a tensor) when ``return_lse=True`` or when the call
records gradients (grad mode on and ``q``, ``k``, ``v`` or ``learnable_sink`` requires grad), else
``None``: ``flash_attn.cute``'s rule. Without ``return_lse`` that ``lse`` is detached (a gradient
through it is ignored, as upstream drops ``dlse``). Causal masks
are aligned bottom-right. A query that sees no key gets ``out = 0`` and ``lse = -inf`` (``lse =
sink`` with a learnable sink). ``num_splits``: 1 = no split, ``1 < n <= 64`` = split the keys ``n``
ways and merge through the LSEs, 0 = a heuristic from the SM count, the tiles and the key length.

Every argument is validated before anything compiles, launches or is written (the KV-cache append
included: after an error the caches are as they were); what the kernels cannot do raises
:class:`fa4_core.errors.UnsupportedConfigError` naming the argument as the caller passed it, the value
and what is supported, a bool argument of another type ``TypeError`` (features of a later release
raise ``NotImplementedError`` naming it). The two attention functions take ``flash_attn.cute``
4.0.0b36's parameters in its order (``tests/torch/test_signature.py``); those fa4 has no kernel for
(``qv``, ``gather_kv_indices``, ``score_mod``, ``score_mod_bwd``, ``mask_mod``, ``aux_tensors``,
``aux_scalars``, ``block_sparse_tensors(_bwd)``, ``gather_bwd_recompute_p``, ``gather_bwd_token_chunk``,
``scheduler_metadata``, ``seqlen_k_per_split``) are accepted at their default and raise
``NotImplementedError`` naming them otherwise; ``min_seqlen_k`` (a lower bound of the key lengths) and
``disable_scheduler_metadata`` are hints that cannot change the result, checked and ignored. Nothing on these paths reads device memory on the host (no
``.item()``): ``max_seqlen_q`` is used for the grid when given, the total length otherwise.

The top layer of fa4-torch (``validate -> plan -> launch, launch_bwd -> ops -> autograd -> api``): the
three functions only. Each checks its bool arguments and what only it has (the KV-cache call's new
``k``/``v`` and ``cache_seqlens``, :func:`fa4_torch.validate.check_kvcache`), then runs the forward
through :func:`fa4_torch.ops.forward`, or through :mod:`fa4_torch.autograd` when an input requires grad.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from fa4_core.errors import UnsupportedConfigError, unsupported
from fa4_torch import launch, launch_q8, ops
from fa4_torch.autograd import FlashAttnFunc, FlashAttnVarlenFunc, check_backward_supported
from fa4_torch.validate import (
    DEFAULT_NAMES,
    KV8_DTYPES,
    KVCACHE_NAMES,
    check_backward_args,
    check_flag,
    check_hints,
    check_kvcache,
    check_max_seqlen,
    check_sdpa,
    forward_args,
    fp8_input_args,
    fp8_input_varlen_args,
    later,
    named_as,
    needs_grad,
    quantized_args,
    quantized_varlen_args,
    reject_extras,
    reject_flag,
)

__all__ = [
    "flash_attn_func",
    "flash_attn_varlen_func",
    "flash_attn_with_kvcache",
    "attention_backward",
    "quantized_attn_func",
    "quantized_attn_varlen_func",
    "scaled_dot_product_attention",
]


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qv: torch.Tensor | None = None,
    gather_kv_indices: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int | None, int | None] = (None, None),
    learnable_sink: torch.Tensor | None = None,
    softcap: float = 0.0,
    num_splits: int = 1,
    pack_gqa: bool | None = None,
    deterministic: bool = False,
    score_mod: Callable[..., Any] | None = None,
    score_mod_bwd: Callable[..., Any] | None = None,
    mask_mod: Callable[..., Any] | None = None,
    aux_tensors: list[torch.Tensor] | None = None,
    aux_scalars: tuple[Any, ...] | None = None,
    block_sparse_tensors: Any = None,
    block_sparse_tensors_bwd: Any = None,
    return_lse: bool = False,
    gather_bwd_recompute_p: bool = False,
    gather_bwd_token_chunk: int | None = None,
    *,
    q_descale: torch.Tensor | None = None,
    k_descale: torch.Tensor | None = None,
    v_descale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attention forward ``softmax(q kᵀ · scale) v``. Returns ``(out, lse)``; see the module docstring.

    ``flash_attn.cute``'s signature; the arguments from ``qv`` to ``gather_bwd_token_chunk`` that fa4
    has no kernel for must keep their default (``NotImplementedError`` naming the argument).

    FlashAttention-3's FP8 convention (keyword only): float8_e4m3fn ``q``, ``k``, ``v`` with fp32
    ``q_descale``/``k_descale``/``v_descale`` (one element or ``(batch, nheads_kv)``; None is 1.0)
    run the 8-bit forward (:func:`quantized_attn_func`'s kernel, FP8 Q·Kᵀ on the values as given,
    fp32 accumulation) on ``q * q_descale``, ... ; ``out`` is bf16; forward only, no splits
    (docs/quantized.md)."""
    if (
        qv is not None
        or gather_kv_indices is not None
        or score_mod is not None
        or score_mod_bwd is not None
        or mask_mod is not None
        or aux_tensors is not None
        or aux_scalars is not None
        or block_sparse_tensors is not None
        or block_sparse_tensors_bwd is not None
        or gather_bwd_token_chunk is not None
    ):
        reject_extras(
            qv=qv,
            gather_kv_indices=gather_kv_indices,
            score_mod=score_mod,
            score_mod_bwd=score_mod_bwd,
            mask_mod=mask_mod,
            aux_tensors=aux_tensors,
            aux_scalars=aux_scalars,
            block_sparse_tensors=block_sparse_tensors,
            block_sparse_tensors_bwd=block_sparse_tensors_bwd,
            gather_bwd_token_chunk=gather_bwd_token_chunk,
        )
    if gather_bwd_recompute_p is not False:
        reject_flag("gather_bwd_recompute_p", gather_bwd_recompute_p)
    check_flag("causal", causal)
    check_flag("deterministic", deterministic)
    check_flag("return_lse", return_lse)
    descales = q_descale is not None or k_descale is not None or v_descale is not None
    if descales or getattr(k, "dtype", None) in KV8_DTYPES:  # one test on the 16-bit calls' path
        if descales or getattr(q, "dtype", None) in KV8_DTYPES:
            a = fp8_input_args(
                q, k, v, causal, softmax_scale, window_size, learnable_sink, softcap, num_splits, return_lse,
                (q_descale, k_descale, v_descale),
            )  # fmt: skip
            out, lse = launch_q8.forward_quantized(a)
            return out, (lse if return_lse else None)
        if getattr(v, "dtype", None) in KV8_DTYPES:
            raise unsupported(
                "(k.dtype, v.dtype)", (k.dtype, v.dtype),
                "q's dtype; an FP8 K/V cache goes through flash_attn_varlen_func or flash_attn_with_kvcache "
                "with k_descale/v_descale (or q, k, v all float8_e4m3fn with q_descale, k_descale, v_descale)",
            )  # fmt: skip
    if needs_grad(q, k, v, learnable_sink):
        out, lse = FlashAttnFunc.apply(
            q,
            k,
            v,
            softmax_scale,
            causal,
            window_size,
            pack_gqa,
            deterministic,
            softcap,
            learnable_sink,
            num_splits,
        )
        return out, (lse if return_lse else lse.detach())  # upstream ignores dlse then
    # positional, in ops.forward's order: a keyword argument costs every cached call time
    out, lse = ops.forward(
        q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink, num_splits
    )
    return out, (lse if return_lse else None)


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    qv: torch.Tensor | None = None,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    min_seqlen_k: int | None = None,
    seqused_q: torch.Tensor | None = None,
    seqused_k: torch.Tensor | None = None,
    gather_kv_indices: torch.Tensor | None = None,
    page_table: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int | None, int | None] = (None, None),
    learnable_sink: torch.Tensor | None = None,
    softcap: float = 0.0,
    num_splits: int = 1,
    pack_gqa: bool | None = None,
    deterministic: bool = False,
    score_mod: Callable[..., Any] | None = None,
    score_mod_bwd: Callable[..., Any] | None = None,
    mask_mod: Callable[..., Any] | None = None,
    block_sparse_tensors: Any = None,
    aux_tensors: list[torch.Tensor] | None = None,
    aux_scalars: tuple[Any, ...] | None = None,
    return_lse: bool = False,
    scheduler_metadata: Any = None,
    seqlen_k_per_split: int | None = None,
    disable_scheduler_metadata: bool = False,
    gather_bwd_recompute_p: bool = False,
    gather_bwd_token_chunk: int | None = None,
    *,
    q_descale: torch.Tensor | None = None,
    k_descale: torch.Tensor | None = None,
    v_descale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Variable-length (and paged-K/V) attention; see the module docstring. Returns ``(out, lse)``.

    float8_e4m3fn ``k``/``v`` (an FP8 KV cache) with fp32 ``k_descale``/``v_descale`` (keyword only,
    as in :func:`flash_attn_with_kvcache`): forward only, eager only. float8_e4m3fn ``q``, ``k``,
    ``v`` with ``q_descale``/``k_descale``/``v_descale`` (FlashAttention-3's convention, one element
    or ``(batch, nheads_kv)`` per sequence): packed sequences through the 8-bit forward, as
    :func:`flash_attn_func`'s FP8 inputs (``out`` bf16).

    ``flash_attn.cute``'s signature; ``min_seqlen_k`` and ``disable_scheduler_metadata`` are checked
    and ignored (hints that cannot change the result); the other arguments fa4 has no kernel for must
    keep their default (``NotImplementedError`` naming the argument)."""
    if (
        qv is not None
        or gather_kv_indices is not None
        or score_mod is not None
        or score_mod_bwd is not None
        or mask_mod is not None
        or block_sparse_tensors is not None
        or aux_tensors is not None
        or aux_scalars is not None
        or scheduler_metadata is not None
        or seqlen_k_per_split is not None
        or gather_bwd_token_chunk is not None
    ):
        reject_extras(
            qv=qv,
            gather_kv_indices=gather_kv_indices,
            score_mod=score_mod,
            score_mod_bwd=score_mod_bwd,
            mask_mod=mask_mod,
            block_sparse_tensors=block_sparse_tensors,
            aux_tensors=aux_tensors,
            aux_scalars=aux_scalars,
            scheduler_metadata=scheduler_metadata,
            seqlen_k_per_split=seqlen_k_per_split,
            gather_bwd_token_chunk=gather_bwd_token_chunk,
        )
    if gather_bwd_recompute_p is not False:
        reject_flag("gather_bwd_recompute_p", gather_bwd_recompute_p)
    if min_seqlen_k is not None or disable_scheduler_metadata is not False:
        check_hints(min_seqlen_k, disable_scheduler_metadata)
    check_flag("causal", causal)
    check_flag("deterministic", deterministic)
    check_flag("return_lse", return_lse)
    if q_descale is not None or getattr(q, "dtype", None) in KV8_DTYPES:  # FP8 q, k, v
        a = fp8_input_varlen_args(
            q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k,
            page_table, causal, softmax_scale, window_size, learnable_sink, softcap, num_splits, return_lse,
            (q_descale, k_descale, v_descale),
        )  # fmt: skip
        out, lse = launch_q8.forward_quantized_varlen(a)
        return out, (lse if return_lse else None)
    kv8 = k_descale is not None or v_descale is not None or getattr(k, "dtype", None) in KV8_DTYPES
    if kv8:
        if needs_grad(q, k, v, learnable_sink, k_descale, v_descale):
            raise unsupported("requires_grad", True, "False with an FP8 K/V cache (forward only)")
        out, lse = ops.forward_kv8(
            q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink, num_splits,
            cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k, page_table, None,
            None, DEFAULT_NAMES, k_descale, v_descale,
        )  # fmt: skip
        return out, (lse if return_lse else None)
    if needs_grad(q, k, v, learnable_sink):
        out, lse = FlashAttnVarlenFunc.apply(
            q,
            k,
            v,
            cu_seqlens_q,
            cu_seqlens_k,
            max_seqlen_q,
            max_seqlen_k,
            seqused_q,
            seqused_k,
            page_table,
            softmax_scale,
            causal,
            window_size,
            learnable_sink,
            softcap,
            num_splits,
            pack_gqa,
            deterministic,
        )
        return out, (lse if return_lse else lse.detach())  # upstream ignores dlse then
    out, lse = ops.forward(  # positional, in ops.forward's order
        q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink, num_splits, cu_seqlens_q,
        cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k, page_table,
    )  # fmt: skip
    return out, (lse if return_lse else None)


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    cache_seqlens: int | torch.Tensor | None = None,
    page_table: torch.Tensor | None = None,
    cache_batch_idx: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int | None, int | None] = (None, None),
    softcap: float = 0.0,
    num_splits: int = 0,
    return_softmax_lse: bool = False,
    *,
    learnable_sink: torch.Tensor | None = None,
    pack_gqa: bool | None = None,
    block_table: torch.Tensor | None = None,
    k_descale: torch.Tensor | None = None,
    v_descale: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Decode / chunked prefill against a KV cache (FlashAttention-2 semantics).

    ``q (batch, seqlen_q, nheads, d)``; ``k_cache/v_cache (batch_cache, seqlen_cache, nheads_kv, d)``
    or paged ``(num_pages, page_size, nheads_kv, d)`` with ``page_table (batch, max_pages)``
    (``block_table=``, FlashAttention-2's name of it, is accepted too: errors then name
    ``block_table``; passing both is an error); ``cache_seqlens`` (int or int32 ``(batch,)``) is the
    used length of each cache before the append;
    optional ``k/v (batch, seqlen_new, nheads_kv, d)`` (the caches' dtype and device) are written into
    the cache in place at ``cache_seqlens``, once every argument has been checked, before the attention.
    ``cache_seqlens + seqlen_new`` must fit the cache: checked for an int, for a CPU tensor and with
    ``FA4_VALIDATE_DATA=1``; a CUDA tensor's values are the caller's guarantee (reading them would
    synchronise). ``cache_batch_idx`` (int32 ``(batch,)``) picks the cache slot of each batch entry
    (contiguous caches). Returns ``out``, or ``(out, lse)`` with ``return_softmax_lse=True``.

    FP8 cache: float8_e4m3fn ``k_cache``/``v_cache`` with fp32 ``k_descale``/``v_descale`` (0-d, ``(1,)``
    or ``(batch, nheads_kv)``, indexed by q's batch; None is 1.0): attention over ``k_cache *
    k_descale`` and ``v_cache * v_descale``, ``out`` in q's dtype; new ``k``/``v`` (q's dtype) are
    quantized into the cache as ``saturate(k / k_descale)`` (docs/api.md, "FP8 KV cache").
    """
    if block_table is not None:  # FlashAttention-2's name of page_table
        if page_table is not None:
            raise unsupported(
                "block_table",
                "a tensor",
                "None when page_table is given (FlashAttention-2's name of page_table)",
            )
        try:
            return flash_attn_with_kvcache(
                q, k_cache, v_cache, k, v, cache_seqlens, block_table, cache_batch_idx, softmax_scale, causal,
                window_size, softcap, num_splits, return_softmax_lse, learnable_sink=learnable_sink,
                pack_gqa=pack_gqa, k_descale=k_descale, v_descale=v_descale,
            )  # fmt: skip
        except UnsupportedConfigError as e:  # name the argument as the caller passed it
            raise named_as(e, "page_table", "block_table") from None
    check_flag("causal", causal)
    check_flag("return_softmax_lse", return_softmax_lse)
    if needs_grad(q, k_cache, v_cache, k, v, learnable_sink, k_descale, v_descale):
        raise later("gradients through flash_attn_with_kvcache (an inference path)", None)
    # Every argument is checked before the append writes into the caches: the new k/v and the cache
    # lengths here, everything else in the forward's validation, which appends (before_launch) only once
    # its own checks have passed.
    cache_seqlens = check_kvcache(q, k_cache, v_cache, k, v, cache_seqlens, page_table, cache_batch_idx)
    append = None
    seqused_k = cache_seqlens
    if k is not None:
        seqused_k = cache_seqlens + k.shape[1]

        def append(kd=None, vd=None):  # once every check has passed (an FP8 cache: the checked descales)
            launch.append_kv(k_cache, v_cache, k, v, cache_seqlens, page_table, cache_batch_idx, kd, vd)

    if k_descale is None and v_descale is None and k_cache.dtype not in KV8_DTYPES:
        out, lse = ops.forward(  # positional, in ops.forward's order (no cu_seqlens_q/k, max_seqlen_q/k, seqused_q)
            q, k_cache, v_cache, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink,
            num_splits, None, None, None, None, None, seqused_k, page_table, cache_batch_idx, append,
            KVCACHE_NAMES,
        )  # fmt: skip
    else:  # an FP8 cache (or descales given, which the validation then rejects)
        out, lse = ops.forward_kv8(
            q, k_cache, v_cache, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink,
            num_splits, None, None, None, None, None, seqused_k, page_table, cache_batch_idx, append,
            KVCACHE_NAMES, k_descale, v_descale,
        )  # fmt: skip
    return (out, lse) if return_softmax_lse else out


def attention_backward(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    *,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int | None, int | None] = (None, None),
    softcap: float = 0.0,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    deterministic: bool = False,
    learnable_sink: torch.Tensor | None = None,
    dq: torch.Tensor | None = None,
    dk: torch.Tensor | None = None,
    dv: torch.Tensor | None = None,
    dsink: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attention backward on an **external** ``out``/``lse`` -> ``(dq, dk, dv)``.

    The gradients of ``softmax(q kᵀ · scale) v`` for ``dout``, with the probabilities recomputed as
    ``exp(q kᵀ · scale - lse)`` and ``D = rowsum(dout · out)`` from the given ``out`` and ``lse``:
    pass the forward's own to get :func:`flash_attn_func`'s gradients, or a merged ``out``/``lse``
    (over more keys than ``k`` holds: ring attention, split keys) to get this key chunk's share of
    them. Shapes as :func:`flash_attn_func` (dense) or :func:`flash_attn_varlen_func` (with
    ``cu_seqlens_q/k``), the causal mask bottom-right aligned; ``lse`` fp32 ``(batch, nheads,
    seqlen_q)`` / ``(nheads, total_q)``. ``dq``/``dk``/``dv``: optional buffers (fp32 or the inputs'
    dtype) the gradients are **added** into, and returned; otherwise new tensors in q's dtype.
    ``learnable_sink`` with a ``dsink`` buffer (fp32 ``(nheads,)``): this key chunk's share of the
    sink's gradient, ``-Σ_rows exp(sink - lse) · rowsum(P · dP)`` over the chunk's keys, is added into
    ``dsink`` (the shares of all chunks sum to the sink's gradient; ``lse`` must include the sink).
    Every argument is checked before anything launches (the forward's checks and the backward's
    head dims; :class:`~fa4_core.errors.UnsupportedConfigError`)."""
    check_flag("causal", causal)
    check_flag("deterministic", deterministic)
    check_max_seqlen("max_seqlen_q", max_seqlen_q, "query")
    check_max_seqlen("max_seqlen_k", max_seqlen_k, "key")
    a = forward_args(
        q, k, v, softmax_scale, causal, window_size, None, softcap, learnable_sink, 1, cu_seqlens_q,
        cu_seqlens_k, max_seqlen_q, max_seqlen_k, None, None, None, None,
    )  # fmt: skip
    check_backward_args(a, dout, out, lse, dq, dk, dv, dsink)
    check_backward_supported(q, k, v, causal, window_size, softcap, learnable_sink, cu_seqlens_q is not None)
    want_dsink = dsink is not None
    gq, gk, gv, gsink = ops.backward(
        dout, q, k, v, out, lse, None, learnable_sink, cu_seqlens_q, cu_seqlens_k, None, None, a.softmax_scale,
        a.causal, a.is_local, a.window_left, a.window_right, a.softcap, deterministic, max_seqlen_q, max_seqlen_k,
        want_dsink,
    )  # fmt: skip
    if want_dsink:
        dsink.add_(gsink)
    return (
        gq if dq is None else dq.add_(gq),
        gk if dk is None else dk.add_(gk),
        gv if dv is None else dv.add_(gv),
    )


def quantized_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    softmax_scale: float | None = None,
    window_size: tuple[int | None, int | None] = (None, None),
    learnable_sink: torch.Tensor | None = None,
    softcap: float = 0.0,
    qk: str = "int8",
    pv_accum: str = "fp32",
    return_lse: bool = False,
):
    """8-bit attention (forward only): ``q (batch, seqlen_q, nheads, d)``, ``k``/``v (batch, seqlen_k,
    nheads_kv, d)`` in fp16/bf16, ``d`` 64, 128 or 256; ``causal``, ``window_size``, ``learnable_sink``
    and ``softcap`` as :func:`flash_attn_func`'s; Q·Kᵀ in ``qk`` (``"int8"``: per-block INT8 with K
    smoothed, the default; ``"fp8"``: per-block e4m3), P·V in e4m3 with ``pv_accum`` accumulation
    (``"fp16"``: per key block, the GeForce cards' double rate). Returns ``out`` in the input dtype,
    and ``(out, lse)`` with ``return_lse``. ``docs/quantized.md`` has what it costs in accuracy."""
    a = quantized_args(
        q, k, v, causal, softmax_scale, window_size, learnable_sink, softcap, qk, pv_accum, return_lse
    )
    out, lse = launch_q8.forward_quantized(a)
    return (out, lse) if return_lse else out


def quantized_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    causal: bool = False,
    softmax_scale: float | None = None,
    window_size: tuple[int | None, int | None] = (None, None),
    learnable_sink: torch.Tensor | None = None,
    softcap: float = 0.0,
    qk: str = "int8",
    pv_accum: str = "fp32",
    return_lse: bool = False,
):
    """The varlen form of :func:`quantized_attn_func`: packed ``q (total_q, nheads, d)``, ``k``/``v
    (total_k, nheads_kv, d)``, int32 ``cu_seqlens_q``/``cu_seqlens_k (batch + 1,)``; causal masks are
    bottom-right aligned per sequence. Returns ``out (total_q, nheads, d)``, and ``(out, lse)`` with
    ``return_lse`` (``lse (nheads, total_q)``). The lengths are read on the host (one synchronisation);
    ``max_seqlen_*`` are optional upper bounds."""
    a = quantized_varlen_args(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale, window_size,
        learnable_sink, softcap, qk, pv_accum, return_lse,
    )  # fmt: skip
    out, lse = launch_q8.forward_quantized_varlen(a)
    return (out, lse) if return_lse else out


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    precision: str = "int8",
    pv_accum: str = "fp32",
) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention``'s shape, for pipelines that patch it:
    ``(batch, heads, seqlen, dim)`` tensors, ``is_causal`` (equal query and key lengths only: SDPA
    aligns the mask top-left, fa4's kernels bottom-right), ``scale``, ``enable_gqa``. ``precision``: ``"int8"`` / ``"fp8"`` run
    :func:`quantized_attn_func` (forward only; ``pv_accum`` as there), ``"native"`` runs
    :func:`flash_attn_func` in the inputs' fp16/bf16. A mask tensor or dropout raises
    (``UnsupportedConfigError``). Returns ``(batch, heads, seqlen_q, dim_v)`` (a transposed view)."""
    check_sdpa(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa, precision)
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))
    if precision == "native":
        out = flash_attn_func(q, k, v, softmax_scale=scale, causal=is_causal)
        out = out[0] if isinstance(out, tuple) else out
    else:
        out = quantized_attn_func(
            q, k, v, causal=is_causal, softmax_scale=scale, qk=precision, pv_accum=pv_accum
        )
    return out.transpose(1, 2)
