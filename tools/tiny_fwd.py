"""The smallest seed-grid shapes (seqlen 128, 8-10 µs) where fa4 trails SDPA flash by under 1 µs:
fa4 as dispatched, without GQA packing, and without the few-tile 64-row rule
(``fa4_sm120.tiles.FEW_TILE_SMALL_M``), beside SDPA flash, timed together (interleaved rounds) and
each kernel's own device time (torch.profiler), to tell launch and host gaps from kernel time.

    python3 tools/tiny_fwd.py --out $OUT
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_sm120 import tiles  # noqa: E402
from fa4_torch import flash_attn_func  # noqa: E402

# (dtype, batch, seqlen, heads, heads_kv, head_dim, causal)
SHAPES = [
    ("bf16", 1, 128, 16, 1, 64, False), ("fp16", 2, 128, 16, 8, 64, False),
    ("bf16", 1, 128, 16, 16, 64, False), ("bf16", 2, 128, 16, 1, 128, False),
    ("bf16", 1, 512, 16, 1, 64, True),
]  # fmt: skip
DT = {"fp16": torch.float16, "bf16": torch.bfloat16}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("tiny_fwd: no CUDA GPU here; nothing measured")
        return 0
    m = torch.randn(4096, 4096, device="cuda")
    C.bench_ms(lambda: m @ m)
    rows = []
    for dt, b, s, hq, hkv, d, causal in SHAPES:
        q = torch.randn(b, s, hq, d, device="cuda", dtype=DT[dt])
        k, v = (torch.randn(b, s, hkv, d, device="cuda", dtype=DT[dt]) for _ in range(2))

        def few_tile_off(q=q, k=k, v=v, causal=causal):
            tiles.FEW_TILE_SMALL_M = False
            try:
                return flash_attn_func(q, k, v, causal=causal)
            finally:
                tiles.FEW_TILE_SMALL_M = True

        fns = {
            "fa4": lambda q=q, k=k, v=v, causal=causal: flash_attn_func(q, k, v, causal=causal),
            "fa4_no_pack": lambda q=q, k=k, v=v, causal=causal: flash_attn_func(
                q, k, v, causal=causal, pack_gqa=False
            ),
            "fa4_few_tile_off": few_tile_off,
            "sdpa_flash": C.sdpa_fn("flash", q, k, v, causal),
        }
        ms, err = C.bench_peers(fns)
        row = dict(dtype=dt, batch=b, seqlen=s, heads=hq, heads_kv=hkv, head_dim=d, causal=causal, errors=err)
        row["us"] = {n: t * 1e3 for n, t in ms.items()}
        row["kernel_us"] = {n: C.kernel_us(fn, calls=20) for n, fn in fns.items()}
        rows.append(row)
        print(
            f"{dt} {b}x{s} {hq}/{hkv} d{d} {'causal' if causal else 'full'}: "
            + " ".join(f"{n} {t:.2f}" for n, t in row["us"].items())
            + " | kernels "
            + "; ".join(f"{n} {sum(kk.values()):.2f}" for n, kk in row["kernel_us"].items()),
            flush=True,
        )
    if a.out:
        C.write_results(os.path.join(a.out, "tiny-fwd.json"), {"env": C.environment(), "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
