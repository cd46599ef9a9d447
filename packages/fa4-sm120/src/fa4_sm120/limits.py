"""What the kernel classes support, as plain data (no DSL import), for host-side validation."""

from __future__ import annotations

__all__ = ["HEAD_DIMS", "DTYPE_NAMES", "MAX_SPLITS"]

HEAD_DIMS = (32, 64, 96, 128, 160, 192, 224, 256)  # multiples of 32 up to 256, for head_dim and head_dim_v
DTYPE_NAMES = ("float16", "bfloat16")
# split-KV: the most key splits the combine kernel merges (fa4_sm120.combine: each of the 32 lanes of
# a row's warp reads MAX_SPLITS / 32 partial LSEs)
MAX_SPLITS = 64
