"""Re-time the seed-grid shapes where fa4 trailed SDPA flash in an earlier ``bench_fwd.py`` result,
fa4 and SDPA flash only, in several independent repeats (each ``_common.bench_peers``: interleaved
rounds), to tell a shape that is reproducibly slower from one that sits at parity within the run's
spread. Prints and writes each shape's fa4 / SDPA flash ratio per repeat.

    python3 tools/seed_recheck.py benchmarks/results/2026-12-03-NVIDIA-H200-fwd-session11.json --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_torch import flash_attn_func  # noqa: E402

KEYS = ("dtype", "batch", "seqlen", "nheads", "nheads_kv", "head_dim", "causal")
DT = {"fp16": torch.float16, "bf16": torch.bfloat16}


def below(path: str, limit: float) -> list[dict]:
    """The seed rows of ``path`` whose SDPA-flash / fa4 time ratio is under ``limit``."""
    with open(path) as f:
        rows = json.load(f)["grids"]["seed"]["rows"]
    return [
        {k: r[k] for k in KEYS} | {"before": r["sdpa_flash_ms"] / r["fa4_ms"]}
        for r in rows
        if "sdpa_flash_ms" in r and "fa4_ms" in r and r["sdpa_flash_ms"] / r["fa4_ms"] < limit
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a bench_fwd.py JSON with a seed grid")
    ap.add_argument("--limit", type=float, default=1.0, help="re-time the shapes under this ratio")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("seed_recheck: no CUDA GPU here; nothing measured")
        return 0
    shapes = below(a.results, a.limit)
    m = torch.randn(4096, 4096, device="cuda")
    C.bench_ms(lambda: m @ m)  # clocks up first
    for s in shapes:
        dt = DT[s["dtype"]]
        b, n, hq, hkv, d = s["batch"], s["seqlen"], s["nheads"], s["nheads_kv"], s["head_dim"]
        q = torch.randn(b, n, hq, d, device="cuda", dtype=dt)
        k, v = (torch.randn(b, n, hkv, d, device="cuda", dtype=dt) for _ in range(2))
        fns = {
            "fa4": lambda q=q, k=k, v=v, c=s["causal"]: flash_attn_func(q, k, v, causal=c),
            "sdpa_flash": C.sdpa_fn("flash", q, k, v, s["causal"]),
        }
        s["fa4_us"], s["sdpa_flash_us"], s["ratios"] = [], [], []
        for _ in range(a.repeats):
            ms, err = C.bench_peers(fns)
            if err:
                s["errors"] = err
                break
            s["fa4_us"].append(ms["fa4"] * 1e3)
            s["sdpa_flash_us"].append(ms["sdpa_flash"] * 1e3)
            s["ratios"].append(ms["sdpa_flash"] / ms["fa4"])
        print(
            " ".join(f"{k}={s[k]}" for k in KEYS)
            + f" before {s['before']:.3f} now "
            + " ".join(f"{r:.3f}" for r in s["ratios"])
            + " fa4 µs "
            + " ".join(f"{t:.1f}" for t in s["fa4_us"]),
            flush=True,
        )
    if a.out:
        C.write_results(
            os.path.join(a.out, "seed-recheck.json"),
            {"env": C.environment(), "source": a.results, "rows": shapes},
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
