"""The user API: drop-in for ``flash_attn.cute`` (FlashAttention-4's interface).

``flash_attn_func(q, k, v, ...) -> (out, lse)``: ``q (batch, seqlen_q, nheads, head_dim)``,
``k (batch, seqlen_k, nheads_kv, head_dim)``, ``v (batch, seqlen_k, nheads_kv, head_dim_v)``;
``out (batch, seqlen_q, nheads, head_dim_v)``; ``lse`` fp32 ``(batch, nheads, seqlen_q)`` (natural
log) when ``return_lse=True``, else ``None``. Causal masks are aligned bottom-right. A query that sees
no key gets ``out = 0`` and ``lse = -inf``.

Every argument is validated before anything compiles or launches; what the kernels cannot do raises
:class:`fa4_core.errors.UnsupportedConfigError` naming the argument, the value and what is supported
(features that belong to a later release raise ``NotImplementedError`` naming it). A cached call does
the validation, one dict lookup, two output allocations and the launch.
"""

from __future__ import annotations

import math

import torch

from fa4_core.errors import UnsupportedConfigError, unsupported
from fa4_sm120.fwd import HEAD_DIMS
from fa4_torch.cache import CompileCache, dsl_version
from fa4_torch.dispatch import device_family

__all__ = ["flash_attn_func", "FWD_CACHE"]

_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_UNBOUNDED = 1 << 30  # a window side without a bound, as a runtime value of a local kernel

FWD_CACHE = CompileCache()
_fast: dict[tuple, object] = {}


def _later(feature: str, where: str) -> NotImplementedError:
    return NotImplementedError(f"{feature} is not implemented yet in fa4 (planned: {where})")


def _check_tensor(name: str, t, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise unsupported(name, type(t).__name__, "a torch.Tensor")
    if t.dtype not in _DTYPES:
        raise unsupported(f"{name}.dtype", t.dtype, "torch.float16, torch.bfloat16")
    if t.dim() != ndim:
        raise unsupported(f"{name}.dim()", t.dim(), f"{ndim} (shape {tuple(t.shape)})")
    if t.stride(-1) != 1:
        raise unsupported(f"{name}.stride(-1)", t.stride(-1), "1 (the head dimension must be contiguous)")
    for i in range(ndim - 1):
        if t.stride(i) % 8 != 0 and t.shape[i] > 1:
            raise unsupported(
                f"{name}.stride({i})", t.stride(i), "a multiple of 8 elements (16-byte aligned rows)"
            )
    if t.data_ptr() % 16 != 0:
        raise unsupported(f"{name}.data_ptr() % 16", t.data_ptr() % 16, "0 (16-byte aligned base)")


def _check_device(name: str, t) -> None:
    if t.device.type != "cuda":
        raise unsupported(f"{name}.device", str(t.device), "a CUDA device")


def _canonical_window(window_size, causal: bool):
    """-> (is_local, left, right) with ``None`` for an unbounded side; causal folds in as right = 0."""
    if window_size is None:
        window_size = (None, None)
    if not isinstance(window_size, (tuple, list)) or len(window_size) != 2:
        raise unsupported("window_size", window_size, "a pair (left, right) of ints >= -1 or None")
    left, right = (None if (w is None or w == -1) else w for w in window_size)
    for side, w in (("window_size[0]", left), ("window_size[1]", right)):
        if w is not None and (not isinstance(w, int) or w < 0):
            raise unsupported(side, w, "an int >= 0, or -1/None for no bound")
    if causal:
        right = 0 if right is None else min(right, 0)
    is_local = left is not None or (right is not None and not causal)
    return is_local, left, right


def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size=(None, None),
    learnable_sink: torch.Tensor | None = None,
    softcap: float = 0.0,
    num_splits: int = 1,
    pack_gqa: bool | None = None,
    deterministic: bool = False,
    return_lse: bool = False,
    *,
    qv=None,
    score_mod=None,
    mask_mod=None,
    aux_tensors=None,
    block_sparse_tensors=None,
):
    """Attention forward ``softmax(q kᵀ · scale) v``. Returns ``(out, lse)``; see the module docstring."""
    if learnable_sink is not None:
        raise _later("learnable_sink", "the serving release (varlen/paged/split-KV, sinks, softcap)")
    if softcap != 0.0:
        if not isinstance(softcap, (int, float)) or softcap < 0:
            raise unsupported("softcap", softcap, "a float >= 0")
        raise _later("softcap", "the serving release (varlen/paged/split-KV, sinks, softcap)")
    if not isinstance(num_splits, int) or num_splits < 0:
        raise unsupported("num_splits", num_splits, "an int >= 0 (0 = heuristic, 1 = no split)")
    if num_splits > 1:
        raise _later("num_splits > 1 (split-KV)", "the serving release (split-KV decode)")
    for name, val in (
        ("qv", qv),
        ("score_mod", score_mod),
        ("mask_mod", mask_mod),
        ("aux_tensors", aux_tensors),
        ("block_sparse_tensors", block_sparse_tensors),
    ):
        if val is not None:
            raise _later(name, "no release planned for SM120")
    if (q.requires_grad or k.requires_grad or v.requires_grad) and torch.is_grad_enabled():
        raise _later("the backward (inputs that require grad)", "the training release (backward)")
    out, lse = _flash_attn_fwd(q, k, v, softmax_scale, causal, window_size, pack_gqa)
    return out, (lse if return_lse else None)


