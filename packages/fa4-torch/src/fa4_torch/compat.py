"""FlashAttention-2 style names for drop-in use: ``from fa4_torch.compat import flash_attn_func``.

The functions take FlashAttention-2's arguments (``flash_attn.flash_attn_interface``) and map them
onto :mod:`fa4_torch.api` (so validation, dispatch and gradients are the same):

* ``flash_attn_func(q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
  deterministic, return_attn_probs)`` returns ``out``, or ``(out, softmax_lse, None)`` with
  ``return_attn_probs=True``;
* ``flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, ...,
  block_table=None)``: packed ``(total, nheads, head_dim)`` sequences; with ``block_table`` the K/V
  are paged ``(num_blocks, page_size, nheads_kv, head_dim)`` and ``cu_seqlens_k`` gives the key
  lengths (mapped to fa4's ``page_table`` and ``seqused_k``);
* ``flash_attn_qkvpacked_func(qkv (b, s, 3, h, d), ...)``, ``flash_attn_kvpacked_func(q,
  kv (b, s_k, 2, h_k, d), ...)`` and their varlen forms: ``q``, ``k``, ``v`` are views of the packed
  tensor (no copy; the gradient reaches the packed tensor through them);
* ``flash_attn_with_kvcache(q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens,
  cache_batch_idx, cache_leftpad, block_table, ...)``: FlashAttention-2's argument order on top of
  :func:`fa4_torch.api.flash_attn_with_kvcache` (same semantics; ``block_table`` is the page table).

Differences from FlashAttention-2:

* ``return_attn_probs=True`` returns ``(out, softmax_lse, None)``: the third value (FlashAttention-2's
  ``S_dmask``, the dropout mask / attention probabilities, meaningful only for testing with dropout)
  is never materialised. ``softmax_lse`` is the natural-log sum-exp, fp32, ``(batch, nheads,
  seqlen_q)`` or ``(nheads, total_q)`` for varlen, as in FlashAttention-2.
* Dropout (``dropout_p != 0``), ALiBi (``alibi_slopes``), rotary embedding inside the KV-cache call
  (``rotary_cos/rotary_sin``) and ``cache_leftpad`` raise ``NotImplementedError`` naming the feature.
* Anything the kernels cannot do raises :class:`fa4_core.errors.UnsupportedConfigError` (a
  ``ValueError``) as :mod:`fa4_torch.api` does, naming FlashAttention-2's arguments (``block_table``,
  ``cu_seqlens_k``, ``return_attn_probs``); FlashAttention-2 raises ``RuntimeError`` there. A bool
  argument of another type (``causal="False"``) raises ``TypeError``.
* ``softcap=None`` is accepted as ``0.0`` (no capping).
"""

from __future__ import annotations

import math
import re

import torch

from fa4_core.errors import UnsupportedConfigError, unsupported
from fa4_torch import api
from fa4_torch.validate import check_cu_data, check_flag, check_max_seqlen, check_tensor, reads_data

__all__ = [
    "flash_attn_func",
    "flash_attn_varlen_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_with_kvcache",
]

_NOT_PLANNED = "no release planned for SM120"


# ---------------------------------------------------------------------------------- argument mapping
def reject_dropout_alibi(dropout_p=0.0, alibi_slopes=None) -> None:
    """Dropout and ALiBi: NotImplementedError naming the feature (before anything else is checked);
    also what ``fa4_torch.integrations.transformers`` says about a model's attention dropout."""
    if (
        isinstance(dropout_p, bool)
        or not isinstance(dropout_p, (int, float))
        or not math.isfinite(dropout_p)
        or not 0.0 <= dropout_p <= 1.0
    ):
        raise unsupported("dropout_p", dropout_p, "0.0 (fa4 has no attention dropout)")
    if dropout_p != 0.0:
        raise NotImplementedError(
            f"attention dropout (dropout_p={dropout_p}) is not implemented in fa4 ({_NOT_PLANNED}); "
            "pass dropout_p=0.0"
        )
    if alibi_slopes is not None:
        raise NotImplementedError(
            f"ALiBi (alibi_slopes) is not implemented in fa4 ({_NOT_PLANNED}); pass alibi_slopes=None"
        )


def _softcap(softcap):
    return 0.0 if softcap is None else softcap


_PAGE_TABLE = re.compile(r"\bpage_table\b")


def _fa2_named(e: UnsupportedConfigError) -> UnsupportedConfigError:
    """``e`` with fa4's ``page_table`` called ``block_table`` (FlashAttention-2's name) in its message:
    the error of a call that passed ``block_table``."""
    msg = str(e)
    if not _PAGE_TABLE.search(msg):
        return e
    return UnsupportedConfigError(_PAGE_TABLE.sub("block_table", msg)).with_traceback(e.__traceback__)


