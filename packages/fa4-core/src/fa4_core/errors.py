"""Typed errors of fa4.

Every error names the argument, the value that was given and what is supported, so that a user can
fix the call without reading the kernel. Host code raises these before anything compiles or launches.
"""

from __future__ import annotations

__all__ = ["Fa4Error", "UnsupportedConfigError", "UnsupportedArchError", "unsupported"]


class Fa4Error(Exception):
    """Base class of every error fa4 raises on purpose."""


class UnsupportedConfigError(Fa4Error, ValueError):
    """The arguments describe something the kernels cannot compute (shape, dtype, layout, feature)."""


class UnsupportedArchError(Fa4Error, RuntimeError):
    """The GPU (or the requested compile target) is not one fa4 has kernels for."""


def unsupported(arg: str, value: object, supported: str, *, why: str = "") -> UnsupportedConfigError:
    """Build the standard message: ``arg=value is not supported; supported: ...``."""
    msg = f"{arg}={value!r} is not supported"
    if why:
        msg += f" ({why})"
    msg += f"; supported: {supported}"
    return UnsupportedConfigError(msg)
