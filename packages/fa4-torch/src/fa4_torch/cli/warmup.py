"""``fa4 warmup (--shapes HQ,HKV,D[,DV] ... | --config config.json) [--dtype ...] [--causal yes|no|both]
[--backward] [--for-gpu CAPABILITY] [--dry-run]``: compiles the variants a model needs.

``--config`` reads a transformers ``config.json`` (:func:`config_variants`): heads, head dim, dtype,
sliding window, softcap (Gemma-2), attention sinks (GPT-OSS), dense and varlen (padded batches)
variants. ``--dry-run`` lists the variants (``[i/n] ...``) and compiles nothing. Exit 2 when nothing
was compiled.

* With a GPU: one tiny call per variant and row through the public API (the forward's two rows:
  decode / few-tile calls and the rest, :func:`warm_seqlens`), which fills this process's compile cache
  and the persistent one (:mod:`fa4_torch.disk_cache`, ``FA4_CACHE_DIR``) exactly as the model's calls
  will; it prints the directory.
* ``--for-gpu 12.0``: fills the disk cache for that GPU without it here (a container image built on a
  CPU machine): the keys the API and the backward make for a dense call (:func:`fa4_torch.plan.dense_key`,
  :class:`fa4_torch.plan.BwdKey`), compiled through :func:`fa4_torch.launch.forward_kernel` and
  :func:`fa4_torch.launch_bwd.backward_kernels` for its target.
* Without a GPU: compiles the same configs for ``sm_120a`` (or ``FA4_ARCH``'s arch) to check and time
  the builds; nothing is kept (cache entries are per GPU target).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fa4_torch.cli.common import (
    DTYPES,
    Gpu,
    HeadSpec,
    dispatch,
    find_gpu,
    no_gpu_reason,
    parse_heads,
    torch_dtype,
)

__all__ = [
    "add_parser",
    "run",
    "warmup",
    "warm_seqlens",
    "Variant",
    "variants",
    "config_variants",
    "load_config",
]


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("warmup", help="compile the variants a model needs")
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--shapes",
        type=parse_heads,
        nargs="+",
        metavar="HQ,HKV,D[,DV]",
        help="heads and head dims of each attention layer kind (GQA ratio = HQ / HKV)",
    )
    what.add_argument(
        "--config",
        metavar="CONFIG_JSON",
        help="a transformers config.json (or a model directory holding one): its heads, head dim, dtype, "
        "sliding window, softcap and sinks; dense and varlen (padded batches) variants",
    )
    s.add_argument(
        "--dtype", choices=sorted(DTYPES), nargs="+", default=None, help="default: bf16 (or the config's)"
    )
    s.add_argument("--causal", choices=("yes", "no", "both"), default="both")
    s.add_argument("--backward", action="store_true", help="also compile the backward kernels")
    s.add_argument(
        "--for-gpu",
        metavar="CAPABILITY",
        help="fill the disk compile cache for that GPU (e.g. 12.0) without it here, e.g. in a "
        "container image built on a CPU machine",
    )
    s.add_argument(
        "--dry-run", action="store_true", help="list the variants it would compile, compile nothing"
    )
    s.set_defaults(func=run)


@dataclass(frozen=True)
class Variant:
    """One forward (and, with ``--backward``, backward) variant of an attention layer: its heads,
    dtype, causal, and the features the kernel is compiled for: a sliding ``window``, ``softcap``,
    attention ``sink`` (learnable_sink), ``varlen`` (cu_seqlens: padded or packed batches)."""

    spec: HeadSpec
    dtype: str = "bf16"
    causal: bool = False
    window: bool = False
    softcap: bool = False
    sink: bool = False
    varlen: bool = False

    def __str__(self) -> str:
        flags = [f for f in ("causal", "window", "softcap", "sink", "varlen") if getattr(self, f)]
        return " ".join([self.dtype, str(self.spec), *flags])


def variants(
    specs: Iterable[HeadSpec | str],
    dtypes: Iterable[str] = ("bf16",),
    causal: Iterable[bool] = (False, True),
    *,
    window: Iterable[bool] = (False,),
    softcap: Iterable[bool] = (False,),
    sink: Iterable[bool] = (False,),
    varlen: Iterable[bool] = (False,),
) -> list[Variant]:
    """Every combination of the options, in a stable order, without duplicates."""
    specs = [parse_heads(s) if isinstance(s, str) else s for s in specs]
    combos = itertools.product(specs, dtypes, causal, varlen, window, softcap, sink)
    out = [Variant(sp, dt, c, w, sc, sk, vl) for sp, dt, c, vl, w, sc, sk in combos]
    return list(dict.fromkeys(out))


_CONFIG_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def load_config(path: str | os.PathLike) -> dict:
    """A transformers ``config.json`` as a dict (``path`` may be the model directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    with open(path) as f:
        return json.load(f)


def config_variants(
    config: dict,
    dtypes: Iterable[str] | None = None,
    causal: Iterable[bool] = (False, True),
) -> list[Variant]:
    """The variants a transformers model of ``config`` (a ``config.json`` dict) takes through
    ``attn_implementation="fa4"`` (:mod:`fa4_torch.integrations.transformers`):

    * heads: ``num_attention_heads``, ``num_key_value_heads`` (default: the former), ``head_dim``
      (default ``hidden_size // num_attention_heads``); a ``text_config`` (Gemma-3, multimodal) is read
      instead of the top level;
    * dtype: ``torch_dtype`` / ``dtype`` (bf16 or fp16; otherwise bf16) unless ``dtypes`` is given;
    * a sliding window (``sliding_window`` set and not switched off by ``use_sliding_window: false``,
      or ``layer_types`` naming ``sliding_attention``): with and without the window (a window layer
      whose keys fit in the window, and full-attention layers, run without it);
    * ``attn_logit_softcapping`` (Gemma-2): every variant with softcap;
    * attention sinks (``model_type`` ``gpt_oss``): every variant with a sink;
    * dense (unpadded batches, decode) and varlen (padded batches go through cu_seqlens) variants;
      ``causal``: causal prefill and non-causal single-query decode by default.
    """
    c = config.get("text_config") or config
    heads = int(c["num_attention_heads"])
    heads_kv = int(c.get("num_key_value_heads") or heads)
    head_dim = c.get("head_dim") or int(c["hidden_size"]) // heads
    spec = HeadSpec(heads, heads_kv, int(head_dim), int(head_dim))
    if dtypes is None:
        name = str(c.get("torch_dtype") or c.get("dtype") or config.get("torch_dtype") or "bfloat16")
        dtypes = (_CONFIG_DTYPES.get(name.removeprefix("torch."), "bf16"),)
    layer_types = c.get("layer_types") or ()
    sliding = c.get("sliding_window") is not None and c.get("use_sliding_window", True) is not False
    if layer_types:
        sliding = sliding and any("sliding" in str(t) for t in layer_types)
    model_type = str(c.get("model_type") or config.get("model_type") or "")
    return variants(
        [spec],
        dtypes,
        causal,
        window=(False, True) if sliding else (False,),
        softcap=(bool(c.get("attn_logit_softcapping")),),
        sink=(model_type.startswith("gpt_oss"),),
        varlen=(False, True),
    )


def warmup(
    specs: Iterable[HeadSpec | str] | None = None,
    dtypes: Iterable[str] = ("bf16",),
    causal: Iterable[bool] = (False, True),
    backward: bool = False,
    *,
    gpu: Gpu | None | str = "auto",
    target: str | None = None,
    for_gpu: tuple[int, int] | None = None,
    log: Callable[[str], object] = print,
    variants_: Iterable[Variant] | None = None,
) -> list[dict]:
    """Compile the variants of ``specs`` (:class:`HeadSpec` or ``"HQ,HKV,D[,DV]"`` strings) x ``dtypes``
    x ``causal``, or exactly ``variants_`` (:class:`Variant`: window, softcap, sink, varlen; e.g.
    :func:`config_variants` of a model's ``config.json``).

    With a GPU (``gpu="auto"`` finds the current one): one tiny call per variant through the public
    API, which fills this process's compile cache and the persistent one (``FA4_CACHE_DIR``) exactly
    as the model's calls will (``backward`` also runs a backward); ``status`` then says when the
    kernels were loaded from disk instead of compiled. Without one (``gpu=None``, or none present):
    :func:`fa4_sm120.compile.compile_fwd` for ``target`` (default ``sm_120a``, or the arch of
    ``FA4_ARCH``), compiled and dropped (a timing and a build check). Returns one dict per variant:
    ``variant``, ``seconds``, ``status``; ``log`` gets one ``[i/n]`` line per variant. ``for_gpu=(major,
    minor)``: fill the disk cache for that GPU without it here, whatever ``gpu`` says.
    """
    if for_gpu is not None:
        gpu = None
    elif gpu == "auto":
        gpu = find_gpu(None)
    from fa4_core.errors import Fa4Error

    todo = list(variants_) if variants_ is not None else variants(specs or (), dtypes, causal)
    results = []
    n = len(todo)
    for i, v in enumerate(todo, 1):
        name = str(v)
        t0 = time.perf_counter()
        status = "compiled"
        try:
            if for_gpu is not None:
                status = _warm_for_gpu(v, backward, for_gpu)
            elif gpu is not None:
                before = _disk_stats()
                _warm_gpu(v, backward)
                after = _disk_stats()
                if after["loaded"] > before["loaded"] and after["compiled"] == before["compiled"]:
                    status = "compiled (loaded from the disk cache)"
            else:
                status = _warm_cpu(v, backward, target)
        except Fa4Error as e:
            status = f"unsupported: {e}"
        except NotImplementedError as e:
            status = f"not implemented: {e}"
        secs = time.perf_counter() - t0
        log(f"[{i}/{n}] {name:<44} {secs:6.2f} s  {status}")
        sys.stdout.flush()
        results.append(dict(variant=name, seconds=secs, status=status))
    return results


def _warm_gpu(v: Variant, backward: bool) -> None:
    import torch

    from fa4_torch import flash_attn_func, flash_attn_varlen_func

    spec, dt = v.spec, torch_dtype(v.dtype)
    kw: dict = dict(causal=v.causal)
    if (
        v.window
    ):  # transformers' convention: (sliding_window - 1, sliding_window - 1); any bound compiles the same
        kw["window_size"] = (127, 127)
    if v.softcap:
        kw["softcap"] = 30.0
    num_sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    for s in warm_seqlens(spec, num_sms):
        shape = (s,) if v.varlen else (1, s)
        q = torch.randn(*shape, spec.nheads, spec.head_dim, device="cuda", dtype=dt)
        k = torch.randn(*shape, spec.nheads_kv, spec.head_dim, device="cuda", dtype=dt)
        val = torch.randn(*shape, spec.nheads_kv, spec.head_dim_v, device="cuda", dtype=dt)
        if v.sink:
            kw["learnable_sink"] = torch.zeros(spec.nheads, device="cuda", dtype=torch.float32)
        tensors = [q, k, val] + ([kw["learnable_sink"]] if v.sink else [])
        if backward:
            for t in tensors:
                t.requires_grad_()
        if v.varlen:
            cu = torch.tensor([0, s], dtype=torch.int32, device="cuda")
            out = flash_attn_varlen_func(
                q, k, val, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=s, max_seqlen_k=s, **kw
            )
        else:
            out = flash_attn_func(q, k, val, **kw)
        out = out[0] if isinstance(out, tuple) else out
        if backward:
            out.sum().backward()
    torch.cuda.synchronize()


def warm_seqlens(spec: HeadSpec, num_sms: int) -> tuple[int, int]:
    """Batch-1 sequence lengths whose calls take the forward's two rows of ``spec``
    (``fa4_sm120.tiles.wants_small_m``): one query (the small-m row: decode and few-tile calls),
    and enough 128-row tiles to cover the SMs (the row of training and long prefill)."""
    ratio = spec.nheads // spec.nheads_kv
    pack = ratio > 1
    heads = spec.nheads_kv if pack else spec.nheads
    rows = 128 * max(1, -(-num_sms // heads))  # query rows (packed heads counted) per tile head
    return 1, -(-rows // (ratio if pack else 1))


def _fwd_keys(v: Variant) -> list:
    """The forward keys the API makes for ``v``: the long-call row and the decode / few-tile row."""
    from fa4_torch import plan

    spec, dt = v.spec, torch_dtype(v.dtype)
    return [
        plan.dense_key(
            dt, spec.head_dim, spec.head_dim_v, v.causal, spec.nheads, spec.nheads_kv, small_m=small_m
        )._replace(local=v.window, softcap=v.softcap, sink=v.sink, varlen_q=v.varlen, varlen_k=v.varlen)
        for small_m in (False, True)
    ]


def _bwd_key(v: Variant):
    """The backward key of ``v`` (the sink's gradient included when it has one)."""
    from fa4_torch import plan

    spec = v.spec
    return plan.BwdKey(
        torch_dtype(v.dtype), spec.head_dim, spec.head_dim_v, v.causal, False, False, local=v.window,
        softcap=v.softcap, varlen_q=v.varlen, varlen_k=v.varlen, dsink=v.sink,
    )  # fmt: skip


def _warm_cpu(v: Variant, backward: bool, target: str | None) -> str:
    from fa4_sm120.compile import compile_fwd
    from fa4_torch import plan

    d = dispatch(None)
    target = target or d.target
    cfgs = [plan.fwd_config(key, d.family) for key in _fwd_keys(v)]
    if backward:  # as the API does: what the backward cannot do fails before anything compiles
        bwd_cfg, pre_cfg, post_cfg = plan.bwd_configs(_bwd_key(v), d.family, target)
    for cfg in dict.fromkeys(cfgs):  # a family without small-m rows: one config
        compile_fwd(cfg, tvm_ffi=False, gpu_arch=target)
    if not backward:
        return f"compiled for {target}"
    from fa4_sm120.bwd import compile_bwd
    from fa4_sm120.bwd_pre_post import compile_postprocess, compile_preprocess

    compile_bwd(bwd_cfg, tvm_ffi=False, gpu_arch=target)
    compile_preprocess(pre_cfg, tvm_ffi=False, gpu_arch=target)
    compile_postprocess(post_cfg, tvm_ffi=False, gpu_arch=target)
    return f"compiled for {target} (forward and backward)"


def _cache_where() -> str:
    """Where the disk compile cache of this process is, in words."""
    from fa4_torch import disk_cache

    root = disk_cache.cache_root()
    if root is None:
        return f"off ({disk_cache.CACHE_DIR_ENV} / {disk_cache.SWITCH_ENV})"
    try:
        from fa4_torch.cache import dsl_version

        return str(root / dsl_version() / disk_cache.compile_target())
    except Exception as e:  # the DSL is missing or broken: the compiles below will say so
        return f"{root} ({type(e).__name__}: {e})"


def _warm_for_gpu(v: Variant, backward: bool, capability: tuple[int, int]) -> str:
    """Fill the disk cache for a GPU of ``capability`` without one here (a container image built on a
    CPU machine): the kernels the API and the backward would compile on that GPU for a call of ``v``
    (what :func:`_warm_gpu` makes there), through the same cache keys, built for its target
    (``CUTE_DSL_ARCH``, set before the DSL's first use)."""

    from fa4_torch import launch, launch_bwd
    from fa4_torch.dispatch import family_for_capability

    major, minor = capability
    family = family_for_capability(major, minor)
    target = f"sm_{major}{minor}"
    os.environ["CUTE_DSL_ARCH"] = target + ("a" if major >= 9 else "")
    before = _disk_stats()
    for key in dict.fromkeys(_fwd_keys(v)):  # the row of long calls, and that of decode / few-tile calls
        launch.forward_kernel(key, family, target)
    if backward:
        launch_bwd.backward_kernels(_bwd_key(v), None, family=family, target=target)
    after = _disk_stats()
    return f"compiled: {after['written'] - before['written']} written, {after['loaded'] - before['loaded']} already there"


def _plan(args: argparse.Namespace) -> list[Variant]:
    """The variants the arguments ask for (``--config`` or ``--shapes``)."""
    causal = {"yes": (True,), "no": (False,), "both": (False, True)}[args.causal]
    if args.config:
        return config_variants(load_config(args.config), args.dtype, causal)
    return variants(args.shapes, args.dtype or ["bf16"], causal)


def run(args: argparse.Namespace) -> int:
    try:
        todo = _plan(args)
    except (OSError, ValueError, KeyError, TypeError) as e:  # unreadable or incomplete config.json
        print(f"fa4 warmup: cannot read the model config {args.config}: {type(e).__name__}: {e}")
        return 2
    if args.config:
        print(f"{args.config}: {len(todo)} variant(s)" + (" (and their backward)" if args.backward else ""))
    if args.dry_run:
        for i, v in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {v}")
        return 0 if todo else 2
    if not todo:
        print("nothing to compile")
        return 2
    if args.for_gpu:
        from fa4_core.arch import parse_arch
        from fa4_torch import disk_cache

        a = parse_arch(args.for_gpu)
        if disk_cache.cache_root() is None:
            print(
                f"the disk cache is off ({disk_cache.CACHE_DIR_ENV} / {disk_cache.SWITCH_ENV}): nothing to fill"
            )
            return 2
        print(
            f"filling the compile cache for capability {a.major}.{a.minor} without that GPU here: "
            f"{disk_cache.cache_root()}"
        )
        results = warmup(backward=args.backward, for_gpu=(a.major, a.minor), variants_=todo)
        bad = [r for r in results if not r["status"].startswith("compiled")]
        print(
            f"{len(results) - len(bad)}/{len(results)} variant(s) in {sum(r['seconds'] for r in results):.1f} s"
        )
        return _status(results, bad)
    gpu = find_gpu(args)
    if gpu is None:
        d = dispatch(None)
        print(
            f"no CUDA GPU ({no_gpu_reason(args)}): compiling for {d.target} (family {d.family}, {d.why}) "
            "to check and time the compiles; nothing is kept: these in-process compiles end with this "
            "command, and the disk cache is filled on the GPU machine (its entries are per GPU target)"
        )
    else:
        print(f"GPU {gpu.index}: {gpu.name}: compiling through the API; compile cache: {_cache_where()}")
    before = _disk_stats()
    results = warmup(backward=args.backward, gpu=gpu, variants_=todo)
    total = sum(r["seconds"] for r in results)
    bad = [r for r in results if not r["status"].startswith("compiled")]
    print(f"{len(results) - len(bad)}/{len(results)} variant(s) compiled in {total:.1f} s")
    if gpu is not None:
        after = _disk_stats()
        n = {k: after[k] - before.get(k, 0) for k in after}
        print(
            f"compile cache {_cache_where()}: {n['written']} kernel(s) compiled and written, "
            f"{n['loaded']} already there (loaded)"
            + (f", {n['fallbacks']} kept in memory only (see the warning)" if n["fallbacks"] else "")
            + (f", {n['corrupt']} corrupt file(s) replaced" if n["corrupt"] else "")
        )
    return _status(results, bad)


def _status(results: list[dict], bad: list[dict]) -> int:
    """0: every variant compiled; 2: none did (nothing useful was done); 1: some failed."""
    if not bad:
        return 0
    return 2 if len(bad) == len(results) else 1


def _disk_stats() -> dict[str, int]:
    from fa4_torch import disk_cache

    return disk_cache.stats()
