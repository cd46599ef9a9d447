"""Argument checks of the forward: everything the API checks before anything is compiled, launched or
written, and the canonical, frozen arguments the checks return (:class:`FwdArgs`).

The first layer of fa4-torch (``validate -> plan -> launch -> ops -> autograd -> api``): it imports
torch, :mod:`fa4_core.errors` and the kernels' plain-data limits, nothing of fa4-torch.

* :func:`forward_args` checks one forward call from metadata only (shapes, strides, dtypes, devices,
  data-pointer alignment, the Python scalars) and, for CPU index tensors or with
  ``FA4_VALIDATE_DATA=1`` (:data:`VALIDATE_DATA`), the contents of the index tensors; it returns a
  :class:`FwdArgs` whose window is canonical: causal folded in (``right = 0``) and an unbounded side
  as :data:`UNBOUNDED`, the one encoding below the API (the kernels' runtime value; ``None`` and
  ``-1`` are the caller's spellings, ``-1`` also that of the ``torch.library`` schemas);
* :func:`check_kvcache` checks what ``flash_attn_with_kvcache`` adds (the new ``k``/``v`` against
  the caches, ``cache_seqlens`` against their rows) before its append writes anything;
* the single checks (:func:`check_flag`, :func:`check_max_seqlen`, :func:`check_tensor`,
  :func:`reject_extras`, ...) for the API, ``fa4_torch.compat`` and the autograd functions.

Errors name the argument as the caller passed it (``names``: ``k_cache``, ``cache_seqlens`` for the
KV-cache call), the value and what is supported (:func:`fa4_core.errors.unsupported`); a bool
argument of another type is a ``TypeError``; a feature without a kernel a ``NotImplementedError``
(:func:`later`). ``docs/api.md`` (Validation) lists them. Seams for tests: :data:`VALIDATE_DATA`
(read at each call) and :func:`check_devices` (called through this module's globals).
"""

from __future__ import annotations

import math
import os
import re
from typing import NamedTuple

import torch

from fa4_core.errors import UnsupportedConfigError, unsupported
from fa4_sm120.limits import (
    HEAD_DIMS,
    MAX_SPLITS,
    PAGE_OFFSET32_LIMIT,
    Q8_HEAD_DIMS,
    Q8_PV_ACCUMS,
    Q8_QK_FORMATS,
)

__all__ = [
    "DTYPES",
    "UNBOUNDED",
    "VALIDATE_DATA",
    "DEFAULT_NAMES",
    "KVCACHE_NAMES",
    "FwdArgs",
    "forward_args",
    "check_kvcache",
    "later",
    "check_flag",
    "check_max_seqlen",
    "reject_extras",
    "reject_flag",
    "check_hints",
    "named_as",
    "needs_grad",
    "check_tensor",
    "check_layout",
    "check_index",
    "reads_data",
    "check_cu_data",
    "check_index_data",
    "check_devices",
    "canonical_window",
    "check_scalars",
    "check_backward_args",
    "KV8_DTYPES",
    "check_kv8",
    "check_descale",
    "descale_view",
    "quantize_kv8",
    "Q8Args",
    "Q8VarlenArgs",
    "quantized_args",
    "quantized_varlen_args",
    "fp8_input_args",
    "fp8_input_varlen_args",
    "SDPA_PRECISIONS",
    "check_sdpa",
]

DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
KV8_DTYPES = {torch.float8_e4m3fn: "float8_e4m3fn"}  # FP8 K/V caches (with fp16/bf16 q)
_KV_DTYPES = (*DTYPES, *KV8_DTYPES)  # what a K/V tensor or cache may hold
# the largest head dims whose tile fits 99 KB with the 8-bit staging tiles (fa4_sm120.tiles)
KV8_MAX_HEAD_DIM = 192
UNBOUNDED = 1 << 30  # a window side without a bound (the kernels' runtime value)
VALIDATE_DATA = os.environ.get("FA4_VALIDATE_DATA", "") == "1"
DEFAULT_NAMES = ("k", "v", "seqused_k")  # how the caller names k, v and seqused_k
KVCACHE_NAMES = ("k_cache", "v_cache", "cache_seqlens")  # flash_attn_with_kvcache's names of them


def later(feature: str, where: str | None) -> NotImplementedError:
    """``where``: the release that will bring it, or ``None`` when none is planned."""
    if where is None:
        return NotImplementedError(f"{feature} is not implemented in fa4 (no release plans it for SM120)")
    return NotImplementedError(f"{feature} is not implemented yet in fa4 (planned: {where})")


# ---------------------------------------------------------------------------------- single checks
def check_tensor(name: str, t, ndim: int, dtypes=tuple(DTYPES), layout: bool = True) -> None:
    """Type, dtype, rank; then (``layout``) contiguity of the last dim, 16-byte strides and base."""
    if not isinstance(t, torch.Tensor):
        raise unsupported(name, type(t).__name__, "a torch.Tensor")
    if t.dtype not in dtypes:
        raise unsupported(f"{name}.dtype", t.dtype, ", ".join(str(d) for d in dtypes))
    if t.dim() != ndim:
        raise unsupported(f"{name}.dim()", t.dim(), f"{ndim} (shape {tuple(t.shape)})")
    if layout:
        check_layout(name, t)


