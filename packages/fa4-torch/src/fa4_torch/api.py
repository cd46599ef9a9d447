"""The user API: drop-in for ``flash_attn.cute`` (FlashAttention-4's interface).

* ``flash_attn_func(q, k, v, ...) -> (out, lse)``: ``q (batch, seqlen_q, nheads, head_dim)``,
  ``k (batch, seqlen_k, nheads_kv, head_dim)``, ``v (batch, seqlen_k, nheads_kv, head_dim_v)``;
  ``out (batch, seqlen_q, nheads, head_dim_v)``; ``lse`` fp32 ``(batch, nheads, seqlen_q)``.
* ``flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, ...) -> (out, lse)``: packed
  ``(total, nheads, head_dim)`` sequences (int32 ``cu_seqlens`` of length ``batch + 1``),
  ``seqused_q/k`` (int32 ``(batch,)``) taking priority over ``cu_seqlens``; paged K/V
  ``(num_pages, page_size, nheads_kv, head_dim)`` with an int32 ``page_table (batch, max_pages)``;
  ``lse (nheads, total_q)``.
* ``flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, ...)``:
  FlashAttention-2 semantics (new K/V appended in place at ``cache_seqlens``, then attention over the
  first ``cache_seqlens + seqlen_new`` keys; the query aligned to the end of each cache).

``lse`` is the natural-log sum-exp, returned when ``return_lse=True`` (else ``None``). Causal masks
are aligned bottom-right. A query that sees no key gets ``out = 0`` and ``lse = -inf`` (``lse =
sink`` with a learnable sink). ``num_splits``: 1 = no split, ``1 < n <= 64`` = split the keys ``n``
ways and merge through the LSEs, 0 = a heuristic from the SM count, the tiles and the key length.

Every argument is validated before anything compiles, launches or is written (the KV-cache append
included: after an error the caches are as they were); what the kernels cannot do raises
:class:`fa4_core.errors.UnsupportedConfigError` naming the argument as the caller passed it, the value
and what is supported, a bool argument of another type ``TypeError`` (features of a later release
raise ``NotImplementedError`` naming it). Nothing on these paths reads device memory on the host (no
``.item()``): ``max_seqlen_q`` is used for the grid when given, the total length otherwise.
"""

from __future__ import annotations

import contextlib
import math
import os

import torch

from fa4_core.errors import unsupported
from fa4_sm120.limits import HEAD_DIMS
from fa4_sm120.tiles import wants_small_m
from fa4_torch.cache import CompileCache, dsl_version
from fa4_torch.dispatch import device_family

__all__ = ["flash_attn_func", "flash_attn_varlen_func", "flash_attn_with_kvcache", "FWD_CACHE"]

_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_UNBOUNDED = 1 << 30  # a window side without a bound, as a runtime value of a local kernel
_MAX_SPLITS = 64  # fa4_sm120.combine.MAX_SPLITS (that module imports the DSL; a test keeps them equal)

FWD_CACHE = CompileCache()
_fast: dict[tuple, object] = {}
_sm_count: dict[int, int] = {}
_sm_facts_memo: dict = {}  # device index -> SmFacts
_split_memo: dict = {}  # (device, dtype, head dims, small_m) -> (tile_m, resident CTA slots)
# a dense call's signature (_dense_signature) -> (compiled fn, out shape, lse shape, runtime scalars):
# a repeated call skips the validation and the key building (the H200 host: ~29 µs a cached call
# before, most of it Python checks)
_dense_memo: dict = {}
# the same for the calls with seqused_k, a page table or cache slots (the KV-cache decode) and for
# split-KV calls: (_dense_signature, those tensors' metadata) -> (compiled fn, out shape, lse shape,
# runtime scalars); the split count is the last scalar and the combine kernel runs when it is > 1
_cache_memo: dict = {}
_DENSE_MEMO_MAX = 4096


def _later(feature: str, where: str) -> NotImplementedError:
    """``where``: the release that will bring it, or ``None`` when none is planned."""
    if where is None:
        return NotImplementedError(f"{feature} is not implemented in fa4 (no release plans it for SM120)")
    return NotImplementedError(f"{feature} is not implemented yet in fa4 (planned: {where})")


# ---------------------------------------------------------------------------------- validation
def _check_tensor(name: str, t, ndim: int, dtypes=tuple(_DTYPES), layout: bool = True) -> None:
    """Type, dtype, rank; then (``layout``) contiguity of the last dim, 16-byte strides and base."""
    if not isinstance(t, torch.Tensor):
        raise unsupported(name, type(t).__name__, "a torch.Tensor")
    if t.dtype not in dtypes:
        raise unsupported(f"{name}.dtype", t.dtype, ", ".join(str(d) for d in dtypes))
    if t.dim() != ndim:
        raise unsupported(f"{name}.dim()", t.dim(), f"{ndim} (shape {tuple(t.shape)})")
    if layout:
        _check_layout(name, t)


def _check_layout(name: str, t):
    """Returns ``t``, or a view of it whose size-1 dims carry stride 0 when their stride is not a
    multiple of 8 (it addresses nothing; the compiled kernels assume 16-byte-multiple strides)."""
    ndim = t.dim()
    if t.dtype in _DTYPES:
        if t.stride(-1) != 1 and t.shape[-1] > 1:
            raise unsupported(f"{name}.stride(-1)", t.stride(-1), "1 (the head dimension must be contiguous)")
        fix = False
        for i in range(ndim - 1):
            if t.stride(i) % 8 != 0:
                if t.shape[i] != 1:
                    raise unsupported(
                        f"{name}.stride({i})", t.stride(i), "a multiple of 8 elements (16-byte aligned rows)"
                    )
                fix = True
        if t.data_ptr() % 16 != 0:
            raise unsupported(f"{name}.data_ptr() % 16", t.data_ptr() % 16, "0 (16-byte aligned base)")
        if fix:
            strides = [0 if (n == 1 and st % 8) else st for n, st in zip(t.shape[:-1], t.stride()[:-1])]
            t = t.as_strided(t.shape, (*strides, 1))
    elif t.stride(-1) != 1 and t.shape[-1] > 1:
        raise unsupported(f"{name}.stride({ndim - 1})", t.stride(-1), "1 (contiguous)")
    return t


