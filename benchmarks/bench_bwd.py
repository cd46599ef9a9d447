"""Backward benchmark: fa4 beside PyTorch SDPA (flash, cuDNN) and upstream FlashAttention-4's SM120
class, in one process on one GPU (docs/benchmarks.md).

Grid (docs/benchmarks.md, the backward grid): head dim {64, 128} x causal x heads {16/16, 32/8} x (batch,
seqlen) {(4, 1024), (2, 4096), (1, 8192)}, bf16. Backward TFLOP/s use 2.5x the forward FLOPs, fwd+bwd
3.5x. Measured: backward alone (``torch.autograd.grad`` on a kept graph), fwd+bwd, and fa4's
deterministic mode separately (``fa4_det``); peak memory of fwd+bwd at (1, 8192, 16/16, d128).
``--grid large-d`` adds d {192, 256} shapes (``rows_large-d``). Writes ``<out>/<date>-<gpu>-bwd.json``
(rewritten after every shape, so a run cut short keeps what it measured).

``--emulate-sm120``: fa4's and upstream's kernels launch at SM120's CTAs per SM
(:func:`_common.emulate_sm120`; SDPA is not emulated), written to ``...-bwd-emulated-sm120.json``.
``--peers`` and ``--no-fwdbwd`` shorten a run (the backward alone of the peers named).

    python benchmarks/bench_bwd.py --out benchmarks/results
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

GRID = [
    dict(dtype="bf16", batch=b, seqlen=s, nheads=hq, nheads_kv=hkv, head_dim=d, causal=causal)
    for d, causal, (hq, hkv), (b, s) in itertools.product(
        (64, 128), (False, True), ((16, 16), (32, 8)), ((4, 1024), (2, 4096), (1, 8192))
    )
]
# the large head dims (the 2x2-warp rows of the backward table), beside the same peers
LARGE_D = [
    dict(dtype="bf16", batch=b, seqlen=s, nheads=16, nheads_kv=hkv, head_dim=d, causal=causal)
    for d, causal, hkv, (b, s) in itertools.product(
        (192, 256), (False, True), (16, 4), ((4, 1024), (1, 4096))
    )
]
PEERS = ("fa4", "fa4_det", "sdpa_flash", "sdpa_cudnn", "fa4_upstream_sm120")


def _forwards(q, k, v, causal):
    """name -> callable returning the output tensor (graph attached)."""
    fns = {
        "fa4": lambda: flash_attn_func(q, k, v, causal=causal)[0],
        "fa4_det": lambda: flash_attn_func(q, k, v, causal=causal, deterministic=True)[0],
    }
    flash, cudnn = C.sdpa_fn("flash", q, k, v, causal), C.sdpa_fn("cudnn", q, k, v, causal)
    fns["sdpa_flash"] = lambda: flash().transpose(1, 2)
    fns["sdpa_cudnn"] = lambda: cudnn().transpose(1, 2)
    up = C.upstream_fn(q, k, v, causal)
    if up is not None:

        def upstream():
            o = up()
            return o[0] if isinstance(o, tuple) else o

        fns["fa4_upstream_sm120"] = upstream
    return fns


def measure(shape: dict, peers=PEERS, fwdbwd: bool = True) -> dict:
    b, s, hq, hkv, d = shape["batch"], shape["seqlen"], shape["nheads"], shape["nheads_kv"], shape["head_dim"]
    causal = shape["causal"]
    q = torch.randn(b, s, hq, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(b, s, hkv, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(b, s, hkv, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn(b, s, hq, d, device="cuda", dtype=torch.bfloat16)
    fwd_flops = C.attn_flops(b, hq, s, s, d, causal=causal)
    row = dict(shape, fwd_flops=fwd_flops)
    fns = {}
    for name, fwd in _forwards(q, k, v, causal).items():
        if name not in peers:
            continue
        try:
            out = fwd()
        except Exception as e:  # a peer that cannot run this shape is recorded, not fatal
            row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            continue
        fns[f"{name}_bwd"] = lambda out=out: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True)
        if fwdbwd:
            fns[f"{name}_fwdbwd"] = lambda fwd=fwd: torch.autograd.grad(fwd(), (q, k, v), dout)
    times, errors = C.bench_peers(fns)  # every peer's backward and fwd+bwd, interleaved
    for key, ms in times.items():
        row[f"{key}_ms"] = ms
        row[f"{key}_tflops"] = (2.5 if key.endswith("_bwd") else 3.5) * fwd_flops / ms / 1e9
    for key, err in errors.items():
        row[f"{key.rsplit('_', 1)[0]}_error"] = err
    del fns
    print({k_: (round(v_, 1) if isinstance(v_, float) else v_) for k_, v_ in row.items() if "ms" not in k_})
    return row


def summarize(rows):
    out = {}
    for name in PEERS:
        for kind in ("bwd", "fwdbwd"):
            vals = [r[f"{name}_{kind}_tflops"] for r in rows if f"{name}_{kind}_tflops" in r]
            if vals:
                out[f"{name}_{kind}"] = dict(
                    mean_tflops=sum(vals) / len(vals), max_tflops=max(vals), n=len(vals)
                )
    for peer in ("sdpa_flash", "fa4_upstream_sm120"):
        sp = [
            r[f"{peer}_bwd_ms"] / r["fa4_bwd_ms"] for r in rows if f"{peer}_bwd_ms" in r and "fa4_bwd_ms" in r
        ]
        if sp:
            out[f"bwd_speedup_vs_{peer}"] = dict(
                geomean=math.exp(sum(map(math.log, sp)) / len(sp)), min=min(sp)
            )
    det = [r["fa4_det_bwd_ms"] / r["fa4_bwd_ms"] for r in rows if "fa4_det_bwd_ms" in r and "fa4_bwd_ms" in r]
    if det:
        out["deterministic_cost"] = dict(
            geomean_time_ratio=math.exp(sum(map(math.log, det)) / len(det)), max=max(det), min=min(det)
        )
    print("== summary:", out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--limit", type=int, default=None, help="first N shapes of each grid only")
    ap.add_argument("--grid", nargs="+", default=["main"], choices=["main", "large-d"])
    ap.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    ap.add_argument("--no-fwdbwd", action="store_true", help="time the backward alone")
    ap.add_argument("--emulate-sm120", action="store_true", help="fa4 and upstream at SM120's CTAs per SM")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_bwd: no CUDA GPU here; nothing measured (run it on the GPU machine)")
        return 0
    payload = {"env": C.environment(), "peers": args.peers, "fwdbwd": not args.no_fwdbwd}
    if args.emulate_sm120:
        payload["emulated_sm120"] = C.emulate_sm120()  # filled as kernels are configured
    a = torch.randn(4096, 4096, device="cuda")
    C.bench_ms(lambda: a @ a)  # bring the clocks up before the first measured shape
    path = C.results_path("bwd-emulated-sm120" if args.emulate_sm120 else "bwd", args.out)
    for grid in args.grid:
        rows = payload.setdefault("rows" if grid == "main" else f"rows_{grid}", [])
        for s in (GRID if grid == "main" else LARGE_D)[: args.limit]:
            rows.append(measure(s, args.peers, not args.no_fwdbwd))
            C.write_results(path, payload, quiet=True)  # a run cut short keeps what it measured
        payload["summary" if grid == "main" else f"summary_{grid}"] = summarize(rows)
    q, k, v = (
        torch.randn(1, 8192, 16, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        for _ in range(3)
    )
    dout = torch.randn_like(q)
    mem = {}
    for name, fwd in _forwards(q, k, v, False).items():
        if name in ("fa4", "sdpa_flash"):
            mem[name] = C.peak_mem_mb(lambda: torch.autograd.grad(fwd(), (q, k, v), dout))  # noqa: B023
    payload["peak_mem_mb_fwdbwd_b1_s8192_h16_d128"] = mem
    print("peak MiB fwd+bwd:", mem)
    C.write_results(path, payload)
    rows = payload.get("rows", []) + payload.get("rows_large-d", [])
    plots.plot_bwd(rows, path.replace(".json", ".png"), payload["env"]["device"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
