"""Shared by every test layer; imports neither torch nor the DSL at module level (tests/core has no torch).

* ``gpu`` tests are skipped at collection unless torch is installed and sees a CUDA GPU.
* With no GPU present, ``CUTE_DSL_ARCH`` defaults to ``sm_120a`` so that ``compile_only`` tests compile
  for consumer Blackwell. The DSL reads it once, when ``cutlass`` is first imported, so it is set here,
  before collection, rather than per test; on a machine with a GPU the DSL detects the arch itself.
"""

from __future__ import annotations

import glob
import os

import pytest


def _gpu_present() -> bool:
    """A GPU device node exists. Looks at /dev only: initializing CUDA here would break forked workers."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def _torch_cuda_reason() -> str | None:
    """Why gpu tests cannot run here, or None when they can."""
    try:
        import torch
    except ImportError:
        return "needs torch with CUDA (torch is not installed)"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU (torch.cuda.is_available() is False)"
    return None


def pytest_configure(config: pytest.Config) -> None:
    if not _gpu_present():
        os.environ.setdefault("CUTE_DSL_ARCH", "sm_120a")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return  # torch is imported only when a gpu test was collected
    reason = _torch_cuda_reason()
    if reason is not None:
        skip = pytest.mark.skip(reason=reason)
        for item in gpu_items:
            item.add_marker(skip)
