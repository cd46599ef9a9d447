"""Host time of a cached forward call (batch 1, seqlen 128, 16 heads, d 64, bf16): fa4 with and without
the dense-call memo (``fa4_torch.launch.DENSE_MEMO``), SDPA flash and upstream FlashAttention-4 in the
same process; queued calls (``host_us``) and calls on an idle GPU (``idle_host_us``, p10/p50/p90).
Then the same for a batch-1 decode step (one query, 32/8 heads, d 128, a 4096-key cache, contiguous
and page-64) through ``flash_attn_with_kvcache`` with and without the KV-cache memo
(``fa4_torch.launch.CACHE_MEMO``), beside SDPA flash on the same K/V.

    python3 tools/host_time.py [--out DIR]     # writes DIR/<date>-<gpu>-host-time.json
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_torch import flash_attn_func, flash_attn_with_kvcache, launch  # noqa: E402


class _NoMemo(dict):
    """A memo that never keeps an entry: every call validates (the path before the memo)."""

    def __setitem__(self, key, value):
        pass


def rounds(peers: dict, memos: tuple[str, ...], label: str) -> dict:
    """Three rounds of every peer, and of fa4 with ``memos`` (``fa4_torch.launch`` attributes) never
    keeping an entry; the medians of the rounds."""
    res = {}
    for _ in range(3):
        for name, fn in peers.items():
            res.setdefault(name, []).append((C.host_us(fn), C.idle_host_us(fn)))
        saved = {m: getattr(launch, m) for m in memos}
        for m in memos:
            setattr(launch, m, _NoMemo())
        try:
            res.setdefault("fa4_no_memo", []).append((C.host_us(peers["fa4"]), C.idle_host_us(peers["fa4"])))
        finally:
            for m, memo in saved.items():
                setattr(launch, m, memo)
    summary = {
        name: {
            "host_us_queued": sorted(h for h, _ in runs)[len(runs) // 2],
            "idle_host_us": sorted((i for _, i in runs), key=lambda d: d["p50"])[len(runs) // 2],
        }
        for name, runs in res.items()
    }
    for name, s in summary.items():
        print(f"{label} {name:20} queued {s['host_us_queued']:.1f} µs; idle {s['idle_host_us']}")
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("host_time: no CUDA GPU here; nothing measured")
        return 0
    q, k, v = (torch.randn(1, 128, 16, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    peers = {
        "fa4": lambda: flash_attn_func(q, k, v),
        "sdpa_flash": C.sdpa_fn("flash", q, k, v, False),
    }
    up = C.upstream_fn(q, k, v, False)
    if up is not None:
        peers["fa4_upstream_sm120"] = up
    payload = {"env": C.environment(), "b1_s128_h16_d64_bf16": rounds(peers, ("DENSE_MEMO",), "dense")}
    # a decode step: 1 query token, 32/8 heads, d128, 4096 cached keys
    qd = torch.randn(1, 1, 32, 128, device="cuda", dtype=torch.bfloat16)
    kc, vc = (torch.randn(1, 4096, 8, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    lens = torch.full((1,), 4096, dtype=torch.int32, device="cuda")
    kp, vp = kc.view(64, 64, 8, 128), vc.view(64, 64, 8, 128)
    table = torch.arange(64, dtype=torch.int32, device="cuda").view(1, 64)
    sdpa = C.sdpa_fn("flash", qd, kc, vc, False)
    for layout, kw, kk, vv in (("contiguous", {}, kc, vc), ("page64", {"page_table": table}, kp, vp)):
        dec = {
            "fa4": lambda kk=kk, vv=vv, kw=kw: flash_attn_with_kvcache(qd, kk, vv, cache_seqlens=lens, **kw),
            "sdpa_flash": sdpa,
        }
        payload[f"decode_b1_kv4096_h32_8_d128_{layout}"] = rounds(dec, ("CACHE_MEMO",), f"decode {layout}")
    if args.out:
        C.write_results(C.results_path("host-time", args.out), payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
