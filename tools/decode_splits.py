"""Decode split-KV sweep on the GPU machine: K/V bandwidth of fa4's decode for explicit ``num_splits``
beside the heuristic's choice (``num_splits=0``), to decide the heuristic by measurement.

The question it answers (session 6): at batch 8 × 32k the heuristic's 9 splits give 576 CTAs, 2.2
waves of the 264 the small-m row keeps resident (2 per SM), and fa4 reached 0.71 of the copy
bandwidth where batch 32-64 (one wave) reached 0.95. A split count that fills whole waves (4 at
batch 8: 256 CTAs) should close that gap if the tail is the cause.

    python3 tools/decode_splits.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_torch import api, flash_attn_with_kvcache  # noqa: E402

HQ, HKV, D = 32, 8, 128
SHAPES = [(1, 16384), (1, 32768), (2, 32768), (4, 32768), (8, 8192), (8, 16384), (8, 32768), (16, 32768)]
SPLITS = (0, 1, 2, 4, 8, 16, 32, 64)


def time_splits(q, k, v, kw, splits: int) -> float:
    """do_bench ms of one decode call with ``num_splits=splits`` (0: the heuristic)."""

    def fn():
        return flash_attn_with_kvcache(q, k, v, num_splits=splits, **kw)

    fn()
    return C.bench_ms(fn)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--paged", action="store_true", help="page-64 K/V (random page table) as well")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("decode_splits: no CUDA GPU here; nothing measured")
        return 0
    dev = torch.device("cuda")
    rows = []
    for (b, kv), layout in [
        (s, lay) for s in SHAPES for lay in (("contiguous", "page64") if a.paged else ("contiguous",))
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
        heuristic = api._heuristic_splits(
            dev, b, HQ, HKV, 1, kv, True, HQ // HKV, "bfloat16", D, D, True
        )  # fmt: skip
        row = dict(batch=b, kv_len=kv, layout=layout, heuristic_splits=heuristic)
        for s in SPLITS:
            ms = time_splits(q, k, v, kw, s)
            row[f"splits{s}_gbps"] = kv_bytes / ms / 1e6
        best = max(SPLITS[1:], key=lambda s: row[f"splits{s}_gbps"])
        row["best"] = best
        rows.append(row)
        print(
            f"b{b:3d} kv{kv:6d} {layout:10s} heuristic={heuristic:2d} "
            + " ".join(f"{s}:{row[f'splits{s}_gbps']:.0f}" for s in SPLITS)
            + f" best={best}",
            flush=True,
        )
        torch.cuda.empty_cache()
    with open(os.path.join(a.out, "decode-splits.json"), "w") as f:
        json.dump({"env": C.environment(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
