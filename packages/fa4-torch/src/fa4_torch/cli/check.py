"""``fa4 check [--quick] [--no-ptxas]``: is fa4 right on this machine?

* With a GPU: a correctness sweep of ``flash_attn_func`` (and varlen, the KV cache, the backward)
  against :func:`fa4_core.testing.attention_ref` with the correctness rule (docs/testing.md); every head-dim pair of the
  tables (:mod:`fa4_sm120.variants`), ragged lengths, GQA ratios 1/4/7, the serving paths. Exit 1 on
  any failure.
* Without one: compiles the forward tile-table rows for ``sm_120a`` (every row x dtype x causal, or
  ``--quick`` one per head-dim pair) and checks their PTX with :func:`fa4_sm120.variants.ptx_problems`
  (the compile tests' rules: ``mma.sync.aligned.m16n8k16`` present, no ``stmatrix``, no ``wgmma``),
  registers and spills from ``ptxas -v`` when it is on PATH; then says that the numerics were not run.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

from fa4_torch.cli.common import (
    DEFAULT_TARGET,
    Gpu,
    dispatch,
    find_gpu,
    fmt_bytes,
    no_gpu_reason,
    table,
    torch_dtype,
)

__all__ = ["add_parser", "run", "Case", "gpu_cases", "fwd_variants"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "check",
        help="GPU: correctness sweep against the fp32 reference; no GPU: compile for sm_120a and check PTX",
    )
    s.add_argument(
        "--quick", action="store_true", help="a few cases (GPU) / one variant per head dim (no GPU)"
    )
    s.add_argument("--no-ptxas", action="store_true", help="no GPU: skip `ptxas -v` even when it is on PATH")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    gpu = find_gpu(args)
    if gpu is None:
        return _check_compile(args)
    return _check_gpu(args, gpu)


# ---------------------------------------------------------------------------------- no GPU: compile
def fwd_variants(quick: bool) -> list:
    """Forward configs of the sm120 table: every row x dtype x causal, or one per head-dim pair
    (``quick``: its first row for a 16-bit cache, bf16 and its last causal value)."""
    from fa4_sm120.variants import fwd_row_variants

    out, first = [], {}
    for row, dtype, causal, cfg in fwd_row_variants("sm120"):
        if quick:
            if row.decode:  # the FP8-cache decode rows: not a head dim's representative
                continue
            if first.setdefault((row.head_dim, row.head_dim_v), row) is not row:
                continue
            if (dtype, causal) != ("bfloat16" if "bfloat16" in row.dtypes else row.dtypes[0], row.causal[-1]):
                continue
        out.append(cfg)
    return out


def _cfg_name(cfg) -> str:
    dt = {"bfloat16": "bf16", "float16": "fp16"}[cfg.dtype]
    return (
        f"{dt} d{cfg.head_dim}/{cfg.head_dim_v} {cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}"
        + (" causal" if cfg.is_causal else "")
        + (f" pack{cfg.qhead_per_kvhead}" if cfg.pack_gqa else "")
        + (" FP8-cache decode" if cfg.warp_split_n else " FP8 cache" if cfg.kv_dtype else "")
    )


def _ptxas(path: str, target: str):
    """``(registers, spill store bytes, error)`` from ``ptxas -v``, or None when ptxas is not on PATH."""
    from fa4_sm120.compile import ptxas_resources

    return ptxas_resources(path, target)


def _check_compile(args: argparse.Namespace) -> int:
    import tempfile

    from fa4_core.arch import smem_capacity
    from fa4_sm120.compile import compile_fwd
    from fa4_sm120.variants import ptx_problems

    target = DEFAULT_TARGET
    cap = smem_capacity(target)
    variants = fwd_variants(args.quick)
    n = len(variants)
    if n == 0:
        print(f"no CUDA GPU ({no_gpu_reason(args)}) and no forward variant to compile: nothing was checked")
        return 2
    print(
        f"no CUDA GPU ({no_gpu_reason(args)}): compiling {n} forward variant(s) of the sm120 tile table "
        f"for {target} on the CPU{' (--quick: one per head dim)' if args.quick else ''}"
    )
    rows, failed = [], 0
    for i, cfg in enumerate(variants, 1):
        name = _cfg_name(cfg)
        t0 = time.perf_counter()
        problems, regs, spill = [], "-", "-"
        try:
            with tempfile.TemporaryDirectory(prefix="fa4-check-") as tmp:
                compile_fwd(cfg, tvm_ffi=False, gpu_arch=target, dump_dir=tmp)
                secs = time.perf_counter() - t0
                ptxs = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".ptx")]
                if len(ptxs) != 1:
                    problems.append(f"expected one .ptx in the dump, found {len(ptxs)}")
                else:
                    with open(ptxs[0]) as f:
                        problems += ptx_problems(f.read(), target)
                    res = _ptxas(ptxs[0], target) if not args.no_ptxas else None
                    if res is not None:
                        r, s, err = res
                        if err:
                            problems.append(f"ptxas: {err}")
                        else:
                            regs, spill = r, fmt_bytes(s)
        except Exception as e:  # report every variant, then fail
            secs = time.perf_counter() - t0
            problems.append(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        if cfg.smem_bytes > cap:
            problems.append(f"smem {cfg.smem_bytes} > {cap}")
        status = "ok" if not problems else "FAILED: " + "; ".join(problems)
        failed += bool(problems)
        print(
            f"[{i}/{n}] compile {name} ... {status} ({secs:.1f} s, smem {fmt_bytes(cfg.smem_bytes)})",
            flush=True,
        )
        rows.append(
            [
                name,
                f"{secs:.1f} s",
                fmt_bytes(cfg.smem_bytes),
                regs,
                spill,
                "ok" if not problems else "FAILED",
            ]
        )
    print()
    print(table(["variant", "compile", "smem", "registers", "spill stores", "status"], rows))
    print()
    print(
        f"compiled {n - failed}/{n} for {target}; PTX checked: mma.sync.aligned.m16n8k16 present, no stmatrix, no wgmma"
    )
    if args.no_ptxas:
        print("registers/spills: not measured (--no-ptxas)")
    elif rows and rows[0][3] == "-" and not failed:
        print("registers/spills: not measured (ptxas is not on PATH)")
    print(
        "NOT run here: numerics. Nothing was launched, so the outputs were not compared with the fp32 "
        "reference; that needs a CUDA GPU (fa4 check on an SM80+ GPU: RTX 50, or H100/H200 in compat mode).\n"
        "Also not compiled by this command: the split-KV, varlen, paged, FP8-cache, 8-bit and backward "
        "variants (nox -s compile compiles all of them)."
    )
    return 1 if failed else 0


# ---------------------------------------------------------------------------------- GPU: numerics
@dataclass(frozen=True)
class Case:
    """One correctness case: ``kind`` is fwd, varlen, kvcache or bwd."""

    kind: str
    dtype: str
    batch: int
    seqlen_q: int
    seqlen_k: int
    nheads: int
    nheads_kv: int
    head_dim: int
    head_dim_v: int = 0
    causal: bool = False

    @property
    def dv(self) -> int:
        return self.head_dim_v or self.head_dim

    def __str__(self) -> str:
        dv = f"/{self.dv}" if self.dv != self.head_dim else ""
        return (
            f"{self.kind:<7} {self.dtype} b{self.batch} q{self.seqlen_q} k{self.seqlen_k} "
            f"h{self.nheads}/{self.nheads_kv} d{self.head_dim}{dv}{' causal' if self.causal else ''}"
        )


def gpu_cases(quick: bool) -> list[Case]:
    """Quick: one case per path. Full: every forward head-dim pair both dtypes and causal on ragged
    lengths (tiles do not divide them; seqlen_q > seqlen_k leaves causal rows empty), GQA ratios 1/4/7,
    the serving paths, and every backward head-dim pair."""
    if quick:
        return [
            Case("fwd", "bf16", 2, 512, 512, 8, 8, 128, causal=True),
            Case("fwd", "fp16", 2, 300, 257, 8, 2, 64),
            Case("fwd", "bf16", 1, 200, 333, 4, 1, 256, causal=True),
            Case("varlen", "bf16", 3, 250, 300, 8, 2, 128, causal=True),
            Case("kvcache", "bf16", 3, 2, 200, 8, 2, 128, causal=True),
            Case("bwd", "bf16", 2, 257, 300, 4, 2, 64, causal=True),
            Case("bwd", "fp16", 1, 128, 128, 4, 4, 128),
        ]
    from fa4_sm120.variants import bwd_head_dim_pairs, fwd_head_dim_pairs

    cases = []
    for d, dv in fwd_head_dim_pairs("sm120"):
        for dt in ("bf16", "fp16"):
            for causal in (False, True):
                cases.append(Case("fwd", dt, 2, 301, 257, 8, 8, d, dv, causal))
    for hq, hkv in ((28, 4), (16, 4), (8, 1)):
        for causal in (False, True):
            cases.append(Case("fwd", "bf16", 2, 257, 1000, hq, hkv, 128, causal=causal))
    for causal in (False, True):
        cases.append(Case("fwd", "bf16", 1, 4096, 4096, 16, 16, 128, causal=causal))
        cases.append(Case("varlen", "bf16", 3, 250, 300, 8, 2, 128, causal=causal))
        cases.append(Case("varlen", "fp16", 3, 100, 700, 6, 2, 64, causal=causal))
        cases.append(Case("kvcache", "bf16", 3, 1, 400, 8, 2, 128, causal=causal))
        cases.append(Case("kvcache", "fp16", 2, 5, 1000, 32, 8, 64, causal=causal))
    for d, dv in bwd_head_dim_pairs():
        for causal in (False, True):
            cases.append(Case("bwd", "bf16", 2, 257, 300, 8, 2, d, dv, causal))
    cases.append(Case("bwd", "fp16", 2, 300, 129, 7, 1, 128, causal=True))
    return cases


def _run_case(c: Case):
    """-> list of ``(name, x, x_ref, x_pt, grad)`` to compare with the correctness rule (docs/testing.md)."""
    import torch

    from fa4_core.testing import attention_ref
    from fa4_torch import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache

    torch.manual_seed(0)
    dt = torch_dtype(c.dtype)
    rnd = lambda *s: torch.randn(*s, device="cuda", dtype=dt)
    if c.kind == "fwd":
        q = rnd(c.batch, c.seqlen_q, c.nheads, c.head_dim)
        k = rnd(c.batch, c.seqlen_k, c.nheads_kv, c.head_dim)
        v = rnd(c.batch, c.seqlen_k, c.nheads_kv, c.dv)
        out, lse = flash_attn_func(q, k, v, causal=c.causal, return_lse=True)
        ref = attention_ref(q, k, v, causal=c.causal)
        pt = attention_ref(q, k, v, causal=c.causal, upcast=False)
        return [("out", out, ref[0], pt[0], False), ("lse", lse, ref[1], pt[1], False)]
    if c.kind == "varlen":  # `batch` sequences of uneven lengths up to seqlen_q / seqlen_k
        lq = [max(1, c.seqlen_q * (i + 1) // c.batch - 7 * i) for i in range(c.batch)]
        lk = [max(1, c.seqlen_k * (c.batch - i) // c.batch + 3 * i) for i in range(c.batch)]
        cu = lambda ls: torch.tensor(
            [0, *__import__("itertools").accumulate(ls)], dtype=torch.int32, device="cuda"
        )
        q, k, v = (
            rnd(sum(lq), c.nheads, c.head_dim),
            rnd(sum(lk), c.nheads_kv, c.head_dim),
            rnd(sum(lk), c.nheads_kv, c.dv),
        )
        kw = dict(cu_seqlens_q=cu(lq), cu_seqlens_k=cu(lk), causal=c.causal)
        out, lse = flash_attn_varlen_func(q, k, v, max_seqlen_q=max(lq), return_lse=True, **kw)
        ref = attention_ref(q, k, v, **kw)
        pt = attention_ref(q, k, v, upcast=False, **kw)
        return [("out", out, ref[0], pt[0], False), ("lse", lse, ref[1], pt[1], False)]
    if c.kind == "kvcache":  # append seqlen_q new rows to caches of used length < seqlen_k, then attend
        cap = c.seqlen_k + c.seqlen_q
        k_cache, v_cache = rnd(c.batch, cap, c.nheads_kv, c.head_dim), rnd(c.batch, cap, c.nheads_kv, c.dv)
        used = [c.seqlen_k * (i + 1) // c.batch - i for i in range(c.batch)]
        seqlens = torch.tensor(used, dtype=torch.int32, device="cuda")
        k_new, v_new = (
            rnd(c.batch, c.seqlen_q, c.nheads_kv, c.head_dim),
            rnd(c.batch, c.seqlen_q, c.nheads_kv, c.dv),
        )
        q = rnd(c.batch, c.seqlen_q, c.nheads, c.head_dim)
        k_exp, v_exp = k_cache.clone(), v_cache.clone()
        for i, n in enumerate(used):
            k_exp[i, n : n + c.seqlen_q], v_exp[i, n : n + c.seqlen_q] = k_new[i], v_new[i]
        out, lse = flash_attn_with_kvcache(
            q,
            k_cache,
            v_cache,
            k=k_new,
            v=v_new,
            cache_seqlens=seqlens,
            causal=c.causal,
            return_softmax_lse=True,
        )
        if not (torch.equal(k_cache, k_exp) and torch.equal(v_cache, v_exp)):
            raise AssertionError("the appended K/V cache differs from the expected cache")
        kw = dict(seqused_k=seqlens + c.seqlen_q, causal=c.causal)
        ref = attention_ref(q, k_exp, v_exp, **kw)
        pt = attention_ref(q, k_exp, v_exp, upcast=False, **kw)
        return [("out", out, ref[0], pt[0], False), ("lse", lse, ref[1], pt[1], False)]
    # bwd: gradients through autograd, the reference's in fp32 (X_ref) and in the input dtype (X_pt)
    q = rnd(c.batch, c.seqlen_q, c.nheads, c.head_dim)
    k = rnd(c.batch, c.seqlen_k, c.nheads_kv, c.head_dim)
    v = rnd(c.batch, c.seqlen_k, c.nheads_kv, c.dv)
    dout = rnd(c.batch, c.seqlen_q, c.nheads, c.dv)

    def grads(fn, dtype):
        qq, kk, vv = (x.detach().to(dtype).requires_grad_() for x in (q, k, v))
        out, _ = fn(qq, kk, vv)
        dq, dk, dv = torch.autograd.grad((out.float() * dout.float()).sum(), (qq, kk, vv))
        return out, dq, dk, dv

    ours = grads(lambda a, b, w: flash_attn_func(a, b, w, causal=c.causal), dt)
    ref = grads(lambda a, b, w: attention_ref(a, b, w, causal=c.causal), torch.float32)
    pt = grads(lambda a, b, w: attention_ref(a, b, w, causal=c.causal, upcast=False), dt)
    return [(n, x, r, p, n != "out") for n, x, r, p in zip(("out", "dq", "dk", "dv"), ours, ref, pt)]


def _measure(name, x, x_ref, x_pt, grad):
    """``(max error, bound, failure message or None)`` of one output."""
    import torch

    from fa4_core.testing import check_close, tolerance

    bound = tolerance(x_ref, x_pt, dtype=x.dtype, grad=grad)
    a, r = x.detach().double(), x_ref.detach().double().to(x.device)
    fin = torch.isfinite(r)
    err = (a - r).abs()[fin] if a.shape == r.shape else torch.full((1,), float("inf"))
    err = torch.nan_to_num(err, nan=float("inf"))
    max_err = float(err.max()) if err.numel() else 0.0
    try:
        check_close(name, x, x_ref, x_pt, grad=grad)
    except AssertionError as e:
        return max_err, bound, str(e).splitlines()[0]
    return max_err, bound, None


def _check_gpu(args, gpu: Gpu) -> int:
    import torch

    cases = gpu_cases(args.quick)
    n = len(cases)
    d = dispatch(gpu)
    print(
        f"GPU {gpu.index}: {gpu.name} ({gpu.capability[0]}.{gpu.capability[1]}), family {d.family} ({d.why})"
    )
    print(
        f"correctness sweep: {n} case(s) against the fp32 reference, correctness rule (rtol 2, atol from rounding)"
    )
    rows, failures = [], 0
    for i, c in enumerate(cases, 1):
        t0 = time.perf_counter()
        worst, msg = None, None
        try:
            for name, x, x_ref, x_pt, grad in _run_case(c):
                err, bound, bad = _measure(name, x, x_ref, x_pt, grad)
                ratio = err / bound if bound > 0 else (0.0 if err == 0 else float("inf"))
                if worst is None or ratio > worst[0] or (bad and not msg):
                    worst = (ratio, name, err, bound)
                msg = msg or bad
            torch.cuda.synchronize()
        except Exception as e:  # a typed error, a compile failure, a wrong cache: all count as failures
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        secs = time.perf_counter() - t0
        failures += msg is not None
        if worst is not None:
            detail = f"max err {worst[2]:.3g} in {worst[1]}, bound {worst[3]:.3g}"
        else:
            detail = "not compared"
        status = "ok" if msg is None else f"FAILED: {msg}"
        print(f"[{i}/{n}] {c} ... {status} ({detail}; {secs:.1f} s)", flush=True)
        rows.append(
            [
                str(c),
                worst[1] if worst else "-",
                f"{worst[2]:.3g}" if worst else "-",
                f"{worst[3]:.3g}" if worst else "-",
                "ok" if msg is None else "FAILED",
            ]
        )
    print()
    print(table(["case", "worst output", "max err", "bound", "status"], rows))
    print()
    print(f"{n - failures}/{n} passed" + (f", {failures} FAILED" if failures else ""))
    print(
        "Not in this sweep: FP8 KV caches, 8-bit attention and context parallelism "
        "(their GPU tests: bash tools/gpu_jobs.sh tests)."
    )
    return 1 if failures else 0
