"""The 8-bit forward's opt-in code-generation variants (``Q8FwdConfig`` fields) against the tile
table's default, on one GPU: accuracy (kernel vs the fp32 emulation of the same quantized inputs and
vs exact fp32 attention) and speed (CUDA events, median of ``--reps`` after ``--warmup``).

Per head dim (128, 64), causal or not, Q·Kᵀ format (INT8, FP8; P·V accumulates in fp32): every
variant is compiled once, its inputs quantized once with its own blocks (``block_q = tile_m``,
``block_k = tile_n``), then

* accuracy on a small problem (``--acc-shape``, default b=1 h=4 s=1024): relative L1 of the kernel
  against :func:`fa4_torch.quant.attention_fp32` beside the emulation's (``rel_l1_kernel /
  rel_l1_emul`` should be <= 1.2), and the kernel against the emulation itself;
* time on ``b=4, h=16, s=4096`` (``--batch/--heads/--seqlen``): TFLOP/s of ``4·b·h·s·s·d`` (halved
  for causal), and the speedup over the default config of the same row.

Variants (``VARIANTS``; applied with ``dataclasses.replace`` to ``fa4_sm120.tiles.q8_fwd_config``):
at d128 ``q_in_regs`` (Q's A fragments loaded once per CTA), ``num_stages=2`` (K/Vᵀ double-buffered,
one barrier per key block), both, 32 query rows per warp on ``tile_n`` 32 (``128x32x128``), 32-key
blocks of the 64-row tile double-buffered, also with a launch bound of three CTAs per SM
(``codegen.min_ctas_per_sm``), K's fragments in one or four groups of key columns (``q8_b_split``;
the row has two), 8 warps of 16 rows (``128x64x256``); at d64 two groups and the former row
(``128x64x256``, one stage, Q reloaded per block); at d256 the row alone.
``--emulate-sm120``: every config launches at SM120's CTAs per SM (``launch_smem`` from its
``sm_120a`` registers, as ``benchmarks/bench_q8.py --emulate-sm120``).

    python tools/q8_variants.py [--emulate-sm120] [--dims 128 64] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from fa4_sm120.configs import FwdCodegen

# (name, head dims it applies to, Q8FwdConfig fields replaced on the tile table's config)
VARIANTS = (
    ("default", (64, 128, 256), {}),
    ("q_in_regs", (128,), dict(q_in_regs=True)),
    ("stages2", (128,), dict(num_stages=2)),
    ("q_in_regs+stages2", (128,), dict(q_in_regs=True, num_stages=2)),
    # (spills 52-60 B on sm_120a with fp32 P·V)
    (
        "m128n32x128+stages2",
        (128,),
        dict(tile_m=128, tile_n=32, num_threads=128, num_stages=2, codegen=FwdCodegen(pv_split=1)),
    ),
    # 32-key blocks double-buffered (32 KB of shared memory), without and with a launch bound of three
    # CTAs per SM (168 registers): SM120 then holds three CTAs, not two
    ("m64n32+stages2", (128,), dict(tile_n=32, num_stages=2)),
    ("m64n32+stages2+3ctas", (128,), dict(tile_n=32, num_stages=2, codegen=FwdCodegen(min_ctas_per_sm=3))),
    (
        "m64n32+stages2+q_in_regs+3ctas",
        (128,),
        dict(tile_n=32, num_stages=2, q_in_regs=True, codegen=FwdCodegen(min_ctas_per_sm=3)),
    ),
    # the row bound to three CTAs per SM (168 registers: its sm_120a build then spills 150-220 B)
    ("3ctas", (128,), dict(codegen=FwdCodegen(min_ctas_per_sm=3))),
    # one stage of 32-key blocks (24 KB) bound to four CTAs per SM (128 registers)
    ("m64n32+4ctas", (128,), dict(tile_n=32, codegen=FwdCodegen(min_ctas_per_sm=4))),
    # K's B fragments in two / four / one groups of key columns per k-block
    ("b_split2", (64,), dict(q8_b_split=2)),
    ("b_split4", (128,), dict(q8_b_split=4)),
    ("b_split1", (128,), dict(q8_b_split=1)),
    # 8 warps of 16 rows, one stage (at d64: the row before 128x32x128 with Q in registers and two stages)
    ("m128n64x256", (64, 128), dict(tile_m=128, tile_n=64, num_threads=256, q_in_regs=False, num_stages=1)),
)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 64])
    ap.add_argument("--qk", nargs="+", default=["int8", "fp8"], choices=["int8", "fp8"])
    ap.add_argument("--causal", nargs="+", default=["full", "causal"], choices=["full", "causal"])
    ap.add_argument("--only", nargs="+", default=None, help="variant names (default: all)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=4096)
    ap.add_argument("--acc-shape", type=int, nargs=3, default=[1, 4, 1024], metavar=("B", "H", "S"))
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--emulate-sm120", action="store_true", help="launch at SM120's CTAs per SM")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def time_ms(fn, warmup: int, reps: int) -> float:
    import torch

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    times.sort()
    return times[len(times) // 2]


def _kernel_call(cfg, qkv, qa):
    """The compiled kernel alone on preallocated outputs (as ``launch_quantized`` calls it, without
    its allocations and the LSE shift)."""
    import torch

    from fa4_torch.launch_q8 import q8_kernel

    q, dt = qa.q, qa.out_dtype
    b, sq, h, _ = q.shape
    out = torch.empty(b, sq, h, qa.v.shape[-1], dtype=dt, device=q.device)
    lse = torch.empty(b, h, sq, dtype=torch.float32, device=q.device)
    fn = q8_kernel(cfg, q.device)
    args = (qkv.q8.view(dt), qkv.k8.view(dt), qkv.vt8.view(dt), qkv.q_scale, qkv.k_scale, qkv.v_scale)
    return lambda: fn(
        *args, out, lse, None, None, None, None, qa.softmax_scale, -1, -1, 0.0
    )  # no lengths, features


def sm120_launch_smem(cfg) -> tuple[int, int]:
    """``(launch_smem, sm_120a registers)`` that make the host GPU run SM120's CTAs per SM."""
    import tempfile

    from fa4_sm120.compile import ptxas_resources
    from fa4_sm120.fwd_q8 import FlashAttentionForwardQ8Sm120
    from fa4_sm120.occupancy import emulated_launch_smem

    d = tempfile.mkdtemp()
    FlashAttentionForwardQ8Sm120.compile(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=d)
    ptx = next(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".ptx"))
    res = ptxas_resources(ptx)
    regs = res[0] if res is not None and res[0] is not None else 255
    return emulated_launch_smem(cfg.smem_bytes, regs, cfg.num_threads), regs


