"""What the kernel classes support, as plain data (no DSL import), for host-side validation."""

from __future__ import annotations

__all__ = [
    "HEAD_DIMS",
    "DTYPE_NAMES",
    "MAX_SPLITS",
    "Q8_QK_FORMATS",
    "Q8_PV_ACCUMS",
    "Q8_HEAD_DIMS",
    "Q8_P_SCALE",
]

HEAD_DIMS = (32, 64, 96, 128, 160, 192, 224, 256)  # multiples of 32 up to 256, for head_dim and head_dim_v
DTYPE_NAMES = ("float16", "bfloat16")
# split-KV: the most key splits the combine kernel merges (fa4_sm120.combine: each of the 32 lanes of
# a row's warp reads MAX_SPLITS / 32 partial LSEs)
MAX_SPLITS = 64

# the 8-bit forward (fa4_sm120.fwd_q8): Q·Kᵀ formats, P·V accumulators, head dims; P (at most
# 2^rescale_threshold <= 2^0.5 with the lazy rescale) is scaled by Q8_P_SCALE into e4m3 (max 448)
Q8_QK_FORMATS = ("int8", "fp8")
Q8_PV_ACCUMS = ("fp32", "fp16")
Q8_HEAD_DIMS = (64, 128, 256)  # INT8 scores stay below 2^22 up to 256 (256 * 127 * 127)
Q8_P_SCALE = 256.0
