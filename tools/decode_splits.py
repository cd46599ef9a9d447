"""Split-KV sweep of fa4's decode: K/V bandwidth for every explicit ``num_splits`` beside the split-KV
heuristic's choice (``num_splits=0``), in one process on one GPU. Rerun it when the heuristic
(``fa4_torch.plan.heuristic_splits``) or a decode row changes: its rule is that the heuristic's pick
matches the best explicit count (32/8 heads, d128, bf16).

    python3 tools/decode_splits.py --out DIR                           # the built-in decode shapes
    python3 tools/decode_splits.py --paged --graph --shapes 1:1024 8:4096 --out DIR
    python3 tools/decode_splits.py --prefill --out DIR                 # few-tile prefill shapes too
    python3 tools/decode_splits.py --host --out DIR                    # host, queued and kernel time

``--graph`` times CUDA-graph replays (the GPU's time: short caches are host-bound otherwise).
Writes ``DIR/<date>-<gpu>-decode-splits[-graph].json`` (``--host``: ``-decode-host.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_torch import flash_attn_func, flash_attn_with_kvcache, plan  # noqa: E402

HQ, HKV, D = 32, 8, 128
SHAPES = [(1, 16384), (1, 32768), (2, 32768), (4, 32768), (8, 8192), (8, 16384), (8, 32768), (16, 32768)]
SPLITS = (0, 1, 2, 4, 8, 16, 32, 64)
# few-tile prefill and chunked prefill (batch, seqlen_q, seqlen_k, heads, causal), d128: where a
# whole-wave rule splits differently from a fixed number of CTAs per SM
# (flash_attn_func splits only when asked, num_splits=0; flash_attn_with_kvcache's default is 0)
PREFILL = [
    (1, 512, 512, 16, False), (1, 1024, 1024, 16, False), (1, 1024, 1024, 16, True),
    (2, 1024, 1024, 16, False), (1, 2048, 2048, 16, False), (1, 256, 16384, 16, False),
    (1, 128, 8192, 32, True), (2, 512, 4096, 16, False),
]  # fmt: skip


def sweep(row: dict, label: str, unit: str, measure) -> None:
    """``row[f"splits{s}_{unit}"] = measure(s)`` for every split count (0: the heuristic's), the best
    explicit one as ``row["best"]``, and one printed line."""
    for s in SPLITS:
        row[f"splits{s}_{unit}"] = measure(s)
    row["best"] = max(SPLITS[1:], key=lambda s: row[f"splits{s}_{unit}"])
    print(
        f"{label} heuristic={row['heuristic_splits']:2d} "
        + " ".join(f"{s}:{row[f'splits{s}_{unit}']:.0f}" for s in SPLITS)
        + f" best={row['best']}",
        flush=True,
    )


GRAPH = False  # --graph: time a CUDA-graph replay of the call (the GPU's time, no host in it)


def time_splits(q, k, v, kw, splits: int) -> float:
    """do_bench ms of one decode call with ``num_splits=splits`` (0: the heuristic); with ``GRAPH``, of
    the replay of a CUDA graph that captured it (short-cache calls are host-bound otherwise)."""

    def fn():
        return flash_attn_with_kvcache(q, k, v, num_splits=splits, **kw)

    fn()
    if not GRAPH:
        return C.bench_ms(fn)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return C.bench_ms(g.replay)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument(
        "--host", action="store_true", help="only the small decode shapes' host time, queued and kernel time"
    )
    ap.add_argument("--prefill", action="store_true", help="the few-tile prefill shapes as well")
    ap.add_argument("--paged", action="store_true", help="page-64 K/V (random page table) as well")
    ap.add_argument(
        "--shapes", nargs="+", default=None, help="batch:kv_len pairs instead of the built-in decode shapes"
    )
    ap.add_argument("--graph", action="store_true", help="time CUDA-graph replays (the GPU's time)")
    a = ap.parse_args()
    global GRAPH
    GRAPH = a.graph
    if not torch.cuda.is_available():
        print("decode_splits: no CUDA GPU here; nothing measured")
        return 0
    dev = torch.device("cuda")
    if a.host:
        rows = host_rows(dev)
        C.write_results(C.results_path("decode-host", a.out), {"env": C.environment(), "rows": rows})
        return 0
    rows = []
    for (b, kv), layout in [
        (s, lay)
        for s in ([tuple(map(int, x.split(":"))) for x in a.shapes] if a.shapes else SHAPES)
        for lay in (("contiguous", "page64") if a.paged else ("contiguous",))
    ]:
        dt = torch.bfloat16
        q = torch.randn(b, 1, HQ, D, device=dev, dtype=dt)
        seqlens = torch.full((b,), kv, dtype=torch.int32, device=dev)
        kw = dict(cache_seqlens=seqlens)
        if layout == "contiguous":
            k = torch.randn(b, kv, HKV, D, device=dev, dtype=dt)
        else:
            n_pages = b * kv // 64
            k = torch.randn(n_pages, 64, HKV, D, device=dev, dtype=dt)
            kw["page_table"] = torch.randperm(n_pages, device=dev).to(torch.int32).view(b, -1)
        v = torch.randn_like(k)
        kv_bytes = 2 * b * kv * HKV * D * 2
        heuristic = plan.heuristic_splits(
            dev, b, HQ, HKV, 1, kv, True, HQ // HKV, "bfloat16", D, D, True
        )  # fmt: skip
        row = dict(batch=b, kv_len=kv, layout=layout, heuristic_splits=heuristic)
        sweep(
            row, f"b{b:3d} kv{kv:6d} {layout:10s}", "gbps",
            lambda s, q=q, k=k, v=v, kw=kw, n=kv_bytes: n / time_splits(q, k, v, kw, s) / 1e6,
        )  # fmt: skip
        rows.append(row)
        torch.cuda.empty_cache()
    if a.prefill:
        rows += prefill_rows(dev)
    payload = {"env": C.environment(), "rows": rows}
    if GRAPH:
        payload["note"] = "CUDA-graph replay timing"
    C.write_results(C.results_path("decode-splits-graph" if GRAPH else "decode-splits", a.out), payload)
    return 0


# batch-1/8 decode shapes, where the host time of a call can exceed the kernel's (bench_decode has
# timed them at about 100 µs whatever the KV length while their kernels took 10-30 µs)
HOST_SHAPES = [(1, 1024), (1, 4096), (1, 16384), (8, 1024), (8, 4096)]


def host_rows(dev):
    """Per decode shape (heuristic splits): do_bench's median, the queued wall time per call, the
    host time with the GPU idle before the call, and the kernels' own time (torch.profiler)."""
    rows = []
    for b, kv in HOST_SHAPES:
        q = torch.randn(b, 1, HQ, D, device=dev, dtype=torch.bfloat16)
        k, v = (torch.randn(b, kv, HKV, D, device=dev, dtype=torch.bfloat16) for _ in range(2))
        seqlens = torch.full((b,), kv, dtype=torch.int32, device=dev)

        def fn(q=q, k=k, v=v, seqlens=seqlens):
            return flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens)

        fn()
        row = dict(batch=b, kv_len=kv, bench_us=C.bench_ms(fn) * 1e3, queued_us=C.host_us(fn, iters=500))
        row["idle_host_us"] = C.idle_host_us(fn)
        row["kernels_us"] = C.kernel_us(fn)
        row["splits"] = plan.heuristic_splits(dev, b, HQ, HKV, 1, kv, True, HQ // HKV, "bfloat16", D, D, True)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def prefill_rows(dev):
    """TFLOP/s of flash_attn_func on PREFILL for each explicit split count and the heuristic's."""
    rows = []
    for b, sq, sk, h, causal in PREFILL:
        q = torch.randn(b, sq, h, D, device=dev, dtype=torch.bfloat16)
        k, v = (torch.randn(b, sk, h, D, device=dev, dtype=torch.bfloat16) for _ in range(2))
        flops = 4 * b * h * sq * sk * D * (0.5 if causal else 1.0)
        small_m = sq <= 64
        heuristic = plan.heuristic_splits(dev, b, h, h, sq, sk, False, 1, "bfloat16", D, D, small_m)
        row = dict(kind="prefill", batch=b, seqlen_q=sq, seqlen_k=sk, heads=h, causal=causal)
        row["heuristic_splits"] = heuristic

        def tflops(s, q=q, k=k, v=v, causal=causal, flops=flops):
            def fn():
                return flash_attn_func(q, k, v, causal=causal, num_splits=s)

            fn()
            return flops / C.bench_ms(fn) / 1e9

        sweep(row, f"prefill b{b} q{sq} k{sk} h{h} {'causal' if causal else 'full':6s}", "tflops", tflops)
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main())