def check_layout(name: str, t):
    """Returns ``t``, or a view of it whose size-1 dims carry stride 0 when their stride is not a
    multiple of 8 (it addresses nothing; the compiled kernels assume 16-byte-multiple strides)."""
    shape, stride = t.shape, t.stride()  # read once: this runs on every validated call
    ndim = len(stride)
    if t.dtype in DTYPES:
        if stride[-1] != 1 and shape[-1] > 1:
            raise unsupported(f"{name}.stride(-1)", stride[-1], "1 (the head dimension must be contiguous)")
        fix = False
        for i in range(ndim - 1):
            if stride[i] % 8 != 0:
                if shape[i] != 1:
                    raise unsupported(
                        f"{name}.stride({i})", stride[i], "a multiple of 8 elements (16-byte aligned rows)"
                    )
                fix = True
        if t.data_ptr() % 16 != 0:
            raise unsupported(f"{name}.data_ptr() % 16", t.data_ptr() % 16, "0 (16-byte aligned base)")
        if fix:
            strides = [0 if (n == 1 and st % 8) else st for n, st in zip(shape[:-1], stride[:-1])]
            t = t.as_strided(shape, (*strides, 1))
    elif t.dtype in KV8_DTYPES:  # FP8 K/V: 16-byte cp.async of 16 elements
        if stride[-1] != 1 and shape[-1] > 1:
            raise unsupported(f"{name}.stride(-1)", stride[-1], "1 (the head dimension must be contiguous)")
        fix = False
        for i in range(ndim - 1):
            if stride[i] % 16 != 0:
                if shape[i] != 1:
                    raise unsupported(
                        f"{name}.stride({i})",
                        stride[i],
                        "a multiple of 16 elements (16-byte aligned FP8 rows)",
                    )
                fix = True
        if t.data_ptr() % 16 != 0:
            raise unsupported(f"{name}.data_ptr() % 16", t.data_ptr() % 16, "0 (16-byte aligned base)")
        if fix:  # a size-1 dim's stride addresses nothing: 0, as for 16-bit tensors
            strides = [0 if (n == 1 and st % 16) else st for n, st in zip(shape[:-1], stride[:-1])]
            t = t.as_strided(shape, (*strides, 1))
    elif stride[-1] != 1 and shape[-1] > 1:
        raise unsupported(f"{name}.stride({ndim - 1})", stride[-1], "1 (contiguous)")
    return t


def check_index(name: str, t, shape: tuple) -> None:
    """An optional int32 index tensor of exactly ``shape``."""
    if t is None:
        return
    check_tensor(name, t, len(shape), (torch.int32,))
    if t.shape != shape:  # torch.Size is a tuple
        raise unsupported(f"{name}.shape", tuple(t.shape), f"{shape}")


def reads_data(*ts) -> bool:
    """Whether the data checks run on these index tensors: all on the CPU, or ``FA4_VALIDATE_DATA=1``."""
    if VALIDATE_DATA:
        return True
    for t in ts:  # is_cpu: no device object (a KV-cache call asks this on every call)
        if not t.is_cpu:
            return False
    return True


def check_cu_data(name: str, cu, total):
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


def check_index_data(
    q, k, varlen_q, varlen_k, paged, cu_q, cu_k, used_q, used_k, page_table, kv_batch, used_k_name="seqused_k"
):
    """The checks that read index tensors: cu_seqlens monotone from 0 to the total, seqused within
    capacity, page indices and cache slots in range. Reading device memory would synchronise the host,
    so they run only on CPU tensors or with ``FA4_VALIDATE_DATA=1`` (a debugging switch)."""
    idx = [t for t in (cu_q, cu_k, used_q, used_k, page_table, kv_batch) if t is not None]
    if not idx or not reads_data(*idx):
        return

    lens_q = check_cu_data("cu_seqlens_q", cu_q, q.shape[0]) if varlen_q else None
    lens_k = check_cu_data("cu_seqlens_k", cu_k, k.shape[0]) if varlen_k else None
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


def check_devices(q, named) -> None:
    """Every tensor of ``named`` (``(name, tensor or None)`` pairs) on q's device, and that a CUDA one."""
    device = q.device
    for name, t in named:
        if t is not None and t.device != device:
            raise unsupported(f"{name}.device", str(t.device), f"q's device {device}")
    if device.type != "cuda":
        raise unsupported("q.device", str(device), "a CUDA device")


def canonical_window(window_size, causal: bool) -> tuple[bool, int, int]:
    """-> ``(is_local, left, right)``, a side without a bound (``None`` or ``-1``) as :data:`UNBOUNDED`;
    causal folds in as ``right = 0`` (or the caller's right side when it is smaller)."""
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
    return is_local, UNBOUNDED if left is None else left, UNBOUNDED if right is None else right


def check_scalars(softmax_scale, softcap, num_splits, pack_gqa, head_dim) -> float:
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
    if isinstance(num_splits, bool) or not isinstance(num_splits, int) or not 0 <= num_splits <= MAX_SPLITS:
        raise unsupported(
            "num_splits", num_splits, f"an int in [0, {MAX_SPLITS}] (0 = heuristic, 1 = no split)"
        )
    if pack_gqa is not None and not isinstance(pack_gqa, bool):
        raise unsupported("pack_gqa", pack_gqa, "None (auto), True, False")
    return float(softmax_scale)