def _check_index(name: str, t, shape: tuple) -> None:
    if t is None:
        return
    _check_tensor(name, t, len(shape), (torch.int32,))
    if tuple(t.shape) != shape:
        raise unsupported(f"{name}.shape", tuple(t.shape), f"{shape}")


_VALIDATE_DATA = os.environ.get("FA4_VALIDATE_DATA", "") == "1"


def _reads_data(*ts) -> bool:
    """Whether the data checks run on these index tensors: all on the CPU, or ``FA4_VALIDATE_DATA=1``."""
    if _VALIDATE_DATA:
        return True
    for t in ts:  # is_cpu: no device object (a KV-cache call asks this on every call)
        if not t.is_cpu:
            return False
    return True


def _check_cu_data(name: str, cu, total):
    """``cu`` (an int32 ``(batch + 1,)`` tensor) starts at 0, never decreases and ends at most at
    ``total`` (None: no bound). Reads the data (the caller decides when). Returns the lengths (CPU)."""
    c = cu.cpu()
    if c.numel() and int(c[0]) != 0:
        raise unsupported(f"{name}[0]", int(c[0]), "0")
    if c.numel() > 1 and bool((c[1:] < c[:-1]).any()):
        raise unsupported(name, c.tolist()[:16], "non-decreasing prefix sums (monotone)")
    if total is not None and c.numel() and int(c[-1]) > total:
        raise unsupported(f"{name}[-1]", int(c[-1]), f"at most the packed length {total}")
    return (c[1:] - c[:-1]) if c.numel() > 1 else c[:0]


def _check_index_data(
    q, k, varlen_q, varlen_k, paged, cu_q, cu_k, used_q, used_k, page_table, kv_batch, used_k_name="seqused_k"
):
    """The checks that read index tensors: cu_seqlens monotone from 0 to the total, seqused within
    capacity, page indices and cache slots in range. Reading device memory would synchronise the host,
    so they run only on CPU tensors or with ``FA4_VALIDATE_DATA=1`` (a debugging switch)."""
    idx = [t for t in (cu_q, cu_k, used_q, used_k, page_table, kv_batch) if t is not None]
    if not idx or not _reads_data(*idx):
        return

    lens_q = _check_cu_data("cu_seqlens_q", cu_q, q.shape[0]) if varlen_q else None
    lens_k = _check_cu_data("cu_seqlens_k", cu_k, k.shape[0]) if varlen_k else None
    if used_q is not None:
        u = used_q.cpu()
        cap = lens_q if lens_q is not None else torch.full_like(u, q.shape[1])
        if bool((u < 0).any()) or bool((u > cap).any()):
            raise unsupported(
                "seqused_q", u.tolist()[:16], f"0 <= seqused_q[b] <= capacity {cap.tolist()[:16]}"
            )
    if used_k is not None:
        u = used_k.cpu()
        if paged:
            cap = torch.full_like(u, page_table.shape[1] * k.shape[1])
        elif lens_k is not None:
            cap = lens_k
        else:
            cap = torch.full_like(u, k.shape[1])
        if bool((u < 0).any()) or bool((u > cap).any()):
            raise unsupported(
                used_k_name, u.tolist()[:16], f"0 <= {used_k_name}[b] <= capacity {cap.tolist()[:16]}"
            )
    if paged:
        p = page_table.cpu()
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= k.shape[0]):
            raise unsupported(
                "page_table", f"indices in [{int(p.min())}, {int(p.max())}]", f"[0, {k.shape[0]})"
            )
    if kv_batch is not None:
        b = kv_batch.cpu()
        if b.numel() and (int(b.min()) < 0 or int(b.max()) >= k.shape[0]):
            raise unsupported(
                "cache_batch_idx", f"values in [{int(b.min())}, {int(b.max())}]", f"[0, {k.shape[0]})"
            )


def _check_devices(q, named) -> None:
    """Every tensor of ``named`` (``(name, tensor or None)`` pairs) on q's device, and that a CUDA one."""
    for name, t in named:
        if t is not None and t.device != q.device:
            raise unsupported(f"{name}.device", str(t.device), f"q's device {q.device}")
    if q.device.type != "cuda":
        raise unsupported("q.device", str(q.device), "a CUDA device")


def _canonical_window(window_size, causal: bool):
    """-> (is_local, left, right) with ``None`` for an unbounded side; causal folds in as right = 0."""
    if window_size is None:
        window_size = (None, None)
    if not isinstance(window_size, (tuple, list)) or len(window_size) != 2:
        raise unsupported("window_size", window_size, "a pair (left, right) of ints >= -1 or None")
    for side, w in zip(("window_size[0]", "window_size[1]"), window_size):
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < -1):
            raise unsupported(side, w, "an int >= 0, or -1/None for no bound")
    left, right = (None if (w is None or w == -1) else w for w in window_size)
    if causal:
        right = 0 if right is None else min(right, 0)
    is_local = left is not None or (right is not None and not causal)
    return is_local, left, right


