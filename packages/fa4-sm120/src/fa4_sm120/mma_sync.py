"""Pieces every kernel of the mma.sync family builds the same way: swizzled shared-memory layouts
for 16-bit tiles and the 128-bit global<->shared tiled copies that feed them.

* :func:`smem_layout`: rows of ``cols`` 16-bit elements in 8-row atoms ``64`` (swizzle 3,3,3) or
  ``32`` (swizzle 2,3,3) columns wide, conflict-free for ``ldmatrix`` and 128-bit ``cp.async``.
* :func:`gmem_tiled_copy`: ``cols / 8`` threads per row, each moving 8 elements (16 bytes) per
  copy; ``cp.async.cg`` (global -> shared) or plain vector copies (registers <-> global).
* :func:`check_copy_threads`: the constraint this puts on the thread count.
"""

from __future__ import annotations

import cutlass.cute as cute
from cutlass.cute.nvgpu import cpasync

from fa4_core import arch as arch_mod
from fa4_core.errors import UnsupportedConfigError, unsupported

__all__ = ["atom_k", "smem_layout", "gmem_tiled_copy", "check_copy_threads", "check_smem_fits"]


def atom_k(cols: int) -> int:
    """Width (elements) of the swizzled shared-memory atom for a row of ``cols`` elements."""
    return 64 if cols % 64 == 0 else 32


def smem_layout(rows: int, cols: int):
    k = atom_k(cols)
    atom = cute.make_composed_layout(
        cute.make_swizzle(3 if k == 64 else 2, 3, 3), 0, cute.make_layout((8, k), stride=(k, 1))
    )
    return cute.tile_to_shape(atom, (rows, cols), (0, 1))


def gmem_tiled_copy(dtype, cols: int, num_threads: int, async_copy: bool):
    elems = 128 // dtype.width
    op = (
        cpasync.CopyG2SOp(cache_mode=cpasync.LoadCacheMode.GLOBAL)
        if async_copy
        else cute.nvgpu.CopyUniversalOp()
    )
    atom = cute.make_copy_atom(op, dtype, num_bits_per_copy=128)
    tpr = atom_k(cols) // elems  # threads per row
    thr_layout = cute.make_layout((num_threads // tpr, tpr), stride=(tpr, 1))
    return cute.make_tiled_copy_tv(atom, thr_layout, cute.make_layout((1, elems)))


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
