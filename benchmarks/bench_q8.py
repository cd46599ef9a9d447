"""8-bit attention benchmark: fa4's 8-bit forward (``quantized_attn_func``) beside fa4's bf16 forward
(``flash_attn_func``), in one process on one GPU, interleaved rounds (docs/benchmarks.md, docs/quantized.md).

Per shape (bf16 inputs, 16 heads, about 16k tokens per call): fa4 bf16; the 8-bit kernel on inputs
quantized beforehand (``q8_<qk>_<pv>_kernel``, quantization excluded); the whole call
(``q8_<qk>_<pv>_call``, quantization included); the quantizer alone (``quantize_<qk>``: the CuTe DSL
kernels of the call, with ``quantize_<qk>_gbs`` its bandwidth counting each input read once and each
output written once) beside its PyTorch reference (``quantize_<qk>_pytorch``).
Speedups are against fa4 bf16 of the same run. The fp16 accumulation of P·V runs at the fp32 rate on
Hopper: its gain on an RTX 5090 is **modelled** from MMA FLOP counts and published rates
(:data:`RATES_5090`), never measured here.

``--tile D:M:N:THREADS``: measure another 8-bit tile for head dim ``D`` (this process only).
``--dims 128,256``: only these head dims. ``--softcap-sink``: also the calls with a softcap (30) and
learnable sinks, bf16 (``fa4_bf16_softcap_sink``) and 8-bit (``q8_<qk>_<pv>_softcap_sink_call``).
``--emulate-sm120``: fa4's bf16 and 8-bit kernels launch at SM120's CTAs per SM
(:func:`_common.emulate_sm120`, and the same for the 8-bit tile table), written to
``...-q8-emulated-sm120.json``. ``--quick``: seqlen 4096 only, fewer variants (under two minutes).

    python benchmarks/bench_q8.py [--quick] [--emulate-sm120] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_torch import flash_attn_func, quant, quantized_attn_func  # noqa: E402
from fa4_torch.launch_q8 import launch_quantized, quantize_for  # noqa: E402
from fa4_torch.validate import quantized_args  # noqa: E402

TOKENS = 16384
NHEADS = 16
# RTX 5090 dense tensor rates (TFLOP/s or TOPS) of mma.sync, for the modelled fp16-accumulation gain:
# bf16 (fp32 accumulation) 210, e4m3 419 with fp32 accumulation and 838 with fp16; INT8 Q·Kᵀ is
# assumed to run at the e4m3 fp32-accumulation rate (conservative)
RATES_5090 = {"bf16": 210.0, "qk_int8": 419.0, "qk_fp8": 419.0, "pv_fp32": 419.0, "pv_fp16": 838.0}


def shapes(quick: bool, dims=None):
    seqlens = (4096,) if quick else (4096, 8192, 16384)
    grid = (
        [(128, False), (128, True), (64, False), (256, False)]
        if quick
        else [(128, False), (128, True), (64, False), (64, True), (256, False), (256, True)]
    )
    return [
        dict(seqlen=s, head_dim=d, causal=c)
        for (d, c), s in itertools.product(grid, seqlens)
        if dims is None or d in dims
    ]


def variants(quick: bool):
    if quick:
        return [("int8", "fp32"), ("fp8", "fp32")]
    return [("int8", "fp32"), ("fp8", "fp32"), ("int8", "fp16"), ("fp8", "fp16")]


def modelled_5090(qk: str, pv: str) -> float:
    """Modelled 5090 speedup of the 8-bit MMAs over bf16 (half the FLOPs are Q·Kᵀ, half P·V)."""
    t_bf16 = 1.0 / RATES_5090["bf16"]
    t_q8 = 0.5 / RATES_5090[f"qk_{qk}"] + 0.5 / RATES_5090[f"pv_{pv}"]
    return t_bf16 / t_q8


def measure(shape: dict, quick: bool, softcap_sink: bool = False) -> dict:
    s, d, causal = shape["seqlen"], shape["head_dim"], shape["causal"]
    b = max(TOKENS // s, 1)
    q, k, v = (torch.randn(b, s, NHEADS, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    flops = C.attn_flops(b, NHEADS, s, s, d, causal=causal)
    fns = {"fa4_bf16": lambda: flash_attn_func(q, k, v, causal=causal)}
    for qk, pv in variants(quick):
        a = quantized_args(q, k, v, causal, None, (None, None), None, 0.0, qk, pv, False)
        cfg, qkv = quantize_for(a)
        fns[f"q8_{qk}_{pv}_kernel"] = lambda cfg=cfg, qkv=qkv, a=a: launch_quantized(cfg, qkv, a)
        fns[f"q8_{qk}_{pv}_call"] = lambda qk=qk, pv=pv: quantized_attn_func(
            q, k, v, causal=causal, qk=qk, pv_accum=pv
        )
        if pv == "fp32":
            fns[f"quantize_{qk}"] = lambda a=a: quantize_for(a)
            fns[f"quantize_{qk}_pytorch"] = lambda qk=qk, cfg=cfg: quant.quantize(
                q, k, v, qk=qk, block_q=cfg.tile_m, block_k=cfg.tile_n
            )
    if softcap_sink:
        sink = torch.zeros(NHEADS, device="cuda")
        fns["fa4_bf16_softcap_sink"] = lambda: flash_attn_func(
            q, k, v, causal=causal, softcap=30.0, learnable_sink=sink
        )
        for qk, pv in variants(quick):
            fns[f"q8_{qk}_{pv}_softcap_sink_call"] = lambda qk=qk, pv=pv: quantized_attn_func(
                q, k, v, causal=causal, softcap=30.0, learnable_sink=sink, qk=qk, pv_accum=pv
            )
    row = dict(shape, batch=b, nheads=NHEADS, flops=flops)
    times, errors = C.bench_peers(fns)
    for name, ms in times.items():
        row[f"{name}_ms"] = ms
        if not name.startswith("quantize"):
            row[f"{name}_tflops"] = flops / ms / 1e9
    moved = 3 * q.numel() * (q.element_size() + 1)  # 16-bit inputs read, 8-bit outputs written
    for qk, _ in variants(quick):
        if f"quantize_{qk}" in times:
            row[f"quantize_{qk}_gbs"] = moved / times[f"quantize_{qk}"] / 1e6
    for name, err in errors.items():
        row[f"{name}_error"] = err
    base = times.get("fa4_bf16")
    if base:
        for name, ms in times.items():
            if name.startswith("q8_"):
                row[f"{name}_speedup_vs_bf16"] = base / ms
    for qk, pv in variants(quick):
        row[f"q8_{qk}_{pv}_modelled_5090_mma_speedup"] = modelled_5090(qk, pv)
    print(
        f"d{d} s{s} {'causal' if causal else 'full'}: "
        + ", ".join(f"{n} {row[f'{n}_tflops']:.0f}" for n in times if f"{n}_tflops" in row)
        + " TFLOP/s; "
        + ", ".join(f"{n} x{row[f'{n}_speedup_vs_bf16']:.2f}" for n in times if f"{n}_speedup_vs_bf16" in row)
        + "; "
        + ", ".join(f"{n} {ms:.3f} ms" for n, ms in times.items() if n.startswith("quantize"))
    )
    return row


def emulate_q8_sm120(log: dict) -> None:
    """The 8-bit tile table's configs launch at SM120's CTAs per SM (as :func:`_common.emulate_sm120`
    does for the bf16 tables)."""
    from fa4_sm120 import tiles
    from fa4_sm120.fwd_q8 import FlashAttentionForwardQ8Sm120
    from fa4_sm120.occupancy import emulated_launch_smem

    original, launch = tiles.q8_fwd_config, {}

    def emulated(*a, **kw):
        cfg = original(*a, **kw)
        if cfg not in launch:
            regs = C.sm120_regs(FlashAttentionForwardQ8Sm120.compile, cfg)
            launch[cfg] = emulated_launch_smem(cfg.smem_bytes, regs, cfg.num_threads)
            log[
                f"fa4 q8 {cfg.head_dim} {cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads} {cfg.qk}/{cfg.pv_accum}"
            ] = C._occupancy(cfg.smem_bytes, regs, cfg.num_threads, launch[cfg])
        return dataclasses.replace(cfg, launch_smem=launch[cfg])

    tiles.q8_fwd_config = emulated


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seqlen 4096, INT8/FP8 with fp32 accumulation")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--emulate-sm120", action="store_true", help="fa4 kernels at SM120's CTAs per SM")
    ap.add_argument(
        "--tile",
        action="append",
        default=[],
        metavar="D:M:N:THREADS",
        help="try another 8-bit tile for head dim D (e.g. 128:128:64:256); repeatable",
    )
    ap.add_argument("--dims", default=None, help="comma-separated head dims (default: all of the grid)")
    ap.add_argument("--softcap-sink", action="store_true", help="also time calls with a softcap and sinks")
    args = ap.parse_args(argv)
    dims = None if args.dims is None else {int(x) for x in args.dims.split(",")}
    from fa4_sm120 import tiles

    for spec in args.tile:  # this process only: the table row the run measures instead
        d, m, n, t = (int(x) for x in spec.split(":"))
        tiles.Q8_FWD_TILES[d] = tiles.Q8Tile(m, n, t)
    if not torch.cuda.is_available():
        print("bench_q8: no CUDA GPU here; nothing measured (run it on the GPU machine)")
        return 0
    payload = {"env": C.environment(), "rates_5090_modelled": RATES_5090, "rows": []}
    payload["q8_tiles"] = {str(d): dataclasses.asdict(v) for d, v in tiles.Q8_FWD_TILES.items()}
    if args.emulate_sm120:
        payload["emulated_sm120"] = C.emulate_sm120()
        emulate_q8_sm120(payload["emulated_sm120"])
    a = torch.randn(4096, 4096, device="cuda")
    C.bench_ms(lambda: a @ a)
    path = C.results_path("q8-emulated-sm120" if args.emulate_sm120 else "q8", args.out)
    for s in shapes(args.quick, dims):
        payload["rows"].append(measure(s, args.quick, args.softcap_sink))
        C.write_results(path, payload, quiet=True)
    C.write_results(path, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