def _check_scalars(softmax_scale, softcap, num_splits, pack_gqa, head_dim):
    """``softmax_scale`` finite and > 0 (the online softmax keeps each row's maximum of the unscaled
    scores, right only for a positive scale; a zero scale makes masked scores ``nan``), ``softcap``
    finite >= 0, ``num_splits`` in ``[0, MAX_SPLITS]``, ``pack_gqa`` None or a bool. Returns the
    scale as a float."""
    if softmax_scale is None:
        softmax_scale = 1.0 / math.sqrt(head_dim)
    elif (
        isinstance(softmax_scale, bool)
        or not isinstance(softmax_scale, (int, float))
        or not math.isfinite(softmax_scale)
        or softmax_scale <= 0
    ):
        raise unsupported("softmax_scale", softmax_scale, "a finite float > 0 (or None for 1/sqrt(head_dim))")
    if (
        isinstance(softcap, bool)
        or not isinstance(softcap, (int, float))
        or not math.isfinite(softcap)
        or softcap < 0
    ):
        raise unsupported("softcap", softcap, "a finite float >= 0 (0 = no capping)")
    if isinstance(num_splits, bool) or not isinstance(num_splits, int) or not 0 <= num_splits <= _MAX_SPLITS:
        raise unsupported(
            "num_splits", num_splits, f"an int in [0, {_MAX_SPLITS}] (0 = heuristic, 1 = no split)"
        )
    if pack_gqa is not None and not isinstance(pack_gqa, bool):
        raise unsupported("pack_gqa", pack_gqa, "None (auto), True, False")
    return float(softmax_scale)


def _check_flag(name: str, value) -> None:
    """A bool argument (``causal``, ``return_lse``, ``deterministic``...): ``True`` or ``False`` only; a
    string such as ``"False"`` would be truthy. ``TypeError`` naming the argument otherwise."""
    if value is not True and value is not False:
        raise TypeError(f"{name}={value!r} is not supported; supported: True or False (a bool)")


