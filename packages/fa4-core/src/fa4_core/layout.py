"""Register-layout helpers for warp-level ``mma.sync`` accumulators (arch-agnostic, SM80 and up).

The C fragment of an ``m16n8k16`` MMA held by one thread has the layout ``((2, 2), MMA_M, MMA_N)``:
mode 0 is ``(2 columns, 2 rows)`` of the atom (rows ``lane/4`` and ``lane/4 + 8``, columns
``2*(lane%4) + {0, 1}``). Softmax wants rows and columns: :func:`acc_mn_view` regroups it as
``((2, MMA_M), (2, MMA_N))``. The P·V MMA wants P as an A operand, whose fragment is
``((2, 2, 2), MMA_M, MMA_K)`` with ``MMA_K = MMA_N / 2``: :func:`acc_as_a_operand` reinterprets the
converted accumulator in place, with no data movement (the two layouts hold the same registers in the
same order, which is why P never leaves registers).
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from cutlass._mlir.dialects import llvm

__all__ = ["acc_mn_view", "acc_as_a_operand", "quad_allreduce_max", "quad_allreduce_sum", "rebase_opaque"]


def _mn_layout(layout: cute.Layout) -> cute.Layout:
    # ((c, r), M, N) -> ((r, M), (c, N)) on the same index space
    flat = cute.make_layout(layout.shape)
    mn = cute.make_layout(
        ((flat.shape[0][1], flat.shape[1]), (flat.shape[0][0], flat.shape[2])),
        stride=((flat.stride[0][1], flat.stride[1]), (flat.stride[0][0], flat.stride[2])),
    )
    return cute.composition(layout, mn)


def acc_mn_view(acc: cute.Tensor) -> cute.Tensor:
    """View an mma.sync C fragment (or its identity-coordinate partition) as (rows, cols)."""
    return cute.make_tensor(acc.iterator, _mn_layout(acc.layout))


def acc_as_a_operand(acc: cute.Tensor) -> cute.Tensor:
    """``((2, 2), M, N)`` C fragment -> ``((2, 2, 2), M, N / 2)`` A fragment of an m16n8k16 MMA."""
    div = cute.logical_divide(acc.layout, (None, None, 2))
    a_layout = cute.make_layout(
        ((div.shape[0], div.shape[2][0]), div.shape[1], div.shape[2][1]),
        stride=((div.stride[0], div.stride[2][0]), div.stride[1], div.stride[2][1]),
    )
    return cute.make_tensor(acc.iterator, a_layout)


@cute.jit
def quad_allreduce_max(x: cutlass.Float32) -> cutlass.Float32:
    """Max over the 4 lanes that share an accumulator row (lanes 4k..4k+3)."""
    x = cute.arch.fmax(x, cute.arch.shuffle_sync_bfly(x, offset=2))
    return cute.arch.fmax(x, cute.arch.shuffle_sync_bfly(x, offset=1))


@cute.jit
def quad_allreduce_sum(x: cutlass.Float32) -> cutlass.Float32:
    """Sum over the 4 lanes that share an accumulator row."""
    x = x + cute.arch.shuffle_sync_bfly(x, offset=2)
    return x + cute.arch.shuffle_sync_bfly(x, offset=1)


@cute.jit
def rebase_opaque(t: cute.Tensor) -> cute.Tensor:
    """``t`` (a shared-memory tensor) over a copy of its base address that the compiler cannot see
    through (one ``mov`` with side effects, so it is neither hoisted out of a loop nor CSE'd).

    Called at the top of a loop body, every address derived from the result (``base + offset``, the
    offsets constant or loop-invariant) is computed inside the loop, where ``ptxas`` folds the constant
    part into the instruction's immediate. Without it, LLVM hoists one register per distinct
    ``ldmatrix`` address out of the loop (the 8-warp 128x64 d128 forward build for ``sm_120a``: 226
    registers without, 196 with it). The price is one add per address group and block.
    """
    ptr = t.iterator
    addr = cutlass.Int32(
        llvm.inline_asm(
            cutlass.Int32.mlir_type,
            [ptr.toint().ir_value()],
            "mov.b32 $0, $1;",
            "=r,r",
            has_side_effects=True,
            is_align_stack=False,
            asm_dialect=llvm.AsmDialect.AD_ATT,
        )
    )
    base = cute.make_ptr(t.element_type, addr, cute.AddressSpace.smem, assumed_align=ptr.alignment)
    return cute.make_tensor(base, t.layout)
