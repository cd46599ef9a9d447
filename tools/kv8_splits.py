"""FP8-cache decode time by split count (batch 1 and 8; 4k-64k keys; 32/8 heads, d128): the
measurements behind the split rule of the decode rows (fa4_torch.plan.heuristic_splits).

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
    for batch, kv in ((1, 4096), (1, 16384), (1, 65536), (8, 16384)):
        q = torch.randn(batch, 1, 32, 128, device="cuda", dtype=torch.bfloat16)
        k = torch.randint(0, 0x58, (batch, kv, 8, 128), device="cuda", dtype=torch.uint8).view(e4m3)
        v = torch.randint(0, 0x58, (batch, kv, 8, 128), device="cuda", dtype=torch.uint8).view(e4m3)
        lens = torch.full((batch,), kv, dtype=torch.int32, device="cuda")
        one = torch.tensor(1.0, device="cuda")
        heur = plan.heuristic_splits(
            q.device, batch, 32, 8, 1, kv, True, 4, "bfloat16", 128, 128, True, "float8_e4m3fn", True
        )
        out = []
        for s in (1, 4, 8, 16, 32, 64):
            if s * 64 > kv:
                continue
            ms = C.bench_ms(
                lambda s=s, q=q, k=k, v=v, lens=lens, one=one: flash_attn_with_kvcache(
                    q, k, v, cache_seqlens=lens, k_descale=one, v_descale=one, num_splits=s
                )
            )
            out.append(f"{s}:{ms * 1e3:.1f}")
        print(f"batch {batch} x {kv} keys (heuristic {heur}): us by splits " + " ".join(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