def _check_max_seqlen(name: str, value, what: str) -> None:
    """``max_seqlen_q``/``max_seqlen_k``: None or an int >= 0 (``what``: query or key)."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)) or value < 0
    ):
        raise unsupported(name, value, f"an int >= 0 (an upper bound of the {what} lengths) or None")


def _reject_extras(**extras):
    for name, val in extras.items():
        if val is not None:
            raise _later(name, None)


def _dense_signature(q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, num_splits):
    """Everything the validation of a dense call reads but the data pointers' alignment (checked on
    every call): shapes, strides, dtypes and devices of q, k, v, and the scalar arguments with their
    types (``True``, ``1`` and ``1.0`` are equal and hash alike, and the validation tells them apart).
    ``None`` where one of q, k, v is not a tensor or an argument is not hashable."""
    if not (isinstance(q, torch.Tensor) and isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)):
        return None
    w = window_size
    if type(w) is tuple or type(w) is list:
        w = (type(w), tuple(w), tuple(map(type, w)))
    sig = (
        q.shape, q.stride(), q.dtype, q.device, k.shape, k.stride(), k.dtype, k.device,
        v.shape, v.stride(), v.dtype, v.device, type(softmax_scale), softmax_scale, type(causal), causal,
        type(w), w, type(pack_gqa), pack_gqa, type(softcap), softcap, type(num_splits), num_splits,
    )  # fmt: skip
    try:
        hash(sig)
    except TypeError:
        return None
    return sig


# ---------------------------------------------------------------------------------- public API
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
    _check_flag("causal", causal)
    _check_flag("deterministic", deterministic)
    _check_flag("return_lse", return_lse)
    _reject_extras(
        qv=qv,
        score_mod=score_mod,
        mask_mod=mask_mod,
        aux_tensors=aux_tensors,
        block_sparse_tensors=block_sparse_tensors,
    )
    if _needs_grad(q, k, v, learnable_sink):
        from fa4_torch.autograd import FlashAttnFunc

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
        return out, (lse if return_lse else None)
    out, lse = _flash_attn_fwd(
        q,
        k,
        v,
        softmax_scale,
        causal,
        window_size,
        pack_gqa,
        softcap=softcap,
        learnable_sink=learnable_sink,
        num_splits=num_splits,
    )
    return out, (lse if return_lse else None)


def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor | None = None,
    cu_seqlens_k: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    seqused_q: torch.Tensor | None = None,
    seqused_k: torch.Tensor | None = None,
    page_table: torch.Tensor | None = None,
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
    score_mod=None,
    mask_mod=None,
    aux_tensors=None,
):
    """Variable-length (and paged-K/V) attention; see the module docstring. Returns ``(out, lse)``."""
    _check_flag("causal", causal)
    _check_flag("deterministic", deterministic)
    _check_flag("return_lse", return_lse)
    _reject_extras(score_mod=score_mod, mask_mod=mask_mod, aux_tensors=aux_tensors)
    if _needs_grad(q, k, v, learnable_sink):
        from fa4_torch.autograd import FlashAttnVarlenFunc

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
        return out, (lse if return_lse else None)
    out, lse = _flash_attn_fwd(
        q,
        k,
        v,
        softmax_scale,
        causal,
        window_size,
        pack_gqa,
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
    )
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
    window_size=(None, None),
    softcap: float = 0.0,
    num_splits: int = 0,
    return_softmax_lse: bool = False,
    *,
    learnable_sink: torch.Tensor | None = None,
    pack_gqa: bool | None = None,
):
    """Decode / chunked prefill against a KV cache (FlashAttention-2 semantics).

    ``q (batch, seqlen_q, nheads, d)``; ``k_cache/v_cache (batch_cache, seqlen_cache, nheads_kv, d)``
    or paged ``(num_pages, page_size, nheads_kv, d)`` with ``page_table (batch, max_pages)``;
    ``cache_seqlens`` (int or int32 ``(batch,)``) is the used length of each cache before the append;
    optional ``k/v (batch, seqlen_new, nheads_kv, d)`` (the caches' dtype and device) are written into
    the cache in place at ``cache_seqlens``, once every argument has been checked, before the attention.
    ``cache_seqlens + seqlen_new`` must fit the cache: checked for an int, for a CPU tensor and with
    ``FA4_VALIDATE_DATA=1``; a CUDA tensor's values are the caller's guarantee (reading them would
    synchronise). ``cache_batch_idx`` (int32 ``(batch,)``) picks the cache slot of each batch entry
    (contiguous caches). Returns ``out``, or ``(out, lse)`` with ``return_softmax_lse=True``.
    """
    _check_flag("causal", causal)
    _check_flag("return_softmax_lse", return_softmax_lse)
    if _needs_grad(q, k_cache, v_cache, k, v, learnable_sink):
        raise _later("gradients through flash_attn_with_kvcache (an inference path)", None)
    # Every argument is checked before the append writes into the caches: the new k/v and the cache
    # lengths here, everything else in _flash_attn_fwd, which appends (before_launch) only once its
    # own checks have passed.
    _check_tensor("q", q, 4, layout=False)
    batch = q.shape[0]
    paged = page_table is not None
    _check_tensor("k_cache", k_cache, 4, layout=False)
    _check_tensor("v_cache", v_cache, 4, layout=False)
    if paged and cache_batch_idx is not None:
        raise unsupported(
            "cache_batch_idx", "a tensor", "None with a page_table (the table already maps slots)"
        )
    if (k is None) != (v is None):
        raise unsupported(
            "(k, v)",
            ("given" if k is not None else None, "given" if v is not None else None),
            "both or neither",
        )
    s_new = 0
    if k is not None:
        _check_tensor("k", k, 4, layout=False)
        _check_tensor("v", v, 4, layout=False)
        if k.shape[0] != batch or v.shape[0] != batch or k.shape[1] != v.shape[1]:
            raise unsupported(
                "k/v.shape[:2]",
                (tuple(k.shape[:2]), tuple(v.shape[:2])),
                f"(batch={batch}, seqlen_new) for both",
            )
        if k.shape[2:] != k_cache.shape[2:] or v.shape[2:] != v_cache.shape[2:]:
            raise unsupported(
                "k/v.shape[2:]", (tuple(k.shape[2:]), tuple(v.shape[2:])), "the caches' (nheads_kv, head_dim)"
            )
        if (
            k.dtype is not k_cache.dtype
            or v.dtype is not v_cache.dtype
            or k.device != k_cache.device
            or v.device != v_cache.device
        ):
            for name, new, cache in (("k", k, k_cache), ("v", v, v_cache)):
                if new.dtype != cache.dtype:
                    raise unsupported(f"{name}.dtype", new.dtype, f"{name}_cache's dtype {cache.dtype}")
                if new.device != cache.device:
                    raise unsupported(
                        f"{name}.device", str(new.device), f"{name}_cache's device {cache.device}"
                    )
        s_new = k.shape[1]
    # the rows of each sequence's cache (None: the page table is malformed, _flash_attn_fwd says so;
    # a zero page size too)
    if not paged:
        capacity = k_cache.shape[1]
    elif isinstance(page_table, torch.Tensor) and page_table.dim() == 2 and k_cache.shape[1] > 0:
        capacity = page_table.shape[1] * k_cache.shape[1]
    else:
        capacity = None
    if cache_seqlens is None:
        raise unsupported("cache_seqlens", None, "an int or an int32 tensor (batch,)")
    if isinstance(cache_seqlens, int) and not isinstance(cache_seqlens, bool):
        if cache_seqlens < 0 or (capacity is not None and cache_seqlens + s_new > capacity):
            raise unsupported("cache_seqlens", cache_seqlens, _cache_seqlens_range(s_new, capacity))
        cache_seqlens = torch.full((batch,), cache_seqlens, dtype=torch.int32, device=q.device)
    elif not isinstance(cache_seqlens, torch.Tensor):
        raise unsupported("cache_seqlens", cache_seqlens, "an int or an int32 tensor (batch,)")
    else:
        _check_index("cache_seqlens", cache_seqlens, (batch,))
        if _reads_data(cache_seqlens):
            c = cache_seqlens.cpu()
            if c.numel() and (int(c.min()) < 0 or (capacity is not None and int(c.max()) + s_new > capacity)):
                raise unsupported("cache_seqlens", c.tolist()[:16], _cache_seqlens_range(s_new, capacity))
    append = None
    seqused_k = cache_seqlens
    if k is not None:
        seqused_k = cache_seqlens + s_new

        def append():
            _append_kv(k_cache, v_cache, k, v, cache_seqlens, page_table, cache_batch_idx)

    out, lse = _flash_attn_fwd(
        q,
        k_cache,
        v_cache,
        softmax_scale,
        causal,
        window_size,
        pack_gqa,
        softcap=softcap,
        learnable_sink=learnable_sink,
        num_splits=num_splits,
        seqused_k=seqused_k,
        page_table=page_table,
        kv_batch_idx=cache_batch_idx,
        before_launch=append,
        names=_KVCACHE_NAMES,
    )
    return (out, lse) if return_softmax_lse else out


_KVCACHE_NAMES = ("k_cache", "v_cache", "cache_seqlens")


def _cache_seqlens_range(s_new: int, capacity) -> str:
    """What ``cache_seqlens`` may hold, for the error message."""
    if capacity is None:
        return "values >= 0"
    fits = f"the cache holds {capacity} rows per sequence and the {s_new} new rows of k/v go at cache_seqlens"
    if s_new > capacity:
        return f"none: {fits}"
    return f"0 <= cache_seqlens[b] <= {capacity - s_new} ({fits})"


def _append_kv(k_cache, v_cache, k, v, cache_seqlens, page_table, cache_batch_idx):
    """Scatter the new keys/values into the cache at ``cache_seqlens`` (device-side indices only)."""
    batch, s_new = k.shape[:2]
    pos = cache_seqlens.long()[:, None] + torch.arange(s_new, device=k.device)[None, :]  # (batch, s_new)
    if page_table is not None:
        page_size = k_cache.shape[1]
        page = torch.gather(page_table.long(), 1, pos // page_size)
        row = pos % page_size
        k_cache[page, row] = k
        v_cache[page, row] = v
    else:
        slot = cache_batch_idx.long() if cache_batch_idx is not None else torch.arange(batch, device=k.device)
        k_cache[slot[:, None], pos] = k
        v_cache[slot[:, None], pos] = v


def _needs_grad(*ts) -> bool:
    if not torch.is_grad_enabled():
        return False
    for t in ts:  # a loop, not any(generator): this runs on every call
        if isinstance(t, torch.Tensor) and t.requires_grad:
            return True
    return False


# ---------------------------------------------------------------------------------- the launch
def _flash_attn_fwd(
    q,
    k,
    v,
    softmax_scale,
    causal,
    window_size,
    pack_gqa,
    *,
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
    names=("k", "v", "seqused_k"),
    _eager=False,
):
    """Validate and launch the forward (and the split-KV combine); returns ``(out, lse)``, lse always
    computed. The autograd function calls this too. Under ``torch.compile`` it becomes the custom op
    ``torch.ops.fa4.fwd`` (:mod:`fa4_torch.ops`), which validates and launches when the graph runs.

    ``before_launch``: called once every check has passed and before anything is allocated, compiled
    or launched (on a memo hit too): the KV-cache append, the backward's support check. ``names``: how
    the user called ``k``, ``v`` and ``seqused_k`` (the KV-cache call: ``k_cache``, ``v_cache``,
    ``cache_seqlens``), for the error messages."""
    if max_seqlen_q is not None or max_seqlen_k is not None:  # not in the memo keys: checked first
        _check_max_seqlen("max_seqlen_q", max_seqlen_q, "query")
        _check_max_seqlen("max_seqlen_k", max_seqlen_k, "key")
    if not _eager and torch.compiler.is_compiling():
        from fa4_torch.ops import fwd_op

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
    sig = csig = None
    # the memos: a signature holds everything the validation reads (the scalars with their types), and
    # an entry is made only after a call passed it, so a hit skips the validation
    if cu_seqlens_q is None and cu_seqlens_k is None and seqused_q is None and learnable_sink is None:
        base = _dense_signature(q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, num_splits)
        aligned = base is not None and (q.data_ptr() | k.data_ptr() | v.data_ptr()) % 16 == 0
        if base is not None and seqused_k is None and page_table is None and kv_batch_idx is None:
            sig = base
            hit = _dense_memo.get(sig) if aligned else None
            if hit is not None:
                if before_launch is not None:
                    before_launch()
                fn, out_shape, lse_shape, scalars = hit
                out = torch.empty(out_shape, dtype=q.dtype, device=q.device)
                lse = torch.empty(lse_shape, dtype=torch.float32, device=q.device)
                fn(q, k, v, out, lse, *scalars, None, None, None, None, None, None, None)
                return out, lse
        csig = _cache_signature(base, seqused_k, page_table, kv_batch_idx)
        hit = _cache_memo.get(csig) if aligned and csig is not None else None
        if hit is not None:
            if before_launch is not None:
                before_launch()
            return _launch_memoised(hit, q, k, v, seqused_k, page_table, kv_batch_idx)
    q_in, k_in, v_in = q, k, v
    kn, vn, un = names  # the user's names of k, v and seqused_k (the KV-cache call's are others)
    varlen_q = cu_seqlens_q is not None
    varlen_k = cu_seqlens_k is not None
    paged = page_table is not None
    if varlen_k and paged:  # before k's rank, which each of them sets differently
        raise unsupported(
            "(page_table, cu_seqlens_k)", ("given", "given"), "paged K/V with seqused_k, not cu_seqlens_k"
        )
    _check_flag("causal", causal)
    _check_tensor("q", q, 3 if varlen_q else 4, layout=False)
    _check_tensor(kn, k, 3 if varlen_k else 4, layout=False)
    _check_tensor(vn, v, 3 if varlen_k else 4, layout=False)
    for name, d in (("head_dim", q.shape[-1]), ("head_dim_v", v.shape[-1])):
        if d not in HEAD_DIMS:
            raise unsupported(name, d, f"one of {HEAD_DIMS}")
    q, k, v = _check_layout("q", q), _check_layout(kn, k), _check_layout(vn, v)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise unsupported(
            f"(q.dtype, {kn}.dtype, {vn}.dtype)", (q.dtype, k.dtype, v.dtype), "one dtype for all three"
        )
    nheads, head_dim = q.shape[-2:]
    nheads_kv, head_dim_v = v.shape[-2], v.shape[-1]
    if k.shape[-1] != head_dim:
        raise unsupported(f"{kn}.shape[-1] (head_dim)", k.shape[-1], f"q's head_dim {head_dim}")
    if k.shape[:-1] != v.shape[:-1]:
        raise unsupported(f"{vn}.shape[:-1]", tuple(v.shape[:-1]), f"{kn}'s {tuple(k.shape[:-1])}")
    if nheads_kv == 0 or nheads % nheads_kv != 0:
        raise unsupported(
            "nheads % nheads_kv", f"{nheads} % {nheads_kv}", "0 (nheads a multiple of nheads_kv)"
        )
    if varlen_q:
        _check_tensor("cu_seqlens_q", cu_seqlens_q, 1, (torch.int32,))
        batch = cu_seqlens_q.shape[0] - 1
        if batch < 0:
            raise unsupported("cu_seqlens_q.shape[0]", 0, "batch + 1 >= 1")
        if max_seqlen_q is None:
            max_seqlen_q = q.shape[0]
    else:
        batch, max_seqlen_q = q.shape[0], q.shape[1]
    if varlen_k:
        _check_index("cu_seqlens_k", cu_seqlens_k, (batch + 1,))
        max_k = k.shape[0] if max_seqlen_k is None else max_seqlen_k
    elif paged:
        _check_tensor("page_table", page_table, 2, (torch.int32,))
        if page_table.shape[0] != batch:
            raise unsupported("page_table.shape[0]", page_table.shape[0], f"batch = {batch}")
        if k.shape[1] == 0:
            raise unsupported(f"{kn}.shape[1] (page_size)", 0, "a page size >= 1")
        if k.shape[0] == 0 and page_table.numel():
            raise unsupported(f"{kn}.shape[0] (num_pages)", 0, "at least one page for a non-empty page_table")
        max_k = page_table.shape[1] * k.shape[1]
    else:
        if k.shape[0] != batch and kv_batch_idx is None:
            raise unsupported(f"{kn}.shape[0] (batch)", k.shape[0], f"q's batch {batch}")
        max_k = k.shape[1]
    _check_index("seqused_q", seqused_q, (batch,))
    _check_index(un, seqused_k, (batch,))
    _check_index("cache_batch_idx", kv_batch_idx, (batch,))
    if learnable_sink is not None:
        _check_tensor("learnable_sink", learnable_sink, 1, (torch.float32,))
        if learnable_sink.shape[0] != nheads:
            raise unsupported(
                "learnable_sink.shape", tuple(learnable_sink.shape), f"({nheads},) one logit per query head"
            )
    is_local, left, right = _canonical_window(window_size, causal)
    softmax_scale = _check_scalars(softmax_scale, softcap, num_splits, pack_gqa, head_dim)
    _check_index_data(
        q,
        k,
        varlen_q,
        varlen_k,
        paged,
        cu_seqlens_q,
        cu_seqlens_k,
        seqused_q,
        seqused_k,
        page_table,
        kv_batch_idx,
        un,
    )
    _check_devices(
        q,
        (
            (kn, k),
            (vn, v),
            ("cu_seqlens_q", cu_seqlens_q),
            ("cu_seqlens_k", cu_seqlens_k),
            ("seqused_q", seqused_q),
            (un, seqused_k),
            ("page_table", page_table),
            ("cache_batch_idx", kv_batch_idx),
            ("learnable_sink", learnable_sink),
        ),
    )
    # every check has passed: the caller's side effect (the KV-cache append) or last check (the
    # backward's support) runs now, before anything is allocated, compiled or launched
    if before_launch is not None:
        before_launch()

    ratio = nheads // nheads_kv
    pack = ratio > 1 if pack_gqa is None else bool(pack_gqa)
    # decode and few-tile calls: the 64-row tiles. Few-tile only for batch-dense q: a varlen call's
    # tile must not depend on whether max_seqlen_q was given (the answer is bitwise the same without)
    sms = 0 if varlen_q else _num_sms(q.device)
    small_m = wants_small_m(max_seqlen_q * (ratio if pack else 1), nheads_kv if pack else nheads, batch, sms)
    q_rows = q.shape[:-2]
    out = torch.empty((*q_rows, nheads, head_dim_v), dtype=q.dtype, device=q.device)
    lse = torch.empty(
        (nheads, q.shape[0]) if varlen_q else (batch, nheads, q.shape[1]),
        dtype=torch.float32,
        device=q.device,
    )
    if batch == 0 or q.shape[-3] == 0 or nheads == 0 or max_seqlen_q == 0:
        return out, lse

    if num_splits == 0:
        num_splits = _heuristic_splits(
            q.device,
            batch,
            nheads,
            nheads_kv,
            max_seqlen_q,
            max_k,
            pack,
            ratio,
            _DTYPES[q.dtype],
            head_dim,
            head_dim_v,
            small_m,
        )
    num_splits = max(1, min(num_splits, _MAX_SPLITS))
    flags = (
        varlen_q,
        varlen_k,
        seqused_q is not None,
        seqused_k is not None,
        paged,
        kv_batch_idx is not None,
        num_splits > 1,
        softcap > 0,
        learnable_sink is not None and num_splits == 1,
        small_m,
    )
    key = (q.dtype, head_dim, head_dim_v, bool(causal), is_local, pack, ratio if pack else 1, flags, q.device)
    fn = _fast.get(key)
    if fn is None:
        fn = _compile_for(key, q.device)
    wl = left if left is not None else _UNBOUNDED
    wr = right if right is not None else _UNBOUNDED
    scalars = (softmax_scale, wl, wr, float(softcap), max_seqlen_q, num_splits)
    if num_splits > 1:
        o_part = torch.empty((num_splits, *out.shape), dtype=torch.float32, device=q.device)
        lse_part = torch.empty((num_splits, *lse.shape), dtype=torch.float32, device=q.device)
        fn(
            q,
            k,
            v,
            o_part,
            lse_part,
            *scalars,
            cu_seqlens_q,
            cu_seqlens_k,
            seqused_q,
            seqused_k,
            page_table,
            kv_batch_idx,
            None,
        )
        _combine(o_part, lse_part, out, lse, learnable_sink, varlen_q)
        if csig is not None and q is q_in and k is k_in and v is v_in:
            _remember(_cache_memo, csig, (fn, out.shape, lse.shape, scalars))
    else:
        fn(
            q,
            k,
            v,
            out,
            lse,
            *scalars,
            cu_seqlens_q,
            cu_seqlens_k,
            seqused_q,
            seqused_k,
            page_table,
            kv_batch_idx,
            learnable_sink,
        )
        if q is q_in and k is k_in and v is v_in:  # no stride-0 view was needed
            if sig is not None:
                _remember(_dense_memo, sig, (fn, out.shape, lse.shape, scalars))
            elif csig is not None:
                _remember(_cache_memo, csig, (fn, out.shape, lse.shape, scalars))
    return out, lse


def _remember(memo: dict, sig, entry) -> None:
    if len(memo) >= _DENSE_MEMO_MAX:
        memo.clear()
    memo[sig] = entry


def _cache_signature(base, *index):
    """The memo key of a call with seqused_k / page_table / cache slots (``index``, each a tensor or
    None) or with split keys: the dense signature ``base`` and each tensor's shape, strides, dtype and
    device (what the validation reads of them). ``None`` when ``base`` is, when one of them is not a
    tensor, or with ``FA4_VALIDATE_DATA=1`` (every call then reads the index data)."""
    if base is None or _VALIDATE_DATA:
        return None
    meta = []
    for t in index:
        if t is None:
            meta.append(None)
        elif isinstance(t, torch.Tensor):
            meta.append((t.shape, t.stride(), t.dtype, t.device))
        else:
            return None
    return (base, *meta)


def _launch_memoised(hit, q, k, v, seqused_k, page_table, kv_batch_idx):
    """A memo hit of :data:`_cache_memo`: the outputs allocated, the kernel launched with the memoised
    scalars (the split count last), and the split-KV partials combined when it is > 1."""
    fn, out_shape, lse_shape, scalars = hit
    out = torch.empty(out_shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(lse_shape, dtype=torch.float32, device=q.device)
    splits = scalars[-1]
    if splits > 1:
        o_part = torch.empty((splits, *out_shape), dtype=torch.float32, device=q.device)
        lse_part = torch.empty((splits, *lse_shape), dtype=torch.float32, device=q.device)
        fn(q, k, v, o_part, lse_part, *scalars, None, None, None, seqused_k, page_table, kv_batch_idx, None)
        _combine(o_part, lse_part, out, lse, None, False)
    else:
        fn(q, k, v, out, lse, *scalars, None, None, None, seqused_k, page_table, kv_batch_idx, None)
    return out, lse


def _num_sms(device) -> int:
    """The device's SM count (memoised per device index: a cached call does no property lookup)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    sms = _sm_count.get(idx)
    if sms is None:
        sms = _sm_count[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return sms


# The registers a thread of a forward tile is assumed to hold when counting resident CTAs: the table's
# rows are spill-free at up to 255 (the sm_120a builds hold 168-255, docs/sm120-resources.md)
_FWD_REGS_PER_THREAD = 255
# keys per split-KV split, at least: decode-size calls (the small-m row) and the others
_MIN_SPLIT_KEYS_DECODE = 128
_MIN_SPLIT_KEYS = 512


def _sm_facts(device):
    """The device's per-SM limits as :class:`fa4_sm120.occupancy.SmFacts` (memoised per device
    index), read from the CUDA properties, SM120's where a property is missing."""
    from fa4_sm120.occupancy import SM120, SmFacts

    idx = device.index if device.index is not None else torch.cuda.current_device()
    facts = _sm_facts_memo.get(idx)
    if facts is None:
        p = torch.cuda.get_device_properties(idx)
        smem = getattr(p, "shared_memory_per_multiprocessor", 0) or SM120.smem_per_sm
        threads = getattr(p, "max_threads_per_multi_processor", 0) or SM120.max_warps * 32
        facts = _sm_facts_memo[idx] = SmFacts(
            smem,
            getattr(p, "shared_memory_per_block_optin", 0) or smem - SM120.reserved_per_cta,
            SM120.reserved_per_cta,
            getattr(p, "regs_per_multiprocessor", 0) or SM120.regs_per_sm,
            threads // 32,
            SM120.max_ctas,
        )
    return facts


def _split_wave(device, dtype, head_dim, head_dim_v, small_m):
    """(tile_m, resident CTA slots on the device) of the split-KV forward row (memoised)."""
    key = (device, dtype, head_dim, head_dim_v, small_m)
    hit = _split_memo.get(key)
    if hit is None:
        from fa4_sm120.occupancy import ctas_per_sm
        from fa4_sm120.smem import fwd_smem_bytes
        from fa4_sm120.tiles import select_fwd_tile

        row = select_fwd_tile(
            device_family(device), dtype, head_dim, head_dim_v, False, split_kv=True, small_m=small_m
        )
        smem = fwd_smem_bytes(row.tile_m, row.tile_n, head_dim, head_dim_v, row.num_stages)
        per_sm = ctas_per_sm(smem, _FWD_REGS_PER_THREAD, row.num_threads, _sm_facts(device))
        hit = _split_memo[key] = (row.tile_m, max(1, per_sm) * _num_sms(device))
    return hit


def _heuristic_splits(
    device, batch, nheads, nheads_kv, seqlen_q, seqlen_k, pack, ratio, dtype, head_dim, head_dim_v,
    small_m=False,
):  # fmt: skip
    """Split the keys when the (m-block, head, batch) tiles fill less than half of one wave of
    resident CTAs: as many splits as fill that one wave whole, with at least 128 keys per split for
    a decode-size call (``small_m``: the small-m row) and 512 for any other.

    Whole waves, not a CTA count per SM: a partial second wave costs as long as a full one. H200,
    decode 32/8 heads d128 at 32k keys (2 resident CTAs of the 64-row tile per SM, 264 slots): batch
    8's 64 tiles ran at 3,042 GB/s with 9 splits (576 CTAs, 2.2 waves) and 3,804 with 4 (256); batch 16
    at 2,691 unsplit and 3,960 with 2; batch 2 at 2,436 with 33 and 3,037 with 16 (2026-12-02,
    tools/decode_splits.py). Shorter splits lose to the combine: batch 1 x 16k keys ran at 1,687 GB/s
    with 32 splits, 1,454 with 16 and 1,324 with 64; 512 x 512 prefill at 74 TFLOP/s unsplit, 54 with
    2 splits (same run). Short caches, timed as CUDA-graph replays (2026-12-04, 32/8 heads d128, GB/s by
    split count): batch 1 x 512 keys 117 unsplit, 161 with 4, 165 with 8; x 1,024 201 with 2, 298 with
    8; x 2,048 384 with 4, 500 with 16; x 4,096 697 with 8, 737 with 32, 812 with 16; batch 8 x 1,024
    1,271 with 2, 1,485 with 4 (one wave)."""
    tile_m, slots = _split_wave(device, dtype, head_dim, head_dim_v, small_m)
    heads = nheads_kv if pack else nheads
    tiles = -(-seqlen_q * (ratio if pack else 1) // tile_m) * heads * batch
    min_keys = _MIN_SPLIT_KEYS_DECODE if small_m else _MIN_SPLIT_KEYS
    if 2 * tiles > slots or seqlen_k < 2 * min_keys:
        return 1
    return max(1, min(slots // tiles, seqlen_k // min_keys, _MAX_SPLITS))


def _combine(o_part, lse_part, out, lse, learnable_sink, varlen_q):
    """Merge split-KV partials with the combine kernel (fa4_sm120.combine): ``lse = log Σ_s
    exp(lse_s)`` (+ the sink), ``out = Σ_s exp(lse_s - lse) O_s``."""
    if varlen_q:  # (S, t, h, dv) / (S, h, t) -> one batch of t rows
        o_p, lse_p, o, l_ = (
            o_part.unsqueeze(1),
            lse_part.permute(0, 2, 1).unsqueeze(1),
            out.unsqueeze(0),
            lse.t().unsqueeze(0),
        )
    else:  # lse (S, b, h, s) -> (S, b, s, h) views
        o_p, lse_p, o, l_ = o_part, lse_part.permute(0, 1, 3, 2), out, lse.permute(0, 2, 1)
    key = (out.dtype, out.shape[-1], learnable_sink is not None, out.device)
    fn = _fast.get(("combine", key))
    if fn is None:
        from fa4_sm120.configs import CombineConfig

        cfg = CombineConfig(_DTYPES[out.dtype], out.shape[-1], has_sink=learnable_sink is not None)

        def build():
            from fa4_sm120.combine import compile_combine  # the DSL: only when compiling

            with torch.cuda.device(out.device):
                return compile_combine(cfg, tvm_ffi=True)

        fn = FWD_CACHE.get_or_compile((cfg, dsl_version(), out.device.index), build)
        _fast[("combine", key)] = fn
    fn(o_p, lse_p, o, l_, learnable_sink)


def _compile_for(key, device: torch.device):
    """The compiled forward of the fast key ``key`` for ``device`` (memoised in ``_fast``)."""
    major, minor = torch.cuda.get_device_capability(device)
    fn = _fwd_kernel(key, device_family(device), f"sm_{major}{minor}", device)
    _fast[key] = fn
    return fn


def _fwd_kernel(key, family: str, target: str, device: torch.device | None = None):
    """The compiled forward of ``key`` for a GPU of ``family`` whose compile target is ``target``
    (``sm_XY``), through the compile cache (memory, then disk). ``device=None``: no GPU here (the
    CLI's warmup filling the disk cache for another machine's GPU; the DSL's target then comes from
    ``CUTE_DSL_ARCH``)."""
    from fa4_sm120.tiles import fwd_config

    dtype, head_dim, head_dim_v, causal, is_local, pack_gqa, ratio, flags, _ = key
    varlen_q, varlen_k, used_q, used_k, paged, kv_batch, split, softcap, sink, small_m = flags
    cfg = fwd_config(
        family,
        _DTYPES[dtype],
        head_dim,
        head_dim_v,
        causal=causal,
        local=is_local,
        pack_gqa=pack_gqa,
        qhead_per_kvhead=ratio,
        split_kv=split,
        softcap=softcap,
        small_m=small_m,
    )
    import dataclasses

    cfg = dataclasses.replace(
        cfg,
        varlen_q=varlen_q,
        varlen_k=varlen_k,
        has_seqused_q=used_q,
        has_seqused_k=used_k,
        paged_kv=paged,
        kv_batch_idx=kv_batch,
        split_kv=split,
        has_softcap=softcap,
        has_sink=sink,
    )

    def build():
        from fa4_sm120.compile import compile_fwd  # the DSL: only when compiling (not on a disk hit)

        with torch.cuda.device(device) if device is not None else contextlib.nullcontext():
            return compile_fwd(cfg, tvm_ffi=True)

    index = device.index if device is not None else None
    return FWD_CACHE.get_or_compile((cfg, target, dsl_version(), index), build)


def _reset_caches() -> None:
    """Forget every compiled function (tests)."""
    FWD_CACHE.clear()
    _fast.clear()
    _split_memo.clear()
    _dense_memo.clear()
    _cache_memo.clear()
