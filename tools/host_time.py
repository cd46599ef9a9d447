"""Host time of a cached forward call (batch 1, seqlen 128, 16 heads, d 64, bf16): fa4 with and without
the dense-call memo (``fa4_torch.api._dense_memo``), SDPA flash and upstream FlashAttention-4 in the
same process; queued calls (``host_us``) and calls on an idle GPU (``idle_host_us``, p10/p50/p90).

    python3 tools/host_time.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import torch  # noqa: E402

import _common as C  # noqa: E402
import fa4_torch.api as api  # noqa: E402
from fa4_torch import flash_attn_func  # noqa: E402


class _NoMemo(dict):
    """A memo that never keeps an entry: every call validates (the path before the memo)."""

    def __setitem__(self, key, value):
        pass


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
    res = {}
    for _ in range(3):  # three rounds, fa4 without the memo in each
        for name, fn in peers.items():
            res.setdefault(name, []).append((C.host_us(fn), C.idle_host_us(fn)))
        memo = api._dense_memo
        api._dense_memo = _NoMemo()
        try:
            res.setdefault("fa4_no_memo", []).append((C.host_us(peers["fa4"]), C.idle_host_us(peers["fa4"])))
        finally:
            api._dense_memo = memo
    summary = {
        name: {
            "host_us_queued": sorted(h for h, _ in runs)[len(runs) // 2],
            "idle_host_us": sorted((i for _, i in runs), key=lambda d: d["p50"])[len(runs) // 2],
        }
        for name, runs in res.items()
    }
    for name, s in summary.items():
        print(f"{name:20} queued {s['host_us_queued']:.1f} µs; idle {s['idle_host_us']}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "host-time.json"), "w") as f:
            json.dump({"env": C.environment(), "b1_s128_h16_d64_bf16": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