def check_flag(name: str, value) -> None:
    """A bool argument (``causal``, ``return_lse``, ``deterministic``...): ``True`` or ``False`` only; a
    string such as ``"False"`` would be truthy. ``TypeError`` naming the argument otherwise."""
    if value is not True and value is not False:
        raise TypeError(f"{name}={value!r} is not supported; supported: True or False (a bool)")


def check_max_seqlen(name: str, value, what: str) -> None:
    """``max_seqlen_q``/``max_seqlen_k``: None or an int >= 0 (``what``: query or key)."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)) or value < 0
    ):
        raise unsupported(name, value, f"an int >= 0 (an upper bound of the {what} lengths) or None")


def reject_extras(**extras) -> None:
    """The arguments kept for ``flash_attn.cute`` signature compatibility: each must be ``None``."""
    for name, val in extras.items():
        if val is not None:
            raise later(name, None)


def reject_flag(name: str, value) -> None:
    """A bool argument kept for ``flash_attn.cute`` signature compatibility whose ``True`` fa4 has no
    kernel for (``gather_bwd_recompute_p``): ``False`` only."""
    check_flag(name, value)
    if value:
        raise later(f"{name}=True", None)


def check_hints(min_seqlen_k, disable_scheduler_metadata) -> None:
    """``flash_attn.cute``'s varlen hints that cannot change the result (fa4 masks every key past a
    sequence's length and has no scheduler metadata): checked, then ignored."""
    if min_seqlen_k is not None and (
        isinstance(min_seqlen_k, bool)
        or not isinstance(min_seqlen_k, (int, torch.SymInt))
        or min_seqlen_k < 0
    ):
        raise unsupported(
            "min_seqlen_k", min_seqlen_k, "an int >= 0 (a lower bound of the key lengths) or None"
        )
    check_flag("disable_scheduler_metadata", disable_scheduler_metadata)


def named_as(e: UnsupportedConfigError, name: str, as_passed: str) -> UnsupportedConfigError:
    """``e`` with the argument ``name`` called ``as_passed`` in its message (the caller's spelling,
    e.g. FlashAttention-2's ``block_table`` for ``page_table``)."""
    msg = re.sub(rf"\b{re.escape(name)}\b", as_passed, str(e))
    return UnsupportedConfigError(msg).with_traceback(e.__traceback__)


def needs_grad(*ts) -> bool:
    """Grad mode is on and one of ``ts`` (tensors or anything else) requires grad."""
    if not torch.is_grad_enabled():
        return False
    for t in ts:  # a loop, not any(generator): this runs on every call
        if isinstance(t, torch.Tensor) and t.requires_grad:
            return True
    return False


# ---------------------------------------------------------------------------------- the forward
_new = tuple.__new__  # NamedTuple(*fields) without its Python-level __new__: half the cost per call


