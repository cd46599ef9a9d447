"""The one dispatch table: GPU compute capability -> tile-table family and compile target.

| capability | family | note |
|---|---|---|
| 12.x (RTX 50, RTX PRO 6000, DGX Spark) | ``sm120`` | native |
| 9.x (H100/H200) | ``sm120`` | compat mode: SM120 rows and the 99 KB cap, compiled for the resident GPU |
| 8.6, 8.7, 8.9 | ``sm86`` | 99 KB |
| 8.0 | ``sm80`` | 163 KB |

``FA4_ARCH`` (``sm_120a``, ``120``, ``8.6``, ...) overrides the capability used to pick the family;
the code is always compiled for the GPU that runs it. This is the only place in fa4-torch that looks
at the architecture.
"""

from __future__ import annotations

import functools
import os

import torch

from fa4_core.arch import parse_arch
from fa4_core.errors import UnsupportedArchError

__all__ = ["family_for_capability", "device_family"]


def family_for_capability(major: int, minor: int) -> str:
    if major == 12 or major == 9:
        return "sm120"
    if major == 8 and minor == 0:
        return "sm80"
    if major == 8 and minor in (6, 7, 9):
        return "sm86"
    raise UnsupportedArchError(
        f"compute capability {major}.{minor} is not supported; supported: 8.0, 8.6, 8.7, 8.9, 9.x "
        "(compat mode), 12.x (SM120/SM121)"
    )


@functools.cache
def _device_family(device_index: int, override: str | None) -> str:
    if override:
        try:
            a = parse_arch(override)
            return family_for_capability(a.major, a.minor)
        except UnsupportedArchError as e:
            raise UnsupportedArchError(f"FA4_ARCH={override!r} (the dispatch override): {e}") from None
    major, minor = torch.cuda.get_device_capability(device_index)
    return family_for_capability(major, minor)


def device_family(device: torch.device) -> str:
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _device_family(index, os.environ.get("FA4_ARCH") or None)
