"""The fa4 command line: ``python -m fa4_torch <command>`` (also installed as the ``fa4`` script).

Commands (each says what it could not do on this machine instead of failing):

* ``info [--shape B,SQ,SK,HQ,HKV,D[,DV]] [--causal] [--dtype bf16|fp16]``: versions, the GPU and its
  compute capability, the dispatch family (:mod:`fa4_torch.dispatch`, ``FA4_ARCH`` honoured); for a
  shape, the forward tile-table row and :class:`~fa4_sm120.fwd.FwdConfig` the call would compile, its
  shared memory against the family's cap, and the backward row.
* ``check [--quick]``: with a GPU, a correctness sweep of ``flash_attn_func`` (and varlen, kvcache,
  backward) against :func:`fa4_core.testing.attention_ref` with the DESIGN §4 rule; exit 1 on any
  failure. Without one, compiles the forward tile-table rows for ``sm_120a`` and checks their PTX
  (``mma.sync.aligned.m16n8k16`` present, no ``stmatrix``, no ``wgmma``; ``ptxas -v`` when it is on
  PATH), then says that the numerics were not run.
* ``bench [--out DIR]``: with a GPU, a quick forward benchmark beside PyTorch SDPA (flash backend),
  a JSON record and a PNG plot (matplotlib, when importable).
* ``warmup --shapes HQ,HKV,D[,DV] ...``: compiles the variants a model needs. With a GPU, through the
  API into the persistent compile cache (:mod:`fa4_torch.disk_cache`, ``FA4_CACHE_DIR``), so that the
  model's processes load them instead of compiling; it prints the directory. Without one, compiles
  for ``sm_120a`` to check and time the builds (cache entries are per GPU target, nothing is kept).

Exit codes: 0 success, 1 a check failed or the configuration is unsupported, 2 bad arguments.
Imports are lazy: ``--help`` and argument errors need neither a GPU nor the DSL.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass

__all__ = ["main", "warmup", "Shape", "parse_shape"]

DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
DEFAULT_TARGET = "sm_120a"  # what a machine without a GPU compiles for


# ---------------------------------------------------------------------------------- arguments
@dataclass(frozen=True)
class Shape:
    """``flash_attn_func`` shape: ``q (batch, seqlen_q, nheads, head_dim)``, ``k/v (batch, seqlen_k,
    nheads_kv, head_dim / head_dim_v)``."""

    batch: int
    seqlen_q: int
    seqlen_k: int
    nheads: int
    nheads_kv: int
    head_dim: int
    head_dim_v: int

    @property
    def ratio(self) -> int:
        return self.nheads // self.nheads_kv

    def __str__(self) -> str:
        dv = f",{self.head_dim_v}" if self.head_dim_v != self.head_dim else ""
        return (
            f"{self.batch},{self.seqlen_q},{self.seqlen_k},{self.nheads},{self.nheads_kv},{self.head_dim}{dv}"
        )


def _ints(text: str, what: str, counts: tuple[int, ...]) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {what} (comma-separated integers)") from None
    if len(vals) not in counts:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected {what} ({' or '.join(map(str, counts))} numbers)"
        )
    return vals


def parse_shape(text: str) -> Shape:
    """``"B,SQ,SK,HQ,HKV,D[,DV]"`` -> :class:`Shape`; ``argparse.ArgumentTypeError`` when malformed."""
    what = "B,SQ,SK,HQ,HKV,D[,DV]"
    vals = _ints(text, what, (6, 7))
    if len(vals) == 6:
        vals.append(vals[5])
    if any(v < 0 for v in vals) or any(v == 0 for v in vals[3:]):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be >= 0 and heads / head dims >= 1 ({what})")
    shape = Shape(*vals)
    if shape.nheads % shape.nheads_kv:
        raise argparse.ArgumentTypeError(
            f"{text!r}: HQ={shape.nheads} must be a multiple of HKV={shape.nheads_kv} (MHA, GQA or MQA)"
        )
    return shape


@dataclass(frozen=True)
class HeadSpec:
    """``warmup`` spec: the heads and head dims of one attention layer."""

    nheads: int
    nheads_kv: int
    head_dim: int
    head_dim_v: int

    def __str__(self) -> str:
        dv = f"/{self.head_dim_v}" if self.head_dim_v != self.head_dim else ""
        return f"h{self.nheads}/{self.nheads_kv} d{self.head_dim}{dv}"


def parse_heads(text: str) -> HeadSpec:
    what = "HQ,HKV,D[,DV]"
    vals = _ints(text, what, (3, 4))
    if len(vals) == 3:
        vals.append(vals[2])
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: every number must be >= 1 ({what})")
    if vals[0] % vals[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: HQ={vals[0]} must be a multiple of HKV={vals[1]}")
    return HeadSpec(*vals)


# ---------------------------------------------------------------------------------- environment
@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    capability: tuple[int, int]


def _gpu(args) -> Gpu | None:
    """The current CUDA GPU, or None (none present, or ``--no-gpu``)."""
    if getattr(args, "no_gpu", False):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    idx = torch.cuda.current_device()
    return Gpu(idx, torch.cuda.get_device_name(idx), tuple(torch.cuda.get_device_capability(idx)))


def _no_gpu_reason(args) -> str:
    if getattr(args, "no_gpu", False):
        return "--no-gpu given"
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    return "torch.cuda.is_available() is False"


def _dist_version(dist: str, module: str | None = None) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        pass
    if module:  # source checkout on PYTHONPATH (the GPU machine)
        try:
            about = __import__(f"{module}.__about__", fromlist=["__version__"])
            return f"{about.__version__} (not installed: from {os.path.dirname(about.__file__)})"
        except ImportError:
            pass
    return "not installed"


@dataclass(frozen=True)
class Dispatch:
    family: str
    target: str  # the compile target
    why: str  # how the family was chosen


def _dispatch(gpu: Gpu | None) -> Dispatch:
    """The family a call would use here. Raises UnsupportedArchError for a GPU or FA4_ARCH without one."""
    from fa4_core.arch import FA4_ARCH_ENV, arch_from_env
    from fa4_torch.dispatch import family_for_capability

    override = os.environ.get(FA4_ARCH_ENV, "").strip()
    if gpu is None:
        a = arch_from_env(DEFAULT_TARGET)
        why = f"{FA4_ARCH_ENV}={override}" if override else f"no GPU: the default target {DEFAULT_TARGET}"
        return Dispatch(family_for_capability(a.major, a.minor), a.target, why)
    import torch

    from fa4_torch.dispatch import device_family

    major, minor = gpu.capability
    if override:
        arch_from_env()  # a malformed FA4_ARCH raises naming the variable
    family = device_family(torch.device("cuda", gpu.index))
    why = f"{FA4_ARCH_ENV}={override}" if override else f"capability {major}.{minor}"
    if not override and major == 9:
        why += ": compat mode (SM120 tile table and 99 KB cap on a Hopper GPU)"
    return Dispatch(family, f"sm_{major}{minor} (the resident GPU)", why)


def _table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _fmt_bytes(n: int) -> str:
    return f"{n:,} B"


# ---------------------------------------------------------------------------------- info
def cmd_info(args) -> int:
    import platform

    import torch

    print("versions")
    rows = [
        ["python", platform.python_version()],
        ["torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none: CPU build'})"],
        ["nvidia-cutlass-dsl", _dist_version("nvidia-cutlass-dsl")],
        ["fa4-core", _dist_version("fa4-core", "fa4_core")],
        ["fa4-sm120", _dist_version("fa4-sm120", "fa4_sm120")],
        ["fa4-torch", _dist_version("fa4-torch", "fa4_torch")],
    ]
    for name, ver in rows:
        print(f"  {name:<20}{ver}")
    gpu = _gpu(args)
    print("device")
    if gpu is None:
        print(f"  no CUDA GPU ({_no_gpu_reason(args)})")
    else:
        print(f"  GPU {gpu.index}: {gpu.name}, compute capability {gpu.capability[0]}.{gpu.capability[1]}")
    from fa4_core.errors import UnsupportedArchError

    try:
        d = _dispatch(gpu)
    except UnsupportedArchError as e:
        print(f"dispatch\n  unsupported: {e}")
        return 1
    print("dispatch")
    print(f"  family   {d.family} ({d.why})")
    print(f"  target   {d.target}")
    if gpu is None:
        print("  (without a GPU a call cannot run; this is what the compile-only paths build)")
    if args.shape is None:
        print("  pass --shape B,SQ,SK,HQ,HKV,D[,DV] for the tile row and config of a call")
        return 0
    sms = 0 if gpu is None else torch.cuda.get_device_properties(gpu.index).multi_processor_count
    return _info_shape(args.shape, DTYPES[args.dtype], args.causal, d.family, sms)


def _info_shape(shape: Shape, dtype: str, causal: bool, family: str, num_sms: int = 0) -> int:
    from fa4_core.arch import smem_capacity
    from fa4_core.errors import Fa4Error
    from fa4_sm120.tiles import SMALL_M_ROWS, family_cap_arch, fwd_config, select_fwd_tile, wants_small_m

    print(f"forward of q ({shape.batch}, {shape.seqlen_q}, {shape.nheads}, {shape.head_dim}), k/v ", end="")
    print(
        f"({shape.batch}, {shape.seqlen_k}, {shape.nheads_kv}, {shape.head_dim}/{shape.head_dim_v}), ", end=""
    )
    print(f"{dtype}, causal={causal}")
    ratio = shape.ratio
    pack = ratio > 1  # the API's default (pack_gqa=None)
    heads = shape.nheads_kv if pack else shape.nheads
    small_m = wants_small_m(
        shape.seqlen_q * (ratio if pack else 1), heads, shape.batch, num_sms
    )  # the API's rule
    try:
        row = select_fwd_tile(family, dtype, shape.head_dim, shape.head_dim_v, causal, small_m=small_m)
        cfg = fwd_config(
            family,
            dtype,
            shape.head_dim,
            shape.head_dim_v,
            causal=causal,
            pack_gqa=pack,
            qhead_per_kvhead=ratio,
            small_m=small_m,
        )
    except Fa4Error as e:
        print(f"  unsupported: {e}")
        return 1
    cap_arch = family_cap_arch(family)
    cap = smem_capacity(cap_arch)
    print(
        f"  tile row     {row.family} d{row.head_dim}/{row.head_dim_v}: tile_m={row.tile_m} "
        f"tile_n={row.tile_n} threads={row.num_threads} stages={row.num_stages}"
    )
    if row.small_m:
        print(
            f"               (a small-m row: at most {SMALL_M_ROWS} query rows per tile (decode), or fewer "
            f"128-row tiles than the {num_sms or '(unknown: no GPU)'} SMs)"
        )
    if row.plain_only:
        other = select_fwd_tile(family, dtype, shape.head_dim, shape.head_dim_v, causal, split_kv=True)
        print(
            f"               (calls without a window, split-KV or softcap; with them: tile_m={other.tile_m} "
            f"tile_n={other.tile_n} threads={other.num_threads})"
        )
    fields = ", ".join(f"{k}={v!r}" for k, v in vars(cfg).items())
    print(f"  FwdConfig    {fields}")
    fits = cfg.smem_bytes <= cap
    print(
        f"  smem         {_fmt_bytes(cfg.smem_bytes)} of {_fmt_bytes(cap)} ({cap_arch} cap): "
        + ("fits" if fits else "DOES NOT FIT")
    )
    rows_per_head = shape.seqlen_q * (ratio if pack else 1)
    heads = shape.nheads_kv if pack else shape.nheads
    m_blocks = -(-rows_per_head // cfg.tile_m)
    print(
        f"  grid         {m_blocks} m-blocks x {heads} {'KV ' if pack else ''}heads x {shape.batch} batch "
        f"= {m_blocks * heads * shape.batch} CTAs of {cfg.num_threads} threads"
        + (f" (pack-GQA: {ratio} query heads per KV head share a tile)" if pack else "")
    )
    try:
        from fa4_sm120.bwd_tiles import layout_notes, select_bwd_tile

        b = select_bwd_tile(family, shape.head_dim, shape.head_dim_v, causal=causal)
        warps = (
            f" ({b.num_threads // 32 // b.mma_warps_n}x{b.mma_warps_n} warps)" if b.mma_warps_n > 1 else ""
        )
        extra = "".join(f"; {n}" for n in layout_notes(b))
        print(f"  backward     tile_m={b.tile_m} tile_n={b.tile_n} threads={b.num_threads}{warps}{extra}")
        if b.excludes:
            other = select_bwd_tile(
                family, shape.head_dim, shape.head_dim_v, **dict.fromkeys(b.excludes, True)
            )
            print(
                f"               (calls with {' or '.join(sorted(b.excludes))}: tile_m={other.tile_m} "
                f"tile_n={other.tile_n} threads={other.num_threads}, V from shared memory)"
            )
    except Fa4Error as e:
        print(f"  backward     unsupported: {e}")
    return 0 if fits else 1


# ---------------------------------------------------------------------------------- check (no GPU)
def _fwd_variants(quick: bool):
    """Forward configs of the sm120 table: every row x dtype x causal, or one per head-dim pair
    (``quick``: its first row)."""
    from fa4_sm120.tiles import FWD_TABLE, fwd_config, selecting_args

    out, seen = [], set()
    for row in FWD_TABLE:
        if row.family != "sm120" or (quick and (row.head_dim, row.head_dim_v) in seen):
            continue
        seen.add((row.head_dim, row.head_dim_v))
        combos = [(dt, c) for dt in row.dtypes for c in row.causal]
        if quick:
            combos = [("bfloat16" if "bfloat16" in row.dtypes else row.dtypes[0], row.causal[-1])]
        for dtype, causal in combos:
            sel = selecting_args(row, causal)
            out.append(fwd_config("sm120", dtype, row.head_dim, row.head_dim_v, causal=causal, **sel))
    return out


def _cfg_name(cfg) -> str:
    dt = {"bfloat16": "bf16", "float16": "fp16"}[cfg.dtype]
    return (
        f"{dt} d{cfg.head_dim}/{cfg.head_dim_v} {cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}"
        + (" causal" if cfg.is_causal else "")
        + (f" pack{cfg.qhead_per_kvhead}" if cfg.pack_gqa else "")
    )


def _ptx_problems(ptx: str, target: str) -> list[str]:
    problems = []
    if f".target {target}" not in ptx:
        problems.append(f"PTX is not for {target}")
    if "mma.sync.aligned.m16n8k16" not in ptx:
        problems.append("no mma.sync.aligned.m16n8k16")
    if "stmatrix" in ptx:
        problems.append("stmatrix present (wgmma's register layout)")
    if "wgmma" in ptx:
        problems.append("wgmma present (Hopper only)")
    return problems


def _ptxas(path: str, target: str):
    """``(registers, spill store bytes, error)`` from ``ptxas -v``, or None when ptxas is not on PATH."""
    from fa4_sm120.compile import ptxas_resources

    return ptxas_resources(path, target)


def _check_compile(args) -> int:
    import tempfile

    from fa4_core.arch import smem_capacity
    from fa4_sm120.compile import compile_fwd

    target = DEFAULT_TARGET
    cap = smem_capacity(target)
    variants = _fwd_variants(args.quick)
    n = len(variants)
    print(
        f"no CUDA GPU ({_no_gpu_reason(args)}): compiling {n} forward variant(s) of the sm120 tile table "
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
                        problems += _ptx_problems(f.read(), target)
                    res = _ptxas(ptxs[0], target) if not args.no_ptxas else None
                    if res is not None:
                        r, s, err = res
                        if err:
                            problems.append(f"ptxas: {err}")
                        else:
                            regs, spill = r, _fmt_bytes(s)
        except Exception as e:  # report every variant, then fail
            secs = time.perf_counter() - t0
            problems.append(f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
        if cfg.smem_bytes > cap:
            problems.append(f"smem {cfg.smem_bytes} > {cap}")
        status = "ok" if not problems else "FAILED: " + "; ".join(problems)
        failed += bool(problems)
        print(
            f"[{i}/{n}] compile {name} ... {status} ({secs:.1f} s, smem {_fmt_bytes(cfg.smem_bytes)})",
            flush=True,
        )
        rows.append(
            [
                name,
                f"{secs:.1f} s",
                _fmt_bytes(cfg.smem_bytes),
                regs,
                spill,
                "ok" if not problems else "FAILED",
            ]
        )
    print()
    print(_table(["variant", "compile", "smem", "registers", "spill stores", "status"], rows))
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
        "Also not compiled by this command: the split-KV, varlen, paged and backward variants "
        "(nox -s compile compiles all of them)."
    )
    return 1 if failed else 0


# ---------------------------------------------------------------------------------- check (GPU)
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


def _gpu_cases(quick: bool) -> list[Case]:
    """Quick: one case per path. Full: every forward head dim both dtypes and causal on ragged lengths
    (tiles do not divide them; seqlen_q > seqlen_k leaves causal rows empty), GQA ratios 1/4/7, the
    serving paths, and the backward head dims."""
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
    cases = []
    for d, dv in (
        (32, 32),
        (64, 64),
        (96, 96),
        (128, 128),
        (160, 160),
        (192, 128),
        (192, 192),
        (224, 224),
        (256, 256),
    ):
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
    for d, dv in ((64, 64), (96, 96), (128, 128), (160, 160), (192, 128)):
        for causal in (False, True):
            cases.append(Case("bwd", "bf16", 2, 257, 300, 8, 2, d, dv, causal))
    cases.append(Case("bwd", "fp16", 2, 300, 129, 7, 1, 128, causal=True))
    return cases


def _run_case(c: Case):
    """-> list of ``(name, x, x_ref, x_pt, grad)`` to compare with the DESIGN §4 rule."""
    import torch

    from fa4_core.testing import attention_ref
    from fa4_torch import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache

    torch.manual_seed(0)
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[c.dtype]
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

    cases = _gpu_cases(args.quick)
    n = len(cases)
    d = _dispatch(gpu)
    print(
        f"GPU {gpu.index}: {gpu.name} ({gpu.capability[0]}.{gpu.capability[1]}), family {d.family} ({d.why})"
    )
    print(
        f"correctness sweep: {n} case(s) against the fp32 reference, DESIGN §4 rule (rtol 2, atol from rounding)"
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
    print(_table(["case", "worst output", "max err", "bound", "status"], rows))
    print()
    print(f"{n - failures}/{n} passed" + (f", {failures} FAILED" if failures else ""))
    return 1 if failures else 0


def cmd_check(args) -> int:
    gpu = _gpu(args)
    if gpu is None:
        return _check_compile(args)
    return _check_gpu(args, gpu)


# ---------------------------------------------------------------------------------- bench
BENCH_SHAPES = (  # (batch, seqlen, nheads, nheads_kv, head_dim, causal): a few of the anchor grid
    (8, 512, 16, 16, 64, False),
    (4, 1024, 16, 16, 128, False),
    (2, 2048, 16, 16, 128, True),
    (2, 2048, 32, 8, 128, True),
    (1, 4096, 32, 8, 64, True),
    (1, 8192, 16, 16, 128, True),
)


def _time_ms(fn, reps: int = 20, samples: int = 5) -> float:
    """Median over ``samples`` of the mean time of ``reps`` back-to-back calls (CUDA events), in ms."""
    import statistics

    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(samples):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / reps)
    return statistics.median(times)


def _bench_shape(shape, dt) -> dict:
    """fa4 and SDPA flash on one ``(batch, seqlen, nheads, nheads_kv, head_dim, causal)`` shape."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    from fa4_torch import flash_attn_func

    b, s, hq, hkv, d, causal = shape
    q = torch.randn(b, s, hq, d, device="cuda", dtype=dt)
    k = torch.randn(b, s, hkv, d, device="cuda", dtype=dt)
    v = torch.randn(b, s, hkv, d, device="cuda", dtype=dt)
    qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # SDPA's (batch, heads, seqlen, dim) views
    flops = 4 * b * hq * s * s * d // (2 if causal else 1)
    row = dict(batch=b, seqlen=s, nheads=hq, nheads_kv=hkv, head_dim=d, causal=causal, flops=flops)

    def sdpa_flash():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return sdpa(qt, kt, vt, is_causal=causal, enable_gqa=hq != hkv)

    for name, fn in (("fa4", lambda: flash_attn_func(q, k, v, causal=causal)), ("sdpa_flash", sdpa_flash)):
        try:
            ms = _time_ms(fn)
            row[f"{name}_ms"], row[f"{name}_tflops"] = ms, flops / ms / 1e9
        except Exception as e:  # a peer that cannot run this shape is recorded, not fatal
            row[f"{name}_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return row


def cmd_bench(args) -> int:
    gpu = _gpu(args)
    if gpu is None:
        print(
            f"fa4 bench needs a CUDA GPU ({_no_gpu_reason(args)}): nothing was measured. "
            "Run it on an SM80+ GPU (RTX 50, or H100/H200 in compat mode); benchmarks/ holds the full scripts."
        )
        return 0
    import datetime
    import json

    import torch

    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    print(
        f"GPU {gpu.index}: {gpu.name}; forward, {args.dtype}; fa4 beside PyTorch SDPA (flash backend), same process"
    )
    results = [_bench_shape(shape, dt) for shape in BENCH_SHAPES]
    table = []
    for r in results:
        shape = f"b{r['batch']} s{r['seqlen']} h{r['nheads']}/{r['nheads_kv']} d{r['head_dim']}" + (
            " causal" if r["causal"] else ""
        )
        fa, sd = r.get("fa4_tflops"), r.get("sdpa_flash_tflops")
        table.append(
            [
                shape,
                f"{r['fa4_ms']:.3f}" if fa else "error",
                f"{fa:.1f}" if fa else "-",
                f"{sd:.1f}" if sd else "error",
                f"{fa / sd:.2f}" if fa and sd else "-",
            ]
        )
    print(_table(["shape", "fa4 ms", "fa4 TFLOP/s", "SDPA flash TFLOP/s", "fa4/SDPA"], table))
    for r in results:
        for key in ("fa4_error", "sdpa_flash_error"):
            if key in r:
                print(f"  {key.split('_error')[0]} failed on b{r['batch']} s{r['seqlen']}: {r[key]}")
    os.makedirs(args.out, exist_ok=True)
    stem = f"{datetime.date.today().isoformat()}-{gpu.name.replace(' ', '_')}-cli-fwd"
    record = dict(
        device=gpu.name,
        capability=list(gpu.capability),
        torch=torch.__version__,
        cuda=torch.version.cuda,
        dsl=_dist_version("nvidia-cutlass-dsl"),
        fa4_torch=_dist_version("fa4-torch", "fa4_torch"),
        flops="4*B*H*S*S*D, halved for causal",
        timing="CUDA events, median of 5 x 20 calls, no L2 flush",
        results=results,
    )
    json_path = os.path.join(args.out, stem + ".json")
    with open(json_path, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {json_path}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plot: matplotlib is not installed (pip install matplotlib)")
        return 0
    labels = [row[0] for row in table]
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for off, key, label in ((-0.2, "fa4_tflops", "fa4"), (0.2, "sdpa_flash_tflops", "SDPA flash")):
        ax.bar([i + off for i in x], [r.get(key) or 0 for r in results], width=0.4, label=label)
    ax.set_xticks(list(x), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("TFLOP/s")
    ax.set_title(f"forward {args.dtype}, {gpu.name}")
    ax.legend()
    fig.tight_layout()
    png_path = os.path.join(args.out, stem + ".png")
    fig.savefig(png_path, dpi=120)
    print(f"wrote {png_path}")
    return 0


# ---------------------------------------------------------------------------------- warmup
def warmup(
    specs,
    dtypes=("bf16",),
    causal=(False, True),
    backward: bool = False,
    *,
    gpu: Gpu | None | str = "auto",
    target: str | None = None,
    for_gpu: tuple[int, int] | None = None,
    log=print,
) -> list[dict]:
    """Compile the variants of ``specs`` (:class:`HeadSpec` or ``"HQ,HKV,D[,DV]"`` strings).

    With a GPU (``gpu="auto"`` finds the current one): one tiny call per variant through the public
    API, which fills this process's compile cache and the persistent one (``FA4_CACHE_DIR``) exactly
    as the model's calls will (``backward`` also runs a backward); ``status`` then says when the
    kernels were loaded from disk instead of compiled. Without one (``gpu=None``, or none present):
    :func:`fa4_sm120.compile.compile_fwd` for ``target`` (default ``sm_120a``, or the arch of
    ``FA4_ARCH``), compiled and dropped (a timing and a build check). Returns one dict per variant:
    ``variant``, ``seconds``, ``status``. ``for_gpu=(major, minor)``: fill the disk cache for that GPU
    without it here (:func:`_warm_for_gpu`), whatever ``gpu`` says.
    """
    if for_gpu is not None:
        gpu = None
    elif gpu == "auto":
        gpu = _gpu(None)
    from fa4_core.errors import Fa4Error

    specs = [parse_heads(s) if isinstance(s, str) else s for s in specs]
    results = []
    for spec in specs:
        for dt in dtypes:
            for c in causal:
                name = f"{dt} {spec}{' causal' if c else ''}"
                t0 = time.perf_counter()
                status = "compiled"
                try:
                    if for_gpu is not None:
                        status = _warm_for_gpu(spec, dt, c, backward, for_gpu)
                    elif gpu is not None:
                        before = _disk_stats()
                        _warm_gpu(spec, dt, c, backward)
                        after = _disk_stats()
                        if after["loaded"] > before["loaded"] and after["compiled"] == before["compiled"]:
                            status = "compiled (loaded from the disk cache)"
                    else:
                        status = _warm_cpu(spec, dt, c, backward, target)
                except Fa4Error as e:
                    status = f"unsupported: {e}"
                except NotImplementedError as e:
                    status = f"not implemented: {e}"
                secs = time.perf_counter() - t0
                log(f"  {name:<36} {secs:6.2f} s  {status}")
                results.append(dict(variant=name, seconds=secs, status=status))
    return results


def _warm_gpu(spec: HeadSpec, dtype: str, causal: bool, backward: bool) -> None:
    import torch

    from fa4_torch import flash_attn_func

    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    for s in _warm_seqlens(
        spec, torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    ):
        q = torch.randn(1, s, spec.nheads, spec.head_dim, device="cuda", dtype=dt)
        k = torch.randn(1, s, spec.nheads_kv, spec.head_dim, device="cuda", dtype=dt)
        v = torch.randn(1, s, spec.nheads_kv, spec.head_dim_v, device="cuda", dtype=dt)
        if backward:
            q, k, v = (x.requires_grad_() for x in (q, k, v))
            out, _ = flash_attn_func(q, k, v, causal=causal)
            out.sum().backward()
        else:
            flash_attn_func(q, k, v, causal=causal)
    torch.cuda.synchronize()


def _warm_seqlens(spec: HeadSpec, num_sms: int) -> tuple[int, int]:
    """Batch-1 sequence lengths whose calls take the forward's two rows of ``spec``
    (``fa4_sm120.tiles.wants_small_m``): one query (the small-m row: decode and few-tile calls),
    and enough 128-row tiles to cover the SMs (the row of training and long prefill)."""
    ratio = spec.nheads // spec.nheads_kv
    pack = ratio > 1
    heads = spec.nheads_kv if pack else spec.nheads
    rows = 128 * max(1, -(-num_sms // heads))  # query rows (packed heads counted) per tile head
    return 1, -(-rows // (ratio if pack else 1))


def _warm_cpu(spec: HeadSpec, dtype: str, causal: bool, backward: bool, target: str | None) -> str:
    from fa4_sm120.compile import compile_fwd
    from fa4_sm120.tiles import fwd_config

    d = _dispatch(None)
    target = target or d.target
    dt = DTYPES[dtype]
    ratio = spec.nheads // spec.nheads_kv
    cfgs = [
        fwd_config(
            d.family,
            dt,
            spec.head_dim,
            spec.head_dim_v,
            causal=causal,
            pack_gqa=ratio > 1,
            qhead_per_kvhead=ratio,
            small_m=small_m,
        )
        for small_m in (False, True)  # the row of long calls, and that of decode / few-tile calls
    ]
    if backward:  # as the API does: what the backward cannot do fails before anything compiles
        from fa4_sm120.bwd_tiles import bwd_config

        bwd_cfg = bwd_config(d.family, dt, spec.head_dim, spec.head_dim_v, causal=causal, target=target)
    for cfg in dict.fromkeys(cfgs):  # a family without small-m rows: one config
        compile_fwd(cfg, tvm_ffi=False, gpu_arch=target)
    if not backward:
        return f"compiled for {target}"
    from fa4_sm120.bwd import compile_bwd
    from fa4_sm120.bwd_pre_post import PrePostConfig, compile_postprocess, compile_preprocess

    compile_bwd(bwd_cfg, tvm_ffi=False, gpu_arch=target)
    compile_preprocess(PrePostConfig(dt, spec.head_dim_v, False), tvm_ffi=False, gpu_arch=target)
    compile_postprocess(PrePostConfig(dt, spec.head_dim), tvm_ffi=False, gpu_arch=target)
    return f"compiled for {target} (forward and backward)"


def _cache_where() -> str:
    """Where the disk compile cache of this process is, in words."""
    from fa4_torch import disk_cache

    root = disk_cache.cache_root()
    if root is None:
        return f"off ({disk_cache.CACHE_DIR_ENV} / {disk_cache.SWITCH_ENV})"
    try:
        from fa4_torch.cache import dsl_version

        return str(root / dsl_version() / disk_cache.compile_target())
    except Exception as e:  # the DSL is missing or broken: the compiles below will say so
        return f"{root} ({type(e).__name__}: {e})"


def _warm_for_gpu(spec: HeadSpec, dtype: str, causal: bool, backward: bool, capability) -> str:
    """Fill the disk cache for a GPU of ``capability`` without one here (a container image built on a
    CPU machine): the kernels the API and the backward would compile on that GPU for a dense call of
    ``spec`` (what :func:`_warm_gpu` makes there), through the same cache keys, built for its target
    (``CUTE_DSL_ARCH``, set before the DSL's first use)."""
    import torch

    from fa4_torch import launch, launch_bwd, plan
    from fa4_torch.dispatch import family_for_capability

    major, minor = capability
    family = family_for_capability(major, minor)
    target = f"sm_{major}{minor}"
    os.environ["CUTE_DSL_ARCH"] = target + ("a" if major >= 9 else "")
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    before = _disk_stats()
    for small_m in (False, True):  # the row of long calls, and that of decode / few-tile calls
        key = plan.dense_key(
            dt, spec.head_dim, spec.head_dim_v, causal, spec.nheads, spec.nheads_kv, small_m=small_m
        )
        launch.forward_kernel(key, family, target)
    if backward:
        key = plan.BwdKey(dt, spec.head_dim, spec.head_dim_v, causal, False, False)
        launch_bwd.backward_kernels(key, None, family=family, target=target)
    after = _disk_stats()
    return f"compiled: {after['written'] - before['written']} written, {after['loaded'] - before['loaded']} already there"


def cmd_warmup(args) -> int:
    causal = {"yes": (True,), "no": (False,), "both": (False, True)}[args.causal]
    if args.for_gpu:
        from fa4_core.arch import parse_arch
        from fa4_torch import disk_cache

        a = parse_arch(args.for_gpu)
        if disk_cache.cache_root() is None:
            print(
                f"the disk cache is off ({disk_cache.CACHE_DIR_ENV} / {disk_cache.SWITCH_ENV}): nothing to fill"
            )
            return 1
        print(
            f"filling the compile cache for capability {a.major}.{a.minor} without that GPU here: "
            f"{disk_cache.cache_root()}"
        )
        results = warmup(args.shapes, args.dtype, causal, args.backward, for_gpu=(a.major, a.minor))
        bad = [r for r in results if not r["status"].startswith("compiled")]
        print(
            f"{len(results) - len(bad)}/{len(results)} variant(s) in {sum(r['seconds'] for r in results):.1f} s"
        )
        return 1 if bad else 0
    gpu = _gpu(args)
    if gpu is None:
        d = _dispatch(None)
        print(
            f"no CUDA GPU ({_no_gpu_reason(args)}): compiling for {d.target} (family {d.family}, {d.why}) "
            "to check and time the compiles; nothing is kept: these in-process compiles end with this "
            "command, and the disk cache is filled on the GPU machine (its entries are per GPU target)"
        )
    else:
        print(f"GPU {gpu.index}: {gpu.name}: compiling through the API; compile cache: {_cache_where()}")
    before = _disk_stats()
    results = warmup(args.shapes, args.dtype, causal, args.backward, gpu=gpu)
    total = sum(r["seconds"] for r in results)
    bad = [r for r in results if not r["status"].startswith("compiled")]
    print(f"{len(results) - len(bad)}/{len(results)} variant(s) compiled in {total:.1f} s")
    if gpu is not None:
        after = _disk_stats()
        n = {k: after[k] - before.get(k, 0) for k in after}
        print(
            f"compile cache {_cache_where()}: {n['written']} kernel(s) compiled and written, "
            f"{n['loaded']} already there (loaded)"
            + (f", {n['fallbacks']} kept in memory only (see the warning)" if n["fallbacks"] else "")
            + (f", {n['corrupt']} corrupt file(s) replaced" if n["corrupt"] else "")
        )
    return 1 if bad else 0


def _disk_stats() -> dict[str, int]:
    from fa4_torch import disk_cache

    return disk_cache.stats()


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fa4",
        description="fa4: FlashAttention for consumer Blackwell GPUs (SM120). "
        "Also runs as `python -m fa4_torch`.",
    )
    p.add_argument(
        "--no-gpu", action="store_true", help="behave as if no CUDA GPU were present (the compile-only paths)"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("info", help="versions, GPU, dispatch family; tile row and config for a shape")
    s.add_argument(
        "--shape", type=parse_shape, metavar="B,SQ,SK,HQ,HKV,D[,DV]", help="a flash_attn_func call shape"
    )
    s.add_argument("--causal", action="store_true", help="a causal call")
    s.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser(
        "check",
        help="GPU: correctness sweep against the fp32 reference; no GPU: compile for sm_120a and check PTX",
    )
    s.add_argument(
        "--quick", action="store_true", help="a few cases (GPU) / one variant per head dim (no GPU)"
    )
    s.add_argument("--no-ptxas", action="store_true", help="no GPU: skip `ptxas -v` even when it is on PATH")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("bench", help="quick forward benchmark beside PyTorch SDPA flash (needs a GPU)")
    s.add_argument(
        "--out", default="fa4-bench", metavar="DIR", help="where the JSON and PNG go (default: fa4-bench)"
    )
    s.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("warmup", help="compile the variants a model needs")
    s.add_argument(
        "--shapes",
        type=parse_heads,
        nargs="+",
        required=True,
        metavar="HQ,HKV,D[,DV]",
        help="heads and head dims of each attention layer kind (GQA ratio = HQ / HKV)",
    )
    s.add_argument("--dtype", choices=sorted(DTYPES), nargs="+", default=["bf16"])
    s.add_argument("--causal", choices=("yes", "no", "both"), default="both")
    s.add_argument("--backward", action="store_true", help="also compile the backward kernels")
    s.add_argument(
        "--for-gpu",
        metavar="CAPABILITY",
        help="fill the disk compile cache for that GPU (e.g. 12.0) without it here, e.g. in a "
        "container image built on a CPU machine",
    )
    s.set_defaults(func=cmd_warmup)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fa4_core.errors import UnsupportedArchError

    try:
        return args.func(args)
    except UnsupportedArchError as e:  # a GPU or FA4_ARCH without a tile table
        print(f"fa4 {args.command}: unsupported architecture: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
