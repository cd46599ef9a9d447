"""FP8-cache decode time by split count (batch 1 and 8; 4k-128k keys; 32/8 heads, d128): the
measurements behind the split rule of the decode rows (fa4_torch.plan.heuristic_splits).

Per shape and split count: the call's time and its CUDA-graph replay (GPU time without host time),
for the FP8 cache and a bf16 cache of the same shape; at the heuristic's split count also each
kernel's device time (``torch.profiler``: the attention kernel and the combine apart).

    python tools/kv8_splits.py [--emulate-sm120]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_torch import flash_attn_with_kvcache, plan  # noqa: E402


def main() -> int:
    if not torch.cuda.is_available():
        print("kv8_splits: no CUDA GPU here; nothing measured")
        return 0
    if "--emulate-sm120" in sys.argv:
        C.emulate_sm120()
    e4m3 = torch.float8_e4m3fn
    few, many = (1, 2, 3, 4, 6, 8, 12, 16), (1, 8, 16, 24, 32, 48, 64)
    for batch, kv, counts in (
        (8, 16384, few),
        (1, 16384, many),
        (1, 131072, many),
        (8, 65536, few),
        (1, 65536, many),
        (1, 4096, many),
    ):
        q = torch.randn(batch, 1, 32, 128, device="cuda", dtype=torch.bfloat16)
        k8 = torch.randint(0, 0x58, (batch, kv, 8, 128), device="cuda", dtype=torch.uint8).view(e4m3)
        v8 = torch.randint(0, 0x58, (batch, kv, 8, 128), device="cuda", dtype=torch.uint8).view(e4m3)
        kb, vb = torch.zeros_like(k8, dtype=torch.bfloat16), torch.zeros_like(v8, dtype=torch.bfloat16)
        lens = torch.full((batch,), kv, dtype=torch.int32, device="cuda")
        one = torch.tensor(1.0, device="cuda")
        for name, k, v, kv_dtype, scales in (
            ("fp8", k8, v8, "float8_e4m3fn", dict(k_descale=one, v_descale=one)),
            ("bf16", kb, vb, None, {}),
        ):
            heur = plan.heuristic_splits(
                q.device, batch, 32, 8, 1, kv, True, 4, "bfloat16", 128, 128, True, kv_dtype, True
            )
            out = []
            for s in sorted({*counts, heur}):
                if s * 64 > kv:
                    continue

                def call(s=s, q=q, k=k, v=v, lens=lens, scales=scales):
                    return flash_attn_with_kvcache(q, k, v, cache_seqlens=lens, num_splits=s, **scales)

                call()
                us = C.bench_ms(call) * 1e3
                graph_us = C.bench_ms(C.graphed(call)) * 1e3
                out.append(f"{s}:{us:.1f}/{graph_us:.1f}")
                if s == heur:
                    kernels = C.kernel_us(call)
            print(
                f"{name} batch {batch} x {kv} keys (heuristic {heur}): us by splits (call/graph) "
                + " ".join(out),
                flush=True,
            )
            print(f"  kernels at {heur} splits: {kernels}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
