"""What the commands of :mod:`fa4_torch.cli` share: argument types, the GPU here, versions, the
dispatch family a call would take, and plain-text tables. Imports are lazy (torch, fa4_sm120): argument
errors need neither a GPU nor the DSL."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "DTYPES",
    "DEFAULT_TARGET",
    "Shape",
    "parse_shape",
    "torch_dtype",
    "HeadSpec",
    "parse_heads",
    "Gpu",
    "find_gpu",
    "no_gpu_reason",
    "dist_version",
    "Dispatch",
    "dispatch",
    "table",
    "fmt_bytes",
]

DTYPES = {"bf16": "bfloat16", "fp16": "float16"}
DEFAULT_TARGET = "sm_120a"  # what a machine without a GPU compiles for


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a ``--dtype`` value (``bf16``, ``fp16``) or of its DSL name (``bfloat16``)."""
    import torch

    return {
        "bf16": torch.bfloat16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }[name]


@dataclass(frozen=True)
class Shape:
    """``flash_attn_func`` shape: ``q (batch, seqlen_q, nheads, head_dim)``, ``k/v (batch, seqlen_k,
    nheads_kv, head_dim / head_dim_v)``."""

    batch: int
    seqlen_q: int
    seqlen_k: int
    nheads: int
    nheads_kv: int
    head_dim: int
    head_dim_v: int

    @property
    def ratio(self) -> int:
        return self.nheads // self.nheads_kv

    def __str__(self) -> str:
        dv = f",{self.head_dim_v}" if self.head_dim_v != self.head_dim else ""
        return (
            f"{self.batch},{self.seqlen_q},{self.seqlen_k},{self.nheads},{self.nheads_kv},{self.head_dim}{dv}"
        )


def _ints(text: str, what: str, counts: tuple[int, ...]) -> list[int]:
    parts = [p.strip() for p in text.split(",")]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected {what} (comma-separated integers)") from None
    if len(vals) not in counts:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected {what} ({' or '.join(map(str, counts))} numbers)"
        )
    return vals


def parse_shape(text: str) -> Shape:
    """``"B,SQ,SK,HQ,HKV,D[,DV]"`` -> :class:`Shape`; ``argparse.ArgumentTypeError`` when malformed."""
    what = "B,SQ,SK,HQ,HKV,D[,DV]"
    vals = _ints(text, what, (6, 7))
    if len(vals) == 6:
        vals.append(vals[5])
    if any(v < 0 for v in vals) or any(v == 0 for v in vals[3:]):
        raise argparse.ArgumentTypeError(f"{text!r}: sizes must be >= 0 and heads / head dims >= 1 ({what})")
    shape = Shape(*vals)
    if shape.nheads % shape.nheads_kv:
        raise argparse.ArgumentTypeError(
            f"{text!r}: HQ={shape.nheads} must be a multiple of HKV={shape.nheads_kv} (MHA, GQA or MQA)"
        )
    return shape


@dataclass(frozen=True)
class HeadSpec:
    """``warmup`` spec: the heads and head dims of one attention layer."""

    nheads: int
    nheads_kv: int
    head_dim: int
    head_dim_v: int

    def __str__(self) -> str:
        dv = f"/{self.head_dim_v}" if self.head_dim_v != self.head_dim else ""
        return f"h{self.nheads}/{self.nheads_kv} d{self.head_dim}{dv}"


def parse_heads(text: str) -> HeadSpec:
    what = "HQ,HKV,D[,DV]"
    vals = _ints(text, what, (3, 4))
    if len(vals) == 3:
        vals.append(vals[2])
    if any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: every number must be >= 1 ({what})")
    if vals[0] % vals[1]:
        raise argparse.ArgumentTypeError(f"{text!r}: HQ={vals[0]} must be a multiple of HKV={vals[1]}")
    return HeadSpec(*vals)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    capability: tuple[int, int]


def find_gpu(args: argparse.Namespace | None) -> Gpu | None:
    """The current CUDA GPU, or None (none present, or ``--no-gpu``)."""
    if getattr(args, "no_gpu", False):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    idx = torch.cuda.current_device()
    return Gpu(idx, torch.cuda.get_device_name(idx), tuple(torch.cuda.get_device_capability(idx)))


def no_gpu_reason(args: argparse.Namespace | None) -> str:
    if getattr(args, "no_gpu", False):
        return "--no-gpu given"
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build"
    return "torch.cuda.is_available() is False"


def dist_version(dist: str, module: str | None = None) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        pass
    if module:  # source checkout on PYTHONPATH (the GPU machine)
        try:
            about = __import__(f"{module}.__about__", fromlist=["__version__"])
            return f"{about.__version__} (not installed: from {os.path.dirname(about.__file__)})"
        except ImportError:
            pass
    return "not installed"


@dataclass(frozen=True)
class Dispatch:
    family: str
    target: str  # the compile target
    why: str  # how the family was chosen


def dispatch(gpu: Gpu | None) -> Dispatch:
    """The family a call would use here. Raises UnsupportedArchError for a GPU or FA4_ARCH without one."""
    from fa4_core.arch import FA4_ARCH_ENV, arch_from_env
    from fa4_torch.dispatch import family_for_capability

    override = os.environ.get(FA4_ARCH_ENV, "").strip()
    if gpu is None:
        a = arch_from_env(DEFAULT_TARGET)
        why = f"{FA4_ARCH_ENV}={override}" if override else f"no GPU: the default target {DEFAULT_TARGET}"
        return Dispatch(family_for_capability(a.major, a.minor), a.target, why)
    import torch

    from fa4_torch.dispatch import device_family

    major, minor = gpu.capability
    if override:
        arch_from_env()  # a malformed FA4_ARCH raises naming the variable
    family = device_family(torch.device("cuda", gpu.index))
    why = f"{FA4_ARCH_ENV}={override}" if override else f"capability {major}.{minor}"
    if not override and major == 9:
        why += ": compat mode (SM120 tile table and 99 KB cap on a Hopper GPU)"
    return Dispatch(family, f"sm_{major}{minor} (the resident GPU)", why)


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def fmt_bytes(n: int) -> str:
    return f"{n:,} B"


# ---------------------------------------------------------------------------------- info
