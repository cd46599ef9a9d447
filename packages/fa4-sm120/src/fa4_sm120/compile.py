"""Compile the kernel classes without tensors, and read what ptxas makes of the result.

Every kernel class compiles the same way (:meth:`fa4_sm120.mma_sync.MmaSyncKernel.compile`): fake
(symbolic) arguments from its ``fake_args(cfg)`` and ``cute.compile``. The same fake signature serves
the CPU builds for ``sm_120a`` (tests, ``nox -s compile``) and the runtime compile of fa4-torch, whose
compiled functions then take torch tensors directly through TVM-FFI. Dynamic sizes (batch, sequence
lengths, head counts) are symbolic, so one compiled variant serves every shape; strides are 64-bit
and declared divisible by 8 elements (16 bytes), which the host validates before each call.

* :func:`compile_fwd` (and ``fa4_sm120.bwd.compile_bwd``, ``fa4_sm120.bwd_pre_post.compile_preprocess``
  / ``compile_postprocess``, ``fa4_sm120.combine.compile_combine``): a kernel class's ``compile``;
* :func:`ptxas`, :func:`ptxas_resources`: registers and spills of a kept PTX file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from fa4_sm120.fwd import FlashAttentionForwardSm120, FwdConfig
from fa4_sm120.mma_sync import compile_options, fake_tensor

__all__ = ["fake_tensor", "fake_fwd_args", "compile_fwd", "compile_options", "ptxas", "ptxas_resources"]

fake_fwd_args = FlashAttentionForwardSm120.fake_args


def compile_fwd(
    cfg: FwdConfig, *, tvm_ffi: bool = True, gpu_arch: str | None = None, dump_dir: str | None = None
):
    """Compile the forward kernel of ``cfg`` (:meth:`~fa4_sm120.mma_sync.MmaSyncKernel.compile`): for
    ``gpu_arch`` (e.g. ``"sm_120a"``, no GPU needed) or, by default, for ``CUTE_DSL_ARCH`` / the
    resident GPU. With ``dump_dir`` the PTX is kept there and ``compiled.__ptx__`` is its path."""
    return FlashAttentionForwardSm120.compile(cfg, tvm_ffi=tvm_ffi, gpu_arch=gpu_arch, dump_dir=dump_dir)


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
