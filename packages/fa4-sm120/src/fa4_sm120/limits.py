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
    "PAGE_OFFSET32_LIMIT",
]

HEAD_DIMS = (32, 64, 96, 128, 160, 192, 224, 256)  # multiples of 32 up to 256, for head_dim and head_dim_v
DTYPE_NAMES = ("float16", "bfloat16")
# split-KV: the most key splits the combine kernel merges (fa4_sm120.combine: each of the 32 lanes of
# a row's warp reads MAX_SPLITS / 32 partial LSEs)
MAX_SPLITS = 64
# paged K/V over an FP8 cache (FwdCodegen.page_offsets32): a row's offset from its KV head's element 0
# is page * stride(0) (64-bit) plus row-in-page * stride(1) in 32 bits, the head's offset head *
# stride(2) in 32 bits; so stride(0), (page_size - 1) * stride(1) and (nheads_kv - 1) * stride(2) of
# the cache stay below this many elements
PAGE_OFFSET32_LIMIT = 2**31

# the 8-bit forward (fa4_sm120.fwd_q8): Q·Kᵀ formats, P·V accumulators, head dims; P (at most
# 2^rescale_threshold <= 2^0.5 with the lazy rescale) is scaled by Q8_P_SCALE into e4m3 (max 448)
Q8_QK_FORMATS = ("int8", "fp8")
Q8_PV_ACCUMS = ("fp32", "fp16")
Q8_HEAD_DIMS = (64, 128, 256)  # INT8 scores stay below 2^22 up to 256 (256 * 127 * 127)
Q8_P_SCALE = 256.0
