"""The tile table and ``can_implement`` (plain CPU tests, no compile)."""

from __future__ import annotations

import dataclasses

import pytest

from fa4_core.arch import parse_arch, smem_capacity
from fa4_core.errors import UnsupportedArchError, UnsupportedConfigError
from fa4_sm120.fwd import HEAD_DIMS, FlashAttentionForwardSm120, FwdConfig
from fa4_sm120.smem import fwd_smem_bytes
from fa4_sm120.tiles import FAMILIES, FWD_TABLE, fwd_config, select_fwd_tile


def test_smem_formula_matches_the_comment_arithmetic():
    # 2 B * (tile_m * max(d, dv) + tile_n * (d + dv)) for one stage
    assert fwd_smem_bytes(128, 64, 128, 128, 1) == 2 * (128 * 128 + 64 * 256) == 65_536
    assert fwd_smem_bytes(128, 64, 192, 128, 1) == 2 * (128 * 192 + 64 * 320) == 90_112


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("d", HEAD_DIMS)
@pytest.mark.parametrize("causal", [False, True])
def test_every_supported_head_dim_has_a_fitting_row(family, d, causal):
    cfg = fwd_config(family, "float16", d, d, causal=causal)
    FlashAttentionForwardSm120.can_implement(cfg)


@pytest.mark.parametrize("dv", HEAD_DIMS)
def test_mixed_head_dims_fall_back_to_the_max_row(dv):
    cfg = fwd_config("sm120", "bfloat16", 192, dv, causal=True)
    FlashAttentionForwardSm120.can_implement(cfg)
    assert cfg.smem_bytes <= smem_capacity(parse_arch("sm_120a"))


def test_unsupported_head_dim_names_the_argument():
    with pytest.raises(UnsupportedConfigError, match=r"head_dim.*\(80, 80\)"):
        select_fwd_tile("sm120", "bfloat16", 80, 80, False)


def test_unknown_family_is_an_arch_error():
    with pytest.raises(UnsupportedArchError, match="sm75"):
        fwd_config("sm75", "bfloat16", 64, 64, causal=False)


def test_can_implement_rejects_what_does_not_fit():
    too_big = FwdConfig("bfloat16", 256, 256, 128, 128, 256)
    with pytest.raises(UnsupportedConfigError, match="shared memory"):
        FlashAttentionForwardSm120.can_implement(too_big)
    assert not FlashAttentionForwardSm120.supports(too_big)
    with pytest.raises(UnsupportedConfigError, match="dtype"):
        FlashAttentionForwardSm120.can_implement(dataclasses.replace(too_big, dtype="float32"))
    with pytest.raises(UnsupportedConfigError, match="tile_m"):
        FlashAttentionForwardSm120.can_implement(FwdConfig("bfloat16", 64, 64, 48, 64, 128))
    with pytest.raises(UnsupportedConfigError, match="qhead_per_kvhead"):
        FlashAttentionForwardSm120.can_implement(
            FwdConfig("bfloat16", 64, 64, 128, 64, 128, qhead_per_kvhead=4)
        )


def test_table_rows_are_unique():
    keys = [(r.family, r.head_dim, r.head_dim_v, r.dtypes, r.causal) for r in FWD_TABLE]
    assert len(keys) == len(set(keys))
