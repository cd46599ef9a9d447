"""The base of the mma.sync family's kernel classes (forward, backward, its pre/postprocess, the
split-KV combine) and the pieces they all build the same way.

* :class:`MmaSyncKernel`: a kernel class is built from one frozen config (``cls(cfg)`` raises what
  ``can_implement(cfg)`` raises), answers ``supports(cfg)`` without raising, and compiles without
  tensors: ``cls.compile(cfg, tvm_ffi=..., gpu_arch=..., dump_dir=...)`` is ``cute.compile`` over the
  placeholders of ``cls.fake_args(cfg)`` with :func:`compile_options`. A subclass defines
  ``can_implement`` (raising :class:`~fa4_core.errors.UnsupportedConfigError`), ``fake_args``, the
  ``@cute.jit __call__`` and its ``@cute.kernel``.
* :data:`DTYPES`: the DSL types of :data:`fa4_sm120.limits.DTYPE_NAMES`, the 16-bit element types of
  every kernel of the family.
* :func:`smem_layout`: rows of ``cols`` 16-bit elements in 8-row atoms ``64`` (swizzle 3,3,3) or
  ``32`` (swizzle 2,3,3) columns wide, conflict-free for ``ldmatrix`` and 128-bit ``cp.async``.
* :func:`gmem_tiled_copy`: ``cols / 8`` threads per row (or ``threads_per_row``), each moving 8
  elements (16 bytes) per copy; ``cp.async.cg`` (global -> shared) or plain vector copies
  (registers <-> global).
* :func:`check_dtype`, :func:`check_head_dims`, :func:`check_copy_threads`, :func:`check_smem_fits`:
  the constraints every config of the family shares and those the layouts and copies put on it.
* :func:`fake_tensor`: a placeholder tensor with symbolic sizes and 64-bit strides divisible by 8
  elements (16 bytes; the host validates that before each call), so that one compiled variant serves
  every shape; :func:`fake_stream`: the TVM-FFI environment stream.
* :func:`launch_bounds`: the ``launch`` keywords of a minimum CTA count per SM (``FwdCodegen.min_ctas_per_sm``).
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from cutlass.cute.nvgpu import cpasync

from fa4_core import arch as arch_mod
from fa4_core.errors import UnsupportedConfigError, unsupported
from fa4_sm120.limits import DTYPE_NAMES, HEAD_DIMS

__all__ = [
    "DTYPES",
    "MmaSyncKernel",
    "atom_k",
    "smem_layout",
    "gmem_tiled_copy",
    "check_copy_threads",
    "check_smem_fits",
    "check_dtype",
    "check_head_dims",
    "fake_tensor",
    "fake_stream",
    "launch_bounds",
    "compile_options",
]

DTYPES = dict(zip(DTYPE_NAMES, (cutlass.Float16, cutlass.BFloat16), strict=True))

_ALIGN_ELEMS = 8  # 16 bytes of fp16/bf16


def atom_k(cols: int) -> int:
    """Width (elements) of the swizzled shared-memory atom for a row of ``cols`` elements."""
    return 64 if cols % 64 == 0 else 32


def smem_layout(rows: int, cols: int):
    k = atom_k(cols)
    atom = cute.make_composed_layout(
        cute.make_swizzle(3 if k == 64 else 2, 3, 3), 0, cute.make_layout((8, k), stride=(k, 1))
    )
    return cute.tile_to_shape(atom, (rows, cols), (0, 1))


def gmem_tiled_copy(dtype, cols: int, num_threads: int, async_copy: bool, threads_per_row: int | None = None):
    elems = 128 // dtype.width
    op = (
        cpasync.CopyG2SOp(cache_mode=cpasync.LoadCacheMode.GLOBAL)
        if async_copy
        else cute.nvgpu.CopyUniversalOp()
    )
    atom = cute.make_copy_atom(op, dtype, num_bits_per_copy=128)
    tpr = threads_per_row or atom_k(cols) // elems
    thr_layout = cute.make_layout((num_threads // tpr, tpr), stride=(tpr, 1))
    return cute.make_tiled_copy_tv(atom, thr_layout, cute.make_layout((1, elems)))


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise unsupported("dtype", dtype, ", ".join(DTYPE_NAMES))


def check_head_dims(dims: dict[str, int]) -> None:
    """Each named head dim is one of :data:`fa4_sm120.limits.HEAD_DIMS`."""
    for name, d in dims.items():
        if d not in HEAD_DIMS:
            raise unsupported(name, d, f"multiples of 32 up to 256: {HEAD_DIMS}")


def check_copy_threads(num_threads: int, dims: dict[str, int]) -> None:
    """Threads per row (``atom_k / 8``) must divide the thread count for each named row width."""
    for name, d in dims.items():
        if num_threads % (atom_k(d) // 8):
            raise unsupported("num_threads", num_threads, f"a multiple of {atom_k(d) // 8} for {name}={d}")


def check_smem_fits(what: str, smem_bytes: int, arch: str) -> None:
    """``what`` (the tile, in words) needs ``smem_bytes``: raise if that exceeds ``arch``'s per-CTA cap."""
    cap = arch_mod.smem_capacity(arch_mod.parse_arch(arch))
    if smem_bytes > cap:
        raise UnsupportedConfigError(
            f"{what} needs {smem_bytes} B of shared memory; supported: at most {cap} B on {arch}"
        )


