"""Architecture facts: parse a compute capability, name its kernel family, give its SMEM budget.

An :class:`Arch` is ``(major, minor, suffix)`` like the DSL's own ``base_dsl.Arch`` enum
(``suffix`` is ``""``, ``"a"`` (arch-specific features) or ``"f"`` (family features)).
:func:`parse_arch` accepts every spelling a user or a tool is likely to hand us::

    "sm_120a"  "sm_120"  "sm120"  "120"  "12.0"  120  (12, 0)  (12, 0, "a")  Arch(12, 0)

and raises :class:`~fa4_core.errors.UnsupportedArchError` for anything else, naming the value and the
supported set. ``FA4_ARCH`` overrides the detected GPU (:func:`arch_from_env`).

Shared memory per CTA (:func:`smem_capacity`) is the opt-in maximum of a thread block, which is what a
kernel may ask for: taken from the DSL (``cutlass.memory.get_smem_capacity_in_bytes``) when it knows the
arch, else from :data:`SMEM_CAPACITY`, a copy of the same numbers that a test keeps equal to the DSL's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from fa4_core.errors import UnsupportedArchError

__all__ = [
    "Arch",
    "SUPPORTED",
    "SMEM_CAPACITY",
    "parse_arch",
    "arch_from_env",
    "smem_capacity",
    "family",
    "FA4_ARCH_ENV",
]

FA4_ARCH_ENV = "FA4_ARCH"

# (major, minor) -> suffixes the DSL knows for it (base_dsl.Arch). mma.sync exists on all of them.
SUPPORTED: dict[tuple[int, int], tuple[str, ...]] = {
    (8, 0): ("",),
    (8, 6): ("",),
    (8, 7): ("",),
    (8, 9): ("",),
    (9, 0): ("", "a"),
    (10, 0): ("", "a", "f"),
    (10, 3): ("", "a", "f"),
    (10, 7): ("", "a", "f"),
    (11, 0): ("", "a", "f"),
    (12, 0): ("", "a", "f"),
    (12, 1): ("", "a", "f"),
}

# Max dynamic shared memory per CTA in bytes (opt-in limit = per-SM capacity - 1 KB reserved).
# Same numbers as the DSL's SMEM_CAPACITY_MAP; test_arch.py asserts they agree.
SMEM_CAPACITY: dict[tuple[int, int], int] = {
    (8, 0): 166_912,  # 164 KB - 1 KB (A100)
    (8, 6): 101_376,  # 100 KB - 1 KB (RTX 30)
    (8, 7): 166_912,  # 164 KB - 1 KB (Jetson Orin: SM80-sized SMEM)
    (8, 9): 101_376,  # 100 KB - 1 KB (RTX 40)
    (9, 0): 232_448,  # 228 KB - 1 KB (H100/H200)
    (10, 0): 232_448,
    (10, 3): 232_448,
    (10, 7): 334_848,  # 328 KB - 1 KB
    (11, 0): 232_448,
    (12, 0): 101_376,  # 100 KB - 1 KB (RTX 50, RTX PRO 6000 Blackwell)
    (12, 1): 101_376,  # DGX Spark
}


def _supported_list() -> str:
    return ", ".join(f"sm_{ma}{mi}" for ma, mi in SUPPORTED) + " (suffix 'a'/'f' from sm_90 on)"


@dataclass(frozen=True, order=True)
class Arch:
    """A compute capability with an optional feature suffix (``""``, ``"a"``, ``"f"``)."""

    major: int
    minor: int
    suffix: str = ""

    @property
    def cc(self) -> int:
        """``major * 10 + minor`` (120 for sm_120)."""
        return self.major * 10 + self.minor

    @property
    def name(self) -> str:
        """``sm_120a`` style spelling of exactly this arch (suffix kept as given)."""
        return f"sm_{self.major}{self.minor}{self.suffix}"

    @property
    def target(self) -> str:
        """The compile target for the DSL (``CUTE_DSL_ARCH`` / ``--gpu-arch``).

        The suffix if one was given, else ``a`` from sm_90 on (arch-specific features, what the DSL
        picks for a resident GPU: ``sm_90a``, ``sm_120a``), none before (``sm_80``).
        """
        suffix = self.suffix if self.suffix else ("a" if self.major >= 9 else "")
        return f"sm_{self.major}{self.minor}{suffix}"

    def __str__(self) -> str:
        return self.name


_ARCH_RE = re.compile(r"^(?:sm_?|compute_?)?(\d+)(?:\.(\d+))?([af]?)$", re.IGNORECASE)


def _check(major: int, minor: int, suffix: str, value: object) -> Arch:
    if (major, minor) not in SUPPORTED:
        raise UnsupportedArchError(
            f"arch={value!r} (sm_{major}{minor}) is not supported; supported: {_supported_list()}"
        )
    if suffix not in SUPPORTED[(major, minor)]:
        raise UnsupportedArchError(
            f"arch={value!r}: suffix {suffix!r} does not exist for sm_{major}{minor}; "
            f"supported suffixes: {SUPPORTED[(major, minor)]}"
        )
    return Arch(major, minor, suffix)


def parse_arch(x: object) -> Arch:
    """Parse ``x`` into an :class:`Arch`; raise :class:`UnsupportedArchError` if it is not one we know.

    Accepted: an :class:`Arch`; ``"sm_120a"``, ``"sm_120"``, ``"sm120"``, ``"120"``, ``"12.0"``
    (the last digit of a bare number is the minor version); the int ``120``; tuples ``(12, 0)`` and
    ``(12, 0, "a")``.
    """
    if isinstance(x, Arch):
        return _check(x.major, x.minor, x.suffix, x)
    if isinstance(x, bool):  # bool is an int: reject before the int branch
        raise UnsupportedArchError(f"arch={x!r} is not an architecture; supported: {_supported_list()}")
    if isinstance(x, int):
        if x < 10:
            raise UnsupportedArchError(
                f"arch={x!r} is ambiguous (give major and minor, e.g. 120 or (12, 0)); "
                f"supported: {_supported_list()}"
            )
        return _check(x // 10, x % 10, "", x)
    if (
        isinstance(x, tuple)
        and len(x) in (2, 3)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in x[:2])
    ):
        suffix = x[2] if len(x) == 3 else ""
        if not isinstance(suffix, str):
            raise UnsupportedArchError(f"arch={x!r}: the suffix must be a string ('', 'a' or 'f')")
        return _check(x[0], x[1], suffix.lower(), x)
    if isinstance(x, str):
        m = _ARCH_RE.match(x.strip())
        if m is not None:
            digits, minor, suffix = m.group(1), m.group(2), m.group(3).lower()
            if minor is not None:  # "12.0"
                return _check(int(digits), int(minor), suffix, x)
            if len(digits) >= 2:  # "120" -> 12, 0
                return _check(int(digits[:-1]), int(digits[-1]), suffix, x)
    raise UnsupportedArchError(
        f"arch={x!r} is not an architecture spelling fa4 understands (e.g. 'sm_120a', '120', '12.0', "
        f"120, (12, 0)); supported: {_supported_list()}"
    )


def arch_from_env(default: object = None) -> Arch | None:
    """The arch named by ``$FA4_ARCH`` if it is set and non-empty, else ``parse_arch(default)``.

    ``default`` is typically the resident GPU's ``(major, minor)``; ``None`` gives ``None`` when the
    variable is unset. A malformed ``FA4_ARCH`` raises :class:`UnsupportedArchError` naming the variable.
    """
    value = os.environ.get(FA4_ARCH_ENV, "").strip()
    if value:
        try:
            return parse_arch(value)
        except UnsupportedArchError as e:
            raise UnsupportedArchError(f"{FA4_ARCH_ENV}={value!r}: {e}") from None
    if default is None:
        return None
    return parse_arch(default)


def _dsl_smem_capacity(major: int, minor: int) -> int | None:
    """The DSL's number for ``sm_<major><minor>``, or None if the DSL has none (or moved it)."""
    key = f"sm_{major}{minor}"
    try:
        from cutlass.memory import get_smem_capacity_in_bytes
    except ImportError:  # older DSLs kept it in cutlass.utils
        try:
            from cutlass.utils import get_smem_capacity_in_bytes
        except ImportError:
            return None
    try:
        return int(get_smem_capacity_in_bytes(key))
    except (ValueError, KeyError):
        return None