class FwdArgs(NamedTuple):
    """A validated forward call: the tensors (``q``, ``k``, ``v`` possibly as views whose size-1 dims
    carry stride 0, see :func:`check_layout`) and its canonical scalars."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    cu_seqlens_q: torch.Tensor | None
    cu_seqlens_k: torch.Tensor | None
    seqused_q: torch.Tensor | None
    seqused_k: torch.Tensor | None
    page_table: torch.Tensor | None
    kv_batch_idx: torch.Tensor | None
    learnable_sink: torch.Tensor | None
    softmax_scale: float
    causal: bool
    is_local: bool
    window_left: int  # UNBOUNDED: no bound
    window_right: int  # UNBOUNDED: no bound; causal: <= 0
    softcap: float  # 0.0: off
    num_splits: int  # 0: the heuristic's; else 1..MAX_SPLITS
    pack_gqa: bool | None  # None: on when nheads > nheads_kv
    batch: int
    nheads: int
    nheads_kv: int
    head_dim: int
    head_dim_v: int
    max_seqlen_q: int  # the grid's query rows per sequence (the given bound, or the total length)
    max_seqlen_k: int  # a bound of the key lengths (the split heuristic's)
    views: bool  # q, k or v is a view made here (not the caller's tensor)
    # an FP8 K/V cache: (k_descale, v_descale) as (batch, nheads_kv) fp32 views (check_kv8); else None
    descales: tuple[torch.Tensor, torch.Tensor] | None = None


def forward_args(
    q,
    k,
    v,
    softmax_scale,
    causal,
    window_size,
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
    names=DEFAULT_NAMES,
    k_descale=None,
    v_descale=None,
    kv8=False,
) -> FwdArgs:
    """Every check of one forward call (``max_seqlen_q/k`` excepted: the caller checks them first, on
    every call), in the order of the error table of ``docs/api.md``. ``names``: how the caller calls
    ``k``, ``v`` and ``seqused_k``; ``kv8``: the call goes to the FP8 K/V cache's forward
    (:func:`fa4_torch.launch.forward_kv8`), whose ``k_descale``/``v_descale`` are checked here
    (:func:`check_kv8`, before the device check); FP8 ``k``/``v`` anywhere else are an error."""
    q_in, k_in, v_in = q, k, v
    kn, vn, un = names
    varlen_q = cu_seqlens_q is not None
    varlen_k = cu_seqlens_k is not None
    paged = page_table is not None
    if varlen_k and paged:  # before k's rank, which each of them sets differently
        raise unsupported(
            "(page_table, cu_seqlens_k)", ("given", "given"), "paged K/V with seqused_k, not cu_seqlens_k"
        )
    check_flag("causal", causal)
    check_tensor("q", q, 3 if varlen_q else 4, layout=False)
    check_tensor(kn, k, 3 if varlen_k else 4, _KV_DTYPES, layout=False)
    check_tensor(vn, v, 3 if varlen_k else 4, _KV_DTYPES, layout=False)
    for name, d in (("head_dim", q.shape[-1]), ("head_dim_v", v.shape[-1])):
        if d not in HEAD_DIMS:
            raise unsupported(name, d, f"one of {HEAD_DIMS}")
    q, k, v = check_layout("q", q), check_layout(kn, k), check_layout(vn, v)
    if (k.dtype != q.dtype or v.dtype != q.dtype) and not (k.dtype in KV8_DTYPES and v.dtype == k.dtype):
        raise unsupported(
            f"(q.dtype, {kn}.dtype, {vn}.dtype)",
            (q.dtype, k.dtype, v.dtype),
            "one dtype for all three, or an FP8 (float8_e4m3fn) k and v with fp16/bf16 q",
        )
    if k.dtype in KV8_DTYPES and not kv8:  # the 16-bit forward's path (the custom op, the backward)
        raise unsupported(
            f"({kn}.dtype, {vn}.dtype)", (k.dtype, v.dtype),
            "q's dtype here; an FP8 K/V cache runs eager through flash_attn_varlen_func or "
            "flash_attn_with_kvcache",
        )  # fmt: skip
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
        check_tensor("cu_seqlens_q", cu_seqlens_q, 1, (torch.int32,))
        batch = cu_seqlens_q.shape[0] - 1
        if batch < 0:
            raise unsupported("cu_seqlens_q.shape[0]", 0, "batch + 1 >= 1")
        if max_seqlen_q is None:
            max_seqlen_q = q.shape[0]
    else:
        batch, max_seqlen_q = q.shape[0], q.shape[1]
    if varlen_k:
        check_index("cu_seqlens_k", cu_seqlens_k, (batch + 1,))
        max_k = k.shape[0] if max_seqlen_k is None else max_seqlen_k
    elif paged:
        check_tensor("page_table", page_table, 2, (torch.int32,))
        if page_table.shape[0] != batch:
            raise unsupported("page_table.shape[0]", page_table.shape[0], f"batch = {batch}")
        if k.shape[1] == 0:
            raise unsupported(f"{kn}.shape[1] (page_size)", 0, "a page size >= 1")
        if k.shape[0] == 0 and page_table.numel():
            raise unsupported(f"{kn}.shape[0] (num_pages)", 0, "at least one page for a non-empty page_table")
        max_k = page_table.shape[1] * k.shape[1]
        if k.dtype in KV8_DTYPES:
            check_page_offsets32(kn, k)
            check_page_offsets32(vn, v)
    else:
        if k.shape[0] != batch and kv_batch_idx is None:
            raise unsupported(f"{kn}.shape[0] (batch)", k.shape[0], f"q's batch {batch}")
        max_k = k.shape[1]
    check_index("seqused_q", seqused_q, (batch,))
    check_index(un, seqused_k, (batch,))
    check_index("cache_batch_idx", kv_batch_idx, (batch,))
    check_sink(learnable_sink, nheads)
    is_local, left, right = canonical_window(window_size, causal)
    softmax_scale = check_scalars(softmax_scale, softcap, num_splits, pack_gqa, head_dim)
    check_index_data(
        q, k, varlen_q, varlen_k, paged, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, page_table,
        kv_batch_idx, un,
    )  # fmt: skip
    descales = None
    if kv8 or k_descale is not None or v_descale is not None:
        descales = check_kv8(q, k, v, k_descale, v_descale, batch, nheads_kv, names)
    check_devices(
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
    return _new(FwdArgs, (
        q, k, v, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, page_table, kv_batch_idx, learnable_sink,
        softmax_scale, causal, is_local, left, right, float(softcap), num_splits, pack_gqa, batch, nheads,
        nheads_kv, head_dim, head_dim_v, max_seqlen_q, max_k, q is not q_in or k is not k_in or v is not v_in,
        descales,
    ))  # fmt: skip


# ---------------------------------------------------------------------------------- the backward seam
def check_backward_args(a: FwdArgs, dout, out, lse, dq, dk, dv, dsink=None) -> None:
    """:func:`fa4_torch.api.attention_backward`'s own tensors, beside the forward's checks of ``a``:
    ``dout``/``out`` of q's rows with ``head_dim_v`` columns in q's dtype, ``lse`` fp32 of the
    forward's LSE shape, and the optional ``dq``/``dk``/``dv`` buffers (q's, k's, v's shapes; fp32 or
    q's dtype; q's device) that the gradients are added into."""
    q = a.q
    rows = (*q.shape[:-1], a.head_dim_v)
    for name, t in (("dout", dout), ("out", out)):
        check_tensor(name, t, q.dim(), (q.dtype,), layout=False)
        if tuple(t.shape) != rows:
            raise unsupported(f"{name}.shape", tuple(t.shape), f"{rows} (q's rows, head_dim_v)")
    varlen = a.cu_seqlens_q is not None
    lse_shape = (a.nheads, q.shape[0]) if varlen else (a.batch, a.nheads, q.shape[1])
    check_tensor("lse", lse, len(lse_shape), (torch.float32,), layout=False)
    if tuple(lse.shape) != lse_shape:
        raise unsupported("lse.shape", tuple(lse.shape), f"{lse_shape} (the forward's lse)")
    for name, buf, like in (("dq", dq, q), ("dk", dk, a.k), ("dv", dv, a.v)):
        if buf is None:
            continue
        check_tensor(name, buf, like.dim(), (torch.float32, q.dtype), layout=False)
        if buf.shape != like.shape:
            raise unsupported(f"{name}.shape", tuple(buf.shape), f"{tuple(like.shape)}")
    if dsink is not None:
        if a.learnable_sink is None:
            raise unsupported("dsink", "a tensor", "None without learnable_sink")
        check_tensor("dsink", dsink, 1, (torch.float32,), layout=False)
        if tuple(dsink.shape) != (a.nheads,):
            raise unsupported("dsink.shape", tuple(dsink.shape), f"({a.nheads},)")
    named = (("dout", dout), ("out", out), ("lse", lse), ("dq", dq), ("dk", dk), ("dv", dv), ("dsink", dsink))
    check_devices(q, named)


# ---------------------------------------------------------------------------------- FP8 K/V
def check_kv8(q, k, v, k_descale, v_descale, batch: int, nheads_kv: int, names=DEFAULT_NAMES):
    """The descales of an FP8 K/V cache, after :func:`forward_args` passed: fp32 tensors of one
    element (0-d or ``(1,)``) or ``(batch, nheads_kv)`` on q's device, finite and > 0 (the values read
    only on the CPU or with ``FA4_VALIDATE_DATA=1``, as for the index tensors); ``None`` is 1.0
    (FlashAttention-3's default). Descales without an FP8 ``k`` are an error. Returns ``(k_descale,
    v_descale)`` as ``(batch, nheads_kv)`` fp32 views (one element broadcast with stride 0), or
    ``(None, None)`` when ``k`` is not FP8."""
    kv8 = k.dtype in KV8_DTYPES
    if not kv8:
        for name, d in (("k_descale", k_descale), ("v_descale", v_descale)):
            if d is not None:
                raise unsupported(
                    name, "a tensor", f"None unless {names[0]} and {names[1]} are float8_e4m3fn"
                )
        return None, None
    for name, d in (("head_dim", k.shape[-1]), ("head_dim_v", v.shape[-1])):
        if d > KV8_MAX_HEAD_DIM:
            raise unsupported(name, d, f"at most {KV8_MAX_HEAD_DIM} with an FP8 K/V cache")
    return (
        check_descale("k_descale", k_descale, q.device, batch, nheads_kv),
        check_descale("v_descale", v_descale, q.device, batch, nheads_kv),
    )


def check_page_offsets32(name: str, cache) -> None:
    """A paged FP8 cache ``(num_pages, page_size, nheads_kv, d)``: the kernels address a row from its
    KV head's element 0 in 32-bit products (``FwdCodegen.page_offsets32``), so the page stride, the
    offset of a page's last row and that of the last KV head stay below ``PAGE_OFFSET32_LIMIT``
    elements (any cache whose page holds fewer elements)."""
    shape, stride = cache.shape, cache.stride()
    reaches = (
        (0, stride[0], "page stride"),
        (1, (shape[1] - 1) * stride[1], "last row of a page (stride(1) * (page_size - 1))"),
        (2, (shape[2] - 1) * stride[2], "last KV head (stride(2) * (nheads_kv - 1))"),
    )
    for dim, reach, what in reaches:
        if reach >= PAGE_OFFSET32_LIMIT:
            raise unsupported(
                f"{name}.stride({dim})",
                stride[dim],
                f"a paged FP8 cache whose {what} is below 2**31 elements",
            )


def check_sink(learnable_sink, nheads: int) -> None:
    """``learnable_sink``: None, or fp32 ``(nheads,)`` (one logit per query head)."""
    if learnable_sink is not None:
        check_tensor("learnable_sink", learnable_sink, 1, (torch.float32,))
        if learnable_sink.shape[0] != nheads:
            raise unsupported(
                "learnable_sink.shape", tuple(learnable_sink.shape), f"({nheads},) one logit per query head"
            )


def check_descale(name: str, d, device, batch: int, nheads_kv: int) -> torch.Tensor:
    """One FP8 descale (FlashAttention-3's convention): an fp32 tensor of one element (0-d or
    ``(1,)``) or ``(batch, nheads_kv)`` on ``device``, finite and > 0 (the values read only on the CPU
    or with ``FA4_VALIDATE_DATA=1``, as for the index tensors); ``None`` is 1.0. Returns it as a
    ``(batch, nheads_kv)`` fp32 view (one element broadcast with stride 0)."""
    if d is None:
        return descale_view(None, device, batch, nheads_kv)
    if not isinstance(d, torch.Tensor):
        raise unsupported(name, type(d).__name__, "an fp32 torch.Tensor (0-d, (1,) or (batch, nheads_kv))")
    if d.dtype != torch.float32:
        raise unsupported(f"{name}.dtype", d.dtype, "torch.float32")
    if d.device != device:
        raise unsupported(f"{name}.device", str(d.device), f"q's device {device}")
    scalar = d.numel() == 1 and d.dim() <= 1
    if not scalar and tuple(d.shape) != (batch, nheads_kv):
        raise unsupported(
            f"{name}.shape", tuple(d.shape), f"() or (1,) or (batch, nheads_kv) = ({batch}, {nheads_kv})"
        )
    if reads_data(d):
        c = d.detach().cpu()
        if c.numel() and not bool(torch.isfinite(c).all() and (c > 0).all()):
            bad = c[~(torch.isfinite(c) & (c > 0))].flatten()[:4].tolist()
            raise unsupported(name, bad, "finite values > 0")
    return descale_view(d, device, batch, nheads_kv)


_ONES: dict = {}  # device -> an fp32 0-d tensor of 1.0 (a None descale), made outside graph capture


def descale_view(d, device, batch: int, nheads_kv: int) -> torch.Tensor:
    """A checked descale (or ``None``: 1.0) as the kernel's ``(batch, nheads_kv)`` fp32 view (one
    element broadcast with stride 0). The 1.0 of ``None`` is kept per device only when made outside a
    CUDA graph capture: made inside one, it holds 1.0 only once that graph replays (its fill is part
    of the graph), so it serves that call alone."""
    if d is None:
        d = _ONES.get(device)
        if d is None:
            d = torch.ones((), dtype=torch.float32, device=device)
            if not (device.type == "cuda" and torch.cuda.is_current_stream_capturing()):
                _ONES[device] = d
    if d.dim() == 2:
        return d
    return d.expand(batch, nheads_kv)  # 0-d or (1,): broadcast, strides (0, 0)


def quantize_kv8(x: torch.Tensor, descale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x (batch, s, nheads_kv, d)`` in fp16/bf16 -> ``dtype`` (e4m3) of ``x / descale`` (descale
    ``(batch, nheads_kv)``), saturated to the format's finite range (e4m3 has no infinity)."""
    fmax = torch.finfo(dtype).max
    y = x.float() / descale[:, None, :, None]
    return y.clamp(-fmax, fmax).to(dtype)


