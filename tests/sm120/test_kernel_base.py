"""``fa4_sm120.mma_sync.MmaSyncKernel``, the base of every kernel class (plain CPU tests, no compile):
each class checks its config on construction, answers ``supports`` without raising and builds fake
arguments for its ``__call__``; the dtype table is the one of ``limits``."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from fa4_core.errors import UnsupportedConfigError
from fa4_sm120.bwd import BwdConfig, FlashAttentionBackwardSm120
from fa4_sm120.bwd_pre_post import BwdPostprocess, BwdPreprocess, PrePostConfig
from fa4_sm120.combine import CombineConfig, SplitKVCombine
from fa4_sm120.fwd import FlashAttentionForwardSm120
from fa4_sm120.limits import DTYPE_NAMES
from fa4_sm120.mma_sync import DTYPES, MmaSyncKernel, launch_bounds
from fa4_sm120.tiles import fwd_config

# one valid config of each kernel class
CASES = [
    (FlashAttentionForwardSm120, fwd_config("sm120", "bfloat16", 128, 128, causal=True)),
    (FlashAttentionBackwardSm120, BwdConfig("float16", 64, 64)),
    (BwdPreprocess, PrePostConfig("bfloat16", 128, has_dlse=True)),
    (BwdPostprocess, PrePostConfig("float16", 64)),
    (SplitKVCombine, CombineConfig("bfloat16", 128, has_sink=True)),
]


def test_dtypes_are_the_limits_names():
    assert tuple(DTYPES) == DTYPE_NAMES


@pytest.mark.parametrize("cls, cfg", CASES, ids=[cls.__name__ for cls, _ in CASES])
def test_kernel_class_checks_supports_and_fakes_its_arguments(cls, cfg):
    assert issubclass(cls, MmaSyncKernel)
    assert cls.supports(cfg)
    kernel = cls(cfg)
    assert kernel.cfg is cfg and kernel.dtype is DTYPES[cfg.dtype]
    # one placeholder per argument of __call__ (self excluded)
    params = inspect.signature(cls.__call__).parameters
    assert len(cls.fake_args(cfg)) == len(params) - 1

    bad = dataclasses.replace(cfg, dtype="float32")
    assert not cls.supports(bad)
    with pytest.raises(UnsupportedConfigError, match="dtype.*float16, bfloat16"):
        cls(bad)


@pytest.mark.parametrize(
    "change, arg",
    [
        ({"tile_m": 64}, "tile_m"),  # one warp's 16 rows only
        ({"tile_n": 32}, "tile_n"),  # 16 keys per warp at least: a multiple of 64 for 4 warps
        ({"head_dim": 96, "head_dim_v": 96}, "head_dim"),  # one copy pass must fit the 16 rows
    ],
)
def test_warps_along_the_keys_refuse_what_they_cannot_split(change, arg):
    """``FwdConfig.warp_split_n`` (the FP8-cache decode rows): a config the split cannot serve is a
    typed error naming the field, before anything is traced."""
    cfg = fwd_config(
        "sm120", "bfloat16", 128, 128, causal=False, small_m=True, decode=True, kv_dtype="float8_e4m3fn"
    )
    assert cfg.warp_split_n and cfg.kv8_one_buffer and FlashAttentionForwardSm120.supports(cfg)
    bad = dataclasses.replace(cfg, **change)
    assert not FlashAttentionForwardSm120.supports(bad)
    with pytest.raises(UnsupportedConfigError, match=rf"^{arg}="):
        FlashAttentionForwardSm120(bad)


def test_launch_bounds_keywords():
    """No bound: no keywords; a bound: the DSL's ``min_blocks_per_mp`` and the driver's default carveout
    (without one the DSL would query the resident GPU, which a CPU build has not)."""
    assert launch_bounds(0) == {}
    assert launch_bounds(3) == {"min_blocks_per_mp": 3, "preferred_smem_carveout": -1}
