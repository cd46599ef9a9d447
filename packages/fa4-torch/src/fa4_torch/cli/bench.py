"""``fa4 bench [--out DIR] [--dtype bf16|fp16]``: with a GPU, a quick forward benchmark beside PyTorch
SDPA (flash backend) in the same process, a JSON record and a PNG plot (matplotlib, when importable).
Timed as ``benchmarks/`` times (docs/benchmarks.md): ``triton.testing.do_bench``'s median (warm-up, L2 flushed
between repetitions). ``benchmarks/`` holds the full grids and the other peers."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

from fa4_torch.cli.common import DTYPES, dist_version, find_gpu, no_gpu_reason, table, torch_dtype

__all__ = ["add_parser", "run", "BENCH_SHAPES", "REP_MS"]

REP_MS = 100  # do_bench's repetitions per peer and shape, in ms (benchmarks/: FA4_BENCH_REP_MS, 100)


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("bench", help="quick forward benchmark beside PyTorch SDPA flash (needs a GPU)")
    s.add_argument(
        "--out", default="fa4-bench", metavar="DIR", help="where the JSON and PNG go (default: fa4-bench)"
    )
    s.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    s.set_defaults(func=run)


BENCH_SHAPES = (  # (batch, seqlen, nheads, nheads_kv, head_dim, causal): a few of the anchor grid
    (8, 512, 16, 16, 64, False),
    (4, 1024, 16, 16, 128, False),
    (2, 2048, 16, 16, 128, True),
    (2, 2048, 32, 8, 128, True),
    (1, 4096, 32, 8, 64, True),
    (1, 8192, 16, 16, 128, True),
)


def _time_ms(fn: Callable[[], object]) -> float:
    """``triton.testing.do_bench``'s median of ``fn`` in ms (:data:`REP_MS` of repetitions)."""
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=max(REP_MS // 4, 5), rep=REP_MS, return_mode="median"))


def _bench_shape(shape: tuple[int, int, int, int, int, bool], dt: torch.dtype) -> dict:
    """fa4 and SDPA flash on one ``(batch, seqlen, nheads, nheads_kv, head_dim, causal)`` shape."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    from fa4_torch import flash_attn_func

    b, s, hq, hkv, d, causal = shape
    q = torch.randn(b, s, hq, d, device="cuda", dtype=dt)
    k = torch.randn(b, s, hkv, d, device="cuda", dtype=dt)
    v = torch.randn(b, s, hkv, d, device="cuda", dtype=dt)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # SDPA's (batch, heads, seqlen, dim) views
    flops = 4 * b * hq * s * s * d // (2 if causal else 1)
    row = dict(batch=b, seqlen=s, nheads=hq, nheads_kv=hkv, head_dim=d, causal=causal, flops=flops)

    def sdpa_flash():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return sdpa(qt, kt, vt, is_causal=causal, enable_gqa=hq != hkv)

    for name, fn in (("fa4", lambda: flash_attn_func(q, k, v, causal=causal)), ("sdpa_flash", sdpa_flash)):
        try:
            ms = _time_ms(fn)
            row[f"{name}_ms"], row[f"{name}_tflops"] = ms, flops / ms / 1e9
        except Exception as e:  # a peer that cannot run this shape is recorded, not fatal
            row[f"{name}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return row


def run(args: argparse.Namespace) -> int:
    gpu = find_gpu(args)
    if gpu is None:
        print(
            f"fa4 bench needs a CUDA GPU ({no_gpu_reason(args)}): nothing was measured. "
            "Run it on an SM80+ GPU (RTX 50, or H100/H200 in compat mode); benchmarks/ holds the full scripts."
        )
        return 2
    try:
        import triton.testing  # noqa: F401
    except ImportError:
        print("fa4 bench times with triton.testing.do_bench: triton is not installed; nothing was measured")
        return 2
    import datetime
    import json

    import torch

    dt = torch_dtype(args.dtype)
    print(
        f"GPU {gpu.index}: {gpu.name}; forward, {args.dtype}; fa4 beside PyTorch SDPA (flash backend), same process"
    )
    results = []
    for i, shape in enumerate(BENCH_SHAPES, 1):
        print(
            f"[{i}/{len(BENCH_SHAPES)}] b{shape[0]} s{shape[1]} h{shape[2]}/{shape[3]} d{shape[4]} ...",
            flush=True,
        )
        results.append(_bench_shape(shape, dt))
    rows = []
    for r in results:
        shape = f"b{r['batch']} s{r['seqlen']} h{r['nheads']}/{r['nheads_kv']} d{r['head_dim']}" + (
            " causal" if r["causal"] else ""
        )
        fa, sd = r.get("fa4_tflops"), r.get("sdpa_flash_tflops")
        rows.append(
            [
                shape,
                f"{r['fa4_ms']:.3f}" if fa else "error",
                f"{fa:.1f}" if fa else "-",
                f"{sd:.1f}" if sd else "error",
                f"{fa / sd:.2f}" if fa and sd else "-",
            ]
        )
    print(table(["shape", "fa4 ms", "fa4 TFLOP/s", "SDPA flash TFLOP/s", "fa4/SDPA"], rows))
    for r in results:
        for key in ("fa4_error", "sdpa_flash_error"):
            if key in r:
                print(f"  {key.split('_error')[0]} failed on b{r['batch']} s{r['seqlen']}: {r[key]}")
    os.makedirs(args.out, exist_ok=True)
    stem = f"{datetime.date.today().isoformat()}-{gpu.name.replace(' ', '_')}-cli-fwd"
    record = dict(
        device=gpu.name,
        capability=list(gpu.capability),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        dsl=dist_version("nvidia-cutlass-dsl"),
        fa4_torch=dist_version("fa4-torch", "fa4_torch"),
        flops="4*B*H*S*S*D, halved for causal",
        timing=f"triton.testing.do_bench median ({REP_MS} ms of repetitions, L2 flushed)",
        results=results,
    )
    json_path = os.path.join(args.out, stem + ".json")
    with open(json_path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {json_path}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib)")
        return _bench_status(results)
    labels = [row[0] for row in rows]
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for off, key, label in ((-0.2, "fa4_tflops", "fa4"), (0.2, "sdpa_flash_tflops", "SDPA flash")):
        ax.bar([i + off for i in x], [r.get(key) or 0 for r in results], width=0.4, label=label)
    ax.set_xticks(list(x), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("TFLOP/s")
    ax.set_title(f"forward {args.dtype}, {gpu.name}")
    ax.legend()
    fig.tight_layout()
    png_path = os.path.join(args.out, stem + ".png")
    fig.savefig(png_path, dpi=120)
    print(f"wrote {png_path}")
    return _bench_status(results)


def _bench_status(results: list[dict]) -> int:
    """0 when fa4 measured at least one shape, else 2 (nothing useful was measured)."""
    if any("fa4_ms" in r for r in results):
        return 0
    print("fa4 measured no shape (every call failed): see the errors above")
    return 2
