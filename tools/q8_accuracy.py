"""Accuracy of the 8-bit attention recipes, emulated in fp32 on the CPU (no GPU), against exact fp32
attention, beside bf16 attention (SDPA's math kernel on bf16 inputs): the table of
``docs/quantized.md``.

Recipes: Q·Kᵀ in INT8 or FP8 e4m3 with per-block scales (the kernel's blocks: its tile of
``fa4_sm120.tiles.Q8_FWD_TILES``), with and without
K smoothing; P·V in FP8 e4m3 (P times 2^8, per-channel V scales), fp32 or fp16 accumulation. Inputs:
standard normal and "real-like" (:func:`fa4_torch.quant.real_like`).

    python3 tools/q8_accuracy.py [--seqlen 1024] [--heads 4] [--seed 0]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from fa4_sm120.tiles import Q8_FWD_TILES
from fa4_torch.quant import attention_fp32, emulate, errors, quantize, real_like

RECIPES = (
    ("int8 QK, smoothed K", "int8", True, "fp32"),
    ("int8 QK, no smoothing", "int8", False, "fp32"),
    ("fp8 QK, smoothed K", "fp8", True, "fp32"),
    ("fp8 QK, no smoothing", "fp8", False, "fp32"),
    ("int8 QK, smoothed K, fp16 P·V accum", "int8", True, "fp16"),
    ("fp8 QK, smoothed K, fp16 P·V accum", "fp8", True, "fp16"),
)


def inputs(kind: str, s: int, h: int, d: int, causal: bool, seed: int):
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        return tuple(torch.randn(1, s, h, d, generator=g) for _ in range(3))
    return real_like(1, s, s, h, h, d, generator=g)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqlen", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print("| inputs | d | causal | recipe | cosine | rel. L1 | max err |")
    print("|---|---|---|---|---|---|---|")
    for kind in ("normal", "real-like"):
        for d in (64, 128):
            for causal in (False, True):
                q, k, v = inputs(kind, a.seqlen, a.heads, d, causal, a.seed)
                ref, _ = attention_fp32(q.double(), k.double(), v.double(), causal=causal)
                rows = []
                for name, qk, smooth, acc in RECIPES:
                    bq, bk = Q8_FWD_TILES[d].tile_m, Q8_FWD_TILES[d].tile_n
                    qkv = quantize(q, k, v, qk=qk, smooth_k=smooth, pv_accum=acc, block_q=bq, block_k=bk)
                    out, _ = emulate(qkv, causal=causal, pv_accum=acc)
                    rows.append((name, errors(out, ref)))
                b16 = [t.bfloat16().transpose(1, 2) for t in (q, k, v)]
                with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
                    o16 = F.scaled_dot_product_attention(*b16, is_causal=causal).transpose(1, 2)
                rows.append(("bf16 (SDPA math)", errors(o16, ref)))
                for name, e in rows:
                    print(
                        f"| {kind} | {d} | {causal} | {name} | {e['cosine']:.6f} | {e['rel_l1']:.4f} "
                        f"| {e['max_err']:.4f} |"
                    )


if __name__ == "__main__":
    main()
