"""FP8 KV-cache decode benchmark: fa4's ``flash_attn_with_kvcache`` over a float8_e4m3fn cache (one
query token per sequence; contiguous and paged K/V, the split-KV heuristic, batch 1 through it)
beside, in the same process on the same GPU, fa4's bf16 decode over a bf16 cache of the same shape
and PyTorch SDPA flash on the dequantized cache (its time plus the dequantization's: K and V widened
to bf16 and scaled in place, and for a paged cache gathered), and the device's copy bandwidth.

Figures of merit: bytes actually read per second (FP8 K and V, the q rows and the page table) against
the device-to-device copy bandwidth measured in the same run (target >= 80%), and fa4 bf16 time / fa4
FP8 time (target >= 1.7 at >= 16k keys). Both fa4 decodes are also timed as CUDA-graph replays
(``fa4_fp8_graph``, ``fa4_bf16_graph``: the GPU time of a step without its host time, as serving
engines run decode; ``bf16_over_fp8_graph``). A replay of one call still pays the graph's own launch
on the GPU, which a model's step pays once for all its layers: rows whose FP8 cache is at most
:data:`LAYER_BYTES` are also timed as one graph of ``layers`` calls over as many distinct caches (4 to
32, at least :data:`LAYER_BYTES` of FP8 cache in all where 32 reach it: no layer finds its cache in
L2), per call (``fa4_fp8_layer``, ``fa4_bf16_layer``, ``bf16_over_fp8_layer``): what a decode step of a
model costs per attention layer. A peer whose caches would not fit the free GPU memory is left out of
that row (recorded under ``skipped``).

    python benchmarks/bench_decode_fp8.py --out benchmarks/results          # the whole grid
    python benchmarks/bench_decode_fp8.py --quick                           # a subset, < 2 minutes
    python benchmarks/bench_decode_fp8.py --batch 8 64 --kv 4096 131072 --layouts page16  # a part

``--emulate-sm120`` launches fa4's kernels at SM120's CTAs per SM (:func:`_common.emulate_sm120`);
``--codegen NAME=VALUE`` builds the FP8-cache kernels with these
:class:`fa4_sm120.configs.FwdCodegen` fields (:func:`_common.kv8_candidate`);
``--kv8-tile-n 32`` times FP8 key tiles of 32 instead of :data:`fa4_sm120.tiles.KV8_MAX_TILE_N` on the
rows that widen through staging tiles; ``--no-decode-rows`` runs both caches' decode on
the 64-row small-m rows instead of the 16-row decode rows (:data:`fa4_sm120.tiles.DECODE_ROWS`), the
comparison behind the decode rows (docs/sm120-resources.md). ``--dtype float16`` runs q (and the 16-bit
cache, still reported as ``fa4_bf16``) in fp16.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_torch import flash_attn_with_kvcache  # noqa: E402

BATCH = (1, 8, 64)
KV = (4096, 16384, 65536, 131072)
HEADS = ((32, 8), (64, 8))
LAYOUTS = ("contiguous", "page16", "page64")
QUICK = dict(batch=(1, 64), kv=(16384, 65536), heads=((32, 8),), layouts=("contiguous", "page64"))
D = 128
LAYER_BYTES = 512 << 20  # FP8 cache bytes of the layer graphs, at least (H100's L2 is 50 MB)
MIN_LAYERS, MAX_LAYERS = 4, 32
E4M3, BF16 = torch.float8_e4m3fn, torch.bfloat16


def copy_bandwidth() -> float:
    a = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = C.bench_ms(lambda: b.copy_(a))
    return 2 * a.numel() / ms / 1e6  # GB/s (read + write)


def measure(batch, kv_len, heads, layout, bw, dtype=BF16):
    hq, hkv = heads
    q = torch.randn(batch, 1, hq, D, device="cuda", dtype=dtype)
    seqlens = torch.full((batch,), kv_len, dtype=torch.int32, device="cuda")
    kd, vd = torch.tensor(0.05, device="cuda"), torch.tensor(0.03, device="cuda")
    paged = layout != "contiguous"
    ps = int(layout.split("page")[1]) if paged else 0
    rows_total = batch * kv_len
    shape = (rows_total // ps, ps, hkv, D) if paged else (batch, kv_len, hkv, D)
    fp8_bytes = 2 * rows_total * hkv * D
    read_bytes = fp8_bytes + q.numel() * 2 + (rows_total // ps * 4 if paged else 0)
    row = dict(
        batch=batch, kv_len=kv_len, heads=f"{hq}/{hkv}", layout=layout, read_bytes=read_bytes, skipped=[]
    )
    # random e4m3 bit patterns of |x| < 16 (no NaN codes), made in 8 bits: a 128k x 64 cache is 17 GB
    k8 = torch.randint(0, 0x58, shape, device="cuda", dtype=torch.uint8).view(E4M3)
    v8 = torch.randint(0, 0x58, shape, device="cuda", dtype=torch.uint8).view(E4M3)
    table = None
    if paged:
        table = torch.randperm(rows_total // ps, device="cuda").to(torch.int32).view(batch, -1)
    peers = {
        "fa4_fp8": lambda: flash_attn_with_kvcache(
            q, k8, v8, cache_seqlens=seqlens, page_table=table, k_descale=kd, v_descale=vd
        )
    }
    free = torch.cuda.mem_get_info()[0]
    bf16_bytes = 2 * fp8_bytes
    kb = vb = None
    if bf16_bytes < 0.8 * free:  # the bf16 cache: fa4's bf16 decode, and the dequantization's target
        kb, vb = (
            torch.zeros(shape, device="cuda", dtype=dtype),
            torch.zeros(shape, device="cuda", dtype=dtype),
        )
        peers["fa4_bf16"] = lambda: flash_attn_with_kvcache(
            q, kb, vb, cache_seqlens=seqlens, page_table=table
        )
    else:
        row["skipped"].append("fa4_bf16")
    if kb is not None and (not paged or bf16_bytes < 0.8 * (free - bf16_bytes)):
        kc = vc = None

        def dequant():  # in place into the bf16 buffers, then (paged) gathered into sequence order
            nonlocal kc, vc
            kb.copy_(k8).mul_(kd)
            vb.copy_(v8).mul_(vd)
            if paged:
                idx = table.view(-1).long()
                kc = kb[idx].view(batch, kv_len, hkv, D)
                vc = vb[idx].view(batch, kv_len, hkv, D)
            else:
                kc, vc = kb, vb

        dequant()
        sdpa = C.sdpa_fn("flash", q, kc, vc, False)
        peers["dequant"] = dequant
        peers["sdpa_flash"] = sdpa
    else:
        row["skipped"].append("sdpa_flash")
    layers = min(MAX_LAYERS, max(MIN_LAYERS, -(-LAYER_BYTES // fp8_bytes))) if fp8_bytes <= LAYER_BYTES else 0
    if layers:
        row["layers"] = layers
        more8 = [(k8.clone(), v8.clone()) for _ in range(layers - 1)]
        peers["fa4_fp8_layer"] = _layers(
            q, [(k8, v8), *more8], seqlens, table, dict(k_descale=kd, v_descale=vd)
        )
        if kb is not None:
            more16 = [(torch.zeros_like(kb), torch.zeros_like(vb)) for _ in range(layers - 1)]
            peers["fa4_bf16_layer"] = _layers(q, [(kb, vb), *more16], seqlens, table, {})
    graph_errors = {}
    for name in ("fa4_fp8", "fa4_bf16", "fa4_fp8_layer", "fa4_bf16_layer"):
        if name in peers:  # a layer step is timed as its graph only
            graph = name if name.endswith("_layer") else f"{name}_graph"
            try:
                peers[name]()  # compiled and memoised outside the capture
                peers[graph] = C.graphed(peers[name])
            except Exception as e:  # recorded, not fatal
                graph_errors[graph] = f"{type(e).__name__}: {str(e)[:200]}"
                peers.pop(graph, None)  # no graph; a layer step (graph == name) is not timed at all
    times, errors = C.bench_peers(peers)
    errors.update(graph_errors)
    for name, ms in times.items():
        row[f"{name}_us"] = ms * 1e3 / (layers if name.endswith("_layer") else 1)
    if "fa4_fp8_us" in row:
        gbps = read_bytes / (row["fa4_fp8_us"] * 1e-3) / 1e6
        row["fa4_fp8_gbps"], row["fa4_fp8_frac_copy_bw"] = gbps, gbps / bw
        if "fa4_bf16_us" in row:
            row["bf16_over_fp8"] = row["fa4_bf16_us"] / row["fa4_fp8_us"]
        if "sdpa_flash_us" in row and "dequant_us" in row:
            row["sdpa_plus_dequant_us"] = row["sdpa_flash_us"] + row["dequant_us"]
            row["sdpa_plus_dequant_over_fp8"] = row["sdpa_plus_dequant_us"] / row["fa4_fp8_us"]
    if "fa4_fp8_graph_us" in row:
        gbps = read_bytes / (row["fa4_fp8_graph_us"] * 1e-3) / 1e6
        row["fa4_fp8_graph_gbps"], row["fa4_fp8_graph_frac_copy_bw"] = gbps, gbps / bw
        if "fa4_bf16_graph_us" in row:
            row["bf16_over_fp8_graph"] = row["fa4_bf16_graph_us"] / row["fa4_fp8_graph_us"]
    if "fa4_fp8_layer_us" in row:
        gbps = read_bytes / (row["fa4_fp8_layer_us"] * 1e-3) / 1e6
        row["fa4_fp8_layer_gbps"], row["fa4_fp8_layer_frac_copy_bw"] = gbps, gbps / bw
        if "fa4_bf16_layer_us" in row:
            row["bf16_over_fp8_layer"] = row["fa4_bf16_layer_us"] / row["fa4_fp8_layer_us"]
    for name, err in errors.items():
        row[f"{name}_error"] = err
    return row


def _layers(q, caches, seqlens, table, scales):
    """One decode call per (K, V) cache of ``caches``, in order: a model's attention layers of a step
    (the graph of it is timed; its time over ``len(caches)`` is the per-layer time)."""

    def step():
        for k, v in caches:
            flash_attn_with_kvcache(q, k, v, cache_seqlens=seqlens, page_table=table, **scales)

    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--quick", action="store_true", help=f"the subset {QUICK} (< 2 minutes)")
    ap.add_argument("--emulate-sm120", action="store_true", help="fa4's kernels at SM120's CTAs per SM")
    ap.add_argument("--kv8-tile-n", type=int, default=None, help="FP8 key tiles of at most this (16..64)")
    ap.add_argument(
        "--codegen", nargs="*", default=[], help="FwdCodegen fields of the FP8 kernels, NAME=number"
    )
    ap.add_argument("--no-decode-rows", action="store_true", help="decode on the 64-row small-m rows")
    ap.add_argument(
        "--dtype",
        choices=("bfloat16", "float16"),
        default="bfloat16",
        help="q's dtype (and the 16-bit cache's)",
    )
    ap.add_argument("--batch", type=int, nargs="+", help=f"a part of the grid: these batch sizes of {BATCH}")
    ap.add_argument("--kv", type=int, nargs="+", help=f"... these key counts of {KV}")
    ap.add_argument("--heads", nargs="+", help="... these head counts, e.g. 32/8 64/8")
    ap.add_argument("--layouts", nargs="+", choices=LAYOUTS, help="... these layouts")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_decode_fp8: no CUDA GPU here; nothing measured (run it on the GPU machine)")
        return 0
    C.kv8_candidate(args.codegen)  # before the emulation: it sizes the candidate's launch
    emulated = C.emulate_sm120() if args.emulate_sm120 else None
    if args.kv8_tile_n is not None:
        from fa4_sm120 import tiles

        tiles.KV8_MAX_TILE_N = args.kv8_tile_n  # benchmarking only, as the tuners replace table functions
    if args.no_decode_rows:
        from fa4_sm120 import tiles

        tiles.DECODE_ROWS = 0  # benchmarking only: no call takes a decode row
    grid = QUICK if args.quick else dict(batch=BATCH, kv=KV, heads=HEADS, layouts=LAYOUTS)
    part = {
        "batch": args.batch,
        "kv": args.kv,
        "heads": [tuple(int(x) for x in h.split("/")) for h in args.heads] if args.heads else None,
        "layouts": args.layouts,
    }
    grid = {k: tuple(part[k]) if part[k] else v for k, v in grid.items()}
    bw = copy_bandwidth()
    print(f"copy bandwidth: {bw:.0f} GB/s")
    dtype = getattr(torch, args.dtype)
    measure(1, 4096, HEADS[0], "contiguous", bw, dtype)  # a first row, not kept: compiles, allocator, clocks
    rows = []
    for batch, kv_len, heads, layout in itertools.product(
        grid["batch"], grid["kv"], grid["heads"], grid["layouts"]
    ):
        r = measure(batch, kv_len, heads, layout, bw, dtype)
        rows.append(r)
        print(
            f"b{batch:3d} kv{kv_len:7d} h{r['heads']:5s} {layout:10s} "
            f"fp8 {r.get('fa4_fp8_us', float('nan')):8.1f}us {r.get('fa4_fp8_gbps', float('nan')):6.0f}GB/s "
            f"({100 * r.get('fa4_fp8_frac_copy_bw', float('nan')):3.0f}% copy) "
            f"bf16 {r.get('fa4_bf16_us', float('nan')):8.1f}us x{r.get('bf16_over_fp8', float('nan')):.2f} "
            f"graphs: fp8 {r.get('fa4_fp8_graph_us', float('nan')):8.1f}us "
            f"bf16 {r.get('fa4_bf16_graph_us', float('nan')):8.1f}us x{r.get('bf16_over_fp8_graph', float('nan')):.2f} "
            f"sdpa+dequant {r.get('sdpa_plus_dequant_us', float('nan')):8.1f}us"
            + (
                f" per layer of {r['layers']}: fp8 {r.get('fa4_fp8_layer_us', float('nan')):7.1f}us "
                f"({100 * r.get('fa4_fp8_layer_frac_copy_bw', float('nan')):3.0f}% copy) "
                f"bf16 {r.get('fa4_bf16_layer_us', float('nan')):7.1f}us x{r.get('bf16_over_fp8_layer', float('nan')):.2f}"
                if "layers" in r
                else ""
            )
            + (f" skipped={r['skipped']}" if r["skipped"] else "")
            + "".join(f" {k}={v}" for k, v in r.items() if k.endswith("_error")),
            flush=True,
        )
        torch.cuda.empty_cache()
    long = [r for r in rows if r["kv_len"] >= 16384 and "fa4_fp8_frac_copy_bw" in r]
    fr = [r["fa4_fp8_frac_copy_bw"] for r in long]
    ratio = [r["bf16_over_fp8"] for r in long if "bf16_over_fp8" in r]
    ratio_g = [r["bf16_over_fp8_graph"] for r in long if "bf16_over_fp8_graph" in r]
    fr_l = [r["fa4_fp8_layer_frac_copy_bw"] for r in long if "fa4_fp8_layer_frac_copy_bw" in r]
    ratio_l = [r["bf16_over_fp8_layer"] for r in long if "bf16_over_fp8_layer" in r]
    summary = {
        "copy_bandwidth_gbps": bw,
        "fp8_frac_copy_bw_kv_ge_16k": dict(mean=sum(fr) / len(fr), min=min(fr)) if fr else None,
        "bf16_over_fp8_kv_ge_16k": dict(mean=sum(ratio) / len(ratio), min=min(ratio)) if ratio else None,
        "bf16_over_fp8_graph_kv_ge_16k": (
            dict(mean=sum(ratio_g) / len(ratio_g), min=min(ratio_g)) if ratio_g else None
        ),
        "fp8_layer_frac_copy_bw_kv_ge_16k": dict(mean=sum(fr_l) / len(fr_l), min=min(fr_l)) if fr_l else None,
        "bf16_over_fp8_layer_kv_ge_16k": (
            dict(mean=sum(ratio_l) / len(ratio_l), min=min(ratio_l)) if ratio_l else None
        ),
        "grid": {k: list(v) for k, v in grid.items()},
        "emulated_sm120": emulated,
        "kv8_tile_n": args.kv8_tile_n,
        "codegen": args.codegen,
        "decode_rows": not args.no_decode_rows,
        "dtype": args.dtype,
    }
    print(summary)
    kind = (
        "decode-fp8" + ("-quick" if args.quick else "") + ("-emulated-sm120" if emulated is not None else "")
    )
    kind += f"-n{args.kv8_tile_n}" if args.kv8_tile_n is not None else ""
    kind += "-no-decode-rows" if args.no_decode_rows else ""
    kind += "".join(f"-{c.replace('=', '')}" for c in args.codegen)
    kind += "-fp16" if args.dtype == "float16" else ""
    kind += "-part" if any(part.values()) else ""
    path = C.results_path(kind, args.out)
    C.write_results(path, {"env": C.environment(), "summary": summary, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