def _check_block_lengths(q, k, cu_seqlens_q, cu_seqlens_k, block_table) -> None:
    """``cu_seqlens_k`` with a ``block_table``: the prefix sums of the key lengths, which fa4 takes as
    per-sequence lengths (``seqused_k``); checked here so that errors name ``cu_seqlens_k``."""
    check_tensor("cu_seqlens_k", cu_seqlens_k, 1, (torch.int32,))
    if isinstance(cu_seqlens_q, torch.Tensor) and cu_seqlens_q.dim() == 1:
        if cu_seqlens_k.shape != cu_seqlens_q.shape:
            raise unsupported(
                "cu_seqlens_k.shape", tuple(cu_seqlens_k.shape), f"cu_seqlens_q's {tuple(cu_seqlens_q.shape)}"
            )
    if isinstance(q, torch.Tensor) and cu_seqlens_k.device != q.device:
        raise unsupported("cu_seqlens_k.device", str(cu_seqlens_k.device), f"q's device {q.device}")
    if reads_data(cu_seqlens_k):
        lens = check_cu_data("cu_seqlens_k", cu_seqlens_k, None)
        shaped = isinstance(k, torch.Tensor) and k.dim() == 4 and isinstance(block_table, torch.Tensor)
        if shaped and block_table.dim() == 2 and k.shape[1] > 0 and lens.numel():  # page size 0: api's error
            cap = block_table.shape[1] * k.shape[1]
            if int(lens.max()) > cap:
                raise unsupported(
                    "cu_seqlens_k",
                    cu_seqlens_k.tolist()[:16],
                    f"key lengths of at most {cap} (block_table.shape[1] * page_size)",
                )


def _result(out, lse, return_attn_probs: bool):
    return (out, lse, None) if return_attn_probs else out


def _unpack(name: str, t, ndim: int, axis: int, count: int) -> tuple[torch.Tensor, ...]:
    """Views ``t.select(axis, i)`` for ``i < count`` after checking the packed shape."""
    if not isinstance(t, torch.Tensor):
        raise unsupported(name, type(t).__name__, "a torch.Tensor")
    if t.dim() != ndim or t.shape[axis] != count:
        want = {
            (5, 3): "(batch, seqlen, 3, nheads, head_dim)",
            (4, 3): "(total, 3, nheads, head_dim)",
            (5, 2): "(batch, seqlen_k, 2, nheads_kv, head_dim)",
            (4, 2): "(total_k, 2, nheads_kv, head_dim)",
        }[(ndim, count)]
        raise unsupported(f"{name}.shape", tuple(t.shape), want)
    return t.unbind(axis)


# ---------------------------------------------------------------------------------- dense
def flash_attn_func(
    q,
    k,
    v,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
):
    """``softmax(q kᵀ · scale) v`` for ``q (b, s_q, h, d)``, ``k/v (b, s_k, h_k, d)``; FlashAttention-2's
    signature. Returns ``out (b, s_q, h, d_v)``, or ``(out, softmax_lse, None)`` with
    ``return_attn_probs`` (the probabilities are not materialised)."""
    reject_dropout_alibi(dropout_p, alibi_slopes)
    check_flag("return_attn_probs", return_attn_probs)
    out, lse = api.flash_attn_func(
        q,
        k,
        v,
        softmax_scale=softmax_scale,
        causal=causal,
        window_size=window_size,
        softcap=_softcap(softcap),
        deterministic=deterministic,
        return_lse=return_attn_probs,
    )
    return _result(out, lse, return_attn_probs)


def flash_attn_qkvpacked_func(
    qkv,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
):
    """:func:`flash_attn_func` on ``qkv (batch, seqlen, 3, nheads, head_dim)``."""
    reject_dropout_alibi(dropout_p, alibi_slopes)
    q, k, v = _unpack("qkv", qkv, 5, 2, 3)
    return flash_attn_func(
        q, k, v, 0.0, softmax_scale, causal, window_size, softcap, None, deterministic, return_attn_probs
    )


def flash_attn_kvpacked_func(
    q,
    kv,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
):
    """:func:`flash_attn_func` on ``q (b, s_q, h, d)`` and ``kv (b, s_k, 2, h_k, d)``."""
    reject_dropout_alibi(dropout_p, alibi_slopes)
    k, v = _unpack("kv", kv, 5, 2, 2)
    return flash_attn_func(
        q, k, v, 0.0, softmax_scale, causal, window_size, softcap, None, deterministic, return_attn_probs
    )


