"""Decode benchmark (one query token per sequence against a long KV cache): fa4's
``flash_attn_with_kvcache`` (contiguous and paged K/V, split-KV heuristic) beside PyTorch SDPA (flash
and cuDNN on the gathered K/V; the page gather timed separately) and upstream FlashAttention-4 where
it runs, in one process on one GPU (docs/benchmarks.md).

Figure of merit: effective bandwidth = bytes of K and V read / time, against the GPU's measured
device-to-device copy bandwidth (read + write bytes / time of a 1 GiB copy). Decode at long KV is
bandwidth-bound; the goal is >= 70% of the copy bandwidth.

    python benchmarks/bench_decode.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402

import _common as C  # noqa: E402
import plots  # noqa: E402
from fa4_torch import flash_attn_with_kvcache  # noqa: E402

BATCH = (1, 8, 32, 64)
KV = (1024, 4096, 16384, 32768)
HQ, HKV, D = 32, 8, 128


def copy_bandwidth() -> float:
    a = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = C.bench_ms(lambda: b.copy_(a))
    return 2 * a.numel() / ms / 1e6  # GB/s (read + write)


def measure(batch, kv_len, layout, bw):
    dt = torch.bfloat16
    q = torch.randn(batch, 1, HQ, D, device="cuda", dtype=dt)
    kv_bytes = 2 * batch * kv_len * HKV * D * 2
    row = dict(batch=batch, kv_len=kv_len, layout=layout, kv_bytes=kv_bytes)
    seqlens = torch.full((batch,), kv_len, dtype=torch.int32, device="cuda")
    if layout == "contiguous":
        k = torch.randn(batch, kv_len, HKV, D, device="cuda", dtype=dt)
        v = torch.randn_like(k)
        fa4 = lambda: flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens)  # noqa: E731
        gather = None
        kc, vc = k, v
    else:
        ps = int(layout.split("page")[1])
        n_pages = batch * kv_len // ps
        k = torch.randn(n_pages, ps, HKV, D, device="cuda", dtype=dt)
        v = torch.randn_like(k)
        table = torch.randperm(n_pages, device="cuda").to(torch.int32).view(batch, -1)
        fa4 = lambda: flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens, page_table=table)  # noqa: E731

        def gather():
            return k[table.long()].view(batch, kv_len, HKV, D), v[table.long()].view(batch, kv_len, HKV, D)

        kc, vc = gather()
    peers = {
        "fa4": fa4,
        "sdpa_flash": C.sdpa_fn("flash", q, kc, vc, False),
        "sdpa_cudnn": C.sdpa_fn("cudnn", q, kc, vc, False),
    }
    if layout == "contiguous":
        up = C.upstream_fn(q, k, v, False)
        if up is not None:
            peers["fa4_upstream_sm120"] = up
    if gather is not None:
        peers["page_gather"] = gather
    times, errors = C.bench_peers(peers)
    for name, ms in times.items():
        row[f"{name}_us"] = ms * 1e3
        if name != "page_gather":
            row[f"{name}_gbps"] = kv_bytes / ms / 1e6
            row[f"{name}_frac_copy_bw"] = kv_bytes / ms / 1e6 / bw
    for name, err in errors.items():
        row[f"{name}_error"] = err
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument(
        "--batch", type=int, nargs="+", default=list(BATCH), help=f"batch sizes (default {BATCH})"
    )
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_decode: no CUDA GPU here; nothing measured (run it on the GPU machine)")
        return 0
    bw = copy_bandwidth()
    print(f"copy bandwidth: {bw:.0f} GB/s")
    rows = []
    for batch, kv_len, layout in itertools.product(args.batch, KV, ("contiguous", "page16", "page64")):
        r = measure(batch, kv_len, layout, bw)
        rows.append(r)
        print(
            f"b{batch:3d} kv{kv_len:6d} {layout:10s} "
            + " ".join(f"{k[:-4]}={r[k]:.0f}" for k in r if k.endswith("_gbps"))
            + (f" gather={r['page_gather_us']:.0f}us" if "page_gather_us" in r else ""),
            flush=True,
        )
        torch.cuda.empty_cache()
    fr = [r["fa4_frac_copy_bw"] for r in rows if "fa4_frac_copy_bw" in r and r["kv_len"] >= 16384]
    summary = {
        "copy_bandwidth_gbps": bw,
        "fa4_frac_copy_bw_kv_ge_16k": dict(mean=sum(fr) / len(fr), min=min(fr)) if fr else None,
        "batches": args.batch,
    }
    print(summary)
    full = tuple(args.batch) == BATCH
    path = C.results_path("decode" if full else "decode-b" + "-".join(map(str, args.batch)), args.out)
    env = C.environment()
    C.write_results(path, {"env": env, "summary": summary, "rows": rows})
    plots.plot_decode(rows, path.replace(".json", ".png"), env["device"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