def main(argv=None) -> int:
    a = parse_args(argv)
    import torch

    from fa4_sm120.fwd_q8 import FlashAttentionForwardQ8Sm120
    from fa4_sm120.tiles import q8_fwd_config
    from fa4_torch import quant
    from fa4_torch.launch_q8 import launch_quantized
    from fa4_torch.validate import quantized_args

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to run (this script measures on a GPU)")
        return 1
    dev = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(dev)}; emulate_sm120={a.emulate_sm120}")
    g = torch.Generator(device=dev).manual_seed(a.seed)
    rows, t_start = [], time.perf_counter()
    for d in a.dims:
        big = [torch.randn(a.batch, a.seqlen, a.heads, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(3)]  # fmt: skip
        ab, ah, as_ = a.acc_shape
        small = [torch.randn(ab, as_, ah, d, device=dev, dtype=torch.bfloat16, generator=g) for _ in range(3)]  # fmt: skip
        for causal in (c == "causal" for c in a.causal):
            ref, _ = quant.attention_fp32(*(t.float() for t in small), causal=causal)
            flops = 4 * a.batch * a.heads * a.seqlen * a.seqlen * d / (2 if causal else 1)
            for qk in a.qk:
                base_ms = None
                for name, dims, change in VARIANTS:
                    if d not in dims or (a.only and name not in a.only):
                        continue
                    cfg = dataclasses.replace(
                        q8_fwd_config("bfloat16", d, causal=causal, qk=qk, pv_accum="fp32"), **change
                    )
                    row = dict(d=d, causal=causal, qk=qk, variant=name, tile=f"{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}")  # fmt: skip
                    try:
                        FlashAttentionForwardQ8Sm120.can_implement(cfg)
                        if a.emulate_sm120:
                            launch, regs = sm120_launch_smem(cfg)
                            cfg = dataclasses.replace(cfg, launch_smem=launch)
                            row["sm120_regs"] = regs
                        # accuracy on the small problem
                        qa = quantized_args(*small, causal, None, (None, None), None, 0.0, qk, "fp32", False)
                        qkv = quant.quantize(*small, qk=qk, block_q=cfg.tile_m, block_k=cfg.tile_n)
                        out, _ = launch_quantized(cfg, qkv, qa)
                        emu, _ = quant.emulate(qkv, causal=causal)
                        torch.cuda.synchronize()
                        e_k = quant.errors(out.float(), ref)["rel_l1"]
                        e_e = quant.errors(emu, ref)["rel_l1"]
                        row.update(
                            rel_l1_kernel=e_k,
                            rel_l1_emul=e_e,
                            kernel_vs_emul=quant.errors(out.float(), emu)["rel_l1"],
                            ok=e_k <= 1.2 * e_e,
                        )
                        del qkv, out, emu
                        # speed on the big problem (quantized once; quantization not timed)
                        qb = quantized_args(*big, causal, None, (None, None), None, 0.0, qk, "fp32", False)
                        qkv = quant.quantize(*big, qk=qk, block_q=cfg.tile_m, block_k=cfg.tile_n)
                        ms = time_ms(_kernel_call(cfg, qkv, qb), a.warmup, a.reps)
                        del qkv
                        row.update(ms=ms, tflops=flops / ms * 1e-9)
                        if name == "default":
                            base_ms = ms
                        if base_ms:
                            row["speedup"] = base_ms / ms
                    except Exception as e:  # noqa: BLE001 (a variant that fails is a row, not the end)
                        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                    rows.append(row)
                    print(_fmt(row), flush=True)
    print(f"\n{len(rows)} rows in {time.perf_counter() - t_start:.0f} s\n")
    print(_HEADER)
    for row in rows:
        print(_fmt(row))
    return 0


_HEADER = (
    f"{'d':>4} {'mask':>6} {'qk':>4} {'variant':<30} {'tile':<11} {'ms':>7} {'TFLOP/s':>8} "
    f"{'vs def':>6} {'L1 kern':>8} {'L1 emul':>8} {'k-vs-emu':>8} ok"
)


def _fmt(r: dict) -> str:
    head = f"{r['d']:>4} {'causal' if r['causal'] else 'full':>6} {r['qk']:>4} {r['variant']:<30} {r['tile']:<11}"
    if "error" in r:
        return f"{head} ERROR {r['error']}"
    return (
        f"{head} {r.get('ms', float('nan')):7.3f} {r.get('tflops', float('nan')):8.1f} "
        f"{r.get('speedup', float('nan')):6.3f} {r['rel_l1_kernel']:8.5f} {r['rel_l1_emul']:8.5f} "
        f"{r['kernel_vs_emul']:8.5f} {'yes' if r['ok'] else 'NO'}"
    )


if __name__ == "__main__":
    sys.exit(main())