# ---------------------------------------------------------------------------------- the KV cache
def check_kvcache(q, k_cache, v_cache, k, v, cache_seqlens, page_table, cache_batch_idx) -> torch.Tensor:
    """``flash_attn_with_kvcache``'s own checks, before its append writes anything: the new ``k``/``v``
    against the caches, ``cache_seqlens`` (an int, or an int32 ``(batch,)`` tensor whose values are
    read on the CPU or with ``FA4_VALIDATE_DATA=1``) against their rows. Returns ``cache_seqlens`` as a
    tensor (an int becomes one on q's device); the rest is :func:`forward_args`' (``KVCACHE_NAMES``)."""
    check_tensor("q", q, 4, layout=False)
    batch = q.shape[0]
    paged = page_table is not None
    check_tensor("k_cache", k_cache, 4, _KV_DTYPES, layout=False)
    check_tensor("v_cache", v_cache, 4, _KV_DTYPES, layout=False)
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
        check_tensor("k", k, 4, layout=False)
        check_tensor("v", v, 4, layout=False)
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
                if cache.dtype in KV8_DTYPES:  # an FP8 cache takes q's dtype, quantized on the append
                    if new.dtype != q.dtype:
                        raise unsupported(
                            f"{name}.dtype",
                            new.dtype,
                            f"q's dtype {q.dtype} (quantized into the FP8 {name}_cache)",
                        )
                elif new.dtype != cache.dtype:
                    raise unsupported(f"{name}.dtype", new.dtype, f"{name}_cache's dtype {cache.dtype}")
                if new.device != cache.device:
                    raise unsupported(
                        f"{name}.device", str(new.device), f"{name}_cache's device {cache.device}"
                    )
        s_new = k.shape[1]
    # the rows of each sequence's cache (None: the page table is malformed, forward_args says so; a
    # zero page size too)
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
        return torch.full((batch,), cache_seqlens, dtype=torch.int32, device=q.device)
    if not isinstance(cache_seqlens, torch.Tensor):
        raise unsupported("cache_seqlens", cache_seqlens, "an int or an int32 tensor (batch,)")
    check_index("cache_seqlens", cache_seqlens, (batch,))
    if reads_data(cache_seqlens):
        c = cache_seqlens.cpu()
        if c.numel() and (int(c.min()) < 0 or (capacity is not None and int(c.max()) + s_new > capacity)):
            raise unsupported("cache_seqlens", c.tolist()[:16], _cache_seqlens_range(s_new, capacity))
    return cache_seqlens


