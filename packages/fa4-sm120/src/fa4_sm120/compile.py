"""Compile the kernel classes without tensors: fake (symbolic) arguments and ``cute.compile``.

The same fake signature serves the CPU builds for ``sm_120a`` (tests, ``nox -s compile``) and the
runtime compile of fa4-torch, whose compiled functions then take torch tensors directly through
TVM-FFI. Dynamic sizes (batch, sequence lengths, head counts) are symbolic, so one compiled variant
serves every shape; strides are 64-bit and declared divisible by 8 elements (16 bytes), which the
host validates before each call.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute

from fa4_sm120.fwd import DTYPES, FlashAttentionForwardSm120, FwdConfig

__all__ = ["fake_tensor", "fake_fwd_args", "compile_fwd", "compile_options"]

_ALIGN_ELEMS = 8  # 16 bytes of fp16/bf16


def fake_tensor(dtype, shape, leading_dim: int = -1, divisibility: int = _ALIGN_ELEMS):
    """A fake tensor with symbolic 64-bit strides (stride 1 on ``leading_dim``)."""
    n = len(shape)
    leading_dim %= n
    stride = tuple(1 if i == leading_dim else cute.sym_int64(divisibility=divisibility) for i in range(n))
    align = max(divisibility * dtype.width // 8, 1)
    return cute.runtime.make_fake_tensor(dtype, shape, stride=stride, assumed_align=align)


def fake_fwd_args(cfg: FwdConfig):
    """``(mQ, mK, mV, mO, mLSE, softmax_scale, window_left, window_right, stream)`` placeholders."""
    dt = DTYPES[cfg.dtype]
    sym = cute.sym_int
    b, sq, sk, hq, hkv = sym(), sym(), sym(), sym(), sym()
    q = fake_tensor(dt, (b, sq, hq, cfg.head_dim))
    k = fake_tensor(dt, (b, sk, hkv, cfg.head_dim))
    v = fake_tensor(dt, (b, sk, hkv, cfg.head_dim_v))
    o = fake_tensor(dt, (b, sq, hq, cfg.head_dim_v))
    lse = fake_tensor(cutlass.Float32, (b, hq, sq), divisibility=1)
    stream = cute.runtime.make_fake_stream(use_tvm_ffi_env_stream=True)
    return q, k, v, o, lse, cutlass.Float32(1.0), cutlass.Int32(-1), cutlass.Int32(-1), stream


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
