"""Integer helpers that work on Python ints (host, CPU tests) and on CuTe DSL integers (in kernels).

The block-range, pack-GQA and scheduler arithmetic of fa4-core is written once on top of these, so the
exact same expressions are property-tested on the host and traced into kernels. Division is only ever
applied to non-negative numerators (callers clamp first), so C-style and floor division agree.
The DSL is imported only for DSL operands: on Python ints these modules load without it (the
fa4-torch host path computes scheduler arguments without importing the DSL).
"""

from __future__ import annotations

__all__ = ["imin", "imax", "ceil_div", "is_static"]


def is_static(*xs) -> bool:
    return all(isinstance(x, int) for x in xs)


def imin(a, b):
    if is_static(a, b):
        return a if a < b else b
    import cutlass

    return cutlass.min(a, b)


def imax(a, b):
    if is_static(a, b):
        return a if a > b else b
    import cutlass

    return cutlass.max(a, b)


def ceil_div(a, b):
    """ceil(a / b) for a >= 0, b > 0."""
    return (a + b - 1) // b