def _cache_seqlens_range(s_new: int, capacity) -> str:
    """What ``cache_seqlens`` may hold, for the error message."""
    if capacity is None:
        return "values >= 0"
    fits = f"the cache holds {capacity} rows per sequence and the {s_new} new rows of k/v go at cache_seqlens"
    if s_new > capacity:
        return f"none: {fits}"
    return f"0 <= cache_seqlens[b] <= {capacity - s_new} ({fits})"


# ---------------------------------------------------------------------------------- 8-bit attention


class Q8Args(NamedTuple):
    """A validated ``quantized_attn_func`` call."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    softmax_scale: float
    causal: bool
    qk: str
    pv_accum: str
    return_lse: bool
    out_dtype: torch.dtype
    # float8_e4m3fn inputs (FlashAttention-3's convention): (batch, nheads_kv) fp32 views, else None
    descales: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    # padded batches (the varlen form): int32 (batch,) lengths (seqused_q, seqused_k), else None
    seqused: tuple[torch.Tensor, torch.Tensor] | None = None
    # a local window: (left, right), a side without a bound as UNBOUNDED (causal folded in), else None
    window: tuple[int, int] | None = None
    softcap: float = 0.0  # 0.0: off
    learnable_sink: torch.Tensor | None = None  # (nheads,) fp32


class Q8VarlenArgs(NamedTuple):
    """A validated ``quantized_attn_varlen_func`` call: ``args`` holds the packed ``(total, heads, d)``
    tensors and the call's options; the sequences' lengths were read once (on the CPU)."""

    args: Q8Args
    cu_seqlens_q: torch.Tensor
    cu_seqlens_k: torch.Tensor
    lens_q: torch.Tensor  # (batch,) on the CPU
    lens_k: torch.Tensor
    max_seqlen_q: int  # the longest sequence (not the caller's bound)
    max_seqlen_k: int


def quantized_args(
    q, k, v, causal, softmax_scale, window_size, learnable_sink, softcap, qk, pv_accum, return_lse,
    descales=None, descale_batch=None,
) -> Q8Args:  # fmt: skip
    """Every check of an 8-bit forward call (``fa4_torch.quantized_attn_func``; with ``descales``,
    ``(q_descale, k_descale, v_descale)``, ``flash_attn_func`` on float8_e4m3fn q, k, v), before
    anything is quantized, compiled or launched. ``descale_batch``: the descales' batch when it is
    not q's (the varlen form: the number of sequences)."""
    check_flag("causal", causal)
    check_flag("return_lse", return_lse)
    if qk not in Q8_QK_FORMATS:
        raise unsupported("qk", qk, ", ".join(repr(f) for f in Q8_QK_FORMATS))
    if pv_accum not in Q8_PV_ACCUMS:
        raise unsupported("pv_accum", pv_accum, ", ".join(repr(f) for f in Q8_PV_ACCUMS))
    fp8 = descales is not None
    dts = tuple(getattr(t, "dtype", None) for t in (q, k, v))
    if fp8 and any(d in KV8_DTYPES for d in dts) and not all(d in KV8_DTYPES for d in dts):
        raise unsupported("(q.dtype, k.dtype, v.dtype)", dts, "all three float8_e4m3fn (FP8 inputs)")
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_tensor(name, t, 4, tuple(KV8_DTYPES) if fp8 else tuple(DTYPES), layout=False)
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise unsupported(
            "(q.dtype, k.dtype, v.dtype)", (q.dtype, k.dtype, v.dtype), "one dtype for all three"
        )
    head_dim = q.shape[-1]
    if head_dim not in Q8_HEAD_DIMS or k.shape[-1] != head_dim or v.shape[-1] != head_dim:
        raise unsupported(
            "(q, k, v).shape[-1]",
            (head_dim, k.shape[-1], v.shape[-1]),
            f"one of {Q8_HEAD_DIMS}, the same for all three",
        )
    if k.shape != v.shape or k.shape[0] != q.shape[0]:
        raise unsupported(
            "(k.shape, v.shape)",
            (tuple(k.shape), tuple(v.shape)),
            f"both (batch={q.shape[0]}, seqlen_k, nheads_kv, d)",
        )
    nheads, nheads_kv = q.shape[2], k.shape[2]
    if nheads_kv == 0 or nheads % nheads_kv != 0:
        raise unsupported(
            "nheads % nheads_kv", f"{nheads} % {nheads_kv}", "0 (nheads a multiple of nheads_kv)"
        )
    is_local, left, right = canonical_window(window_size, causal)
    check_sink(learnable_sink, nheads)
    softmax_scale = check_scalars(softmax_scale, softcap, 1, None, head_dim)
    if needs_grad(q, k, v, learnable_sink):
        raise unsupported(
            "(q, k, v, learnable_sink).requires_grad",
            True,
            "False: 8-bit attention is forward only (no backward)",
        )
    views = None
    if fp8:  # before the device check, as the FP8 cache's descales
        nb = q.shape[0] if descale_batch is None else descale_batch
        views = tuple(
            check_descale(name, d, q.device, nb, nheads_kv)
            for name, d in zip(("q_descale", "k_descale", "v_descale"), descales)
        )
    check_devices(q, (("k", k), ("v", v), ("learnable_sink", learnable_sink)))
    out_dtype = torch.bfloat16 if fp8 else q.dtype
    return Q8Args(
        q, k, v, softmax_scale, causal, qk, pv_accum, return_lse, out_dtype, views, None,
        (left, right) if is_local else None, float(softcap), learnable_sink,
    )  # fmt: skip


