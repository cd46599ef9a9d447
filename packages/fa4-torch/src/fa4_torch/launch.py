"""The forward on the device: compile (through the compile cache), allocate, launch, combine.

The third layer of fa4-torch (``validate -> plan -> launch -> ops -> autograd -> api``);
:mod:`fa4_torch.launch_bwd` is its backward counterpart. :func:`forward` is the eager forward of every
API function: it validates (:func:`fa4_torch.validate.forward_args`), runs the caller's
``before_launch`` (the KV-cache append, the backward's support check) once every check has passed,
plans (:func:`fa4_torch.plan.forward_plan`), compiles the plan's key on its first use
(:func:`compile_forward`, memory then disk, :data:`FWD_CACHE`), launches, and merges split-KV
partials with the combine kernel. ``torch.compile`` reaches it through the custom op
``torch.ops.fa4.fwd`` (:mod:`fa4_torch.ops`).

The memos of repeated calls, :data:`DENSE_MEMO` (dense calls: no varlen, paged K/V, seqused, cache
slots or sinks) and :data:`CACHE_MEMO` (calls with ``seqused_k``, a page table or cache slots, the
KV-cache decode, and split-KV calls): a signature holds everything the validation reads but the data
pointers' alignment (shapes, strides, dtypes and devices of the tensors, the scalar arguments with
their types), and an entry, a :class:`Launch`, is made only after a call passed the validation, so a
hit launches without validating again (the alignment is checked on every call) and never accepts
what a first call would reject. ``FA4_VALIDATE_DATA=1`` turns the KV-cache memo off (every call then
reads the index data). The dense memo saved ~29 µs of Python per cached call on the H200 host.

Seams: :data:`FWD_CACHE`, :data:`KERNELS` (compiled functions by key), the memos with
:func:`dense_signature` / :func:`cache_signature` (tests make entries), :func:`compile_forward` (tests
forbid it), :func:`combine`, :func:`reset_caches`; :func:`forward_kernel` compiles a key for a GPU that
is not here (``fa4 warmup --for-gpu``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import NamedTuple

import torch

from fa4_torch import plan, validate
from fa4_torch.cache import CompileCache, dsl_version
from fa4_torch.plan import FwdKey
from fa4_torch.validate import DEFAULT_NAMES, DTYPES, KV8_DTYPES

log = logging.getLogger("fa4.compile")  # one INFO record per compile (only on a cache miss)

__all__ = [
    "FWD_CACHE",
    "KERNELS",
    "DENSE_MEMO",
    "CACHE_MEMO",
    "MEMO_MAX",
    "Launch",
    "forward",
    "forward_kv8",
    "dense_signature",
    "cache_signature",
    "remember",
    "compile_forward",
    "forward_kernel",
    "combine",
    "append_kv",
    "reset_caches",
]

FWD_CACHE = CompileCache()
KERNELS: dict = {}  # FwdKey (or ("combine", ...)) -> the compiled function, for this process's devices
DENSE_MEMO: dict = {}  # dense_signature(...) -> Launch
CACHE_MEMO: dict = {}  # cache_signature(...) -> Launch
KV8_MEMO: dict = {}  # cache_signature(..., k_descale, v_descale) of an FP8-cache call -> Launch
MEMO_MAX = 4096  # entries per memo (a full memo is cleared)


class Launch(NamedTuple):
    """A memo entry: the launch of a validated call. ``scalars``: the kernel's runtime scalars
    ``(softmax_scale, window_left, window_right, softcap, max_seqlen_q, splits)``; the combine runs
    after the kernel when ``splits > 1``."""

    kernel: object
    out_shape: torch.Size
    lse_shape: torch.Size
    scalars: tuple


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
    """Validate and launch the forward (and the split-KV combine); returns ``(out, lse)``, lse always
    computed. ``max_seqlen_q/k`` are the caller's to check (:func:`fa4_torch.ops.forward` does). The
    arguments are :func:`fa4_torch.ops.forward`'s, positional too (it passes them so: a cached call
    pays for every keyword).

    ``before_launch``: called once every check has passed and before anything is allocated, compiled
    or launched (on a memo hit too). ``names``: how the caller calls ``k``, ``v`` and ``seqused_k``,
    for the error messages. An FP8 K/V cache goes to :func:`forward_kv8` (its callers decide)."""
    sig = csig = None
    # the memos: a signature holds everything the validation reads (the scalars with their types), and
    # an entry is made only after a call passed it, so a hit skips the validation
    if cu_seqlens_q is None and cu_seqlens_k is None and seqused_q is None and learnable_sink is None:
        base = dense_signature(q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, num_splits)
        aligned = base is not None and (q.data_ptr() | k.data_ptr() | v.data_ptr()) % 16 == 0
        if base is not None and seqused_k is None and page_table is None and kv_batch_idx is None:
            sig = base
            hit = DENSE_MEMO.get(sig) if aligned else None
            if hit is not None:
                if before_launch is not None:
                    before_launch()
                fn, out_shape, lse_shape, scalars = hit
                out = torch.empty(out_shape, dtype=q.dtype, device=q.device)
                lse = torch.empty(lse_shape, dtype=torch.float32, device=q.device)
                fn(q, k, v, out, lse, *scalars, None, None, None, None, None, None, None, None, None)
                return out, lse
        csig = cache_signature(base, seqused_k, page_table, kv_batch_idx)
        hit = CACHE_MEMO.get(csig) if aligned and csig is not None else None
        if hit is not None:
            if before_launch is not None:
                before_launch()
            return _launch_memoised(hit, q, k, v, seqused_k, page_table, kv_batch_idx)
    args = validate.forward_args(
        q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink, num_splits,
        cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k, page_table,
        kv_batch_idx, names,
    )  # fmt: skip
    # every check has passed: the caller's side effect (the KV-cache append) or last check (the
    # backward's support) runs now, before anything is allocated, compiled or launched
    if before_launch is not None:
        before_launch()
    out, lse, fn, scalars = _launch_validated(args)
    if fn is not None and (sig is not None or csig is not None) and not args.views:  # no stride-0 view
        entry = Launch(fn, out.shape, lse.shape, scalars)
        if sig is not None and scalars[-1] == 1:
            remember(DENSE_MEMO, sig, entry)
        elif csig is not None:
            remember(CACHE_MEMO, csig, entry)
    return out, lse


def forward_kv8(
    q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink, num_splits, cu_seqlens_q,
    cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k, page_table, kv_batch_idx, before_launch,
    names, k_descale, v_descale,
):  # fmt: skip
    """:func:`forward` with an FP8 K/V cache (or descales given): every check, the descales' included,
    then ``before_launch(k_descale, v_descale)`` (the checked descales as ``(batch, nheads_kv)`` views),
    then the kernel with the descales. Calls without varlen q/k, seqused_q or sinks are memoised as
    :func:`forward`'s KV-cache calls (:data:`KV8_MEMO`, the descales' shapes, strides, dtypes and
    devices in the signature)."""
    csig = None
    if cu_seqlens_q is None and cu_seqlens_k is None and seqused_q is None and learnable_sink is None:
        base = dense_signature(q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, num_splits)
        if base is not None and (q.data_ptr() | k.data_ptr() | v.data_ptr()) % 16 == 0:
            csig = cache_signature(base, seqused_k, page_table, kv_batch_idx, k_descale, v_descale)
            hit = KV8_MEMO.get(csig) if csig is not None else None
            if hit is not None:
                batch, nheads_kv = q.shape[0], k.shape[2]
                kd = validate.descale_view(k_descale, q.device, batch, nheads_kv)
                vd = validate.descale_view(v_descale, q.device, batch, nheads_kv)
                if before_launch is not None:
                    before_launch(kd, vd)
                return _launch_memoised(hit, q, k, v, seqused_k, page_table, kv_batch_idx, kd, vd)
    args = validate.forward_args(
        q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, learnable_sink, num_splits,
        cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, seqused_q, seqused_k, page_table,
        kv_batch_idx, names, k_descale, v_descale, kv8=True,
    )  # fmt: skip
    kd, vd = args.descales
    if before_launch is not None:
        before_launch(kd, vd)
    out, lse, fn, scalars = _launch_validated(args, kd, vd)
    if fn is not None and csig is not None and not args.views:
        remember(KV8_MEMO, csig, Launch(fn, out.shape, lse.shape, scalars))
    return out, lse


def _launch_validated(args: validate.FwdArgs, kd=None, vd=None):
    """Outputs allocated, the kernel of a validated call planned, compiled on first use and launched
    (with an FP8 cache's descale views ``kd``/``vd``), the split-KV partials combined. Returns ``(out,
    lse, fn, scalars)``, what a memo :class:`Launch` keeps (``fn`` None when there was nothing to
    launch)."""
    (q, k, v, cu_q, cu_k, used_q, used_k, table, kv_batch, sink, scale, _, _, left, right, softcap, _, _,
     batch, nheads, _, _, head_dim_v, max_q, *_) = args  # fmt: skip
    varlen_q = cu_q is not None
    out = torch.empty((*q.shape[:-2], nheads, head_dim_v), dtype=q.dtype, device=q.device)
    lse = torch.empty(
        (nheads, q.shape[0]) if varlen_q else (batch, nheads, q.shape[1]),
        dtype=torch.float32,
        device=q.device,
    )
    if batch == 0 or q.shape[-3] == 0 or nheads == 0 or max_q == 0:
        return out, lse, None, None
    key, splits = plan.forward_plan(args)
    fn = KERNELS.get(key)
    if fn is None:
        fn = compile_forward(key, q.device)
    scalars = (scale, left, right, softcap, max_q, splits)
    if splits > 1:  # the sink enters in the combine
        o_part = torch.empty((splits, *out.shape), dtype=torch.float32, device=q.device)
        lse_part = torch.empty((splits, *lse.shape), dtype=torch.float32, device=q.device)
        fn(q, k, v, o_part, lse_part, *scalars, cu_q, cu_k, used_q, used_k, table, kv_batch, None, kd, vd)
        combine(o_part, lse_part, out, lse, sink, varlen_q)
    else:
        fn(q, k, v, out, lse, *scalars, cu_q, cu_k, used_q, used_k, table, kv_batch, sink, kd, vd)
    return out, lse, fn, scalars


# ---------------------------------------------------------------------------------- the memos
def dense_signature(q, k, v, softmax_scale, causal, window_size, pack_gqa, softcap, num_splits):
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


def cache_signature(base, *index):
    """The memo key of a call with seqused_k / page_table / cache slots (``index``, each a tensor or
    None; an FP8 cache's descales too) or with split keys: the dense signature ``base`` and each
    tensor's shape, strides, dtype and device (what the validation reads of them). ``None`` when
    ``base`` is, when one of them is not a tensor, or with ``FA4_VALIDATE_DATA=1`` (every call then
    reads the index data)."""
    if base is None or validate.VALIDATE_DATA:
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


def remember(memo: dict, sig, entry: Launch) -> None:
    """Keep ``entry`` under ``sig`` (a full memo is cleared first)."""
    if len(memo) >= MEMO_MAX:
        memo.clear()
    memo[sig] = entry


def _launch_memoised(hit: Launch, q, k, v, seqused_k, page_table, kv_batch_idx, kd=None, vd=None):
    """A memo hit of :data:`CACHE_MEMO` (or of :data:`KV8_MEMO`, with the descale views ``kd``/``vd``):
    the outputs allocated, the kernel launched with the memoised scalars (the split count last), and
    the split-KV partials combined when it is > 1."""
    fn, out_shape, lse_shape, scalars = hit
    out = torch.empty(out_shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(lse_shape, dtype=torch.float32, device=q.device)
    splits = scalars[-1]
    if splits > 1:
        o_part = torch.empty((splits, *out_shape), dtype=torch.float32, device=q.device)
        lse_part = torch.empty((splits, *lse_shape), dtype=torch.float32, device=q.device)
        fn(q, k, v, o_part, lse_part, *scalars, None, None, None, seqused_k, page_table, kv_batch_idx, None,
           kd, vd)  # fmt: skip
        combine(o_part, lse_part, out, lse, None, False)
    else:
        fn(q, k, v, out, lse, *scalars, None, None, None, seqused_k, page_table, kv_batch_idx, None, kd,
           vd)  # fmt: skip
    return out, lse


# ---------------------------------------------------------------------------------- kernels
def compile_forward(key: FwdKey, device: torch.device):
    """The compiled forward of ``key`` for ``device`` (kept in :data:`KERNELS`)."""
    fn = forward_kernel(key, plan.device_family(device), plan.compile_target(device), device)
    KERNELS[key] = fn
    return fn


def forward_kernel(key: FwdKey, family: str, target: str, device: torch.device | None = None):
    """The compiled forward of ``key`` for a GPU of ``family`` whose compile target is ``target``
    (``sm_XY``), through the compile cache (memory, then disk). ``device=None``: no GPU here (the
    CLI's warmup filling the disk cache for another machine's GPU; the DSL's target then comes from
    ``CUTE_DSL_ARCH``)."""
    cfg = plan.fwd_config(key, family)

    def build():
        from fa4_sm120.compile import compile_fwd  # the DSL: only when compiling (not on a disk hit)

        t0 = time.perf_counter()
        with torch.cuda.device(device) if device is not None else contextlib.nullcontext():
            fn = compile_fwd(cfg, tvm_ffi=True)
        log.info("compiled forward %s for %s in %.2f s", _describe(key), target, time.perf_counter() - t0)
        return fn

    index = device.index if device is not None else None
    return FWD_CACHE.get_or_compile((cfg, target, dsl_version(), index), build)


def _describe(key) -> str:
    """A short name of a forward key for the log: dtype, head dims and the flags that are set."""
    flags = [f for f in FwdKey._fields[4:-1] if getattr(key, f) is True]
    return (
        f"{DTYPES.get(key.dtype, key.dtype)} d{key.head_dim}/{key.head_dim_v} causal={key.causal}"
        + "".join(f" {f}" for f in flags)
    )


def combine(o_part, lse_part, out, lse, learnable_sink, varlen_q) -> None:
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
    key = ("combine", out.dtype, out.shape[-1], learnable_sink is not None, out.device)
    fn = KERNELS.get(key)
    if fn is None:
        from fa4_sm120.configs import CombineConfig

        cfg = CombineConfig(DTYPES[out.dtype], out.shape[-1], has_sink=learnable_sink is not None)

        def build():
            from fa4_sm120.combine import compile_combine  # the DSL: only when compiling

            t0 = time.perf_counter()
            with torch.cuda.device(out.device):
                fn = compile_combine(cfg, tvm_ffi=True)
            log.info("compiled combine %s d%d in %.2f s", cfg.dtype, out.shape[-1], time.perf_counter() - t0)
            return fn

        fn = FWD_CACHE.get_or_compile((cfg, dsl_version(), out.device.index), build)
        KERNELS[key] = fn
    fn(o_p, lse_p, o, l_, learnable_sink)


def append_kv(
    k_cache, v_cache, k, v, cache_seqlens, page_table, cache_batch_idx, k_descale=None, v_descale=None
) -> None:
    """Scatter the new keys/values into the cache at ``cache_seqlens`` (device-side indices only); an
    FP8 cache gets them quantized with the descales (``(batch, nheads_kv)``,
    :func:`fa4_torch.validate.quantize_kv8`)."""
    batch, s_new = k.shape[:2]
    if k_cache.dtype in KV8_DTYPES:  # scattered as bytes (index_put has no float8 kernel everywhere)
        k = validate.quantize_kv8(k, k_descale, k_cache.dtype).view(torch.uint8)
        v = validate.quantize_kv8(v, v_descale, v_cache.dtype).view(torch.uint8)
        k_cache, v_cache = k_cache.view(torch.uint8), v_cache.view(torch.uint8)
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


def reset_caches() -> None:
    """Forget every compiled function and memo entry of this process (tests, tile-table sweeps; the
    disk cache stays)."""
    FWD_CACHE.clear()
    KERNELS.clear()
    DENSE_MEMO.clear()
    CACHE_MEMO.clear()
    KV8_MEMO.clear()
    plan.reset_caches()
