"""Chunked prefill over an FP8 cache: is widening the FP8 K/V tiles to 16 bits (fa4's FP8-cache
kernels) as fast as attending over a bf16 cache once a call has many query rows per KV head, where
attention becomes compute-bound? The measurement behind "widen, not 8-bit MMAs" for the FP8 cache
(docs/sm120-resources.md).

A chunk of ``new`` query tokens per sequence, causal, over a cache that already holds ``cached`` keys
plus the chunk's own (``flash_attn_with_kvcache`` with ``cache_seqlens = cached + new``), d128 (or
``--head-dim``), 32/8 heads, contiguous and in pages of 64; per shape the FP8 cache and a bf16 cache of
the same shape in interleaved rounds (``_common.bench_peers``), µs per call and TFLOP/s
(``4 * d * heads * Σ keys seen``).

    python tools/kv8_prefill.py [--emulate-sm120] [--head-dim 64] [--out DIR]
    python tools/kv8_prefill.py --emulate-sm120 --codegen kv8_one_buffer=1   # a candidate's FP8 kernels

``--codegen NAME=VALUE`` builds the FP8-cache kernels with these :class:`fa4_sm120.configs.FwdCodegen`
fields, ``--kv8-tile-n N`` with key tiles of N (the bf16 cache's are left as they are).
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_torch import flash_attn_with_kvcache  # noqa: E402

SHAPES = ((1, 16384, 512), (1, 16384, 2048), (4, 4096, 1024))  # (batch, cached keys, new tokens)
HQ, HKV = 32, 8


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulate-sm120", action="store_true", help="fa4's kernels at SM120's CTAs per SM")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--kv8-tile-n", type=int, default=0, help="FP8 key tiles of this length (a candidate)")
    ap.add_argument("--out", default=None, help="write the rows as a result file here")
    ap.add_argument(
        "--codegen", nargs="*", default=[], help="FwdCodegen fields of the FP8 kernels, NAME=number"
    )
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("kv8_prefill: no CUDA GPU here; nothing measured")
        return 0
    C.kv8_candidate(args.codegen, args.kv8_tile_n)  # before the emulation: it sizes the launch
    D = args.head_dim
    emulated = C.emulate_sm120() if args.emulate_sm120 else None
    e4m3 = torch.float8_e4m3fn
    one = torch.tensor(1.0, device="cuda")
    rows = []
    for batch, cached, new in SHAPES:
        total = cached + new
        for layout in ("contiguous", "page64"):
            q = torch.randn(batch, new, HQ, D, device="cuda", dtype=torch.bfloat16)
            if layout == "contiguous":
                shape, table = (batch, total, HKV, D), None
            else:
                pages = -(-total // 64)
                shape = (batch * pages, 64, HKV, D)
                table = torch.randperm(batch * pages, device="cuda").to(torch.int32).view(batch, pages)
            k8 = torch.randint(0, 0x58, shape, device="cuda", dtype=torch.uint8).view(e4m3)
            v8 = torch.randint(0, 0x58, shape, device="cuda", dtype=torch.uint8).view(e4m3)
            kb, vb = k8.to(torch.bfloat16), v8.to(torch.bfloat16)
            lens = torch.full((batch,), total, dtype=torch.int32, device="cuda")
            peers = {
                "fp8": lambda q=q, k=k8, v=v8, t=table, n=lens: flash_attn_with_kvcache(
                    q, k, v, cache_seqlens=n, page_table=t, causal=True, k_descale=one, v_descale=one
                ),
                "bf16": lambda q=q, k=kb, v=vb, t=table, n=lens: flash_attn_with_kvcache(
                    q, k, v, cache_seqlens=n, page_table=t, causal=True
                ),
            }
            ms, errors = C.bench_peers(peers)
            keys_seen = batch * sum(cached + i + 1 for i in range(new))
            flops = 4 * D * HQ * keys_seen
            row = dict(batch=batch, cached=cached, new=new, layout=layout, errors=errors)
            for name, t in ms.items():
                row[f"{name}_us"], row[f"{name}_tflops"] = t * 1e3, flops / (t * 1e-3) / 1e12
            if "fp8_us" in row and "bf16_us" in row:
                row["bf16_over_fp8"] = row["bf16_us"] / row["fp8_us"]
            rows.append(row)
            print(
                f"b{batch} cached {cached} + new {new} {layout:10s} "
                + " ".join(f"{n} {row.get(f'{n}_us', float('nan')):8.1f}us "
                           f"{row.get(f'{n}_tflops', float('nan')):6.1f}TFLOP/s" for n in peers)
                + f" bf16/fp8 {row.get('bf16_over_fp8', float('nan')):.2f}"
                + (f" errors={errors}" if errors else ""),
                flush=True,
            )  # fmt: skip
    if args.out:
        kind = f"kv8-prefill-d{D}" + ("-emulated-sm120" if emulated is not None else "")
        kind += "".join(f"-{c.replace('=', '')}" for c in args.codegen)
        kind += f"-n{args.kv8_tile_n}" if args.kv8_tile_n else ""
        payload = {
            "env": C.environment(),
            "emulated_sm120": emulated,
            "head_dim": D,
            "codegen": args.codegen,
            "kv8_tile_n": args.kv8_tile_n,
            "rows": rows,
        }
        C.write_results(C.results_path(kind, args.out), payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