def quantized_varlen_args(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale, window_size,
    learnable_sink, softcap, qk, pv_accum, return_lse, descales=None,
) -> Q8VarlenArgs:  # fmt: skip
    """Every check of a ``quantized_attn_varlen_func`` call (with ``descales``: ``flash_attn_varlen_func``
    on float8_e4m3fn q, k, v, descales of shape ``(batch, nheads_kv)`` per sequence): packed ``(total,
    heads, d)`` tensors (then :func:`quantized_args`' checks), ``cu_seqlens_q``/``cu_seqlens_k`` int32
    ``(batch + 1,)`` prefix sums on q's device, monotone from 0 to at most the packed lengths (read on
    the host: the padded batch is sized by them), ``max_seqlen_*`` None or at least the longest
    sequence."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise unsupported(
                f"{name}.dim()", getattr(t, "ndim", type(t).__name__), "3: (total_tokens, nheads, d)"
            )
    check_tensor("cu_seqlens_q", cu_seqlens_q, 1, (torch.int32,))
    batch = cu_seqlens_q.shape[0] - 1
    if batch < 0:
        raise unsupported("cu_seqlens_q.shape[0]", 0, "batch + 1 >= 1")
    a = quantized_args(
        q[None], k[None], v[None], causal, softmax_scale, window_size, learnable_sink, softcap, qk,
        pv_accum, return_lse, descales, batch,
    )  # fmt: skip
    check_index("cu_seqlens_k", cu_seqlens_k, (batch + 1,))
    check_devices(q, (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)))
    lens_q = check_cu_data("cu_seqlens_q", cu_seqlens_q, q.shape[0])
    lens_k = check_cu_data("cu_seqlens_k", cu_seqlens_k, k.shape[0])
    longest = []
    for name, bound, lens, what in (
        ("max_seqlen_q", max_seqlen_q, lens_q, "query"),
        ("max_seqlen_k", max_seqlen_k, lens_k, "key"),
    ):
        check_max_seqlen(name, bound, what)
        n = int(lens.max()) if lens.numel() else 0
        if bound is not None and bound < n:
            raise unsupported(name, bound, f"None or at least the longest {what} sequence ({n})")
        longest.append(n)
    return Q8VarlenArgs(a._replace(q=q, k=k, v=v), cu_seqlens_q, cu_seqlens_k, lens_q, lens_k, *longest)


def fp8_input_args(
    q, k, v, causal, softmax_scale, window_size, learnable_sink, softcap, num_splits, return_lse, descales
) -> Q8Args:
    """``flash_attn_func`` on float8_e4m3fn q, k, v with ``descales = (q_descale, k_descale,
    v_descale)`` (FlashAttention-3's convention): what the 8-bit forward cannot do raises, then
    :func:`quantized_args` with FP8 Q·Kᵀ and fp32 accumulation."""
    if num_splits != 1:
        raise unsupported("num_splits", num_splits, "1 with float8_e4m3fn q, k, v")
    return quantized_args(
        q, k, v, causal, softmax_scale, window_size, learnable_sink, softcap, "fp8", "fp32", return_lse,
        descales,
    )  # fmt: skip


def fp8_input_varlen_args(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k, page_table,
    causal, softmax_scale, window_size, learnable_sink, softcap, num_splits, return_lse, descales,
) -> Q8VarlenArgs:  # fmt: skip
    """``flash_attn_varlen_func`` on float8_e4m3fn q, k, v with ``descales`` (FlashAttention-3's
    convention, ``(batch, nheads_kv)`` per sequence): packed sequences only (both ``cu_seqlens``; no
    ``seqused``, page table or splits), then :func:`quantized_varlen_args` with FP8 Q·Kᵀ and fp32
    accumulation."""
    for name, t in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        if t is None:
            raise unsupported(
                name,
                None,
                "a tensor with float8_e4m3fn q, k, v (packed sequences; flash_attn_func for a batch)",
            )
    for name, t in (("seqused_q", seqused_q), ("seqused_k", seqused_k), ("page_table", page_table)):
        if t is not None:
            raise unsupported(name, "a tensor", "None with float8_e4m3fn q, k, v")
    if num_splits != 1:
        raise unsupported("num_splits", num_splits, "1 with float8_e4m3fn q, k, v")
    return quantized_varlen_args(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal, softmax_scale, window_size,
        learnable_sink, softcap, "fp8", "fp32", return_lse, descales,
    )  # fmt: skip


SDPA_PRECISIONS = ("int8", "fp8", "native")


def check_sdpa(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa, precision) -> None:
    """What ``fa4_torch.scaled_dot_product_attention`` adds to the checks of the function it calls:
    no mask tensor, no dropout, GQA only with ``enable_gqa`` (SDPA's rule), a known ``precision``, and
    ``is_causal`` only with equal query and key lengths (SDPA aligns its causal mask top-left, fa4's
    kernels bottom-right: the two agree only on square masks)."""
    if precision not in SDPA_PRECISIONS:
        raise unsupported("precision", precision, ", ".join(repr(p) for p in SDPA_PRECISIONS))
    if attn_mask is not None:
        raise unsupported(
            "attn_mask", type(attn_mask).__name__, "None (use is_causal=True for a causal mask)"
        )
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or dropout_p != 0:
        raise unsupported("dropout_p", dropout_p, "0.0 (fa4 has no dropout)")
    check_flag("enable_gqa", enable_gqa)
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise unsupported(
                f"{name}.dim()", getattr(t, "ndim", type(t).__name__), "4: (batch, heads, seqlen, dim)"
            )
    check_flag("is_causal", is_causal)
    if is_causal and query.shape[2] != key.shape[2]:
        raise unsupported(
            "(query.shape[2], key.shape[2]) with is_causal=True",
            (query.shape[2], key.shape[2]),
            "equal lengths (SDPA's causal mask is top-left aligned, fa4's bottom-right: use "
            "flash_attn_func or quantized_attn_func for bottom-right causal attention)",
        )
    if query.shape[1] != key.shape[1] and not enable_gqa:
        raise unsupported(
            "(query.shape[1], key.shape[1])",
            (query.shape[1], key.shape[1]),
            "equal head counts, or enable_gqa=True",
        )