def _flash_attn_fwd(q, k, v, softmax_scale, causal, window_size, pack_gqa):
    """Validate and launch the forward; returns ``(out, lse)`` (lse always computed). The autograd
    function calls this too."""
    _check_tensor("q", q, 4)
    _check_tensor("k", k, 4)
    _check_tensor("v", v, 4)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise unsupported(
            "(q.dtype, k.dtype, v.dtype)", (q.dtype, k.dtype, v.dtype), "one dtype for all three"
        )
    batch, seqlen_q, nheads, head_dim = q.shape
    _, seqlen_k, nheads_kv, _ = k.shape
    head_dim_v = v.shape[3]
    if k.shape[0] != batch or v.shape[0] != batch:
        raise unsupported("k.shape[0], v.shape[0] (batch)", (k.shape[0], v.shape[0]), f"q's batch {batch}")
    if k.shape[3] != head_dim:
        raise unsupported("k.shape[3] (head_dim)", k.shape[3], f"q's head_dim {head_dim}")
    if v.shape[1] != seqlen_k or v.shape[2] != nheads_kv:
        raise unsupported(
            "v.shape[1:3]", tuple(v.shape[1:3]), f"k's (seqlen_k, nheads_kv) {(seqlen_k, nheads_kv)}"
        )
    if nheads_kv == 0 or nheads % nheads_kv != 0:
        raise unsupported(
            "nheads % nheads_kv", f"{nheads} % {nheads_kv}", "0 (nheads a multiple of nheads_kv)"
        )
    for name, d in (("head_dim", head_dim), ("head_dim_v", head_dim_v)):
        if d not in HEAD_DIMS:
            raise unsupported(name, d, f"one of {HEAD_DIMS}")
    is_local, left, right = _canonical_window(window_size, bool(causal))
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(head_dim)
    elif not isinstance(softmax_scale, (int, float)) or not math.isfinite(softmax_scale):
        raise unsupported("softmax_scale", softmax_scale, "a finite float (or None for 1/sqrt(head_dim))")
    if pack_gqa not in (None, True, False):
        raise unsupported("pack_gqa", pack_gqa, "None (auto), True, False")
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_device(name, t)
    if k.device != q.device or v.device != q.device:
        raise unsupported("(q.device, k.device, v.device)", (q.device, k.device, v.device), "one device")
    ratio = nheads // nheads_kv
    if pack_gqa is None:
        pack_gqa = ratio > 1
    pack_gqa = bool(pack_gqa)

    out = torch.empty((batch, seqlen_q, nheads, head_dim_v), dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, nheads, seqlen_q), dtype=torch.float32, device=q.device)
    if batch == 0 or seqlen_q == 0 or nheads == 0:
        return out, lse

    key = (
        q.dtype,
        head_dim,
        head_dim_v,
        bool(causal),
        is_local,
        pack_gqa,
        ratio if pack_gqa else 1,
        q.device,
    )
    fn = _fast.get(key)
    if fn is None:
        fn = _compile_for(key, q.device)
    wl = left if left is not None else _UNBOUNDED
    wr = right if right is not None else _UNBOUNDED
    fn(q, k, v, out, lse, float(softmax_scale), wl, wr)
    return out, lse


def _compile_for(key, device: torch.device):
    from fa4_sm120.compile import compile_fwd
    from fa4_sm120.tiles import fwd_config

    dtype, head_dim, head_dim_v, causal, is_local, pack_gqa, ratio, _ = key
    family = device_family(device)
    cfg = fwd_config(
        family,
        _DTYPES[dtype],
        head_dim,
        head_dim_v,
        causal=causal,
        local=is_local,
        pack_gqa=pack_gqa,
        qhead_per_kvhead=ratio,
    )
    major, minor = torch.cuda.get_device_capability(device)
    target = f"sm_{major}{minor}"

    def build():
        with torch.cuda.device(device):
            return compile_fwd(cfg, tvm_ffi=True)

    fn = FWD_CACHE.get_or_compile((cfg, target, dsl_version()), build)
    _fast[key] = fn
    return fn


def _reset_caches() -> None:
    """Forget every compiled function (tests)."""
    FWD_CACHE.clear()
    _fast.clear()


UnsupportedConfigError = UnsupportedConfigError  # re-export for `from fa4_torch.api import ...`