# ---------------------------------------------------------------------------------------------------
# compile without tensors (CPU builds for sm_120a, and the runtime compile of fa4-torch)
# ---------------------------------------------------------------------------------------------------
def fake_tensor(dtype, shape, leading_dim: int = -1, divisibility: int = _ALIGN_ELEMS):
    """A fake tensor with symbolic 64-bit strides (stride 1 on ``leading_dim``)."""
    n = len(shape)
    leading_dim %= n
    stride = tuple(1 if i == leading_dim else cute.sym_int64(divisibility=divisibility) for i in range(n))
    align = max(divisibility * dtype.width // 8, 1)
    return cute.runtime.make_fake_tensor(dtype, shape, stride=stride, assumed_align=align)


def fake_stream():
    """The stream placeholder: compiled functions take the caller's (TVM-FFI environment) stream."""
    return cute.runtime.make_fake_stream(use_tvm_ffi_env_stream=True)


def launch_bounds(min_ctas_per_sm: int) -> dict:
    """The ``launch`` keywords that bound registers to ``min_ctas_per_sm`` CTAs per SM (PTX
    ``.minnctapersm``; none for 0). The carveout is left at the driver's default (-1): without a value
    the DSL would read it from the resident GPU, which a CPU build for ``sm_120a`` does not have."""
    if not min_ctas_per_sm:
        return {}
    return {"min_blocks_per_mp": min_ctas_per_sm, "preferred_smem_carveout": -1}


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


class MmaSyncKernel:
    """A kernel class of the family, built from one frozen config (see the module docstring).

    ``self.cfg`` is the config, ``self.dtype`` its 16-bit DSL type; ``self.num_threads`` (set by the
    subclass) sizes the tiled copies of :meth:`gmem_copy`.
    """

    num_threads: int

    def __init__(self, cfg):
        self.can_implement(cfg)
        self.cfg = cfg
        self.dtype = DTYPES[cfg.dtype]

    # ------------------------------------------------------------------ constraints
    @staticmethod
    def can_implement(cfg) -> None:
        """Raise :class:`UnsupportedConfigError` naming the first constraint ``cfg`` violates."""
        raise NotImplementedError

    @classmethod
    def supports(cls, cfg) -> bool:
        """Whether :meth:`can_implement` accepts ``cfg``."""
        try:
            cls.can_implement(cfg)
        except UnsupportedConfigError:
            return False
        return True

    # ------------------------------------------------------------------ compile
    @staticmethod
    def fake_args(cfg) -> tuple:
        """Placeholders for every argument of ``__call__`` (absent optional tensors ``None``)."""
        raise NotImplementedError

    @classmethod
    def compile(cls, cfg, *, tvm_ffi: bool = True, gpu_arch: str | None = None, dump_dir: str | None = None):
        """Compile the kernel of ``cfg``: for ``gpu_arch`` (e.g. ``"sm_120a"``, no GPU needed) or, by
        default, for ``CUTE_DSL_ARCH`` / the resident GPU. With ``tvm_ffi`` the compiled function takes
        torch tensors directly; with ``dump_dir`` the PTX is kept there and ``compiled.__ptx__`` is its
        path."""
        kernel = cls(cfg)
        options = compile_options(tvm_ffi=tvm_ffi, gpu_arch=gpu_arch, dump_dir=dump_dir)
        args = cls.fake_args(cfg)
        if options:
            return cute.compile(kernel, *args, options=options)
        return cute.compile(kernel, *args)

    # ------------------------------------------------------------------ host-side setup (traced)
    def smem_layout(self, rows: int, cols: int):
        """Swizzled ``(rows, cols)`` shared-memory layout (:func:`smem_layout`)."""
        return smem_layout(rows, cols)

    def gmem_copy(self, cols: int, async_copy: bool, threads_per_row: int | None = None):
        """128-bit tiled copy of rows of ``cols`` elements over ``self.num_threads`` threads
        (:func:`gmem_tiled_copy`)."""
        return gmem_tiled_copy(self.dtype, cols, self.num_threads, async_copy, threads_per_row)
