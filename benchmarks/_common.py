"""Shared benchmark plumbing (docs/benchmarks.md): FLOPs, timing, peers, the environment record, results files.

Timing is ``triton.testing.do_bench`` (warm-up, L2 flushed between repetitions, median). Every peer is
measured in the same process on the same GPU, in interleaved rounds (:func:`bench_peers`): PyTorch
SDPA (flash and cuDNN backends; GQA through ``enable_gqa``) and upstream FlashAttention-4 forced onto
its SM120 class (``FLASH_ATTENTION_ARCH=sm_120``) when it is installed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import time

os.environ.setdefault("FLASH_ATTENTION_ARCH", "sm_120")  # upstream peer: its SM120 class, before import

import torch  # noqa: E402


def attn_flops(
    batch, nheads, seqlen_q, seqlen_k, head_dim, head_dim_v=None, causal=False, window=(None, None)
):
    """Forward FLOPs ``4·B·H·Sq·Sk_eff·(D+Dv)/2``: ``Sk_eff`` = visible keys per query on average
    (exact count for causal and windows, bottom-right aligned)."""
    dv = head_dim_v or head_dim
    left, right = window
    if causal:
        right = 0
    if not causal and left is None and right is None:
        visible = seqlen_q * seqlen_k
    else:
        d = seqlen_k - seqlen_q
        visible = 0
        for i in range(seqlen_q):
            hi = min(seqlen_k - 1, i + d + right) if right is not None else seqlen_k - 1
            lo = max(0, i + d - left) if left is not None else 0
            visible += max(0, hi - lo + 1)
    return 2 * batch * nheads * visible * (head_dim + dv)


_REP_MS = int(os.environ.get("FA4_BENCH_REP_MS", "100"))


def bench_ms(fn) -> float:
    """Median ms of ``fn`` (do_bench: ``FA4_BENCH_REP_MS`` ms of repetitions, default 100)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=max(_REP_MS // 4, 5), rep=_REP_MS, return_mode="median"))


_ROUNDS = int(os.environ.get("FA4_BENCH_ROUNDS", "5"))


def bench_peers(fns: dict, rounds: int | None = None) -> tuple[dict, dict]:
    """Median ms of each of ``fns`` (name -> callable), the peers interleaved: ``rounds`` rounds (default
    ``FA4_BENCH_ROUNDS``, 5), each a ``do_bench`` median of every peer in turn (``FA4_BENCH_REP_MS /
    rounds`` ms of repetitions), the peer order rotated by one each round; the result is the median
    of a peer's round medians. A host that slows down for a while (a neighbour, a clock change) then
    costs every peer the same rounds instead of whichever peer it ran at that moment: with one
    ``do_bench`` per peer back to back, two runs of the seed grid on the H200 disagreed by up to 5x on
    10-50 µs shapes for fa4 and SDPA alike (2026-12-02 / 2026-12-03).

    Returns ``(ms, errors)``: a peer whose call raises (on its first call or in a round) is dropped
    with ``errors[name] = "Type: message"``, the others go on."""
    from statistics import median

    from triton.testing import do_bench

    rounds = rounds or _ROUNDS
    rep = max(_REP_MS // rounds, 2)
    errors, samples = {}, {}
    for name, fn in fns.items():
        try:
            fn()  # compile / warm outside the timed rounds
            samples[name] = []
        except Exception as e:  # a peer that cannot run this shape is recorded, not fatal
            errors[name] = f"{type(e).__name__}: {str(e)[:200]}"
    names = list(samples)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)] if names else []:
            if name in errors:
                continue
            try:
                samples[name].append(
                    float(do_bench(fns[name], warmup=max(rep // 4, 1), rep=rep, return_mode="median"))
                )
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {str(e)[:200]}"
    return {n: median(v) for n, v in samples.items() if n not in errors and v}, errors


def host_us(fn, iters: int = 2000) -> float:
    """Wall time per call of a cached call, launches queued (no sync inside the loop), in µs."""
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters * 1e6


def idle_host_us(fn, iters: int = 200) -> dict:
    """Host time of one call with the GPU idle before it (synchronised first): p10/p50/p90 µs."""
    for _ in range(20):
        fn()
    lat = []
    for _ in range(iters):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        lat.append((time.perf_counter() - t) * 1e6)
    torch.cuda.synchronize()
    lat.sort()
    return dict(p10=lat[iters // 10], p50=lat[iters // 2], p90=lat[iters * 9 // 10])


def graphed(fn):
    """``fn`` captured once in a CUDA graph; returns the replay. Timing the replay gives the call's GPU
    time without its host time, as serving engines run decode steps. ``fn`` must have run before
    (compiled and memoised outside the capture). The replay keeps ``fn`` alive, and with it the
    tensors its closure holds: the graph reads their memory at every replay, and a tensor only the
    closure referenced would otherwise be freed (and its memory reused or unmapped) once the caller
    drops ``fn``."""
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()

    def replay():
        g.replay()

    replay.captured = fn
    return replay


def kernel_us(fn, calls: int = 5) -> dict:
    """Kernel name (first 70 characters) -> mean device µs per call, from ``torch.profiler``."""
    import collections

    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    acc = collections.defaultdict(float)
    for ev in prof.key_averages():
        t = getattr(ev, "self_device_time_total", None)
        if t is None:
            t = getattr(ev, "self_cuda_time_total", 0)
        if t > 0 and not ev.key.startswith(("aten::", "cuda", "autograd", "FlashAttn")):
            acc[ev.key[:70]] += t / calls
    return {k: round(v, 1) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}


def peak_mem_mb(fn) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def sdpa_fn(backend: str, q, k, v, causal: bool):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    be = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
    gqa = q.shape[2] != k.shape[2]

    def run():
        with sdpa_kernel(be):
            return sdpa(qt, kt, vt, is_causal=causal, enable_gqa=gqa)

    return run


def upstream_fn(q, k, v, causal: bool):
    """Upstream FlashAttention-4 on its SM120 class, or None when it is not installed."""
    try:
        from flash_attn.cute import flash_attn_func as up
    except Exception:
        return None
    return lambda: up(q, k, v, causal=causal)


def kv8_candidate(codegen: list, tile_n: int = 0) -> None:
    """Build the FP8-cache kernels (not the 16-bit cache's) with these
    :class:`fa4_sm120.configs.FwdCodegen` fields (``["NAME=VALUE", ...]``, the tools' ``--codegen``)
    and, with ``tile_n``, key tiles of that length: a candidate timed before it becomes the rule.
    Call it before :func:`emulate_sm120`, which sizes the candidate's launch. Benchmarking only, as the
    tuners replace table functions."""
    if not codegen and not tile_n:
        return
    import dataclasses

    from fa4_sm120 import tiles
    from fa4_sm120.configs import codegen_fields

    fields, table = codegen_fields(codegen), tiles.fwd_config

    def candidate(*args, **kwargs):
        cfg = table(*args, **kwargs)
        if cfg.kv_dtype is None:
            return cfg
        if tile_n:
            cfg = dataclasses.replace(cfg, tile_n=tile_n)
        return dataclasses.replace(cfg, codegen=dataclasses.replace(cfg.codegen, **fields))

    tiles.fwd_config = candidate


def emulate_sm120(upstream_regs: int = 255) -> dict:
    """Make the H100/H200 run fa4's and upstream's kernels at SM120's CTAs per SM (compat mode
    otherwise co-schedules 2x the 4-warp 64-80 KB tiles that SM120 runs one at a time per SM).

    * fa4: every forward and backward config the tables give launches with
      :func:`fa4_sm120.occupancy.emulated_launch_smem` of its ``sm_120a`` registers (as
      ``tune_tiles.py``/``tune_bwd.py --emulate-sm120``).
    * upstream: the shared-memory struct of its SM80-family forward and backward classes (the SM120
      classes derive from them) reports the padded launch size; the kernel's own layout is unchanged.
      ``upstream_regs``: its SM120 builds use 255 registers (docs/benchmarks.md); shared memory is what limits
      them on SM120 in every case the grids reach (48-80 KB per CTA).

    SDPA's kernels are not emulated: they pick 144+ KB tiles on Hopper that SM120 cannot launch.
    Returns the per-kernel log (``"fa4 fwd ..."``/``"upstream ..."`` -> launch facts), filled as
    kernels are first configured."""
    import dataclasses

    from fa4_sm120 import bwd_tiles, tiles
    from fa4_sm120.bwd import compile_bwd
    from fa4_sm120.compile import compile_fwd
    from fa4_sm120.occupancy import emulated_launch_smem

    log: dict = {}

    def wrap(module, name: str, compile_fn, kind: str) -> None:
        original, launch = getattr(module, name), {}

        def emulated(*a, **kw):
            cfg = original(*a, **kw)
            if cfg not in launch:
                regs = sm120_regs(compile_fn, cfg)
                launch[cfg] = emulated_launch_smem(cfg.smem_bytes, regs, cfg.num_threads)
                key = (
                    f"fa4 {kind} {cfg.head_dim}/{cfg.head_dim_v} {cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}"
                )
                log[key] = _occupancy(cfg.smem_bytes, regs, cfg.num_threads, launch[cfg])
            return dataclasses.replace(cfg, launch_smem=launch[cfg])

        setattr(module, name, emulated)

    wrap(tiles, "fwd_config", compile_fwd, "fwd")
    wrap(bwd_tiles, "bwd_config", compile_bwd, "bwd")
    from fa4_torch import launch, launch_bwd

    launch.reset_caches()  # nothing compiled before the wrap is reused
    launch_bwd.reset_caches()
    try:
        from flash_attn.cute import flash_bwd, flash_fwd
    except Exception:
        return log
    for cls in (flash_fwd.FlashAttentionForwardSm80, flash_bwd.FlashAttentionBackwardSm80):
        pad_upstream_storage(cls, upstream_regs, log)
    return log


def _occupancy(smem: int, regs: int, threads: int, launch: int) -> dict:
    from fa4_sm120.occupancy import SM90, ctas_per_sm

    return dict(
        smem=smem,
        regs=regs,
        threads=threads,
        launch_smem=launch,
        sm120_ctas_per_sm=ctas_per_sm(smem, regs, threads),
        host_ctas_per_sm=ctas_per_sm(launch, regs, threads, SM90),
    )


def pad_upstream_storage(cls, regs: int, log: dict) -> None:
    """Wrap ``cls._get_shared_storage_cls`` (upstream's kernels launch with
    ``SharedStorage.size_in_bytes()``) so that the struct it returns reports the emulated launch size;
    allocation inside the kernel uses ``__sizeof__``, the struct's real size."""
    from fa4_sm120.occupancy import emulated_launch_smem

    original = cls._get_shared_storage_cls

    def padded(self):
        storage = original(self)
        size = storage.size_in_bytes()
        launch = emulated_launch_smem(size, regs, self.num_threads)
        object.__setattr__(storage, "size_in_bytes", lambda: launch)
        log[f"upstream {type(self).__name__} {size} B x{self.num_threads}"] = _occupancy(
            size, regs, self.num_threads, launch
        )
        return storage

    cls._get_shared_storage_cls = padded


def sm120_regs(compile_fn, cfg) -> int:
    """Registers per thread of ``cfg``'s ``sm_120a`` build (``compile_fn`` = ``compile_fwd`` /
    ``compile_bwd``; ``ptxas -v`` on the kept PTX, :func:`fa4_sm120.compile.ptxas_resources`); 255
    where no ptxas assembles it (the conservative case: a full register file)."""
    import tempfile

    from fa4_sm120.compile import ptxas_resources

    d = tempfile.mkdtemp()
    compile_fn(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=d)
    ptx = next(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".ptx"))
    res = ptxas_resources(ptx)
    regs, msg = (None, "no ptxas on PATH") if res is None else (res[0], res[2])
    if regs is None:
        print(f"  ptxas gave no register count ({msg!r}); assuming 255")
        return 255
    return regs


def environment() -> dict:
    import cutlass

    props = torch.cuda.get_device_properties(0)
    env = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(0),
        "capability": list(torch.cuda.get_device_capability(0)),
        "sm_count": props.multi_processor_count,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cutlass_dsl": getattr(cutlass, "__version__", "?"),
        "python": platform.python_version(),
        "flash_attention_arch_env": os.environ.get("FLASH_ATTENTION_ARCH"),
    }
    try:
        import flash_attn

        env["flash_attn_upstream"] = getattr(flash_attn, "__version__", "installed")
    except Exception:
        env["flash_attn_upstream"] = None
    try:
        q = "clocks.sm,clocks.max.sm,clocks.mem,power.limit,driver_version"
        env["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True, text=True
        ).stdout.strip()
    except Exception:
        pass
    from fa4_torch import __version__ as fa4_version

    env["fa4_torch"] = fa4_version
    return env


def results_path(kind: str, out_dir: str) -> str:
    gpu = torch.cuda.get_device_name(0).replace(" ", "-")
    return os.path.join(out_dir, f"{datetime.date.today().isoformat()}-{gpu}-{kind}.json")


def write_results(path: str, payload: dict, quiet: bool = False) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:  # compact: the checkout travels to the GPU machine under a 64 MiB cap
        json.dump(payload, f, separators=(",", ":"))
        f.write("\n")
    os.replace(tmp, path)
    if not quiet:
        print(f"wrote {path}")
