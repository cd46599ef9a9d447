"""The ring functions' own argument checks, before anything is communicated or launched.

What the chunk kernel checks (head dims, dtypes, alignment, the device) it checks itself, on every
rank alike; these are the arguments only the ring has, and the features that do not compose with it.
"""

from __future__ import annotations

import math

import torch

from fa4_core.errors import unsupported
from fa4_torch.validate import check_flag

__all__ = ["check_ring_args", "NO_WINDOW"]

NO_WINDOW = ((-1, -1), (None, None), (-1, None), (None, -1))


def check_ring_args(q, k, v, *, dropout_p, softmax_scale, causal, window_size, alibi_slopes, deterministic,
                    return_attn_probs, softcap, learnable_sink, varlen=False, zigzag=False) -> float:  # fmt: skip
    """Raise a typed error naming the argument; return the softmax scale as a float."""
    check_flag("causal", causal)
    check_flag("deterministic", deterministic)
    check_flag("return_attn_probs", return_attn_probs)
    if dropout_p != 0.0:
        raise unsupported("dropout_p", dropout_p, "0.0 (fa4 has no attention dropout)")
    if alibi_slopes is not None:
        raise unsupported("alibi_slopes", "a tensor", "None (fa4 has no ALiBi)")
    if tuple(window_size) not in NO_WINDOW:
        raise unsupported(
            "window_size",
            tuple(window_size),
            "(-1, -1): a sliding window is relative to absolute positions, and the ring's chunk kernel "
            "masks relative to each chunk pair; use flash_attn_func on one GPU for windows",
        )
    ndim = 3 if varlen else 4
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise unsupported(name, type(t).__name__, "a torch.Tensor")
        if t.dim() != ndim:
            raise unsupported(f"{name}.dim()", t.dim(), f"{ndim} (shape {tuple(t.shape)})")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise unsupported(
            "(q.dtype, k.dtype, v.dtype)", (q.dtype, k.dtype, v.dtype), "one dtype for all three"
        )
    if k.shape[:-1] != v.shape[:-1]:
        raise unsupported("v.shape[:-1]", tuple(v.shape[:-1]), f"k's {tuple(k.shape[:-1])}")
    nheads, nheads_kv = q.shape[-2], k.shape[-2]
    if nheads_kv == 0 or nheads % nheads_kv:
        raise unsupported(
            "nheads % nheads_kv", f"{nheads} % {nheads_kv}", "0 (nheads a multiple of nheads_kv)"
        )
    if not varlen and (k.shape[0] != q.shape[0] or k.shape[1] != q.shape[1]):
        raise unsupported(
            "k.shape[:2]", tuple(k.shape[:2]), f"q's (batch, local seqlen) {tuple(q.shape[:2])}"
        )
    if zigzag and q.shape[1] % 2:
        raise unsupported(
            "q.shape[1]", q.shape[1], "an even local length (chunks rank and 2 * world_size - 1 - rank)"
        )
    if learnable_sink is not None:
        if not isinstance(learnable_sink, torch.Tensor) or learnable_sink.dtype != torch.float32:
            raise unsupported(
                "learnable_sink", getattr(learnable_sink, "dtype", learnable_sink), "a float32 tensor"
            )
        if tuple(learnable_sink.shape) != (nheads,):
            raise unsupported("learnable_sink.shape", tuple(learnable_sink.shape), f"({nheads},)")
    if (
        isinstance(softcap, bool)
        or not isinstance(softcap, (int, float))
        or not math.isfinite(softcap)
        or softcap < 0
    ):
        raise unsupported("softcap", softcap, "a finite float >= 0 (0 = no capping)")
    if softmax_scale is None:
        return 1.0 / math.sqrt(q.shape[-1])
    if (
        isinstance(softmax_scale, bool)
        or not isinstance(softmax_scale, (int, float))
        or not math.isfinite(softmax_scale)
        or softmax_scale <= 0
    ):
        raise unsupported("softmax_scale", softmax_scale, "a finite float > 0 (or None for 1/sqrt(head_dim))")
    return float(softmax_scale)