def smem_capacity(arch: object) -> int:
    """Max shared memory per CTA in bytes for ``arch`` (anything :func:`parse_arch` accepts)."""
    a = parse_arch(arch)
    dsl = _dsl_smem_capacity(a.major, a.minor)
    if dsl is not None:
        return dsl
    if (a.major, a.minor) in SMEM_CAPACITY:
        return SMEM_CAPACITY[(a.major, a.minor)]
    raise UnsupportedArchError(f"arch={a.name}: shared memory capacity unknown")


def family(arch: object) -> str:
    """The kernel family / tile table of ``arch``.

    * ``"sm120"``: 12.0 and 12.1 (consumer Blackwell, 99 KB SMEM, mma.sync);
    * ``"sm100"``: 10.x and 11.x; ``"sm90"``: 9.0 (fa4 runs them in SM120 compat mode, docs/architecture.md);
    * ``"sm80"``: 8.0 and 8.7 (164 KB SMEM); ``"sm86"``: 8.6 (99 KB); ``"sm89"``: 8.9 (99 KB, fp8 mma).
    """
    a = parse_arch(arch)
    if a.major == 12:
        return "sm120"
    if a.major in (10, 11):
        return "sm100"
    if a.major == 9:
        return "sm90"
    if (a.major, a.minor) in ((8, 0), (8, 7)):
        return "sm80"
    return f"sm{a.major}{a.minor}"  # sm86, sm89
