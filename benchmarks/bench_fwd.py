"""Forward benchmark: fa4 beside PyTorch SDPA (flash, cuDNN) and upstream FlashAttention-4's SM120
class, in one process on one GPU (docs/benchmarks.md).

Grids: ``anchor`` (the 40 shapes of docs/benchmarks.md), ``seed`` (the 240 shapes of the forward tests).
Also measured: host wall time of a cached call (batch 1, seqlen 128, 16 heads, d 64) and peak memory.
Writes ``<out>/<date>-<gpu>-fwd.json`` and a PNG plot.

``--emulate-sm120``: fa4's and upstream's kernels launch at SM120's CTAs per SM
(:func:`_common.emulate_sm120`; SDPA is not emulated), written to ``...-fwd-emulated-sm120.json``.

    python benchmarks/bench_fwd.py --grid anchor seed --out benchmarks/results
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402

import _common as C  # noqa: E402
import plots  # noqa: E402
from fa4_torch import flash_attn_func  # noqa: E402

ANCHOR = [
    dict(dtype="bf16", batch=b, seqlen=s, nheads=hq, nheads_kv=hkv, head_dim=d, causal=causal)
    for d, causal, (hq, hkv), (b, s) in itertools.product(
        (64, 128), (False, True), ((16, 16), (32, 8)), ((8, 512), (4, 1024), (2, 2048), (1, 4096), (1, 8192))
    )
]
SEED = [
    dict(dtype=dt, batch=b, seqlen=s, nheads=16, nheads_kv=hkv, head_dim=d, causal=causal)
    for dt, causal, b, s, hkv, d in itertools.product(
        ("fp16", "bf16"), (False, True), (1, 2), (128, 512, 1024, 2048, 4096), (16, 8, 1), (64, 128)
    )
]
DT = {"fp16": torch.float16, "bf16": torch.bfloat16}


def measure(shape: dict, peers: bool = True) -> dict:
    dt = DT[shape["dtype"]]
    b, s, hq, hkv, d = shape["batch"], shape["seqlen"], shape["nheads"], shape["nheads_kv"], shape["head_dim"]
    causal = shape["causal"]
    q = torch.randn(b, s, hq, d, device="cuda", dtype=dt)
    k = torch.randn(b, s, hkv, d, device="cuda", dtype=dt)
    v = torch.randn(b, s, hkv, d, device="cuda", dtype=dt)
    flops = C.attn_flops(b, hq, s, s, d, causal=causal)
    fns = {"fa4": lambda: flash_attn_func(q, k, v, causal=causal)}
    if peers:
        fns["sdpa_flash"] = C.sdpa_fn("flash", q, k, v, causal)
        fns["sdpa_cudnn"] = C.sdpa_fn("cudnn", q, k, v, causal)
        up = C.upstream_fn(q, k, v, causal)
        if up is not None:
            fns["fa4_upstream_sm120"] = up
    row = dict(shape, flops=flops)
    times, errors = C.bench_peers(fns)
    for name, ms in times.items():
        row[f"{name}_ms"] = ms
        row[f"{name}_tflops"] = flops / ms / 1e9
    for name, err in errors.items():  # a peer that cannot run this shape is recorded, not fatal
        row[f"{name}_error"] = err
    return row


def summarize(rows, label):
    out = {}
    for name in ("fa4", "sdpa_flash", "sdpa_cudnn", "fa4_upstream_sm120"):
        vals = [r[f"{name}_tflops"] for r in rows if f"{name}_tflops" in r]
        if vals:
            out[name] = dict(mean_tflops=sum(vals) / len(vals), max_tflops=max(vals), n=len(vals))
    sp = [r["sdpa_flash_ms"] / r["fa4_ms"] for r in rows if "sdpa_flash_ms" in r and "fa4_ms" in r]
    if sp:
        out["speedup_vs_sdpa_flash"] = dict(
            geomean=math.exp(sum(map(math.log, sp)) / len(sp)), min=min(sp), max=max(sp)
        )
    up = [
        r["fa4_upstream_sm120_ms"] / r["fa4_ms"]
        for r in rows
        if "fa4_upstream_sm120_ms" in r and "fa4_ms" in r
    ]
    if up:
        out["speedup_vs_upstream"] = dict(geomean=math.exp(sum(map(math.log, up)) / len(up)), min=min(up))
    print(f"== {label}: " + "; ".join(f"{k}: {v}" for k, v in out.items()))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", nargs="+", default=["anchor"], choices=["anchor", "seed"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--emulate-sm120", action="store_true", help="fa4 and upstream at SM120's CTAs per SM")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_fwd: no CUDA GPU here; nothing measured (run it on the GPU machine)")
        return 0
    payload = {"env": C.environment(), "grids": {}}
    if args.emulate_sm120:
        payload["emulated_sm120"] = C.emulate_sm120()  # filled as kernels are configured
    a = torch.randn(4096, 4096, device="cuda")
    C.bench_ms(lambda: a @ a)  # bring the clocks up before the first measured shape
    path = C.results_path("fwd-emulated-sm120" if args.emulate_sm120 else "fwd", args.out)
    for grid in args.grid:
        shapes = ANCHOR if grid == "anchor" else SEED
        rows = payload["grids"].setdefault(grid, {"rows": []})["rows"]
        for s in shapes:
            rows.append(measure(s))
            C.write_results(path, payload, quiet=True)  # a run cut short keeps what it measured
        payload["grids"][grid]["summary"] = summarize(rows, grid)
    # host overhead of a cached call (batch 1, seqlen 128, 16 heads, d 64)
    q, k, v = (torch.randn(1, 128, 16, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    host = {
        "fa4": C.host_us(lambda: flash_attn_func(q, k, v)),
        "sdpa_flash": C.host_us(C.sdpa_fn("flash", q, k, v, False)),
    }
    up = C.upstream_fn(q, k, v, False)
    if up is not None:
        host["fa4_upstream_sm120"] = C.host_us(up)
    payload["host_us_b1_s128_h16_d64"] = host
    print("host µs per cached call:", host)
    # peak memory, forward, a long sequence
    q, k, v = (torch.randn(1, 8192, 16, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    payload["peak_mem_mb_fwd_b1_s8192_h16_d128"] = {
        "fa4": C.peak_mem_mb(lambda: flash_attn_func(q, k, v)),
        "sdpa_flash": C.peak_mem_mb(C.sdpa_fn("flash", q, k, v, False)),
    }
    C.write_results(path, payload)
    if "anchor" in payload["grids"]:
        plots.plot_fwd(
            payload["grids"]["anchor"]["rows"], path.replace(".json", ".png"), payload["env"]["device"]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
