"""Few-tile forward on the GPU machine: TFLOP/s of fa4 with the small-m (64-row) rows for calls whose
128-row tiles leave SMs idle (``fa4_sm120.tiles.FEW_TILE_SMALL_M``) against without, beside SDPA
flash, in one run, to decide the rule by measurement.

The question (session 7): on the seed grid fa4 ran at 0.51-0.75x SDPA flash on one-wave shapes
(batch 1-2, seqlen 512-1024, 16 heads, d128: 128 tiles of 128 rows on 132 SMs, one CTA per SM).

    python3 tools/few_tile_fwd.py --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_sm120 import tiles  # noqa: E402
from fa4_torch import flash_attn_func  # noqa: E402

# (batch, seqlen, heads, heads_kv, head_dim, causal)
SHAPES = [
    (1, 1024, 16, 16, 128, False), (1, 1024, 16, 8, 128, False), (2, 512, 16, 1, 128, False),
    (1, 1024, 16, 16, 128, True), (2, 512, 16, 16, 64, False), (2, 512, 16, 8, 64, False),
    (1, 1024, 16, 16, 64, True), (1, 512, 16, 16, 128, False), (1, 2048, 8, 8, 128, False),
    (2, 1024, 8, 8, 96, False), (1, 1024, 16, 16, 160, False), (1, 1024, 8, 8, 192, True),
    (1, 4096, 2, 2, 128, False), (1, 256, 16, 16, 128, False),
]  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("few_tile_fwd: no CUDA GPU here; nothing measured")
        return 0
    dev = torch.device("cuda")
    rows = []
    for b, s, h, hkv, d, causal in SHAPES:
        q = torch.randn(b, s, h, d, device=dev, dtype=torch.bfloat16)
        k, v = (torch.randn(b, s, hkv, d, device=dev, dtype=torch.bfloat16) for _ in range(2))
        flops = 4 * b * h * s * s * d * (0.5 if causal else 1.0)
        row = dict(batch=b, seqlen=s, nheads=h, nheads_kv=hkv, head_dim=d, causal=causal)
        for name, on in (("fa4_small_m", True), ("fa4_128", False)):
            tiles.FEW_TILE_SMALL_M = on

            def fn(q=q, k=k, v=v, causal=causal):
                return flash_attn_func(q, k, v, causal=causal)

            fn()
            row[f"{name}_tflops"] = flops / C.bench_ms(fn) / 1e9
        tiles.FEW_TILE_SMALL_M = True
        sd = C.sdpa_fn("flash", q, k, v, causal)
        sd()
        row["sdpa_flash_tflops"] = flops / C.bench_ms(sd) / 1e9
        rows.append(row)
        print(
            f"b{b} s{s} h{h}/{hkv} d{d} {'causal' if causal else 'full':6s} "
            + " ".join(f"{k[:-7]}={row[k]:.1f}" for k in row if k.endswith("_tflops")),
            flush=True,
        )
        torch.cuda.empty_cache()
    with open(os.path.join(a.out, "few-tile-fwd.json"), "w") as f:
        json.dump({"env": C.environment(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