# ---------------------------------------------------------------------------------- varlen
def flash_attn_varlen_func(
    q,
    k,
    v,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
    block_table=None,
):
    """Packed variable-length sequences: ``q (total_q, h, d)``, ``k/v (total_k, h_k, d)``, int32
    ``cu_seqlens_q/k (batch + 1,)``. With ``block_table`` (int32 ``(batch, max_blocks)``), ``k/v`` are
    paged ``(num_blocks, page_size, h_k, d)`` and ``cu_seqlens_k`` holds the prefix sums of the key
    lengths. Returns ``out (total_q, h, d_v)``, or ``(out, softmax_lse (h, total_q), None)``."""
    reject_dropout_alibi(dropout_p, alibi_slopes)
    check_flag("return_attn_probs", return_attn_probs)
    seqused_k = None
    if block_table is not None:
        # fa4 addresses paged K/V through per-sequence lengths (seqused_k), not prefix sums
        _check_block_lengths(q, k, cu_seqlens_q, cu_seqlens_k, block_table)
        check_max_seqlen("max_seqlen_k", max_seqlen_k, "key")
        seqused_k = cu_seqlens_k[1:] - cu_seqlens_k[:-1]
        cu_seqlens_k, max_seqlen_k = None, None
    try:
        out, lse = api.flash_attn_varlen_func(
            q,
            k,
            v,
            cu_seqlens_q=cu_seqlens_q,
            cu_seqlens_k=cu_seqlens_k,
            max_seqlen_q=max_seqlen_q,
            max_seqlen_k=max_seqlen_k,
            seqused_k=seqused_k,
            page_table=block_table,
            softmax_scale=softmax_scale,
            causal=causal,
            window_size=window_size,
            softcap=_softcap(softcap),
            deterministic=deterministic,
            return_lse=return_attn_probs,
        )
    except UnsupportedConfigError as e:
        if block_table is None:
            raise
        raise _fa2_named(e) from None
    return _result(out, lse, return_attn_probs)


def flash_attn_varlen_qkvpacked_func(
    qkv,
    cu_seqlens,
    max_seqlen,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
):
    """:func:`flash_attn_varlen_func` on ``qkv (total, 3, nheads, head_dim)``."""
    reject_dropout_alibi(dropout_p, alibi_slopes)
    q, k, v = _unpack("qkv", qkv, 4, 1, 3)
    return flash_attn_varlen_func(
        q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, 0.0, softmax_scale, causal, window_size,
        softcap, None, deterministic, return_attn_probs,
    )  # fmt: skip


def flash_attn_varlen_kvpacked_func(
    q,
    kv,
    cu_seqlens_q,
    cu_seqlens_k,
    max_seqlen_q,
    max_seqlen_k,
    dropout_p=0.0,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    alibi_slopes=None,
    deterministic=False,
    return_attn_probs=False,
):
    """:func:`flash_attn_varlen_func` on ``q (total_q, h, d)`` and ``kv (total_k, 2, h_k, d)``."""
    reject_dropout_alibi(dropout_p, alibi_slopes)
    k, v = _unpack("kv", kv, 4, 1, 2)
    return flash_attn_varlen_func(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, 0.0, softmax_scale, causal,
        window_size, softcap, None, deterministic, return_attn_probs,
    )  # fmt: skip


# ---------------------------------------------------------------------------------- KV cache
def flash_attn_with_kvcache(
    q,
    k_cache,
    v_cache,
    k=None,
    v=None,
    rotary_cos=None,
    rotary_sin=None,
    cache_seqlens=None,
    cache_batch_idx=None,
    cache_leftpad=None,
    block_table=None,
    softmax_scale=None,
    causal=False,
    window_size=(-1, -1),
    softcap=0.0,
    rotary_interleaved=True,
    alibi_slopes=None,
    num_splits=0,
    return_softmax_lse=False,
):
    """FlashAttention-2's ``flash_attn_with_kvcache`` (its argument order) on
    :func:`fa4_torch.api.flash_attn_with_kvcache`: new ``k/v`` are appended in place at
    ``cache_seqlens``; ``block_table`` is the page table of a paged cache. Returns ``out``, or
    ``(out, softmax_lse)`` with ``return_softmax_lse``."""
    reject_dropout_alibi(0.0, alibi_slopes)
    if rotary_cos is not None or rotary_sin is not None:
        raise NotImplementedError(
            f"rotary embedding inside flash_attn_with_kvcache (rotary_cos/rotary_sin) is not implemented "
            f"in fa4 ({_NOT_PLANNED}); apply the rotary embedding to q and k before the call"
        )
    if cache_leftpad is not None:
        raise NotImplementedError(
            f"cache_leftpad is not implemented in fa4 ({_NOT_PLANNED}); keep each cache left-aligned"
        )
    try:
        return api.flash_attn_with_kvcache(
            q,
            k_cache,
            v_cache,
            k=k,
            v=v,
            cache_seqlens=cache_seqlens,
            page_table=block_table,
            cache_batch_idx=cache_batch_idx,
            softmax_scale=softmax_scale,
            causal=causal,
            window_size=window_size,
            softcap=_softcap(softcap),
            num_splits=num_splits,
            return_softmax_lse=return_softmax_lse,
        )
    except UnsupportedConfigError as e:
        if block_table is None:
            raise
        raise _fa2_named(e) from None
