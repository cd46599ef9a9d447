"""``fa4 warmup --shapes HQ,HKV,D[,DV] ... [--dtype ...] [--causal yes|no|both] [--backward]
[--for-gpu CAPABILITY]``: compiles the variants a model needs.

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
import os
import time

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

__all__ = ["add_parser", "run", "warmup", "warm_seqlens"]


def add_parser(sub) -> None:
    s = sub.add_parser("warmup", help="compile the variants a model needs")
    s.add_argument(
        "--shapes",
        type=parse_heads,
        nargs="+",
        required=True,
        metavar="HQ,HKV,D[,DV]",
        help="heads and head dims of each attention layer kind (GQA ratio = HQ / HKV)",
    )
    s.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["bf16"])
    s.add_argument("--causal", choices=("yes", "no", "both"), default="both")
    s.add_argument("--backward", action="store_true", help="also compile the backward kernels")
    s.add_argument(
        "--for-gpu",
        metavar="CAPABILITY",
        help="fill the disk compile cache for that GPU (e.g. 12.0) without it here, e.g. in a "
        "container image built on a CPU machine",
    )
    s.set_defaults(func=run)

    return 0


def warmup(
    specs,
    dtypes=("bf16",),
    causal=(False, True),
    backward: bool = False,
    *,
    gpu: Gpu | None | str = "auto",
    target: str | None = None,
    for_gpu: tuple[int, int] | None = None,
    log=print,
) -> list[dict]:
    """Compile the variants of ``specs`` (:class:`HeadSpec` or ``"HQ,HKV,D[,DV]"`` strings).

    With a GPU (``gpu="auto"`` finds the current one): one tiny call per variant through the public
    API, which fills this process's compile cache and the persistent one (``FA4_CACHE_DIR``) exactly
    as the model's calls will (``backward`` also runs a backward); ``status`` then says when the
    kernels were loaded from disk instead of compiled. Without one (``gpu=None``, or none present):
    :func:`fa4_sm120.compile.compile_fwd` for ``target`` (default ``sm_120a``, or the arch of
    ``FA4_ARCH``), compiled and dropped (a timing and a build check). Returns one dict per variant:
    ``variant``, ``seconds``, ``status``. ``for_gpu=(major, minor)``: fill the disk cache for that GPU
    without it here, whatever ``gpu`` says.
    """
    if for_gpu is not None:
        gpu = None
    elif gpu == "auto":
        gpu = find_gpu(None)
    from fa4_core.errors import Fa4Error

    specs = [parse_heads(s) if isinstance(s, str) else s for s in specs]
    results = []
    for spec in specs:
        for dt in dtypes:
            for c in causal:
                name = f"{dt} {spec}{' causal' if c else ''}"
                t0 = time.perf_counter()
                status = "compiled"
                try:
                    if for_gpu is not None:
                        status = _warm_for_gpu(spec, dt, c, backward, for_gpu)
                    elif gpu is not None:
                        before = _disk_stats()
                        _warm_gpu(spec, dt, c, backward)
                        after = _disk_stats()
                        if after["loaded"] > before["loaded"] and after["compiled"] == before["compiled"]:
                            status = "compiled (loaded from the disk cache)"
                    else:
                        status = _warm_cpu(spec, dt, c, backward, target)
                except Fa4Error as e:
                    status = f"unsupported: {e}"
                except NotImplementedError as e:
                    status = f"not implemented: {e}"
                secs = time.perf_counter() - t0
                log(f"  {name:<36} {secs:6.2f} s  {status}")
                results.append(dict(variant=name, seconds=secs, status=status))
    return results


def _warm_gpu(spec: HeadSpec, dtype: str, causal: bool, backward: bool) -> None:
    import torch

    from fa4_torch import flash_attn_func

    dt = torch_dtype(dtype)
    for s in warm_seqlens(
        spec, torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    ):
        q = torch.randn(1, s, spec.nheads, spec.head_dim, device="cuda", dtype=dt)
        k = torch.randn(1, s, spec.nheads_kv, spec.head_dim, device="cuda", dtype=dt)
        v = torch.randn(1, s, spec.nheads_kv, spec.head_dim_v, device="cuda", dtype=dt)
        if backward:
            q, k, v = (x.requires_grad_() for x in (q, k, v))
            out, _ = flash_attn_func(q, k, v, causal=causal)
            out.sum().backward()
        else:
            flash_attn_func(q, k, v, causal=causal)
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


def _warm_cpu(spec: HeadSpec, dtype: str, causal: bool, backward: bool, target: str | None) -> str:

    from fa4_sm120.compile import compile_fwd
    from fa4_torch import plan

    d = dispatch(None)
    target = target or d.target
    dt = torch_dtype(dtype)
    cfgs = [
        plan.fwd_config(
            plan.dense_key(
                dt, spec.head_dim, spec.head_dim_v, causal, spec.nheads, spec.nheads_kv, small_m=small_m
            ),
            d.family,
        )  # fmt: skip
        for small_m in (False, True)  # the row of long calls, and that of decode / few-tile calls
    ]
    if backward:  # as the API does: what the backward cannot do fails before anything compiles
        bwd_cfg, pre_cfg, post_cfg = plan.bwd_configs(
            plan.BwdKey(dt, spec.head_dim, spec.head_dim_v, causal, False, False), d.family, target
        )
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


def _warm_for_gpu(spec: HeadSpec, dtype: str, causal: bool, backward: bool, capability) -> str:
    """Fill the disk cache for a GPU of ``capability`` without one here (a container image built on a
    CPU machine): the kernels the API and the backward would compile on that GPU for a dense call of
    ``spec`` (what :func:`_warm_gpu` makes there), through the same cache keys, built for its target
    (``CUTE_DSL_ARCH``, set before the DSL's first use)."""

    from fa4_torch import launch, launch_bwd, plan
    from fa4_torch.dispatch import family_for_capability

    major, minor = capability
    family = family_for_capability(major, minor)
    target = f"sm_{major}{minor}"
    os.environ["CUTE_DSL_ARCH"] = target + ("a" if major >= 9 else "")
    dt = torch_dtype(dtype)
    before = _disk_stats()
    for small_m in (False, True):  # the row of long calls, and that of decode / few-tile calls
        key = plan.dense_key(
            dt, spec.head_dim, spec.head_dim_v, causal, spec.nheads, spec.nheads_kv, small_m=small_m
        )
        launch.forward_kernel(key, family, target)
    if backward:
        key = plan.BwdKey(dt, spec.head_dim, spec.head_dim_v, causal, False, False)
        launch_bwd.backward_kernels(key, None, family=family, target=target)
    after = _disk_stats()
    return f"compiled: {after['written'] - before['written']} written, {after['loaded'] - before['loaded']} already there"


def run(args: argparse.Namespace) -> int:
    causal = {"yes": (True,), "no": (False,), "both": (False, True)}[args.causal]
    if args.for_gpu:
        from fa4_core.arch import parse_arch
        from fa4_torch import disk_cache

        a = parse_arch(args.for_gpu)
        if disk_cache.cache_root() is None:
            print(
                f"the disk cache is off ({disk_cache.CACHE_DIR_ENV} / {disk_cache.SWITCH_ENV}): nothing to fill"
            )
            return 1
        print(
            f"filling the compile cache for capability {a.major}.{a.minor} without that GPU here: "
            f"{disk_cache.cache_root()}"
        )
        results = warmup(args.shapes, args.dtype, causal, args.backward, for_gpu=(a.major, a.minor))
        bad = [r for r in results if not r["status"].startswith("compiled")]
        print(
            f"{len(results) - len(bad)}/{len(results)} variant(s) in {sum(r['seconds'] for r in results):.1f} s"
        )
        return 1 if bad else 0
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
    results = warmup(args.shapes, args.dtype, causal, args.backward, gpu=gpu)
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
    return 1 if bad else 0


def _disk_stats() -> dict[str, int]:
    from fa4_torch import disk_cache

    return disk_cache.stats()
