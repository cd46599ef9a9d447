"""Compile the kernel classes without tensors: fake (symbolic) arguments and ``cute.compile``.

The same fake signature serves the CPU builds for ``sm_120a`` (tests, ``nox -s compile``) and the
runtime compile of fa4-torch, whose compiled functions then take torch tensors directly through
TVM-FFI. Dynamic sizes (batch, sequence lengths, head counts) are symbolic, so one compiled variant
serves every shape; strides are 64-bit and declared divisible by 8 elements (16 bytes), which the
host validates before each call.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import cutlass
import cutlass.cute as cute

from fa4_sm120.fwd import DTYPES, FlashAttentionForwardSm120, FwdConfig

__all__ = ["fake_tensor", "fake_fwd_args", "compile_fwd", "compile_options", "ptxas", "ptxas_resources"]

_ALIGN_ELEMS = 8  # 16 bytes of fp16/bf16


def fake_tensor(dtype, shape, leading_dim: int = -1, divisibility: int = _ALIGN_ELEMS):
    """A fake tensor with symbolic 64-bit strides (stride 1 on ``leading_dim``)."""
    n = len(shape)
    leading_dim %= n
    stride = tuple(1 if i == leading_dim else cute.sym_int64(divisibility=divisibility) for i in range(n))
    align = max(divisibility * dtype.width // 8, 1)
    return cute.runtime.make_fake_tensor(dtype, shape, stride=stride, assumed_align=align)


def fake_fwd_args(cfg: FwdConfig):
    """Placeholders for ``FlashAttentionForwardSm120.__call__``, shaped by the config's flags:
    ``(mQ, mK, mV, mO, mLSE, softmax_scale, window_left, window_right, softcap, max_seqlen_q,
    num_splits, cu_seqlens_q, cu_seqlens_k, seqused_q, seqused_k, page_table, kv_batch_idx, sink,
    stream)``; absent optional tensors are ``None``."""
    dt = DTYPES[cfg.dtype]
    sym = cute.sym_int
    b, bkv, sq, sk, hq, hkv, tq, tk, npages, psize, maxp, ns = (sym() for _ in range(12))
    q_rows = (tq,) if cfg.varlen_q else (b, sq)
    if cfg.paged_kv:
        kv_rows = (npages, psize)
    elif cfg.varlen_k:
        kv_rows = (tk,)
    else:
        kv_rows = (bkv if cfg.kv_batch_idx else b, sk)
    q = fake_tensor(dt, (*q_rows, hq, cfg.head_dim))
    k = fake_tensor(dt, (*kv_rows, hkv, cfg.head_dim))
    v = fake_tensor(dt, (*kv_rows, hkv, cfg.head_dim_v))
    lse_dims = (hq, tq) if cfg.varlen_q else (b, hq, sq)
    if cfg.split_kv:
        o = fake_tensor(cutlass.Float32, (ns, *q_rows, hq, cfg.head_dim_v), divisibility=4)
        lse = fake_tensor(cutlass.Float32, (ns, *lse_dims), divisibility=1)
    else:
        o = fake_tensor(dt, (*q_rows, hq, cfg.head_dim_v))
        lse = fake_tensor(cutlass.Float32, lse_dims, divisibility=1)
    i32 = cutlass.Int32
    nb1 = sym()
    cu_q = fake_tensor(i32, (nb1,), divisibility=1) if cfg.varlen_q else None
    cu_k = fake_tensor(i32, (nb1,), divisibility=1) if cfg.varlen_k else None
    used_q = fake_tensor(i32, (b,), divisibility=1) if cfg.has_seqused_q else None
    used_k = fake_tensor(i32, (b,), divisibility=1) if cfg.has_seqused_k else None
    page_table = fake_tensor(i32, (b, maxp), divisibility=1) if cfg.paged_kv else None
    kv_batch = fake_tensor(i32, (b,), divisibility=1) if cfg.kv_batch_idx else None
    sink = fake_tensor(cutlass.Float32, (hq,), divisibility=1) if cfg.has_sink else None
    stream = cute.runtime.make_fake_stream(use_tvm_ffi_env_stream=True)
    f32 = cutlass.Float32
    return (
        q,
        k,
        v,
        o,
        lse,
        f32(1.0),
        i32(-1),
        i32(-1),
        f32(0.0),
        i32(1),
        i32(1),
        cu_q,
        cu_k,
        used_q,
        used_k,
        page_table,
        kv_batch,
        sink,
        stream,
    )


def compile_options(*, tvm_ffi: bool, gpu_arch: str | None = None, dump_dir: str | None = None) -> str:
    """``cute.compile`` options: TVM-FFI entry point, explicit target, PTX kept in ``dump_dir``."""
    opts = []
    if tvm_ffi:
        opts.append("--enable-tvm-ffi")
    if gpu_arch:
        opts.append(f"--gpu-arch {gpu_arch}")
    if dump_dir:
        opts.append(f"--keep-ptx --dump-dir {dump_dir}")
    return " ".join(opts)


def compile_fwd(
    cfg: FwdConfig, *, tvm_ffi: bool = True, gpu_arch: str | None = None, dump_dir: str | None = None
):
    """Compile the forward kernel of ``cfg``: for ``gpu_arch`` (e.g. ``"sm_120a"``, no GPU needed) or,
    by default, for ``CUTE_DSL_ARCH`` / the resident GPU. With ``dump_dir`` the PTX is kept there and
    ``compiled.__ptx__`` is its path."""
    kernel = FlashAttentionForwardSm120(cfg)
    options = compile_options(tvm_ffi=tvm_ffi, gpu_arch=gpu_arch, dump_dir=dump_dir)
    args = fake_fwd_args(cfg)
    if options:
        return cute.compile(kernel, *args, options=options)
    return cute.compile(kernel, *args)


def ptxas(ptx_path: str, arch: str, *flags: str, out: str = os.devnull):
    """``ptxas -arch=<arch> <flags> <ptx_path> -o <out>`` (a ``CompletedProcess``, text output), or None
    when no ptxas is on PATH. A ptxas older than the DSL's PTX ISA (CUDA 13.0's stops at 9.0; the DSL
    4.8 writes 9.4) says ``Unsupported .version X; current version is 'Y'``: it is then given a copy
    with ``.version Y``, which assembles whenever the kernel uses nothing newer (it fails otherwise)."""
    exe = shutil.which("ptxas")
    if exe is None:
        return None
    r = subprocess.run([exe, f"-arch={arch}", *flags, ptx_path, "-o", out], capture_output=True, text=True)
    m = re.search(r"Unsupported \.version [0-9.]+; current version is '([0-9.]+)'", r.stderr)
    if r.returncode != 0 and m:
        with open(ptx_path) as f:
            text = re.sub(r"^\.version [0-9.]+", f".version {m.group(1)}", f.read(), count=1, flags=re.M)
        lowered = ptx_path[: -len(".ptx")] + f".v{m.group(1)}.ptx"
        with open(lowered, "w") as f:
            f.write(text)
        r = subprocess.run([exe, f"-arch={arch}", *flags, lowered, "-o", out], capture_output=True, text=True)
    return r


def ptxas_resources(ptx_path: str, arch: str = "sm_120a"):
    """``(registers, spill store bytes, error)`` of ``ptxas -v`` (the most of any kernel in the file),
    or None when no ptxas is on PATH; ``error`` is ptxas's last line when it fails."""
    r = ptxas(ptx_path, arch, "-v")
    if r is None:
        return None
    if r.returncode != 0:
        return None, None, (r.stderr.strip().splitlines() or ["ptxas failed"])[-1]
    regs = [int(x) for x in re.findall(r"Used (\d+) registers", r.stderr)]
    spill = sum(int(x) for x in re.findall(r"(\d+) bytes spill stores", r.stderr))
    return (max(regs) if regs else None), spill, None
