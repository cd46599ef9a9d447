"""The tile table and ``can_implement`` (plain CPU tests, no compile)."""

from __future__ import annotations

import dataclasses

import pytest

from fa4_core.arch import parse_arch, smem_capacity
from fa4_core.errors import UnsupportedArchError, UnsupportedConfigError
from fa4_sm120.configs import fwd_codegen
from fa4_sm120.fwd import HEAD_DIMS, FlashAttentionForwardSm120, FwdConfig
from fa4_sm120.smem import fwd_smem_bytes
from fa4_sm120.tiles import FAMILIES, FWD_TABLE, fwd_config, select_fwd_tile, selecting_args


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
    keys = [(r.family, r.head_dim, r.head_dim_v, r.dtypes, r.causal, r.small_m, r.decode) for r in FWD_TABLE]
    assert len(keys) == len(set(keys))


def test_small_m_rows_only_for_small_m_calls():
    """Decode-shaped calls (at most SMALL_M_ROWS query rows per tile) take the 64-row rows, whatever
    their features; other calls never do; head dims without a small-m row keep their own row."""
    from fa4_sm120.tiles import SMALL_M_ROWS

    assert SMALL_M_ROWS == 64
    for d, dv in ((32, 32), (64, 64), (96, 96), (128, 128), (160, 160), (192, 128), (192, 192)):
        for kw in ({}, dict(split_kv=True), dict(local=True), dict(softcap=True)):
            for causal in (False, True):
                cfg = fwd_config("sm120", "bfloat16", d, dv, causal=causal, small_m=True, **kw)
                assert (cfg.tile_m, cfg.num_threads) == (64, 128), (d, dv, kw, causal)
                big = fwd_config("sm120", "bfloat16", d, dv, causal=causal, **kw)
                # causal d96 and d128 have 64-row rows of their own (not small-m rows: 4 warps, 64x64)
                own = causal and d in (96, 128)
                assert big.tile_m == (64 if own else 128), (d, dv, kw, causal)
    assert fwd_config("sm120", "bfloat16", 128, 128, causal=False, small_m=True).tile_n == 64
    for d in (224, 256):  # their rows are 64-row already
        a = fwd_config("sm120", "bfloat16", d, d, causal=True, small_m=True)
        assert a == fwd_config("sm120", "bfloat16", d, d, causal=True)
    for family in ("sm86", "sm80"):  # no small-m rows there: small_m changes nothing
        assert fwd_config(family, "bfloat16", 128, 128, causal=False, small_m=True) == fwd_config(
            family, "bfloat16", 128, 128, causal=False
        )
    for row in FWD_TABLE:
        if row.small_m:
            expect = {"small_m": True}
            if row.decode:
                expect.update(decode=True, kv_dtype="float8_e4m3fn")
            assert selecting_args(row, row.causal[0]) == expect
            assert row.tile_m <= SMALL_M_ROWS and not row.plain_only, row


def test_decode_rows_only_for_decode_calls():
    """FP8-cache calls of at most DECODE_ROWS query rows per tile take a decode row (16 rows, the
    warps along the keys) where their head dims have one, whatever their features; small-m calls of more rows
    and head dims without a decode row keep the 64-row rows."""
    from fa4_sm120.tiles import DECODE_ROWS, wants_decode

    assert DECODE_ROWS == 16 and wants_decode(16, "float8_e4m3fn") and not wants_decode(17, "float8_e4m3fn")
    assert not wants_decode(1, None)  # a 16-bit cache keeps the 64-row rows
    for d in (64, 128):
        for kw in ({}, dict(split_kv=True), dict(local=True), dict(softcap=True)):
            for kv in ("float8_e4m3fn",):
                cfg = fwd_config(
                    "sm120", "bfloat16", d, d, causal=True, small_m=True, decode=True, kv_dtype=kv, **kw
                )
                assert (cfg.tile_m, cfg.num_threads, cfg.warp_split_n) == (16, 128, True), (d, kw, kv)
                assert cfg.tile_n % (16 * cfg.num_warps) == 0
                cfg = fwd_config("sm120", "bfloat16", d, d, causal=True, small_m=True, kv_dtype=kv, **kw)
                assert (cfg.tile_m, cfg.warp_split_n) == (64, False), (d, kw, kv)
    for d in (64, 128):  # a 16-bit cache: the small-m row
        a = fwd_config("sm120", "bfloat16", d, d, causal=False, small_m=True, decode=True)
        assert a == fwd_config("sm120", "bfloat16", d, d, causal=False, small_m=True)
    for d in (32, 96, 192):  # no decode row: the small-m row
        a = fwd_config("sm120", "bfloat16", d, d, causal=False, small_m=True, decode=True)
        assert a == fwd_config("sm120", "bfloat16", d, d, causal=False, small_m=True)
    for family in ("sm86", "sm80"):
        a = fwd_config(family, "bfloat16", 128, 128, causal=False, small_m=True, decode=True)
        assert not a.warp_split_n


# ---- the backward table and the warp split of its tiled MMA
@pytest.mark.parametrize(
    "fields, arg",
    [
        (dict(mma_warps_n=3), "mma_warps_n"),  # not 1, 2 or 4
        (dict(num_threads=64, mma_warps_n=4), "mma_warps_n"),  # 2 warps cannot split 4 ways
        (dict(tile_m=32, tile_n=32), "tile_m"),  # 4 warps along M need 64 rows
        (dict(tile_m=48), "tile_m"),  # not a multiple of 32
        (dict(head_dim=256, head_dim_v=256), "shared memory"),  # 64x64 at d256 needs 147,456 B
        (dict(tile_m=32, tile_n=32, mma_warps_n=4, num_threads=256), "tile_n"),  # N over 4 warps: 64
        (dict(head_dim=224, head_dim_v=224, tile_m=32, tile_n=32, num_threads=256, mma_warps_n=2), "tile_m"),
    ],
)
def test_bwd_can_implement_names_the_violated_constraint(fields, arg):
    from fa4_sm120.bwd import BwdConfig, FlashAttentionBackwardSm120

    cfg = dataclasses.replace(BwdConfig("bfloat16", 128, 128), **fields)
    with pytest.raises(UnsupportedConfigError, match=arg):
        FlashAttentionBackwardSm120.can_implement(cfg)
    assert not FlashAttentionBackwardSm120.supports(cfg)


def test_every_bwd_row_is_implementable_and_the_large_dims_split_n():
    from fa4_sm120.bwd import BWD_HEAD_DIMS, FlashAttentionBackwardSm120
    from fa4_sm120.bwd_tiles import BWD_TABLE, bwd_config

    dims = set()
    for row in BWD_TABLE:
        cfg = bwd_config(row.family, "bfloat16", row.head_dim, row.head_dim_v, causal=True, dsink=True)
        FlashAttentionBackwardSm120.can_implement(cfg)
        assert cfg.dq_from_regs == (cfg.mma_warps_n == 1)
        dims.add(row.head_dim)
    assert dims == set(BWD_HEAD_DIMS)
    for d in (192, 224, 256):  # the rows that only fit 99 KB with 32-row tiles
        cfg = bwd_config("sm120", "bfloat16", d, d, causal=False)
        assert cfg.mma_warps_n == 2 and 32 in (cfg.tile_m, cfg.tile_n)


def test_plain_only_row_is_skipped_for_windows_split_kv_and_softcap():
    """d96 and d128 non-causal: the 4-warp row for plain calls; a local window, split-KV or softcap
    takes the 8-warp row (whose sm_120a build of those variants does not spill; the 4-warp softcap
    build spills 8-12 B); causal never sees the 4-warp row (it has the 64x64 row over 4 warps)."""
    for d, tile_n in ((96, 64), (128, 32)):
        plain = fwd_config("sm120", "bfloat16", d, d, causal=False)
        assert (plain.tile_m, plain.tile_n, plain.num_threads) == (128, tile_n, 128), d
        for kw in (dict(local=True), dict(split_kv=True), dict(softcap=True)):
            cfg = fwd_config("sm120", "bfloat16", d, d, causal=False, **kw)
            assert (cfg.tile_m, cfg.tile_n, cfg.num_threads) == (128, 64, 256), (d, kw)
        causal = fwd_config("sm120", "bfloat16", d, d, causal=True)
        assert (causal.tile_m, causal.tile_n, causal.num_threads) == (64, 64, 128), d
    assert fwd_config("sm120", "bfloat16", 128, 128, causal=False, split_kv=True).split_kv
    assert fwd_config("sm120", "bfloat16", 128, 128, causal=False, softcap=True).has_softcap
    causal = fwd_config("sm120", "float16", 128, 128, causal=True)  # its own 64-row row
    assert (causal.tile_m, causal.tile_n, causal.num_threads) == (64, 64, 128)
    for d, dv in ((128, 64), (64, 128), (96, 128)):  # mixed dims falling back to the d128 rows
        mixed = fwd_config("sm120", "bfloat16", d, dv, causal=False)
        assert (mixed.tile_n, mixed.num_threads) == (64, 256), (d, dv)
    for row in FWD_TABLE:
        if row.plain_only:
            assert row.causal == (False,), row


def test_bwd_with_candidate_flags():
    """A sweep candidate's letters map to the row's flags, a letter left out is off, and an unknown
    letter is a typed error naming it."""
    from fa4_core.errors import UnsupportedConfigError
    from fa4_sm120.bwd_tiles import select_bwd_tile, with_candidate

    row = select_bwd_tile("sm120", 128, 128)
    cand = with_candidate(row, 64, 64, 128, 1, "vl")
    assert (cand.tile_m, cand.tile_n, cand.num_threads, cand.mma_warps_n) == (64, 64, 128, 1)
    assert (cand.vector_dq_red, cand.early_loads, cand.longest_first) == (True, False, True)
    plain = with_candidate(row, 64, 64, 128, 1)
    assert (plain.vector_dq_red, plain.early_loads, plain.longest_first) == (False, False, False)
    with pytest.raises(UnsupportedConfigError, match="flags.*'vx'"):
        with_candidate(row, 64, 64, 128, 1, "vx")


def test_bwd_sdp_grid():
    """S and dP on their own warp grid: d64 (``s``) 64x128 over 4x2 with S/dP over 2x4, d128 (``k``)
    32x128 over 2x4 with S/dP over 1x8, both with V's dP fragments in registers (``r``); the other
    rows keep one grid (``sdp_warps_n`` 0) and dS in registers where they did. ``s`` and ``k``
    together, and a grid the tile cannot hold, are typed errors."""
    import dataclasses

    from fa4_core.errors import UnsupportedConfigError
    from fa4_sm120 import bwd_tiles
    from fa4_sm120.bwd import FlashAttentionBackwardSm120

    cfg = bwd_tiles.bwd_config("sm120", "bfloat16", 64, 64, causal=True)
    assert (cfg.mma_warps_m, cfg.mma_warps_n, cfg.sdp_wm, cfg.sdp_wn) == (4, 2, 2, 4)
    assert not cfg.dq_from_regs and cfg.v_in_regs
    FlashAttentionBackwardSm120.can_implement(cfg)
    k_cfg = bwd_tiles.bwd_config("sm120", "bfloat16", 128, 128, causal=False)
    assert (k_cfg.sdp_wm, k_cfg.sdp_wn, k_cfg.mma_warps_n, k_cfg.v_in_regs) == (1, 8, 4, True)
    FlashAttentionBackwardSm120.can_implement(k_cfg)
    for row in bwd_tiles.BWD_TABLE:
        if row.sdp_transposed or row.sdp_keys:
            continue
        sel = bwd_tiles.bwd_selecting_args(row)  # the former d64/d128 rows serve what the new ones exclude
        shipped = bwd_tiles.bwd_config("sm120", "bfloat16", row.head_dim, row.head_dim_v, causal=False, **sel)
        assert (shipped.tile_m, shipped.tile_n, shipped.mma_warps_n) == (
            row.tile_m,
            row.tile_n,
            row.mma_warps_n,
        )
        assert shipped.sdp_warps_n == 0 and shipped.sdp_wn == shipped.mma_warps_n and not shipped.v_in_regs
        assert shipped.dq_from_regs == (row.mma_warps_n == 1)
    b128 = bwd_tiles.select_bwd_tile("sm120", 128, 128)
    with pytest.raises(UnsupportedConfigError, match="flags.*'vsk'"):
        bwd_tiles.with_candidate(b128, 32, 128, 256, 4, "vsk")
    # d128's 32-row tile cannot put 4 warps along its rows
    with pytest.raises(UnsupportedConfigError, match="tile_m"):
        FlashAttentionBackwardSm120.can_implement(dataclasses.replace(k_cfg, sdp_warps_n=2))


def test_bwd_row_excludes_features():
    """A row with ``excludes`` serves the calls with none of those flags on; the next row of its head
    dims serves the rest (d128: varlen, seqused, deterministic, softcap and the sink gradient, whose builds
    with V in registers spill); a candidate drops them; an unknown feature is a typed error."""
    from fa4_core.errors import UnsupportedConfigError
    from fa4_sm120 import bwd_tiles

    first, second = (r for r in bwd_tiles.BWD_TABLE if r.head_dim == 128)
    assert first.excludes and not second.excludes
    for on in ({}, {"causal": True}, {"local": True}, {"causal": True, "local": True}):
        assert bwd_tiles.select_bwd_tile("sm120", 128, 128, **on) is first
        assert bwd_tiles.bwd_config("sm120", "bfloat16", 128, 128, **{"causal": False, **on}).v_in_regs
    for flag in sorted(first.excludes):
        assert bwd_tiles.select_bwd_tile("sm120", 128, 128, **{flag: True}) is second
        assert not bwd_tiles.select_bwd_tile("sm120", 128, 128, **{flag: False}).excludes.isdisjoint({flag})
        cfg = bwd_tiles.bwd_config("sm120", "bfloat16", 128, 128, causal=True, **{flag: True})
        assert (cfg.sdp_warps_n, cfg.v_in_regs, cfg.early_loads) == (0, False, True)
    assert not bwd_tiles.with_candidate(first, 32, 128, 256, 4, "velkr").excludes
    for row in bwd_tiles.BWD_TABLE:  # every row is reachable, under the flags bwd_selecting_args names
        sel = bwd_tiles.bwd_selecting_args(row)
        assert bwd_tiles.select_bwd_tile(row.family, row.head_dim, row.head_dim_v, **sel) is row
    assert bwd_tiles.bwd_selecting_args(second) == {"deterministic": True}
    with pytest.raises(UnsupportedConfigError, match="features.*'windowed'"):
        bwd_tiles.select_bwd_tile("sm120", 128, 128, windowed=True)


def test_few_tile_calls_take_the_small_m_rows_only_with_idle_sms():
    """``wants_small_m``: decode-sized rows always; longer rows only when the call's 128-row tiles
    (m-blocks x heads x batch) are fewer than the SMs, and only when the SM count is known."""
    from fa4_sm120 import tiles

    assert tiles.wants_small_m(64, 1000, 1000)  # decode: whatever the tile count
    assert not tiles.wants_small_m(65, 1, 1)  # no SM count (CPU): the decode rule alone
    # 1024 rows = 8 m-blocks; x 16 heads = 128 tiles: < 132 SMs, not < 128
    assert tiles.wants_small_m(1024, 16, 1, num_sms=132)
    assert not tiles.wants_small_m(1024, 16, 1, num_sms=128)
    assert not tiles.wants_small_m(1024, 16, 2, num_sms=132)  # 256 tiles
    assert tiles.wants_small_m(8192, 1, 2, num_sms=132)  # GQA 16/1 packed: 64 m-blocks x 2
    assert tiles.wants_small_m(129, 64, 1, num_sms=132) is True  # 2 m-blocks x 64 = 128
    assert tiles.wants_small_m(1, 16, 1, num_sms=132)


def test_lazy_rescale_rule():
    """The forward keeps a warp's exp2 offsets until a row max grows by more than 2^0.5 (measured faster;
    a larger threshold costs accuracy against SDPA flash: tests/torch/test_accuracy_gpu.py)
    for dv >= 128 and for warps whose threads hold >= 96 O accumulators (d96 on 32-row warps); the
    other rows (d64 on 32-row warps, d96 on 16-row warps, d32) rescale on every new max."""

    def threshold(d, causal=False, **kw):
        return fwd_codegen(fwd_config("sm120", "bfloat16", d, d, causal=causal, **kw)).rescale_threshold

    assert threshold(96) == threshold(128) == threshold(128, causal=True) == threshold(256) == 0.5
    assert threshold(96, causal=True) == threshold(96, split_kv=True) == threshold(64) == 0.0
    assert threshold(32) == threshold(96, small_m=True) == 0.0


def test_codegen_is_in_the_config_and_a_set_field_overrides_the_rule():
    """Every code-generation choice is a field of ``FwdConfig.codegen`` (so it is in every compile
    key): None takes the rule, a value forces it, and the kernel reads the resolved choices."""
    from fa4_sm120.configs import FwdCodegen

    base = fwd_config("sm120", "bfloat16", 128, 128, causal=False)
    assert base.codegen == FwdCodegen()
    forced = dataclasses.replace(base, codegen=FwdCodegen(rescale_threshold=0.0, pv_split=1))
    assert forced != base and hash(forced) != hash(base)
    gen, gen_forced = fwd_codegen(base), fwd_codegen(forced)
    assert (gen.pv_split, gen.qk_prefetch) == (2, False)
    assert (gen_forced.rescale_threshold, gen_forced.pv_split, gen_forced.qk_prefetch) == (0.0, 1, True)
    assert None not in dataclasses.astuple(gen_forced)
    kernel = FlashAttentionForwardSm120(forced)
    assert (kernel.rescale_threshold, kernel.pv_split) == (0.0, 1)


def test_kv8_one_buffer_rule_and_its_shared_memory():
    """``FwdCodegen.kv8_one_buffer``: by rule on the FP8 decode rows, and on the other FP8 rows where it
    raises the CTAs per SM120 SM (d128: one to two, at the 16-bit cache's shared memory; d192 with its
    32-key FP8 tiles), off where it does not (d64, d160); forced off, the d128 rows need more shared
    memory than over a 16-bit cache; without an FP8 cache or with unequal head dims it stays off
    whatever the field says."""
    from fa4_sm120.configs import FwdCodegen
    from fa4_sm120.occupancy import ctas_per_sm

    fp8 = "float8_e4m3fn"
    decode = fwd_config("sm120", "bfloat16", 128, 128, causal=True, small_m=True, decode=True, kv_dtype=fp8)
    assert decode.kv8_one_buffer
    for causal, small_m in ((False, False), (True, False), (True, True)):
        bf16 = fwd_config("sm120", "bfloat16", 128, 128, causal=causal, small_m=small_m)
        cfg = fwd_config("sm120", "bfloat16", 128, 128, causal=causal, small_m=small_m, kv_dtype=fp8)
        assert cfg.kv8_one_buffer and cfg.smem_bytes == bf16.smem_bytes == 49_152
        assert ctas_per_sm(cfg.smem_bytes, 255, cfg.num_threads) == 2
        two = dataclasses.replace(cfg, codegen=FwdCodegen(kv8_one_buffer=False))
        assert not two.kv8_one_buffer and ctas_per_sm(two.smem_bytes, 255, two.num_threads) == 1
    for head_dim in (64, 160):
        for small_m in (False, True):
            cfg = fwd_config(
                "sm120", "bfloat16", head_dim, head_dim, causal=True, small_m=small_m, kv_dtype=fp8
            )
            assert not cfg.kv8_one_buffer
    for small_m in (False, True):  # d192: key tiles of 32 (tiles.KV8_WIDE_HEAD_DIM), then two CTAs per SM
        cfg = fwd_config("sm120", "bfloat16", 192, 192, causal=True, small_m=small_m, kv_dtype=fp8)
        assert (cfg.tile_n, cfg.kv8_one_buffer, cfg.smem_bytes) == (32, True, 49_152)
    forced = FwdCodegen(kv8_one_buffer=True)
    plain = fwd_config("sm120", "bfloat16", 128, 128, causal=True)
    assert not dataclasses.replace(plain, codegen=forced).kv8_one_buffer
    mixed = fwd_config("sm120", "bfloat16", 192, 128, causal=True, small_m=True, kv_dtype=fp8)
    assert not dataclasses.replace(mixed, codegen=forced).kv8_one_buffer


def test_page_offsets32_rule():
    """``FwdCodegen.page_offsets32``: by rule on for paged K/V of an FP8 cache (whose strides
    ``fa4_torch.validate`` checks against ``PAGE_OFFSET32_LIMIT``), off over a 16-bit cache and without
    pages; a set field overrides the rule."""
    from fa4_sm120.configs import FwdCodegen

    fp8 = "float8_e4m3fn"
    for small_m, decode in ((True, True), (True, False), (False, False)):
        cfg = fwd_config(
            "sm120", "bfloat16", 128, 128, causal=True, small_m=small_m, decode=decode, kv_dtype=fp8
        )
        bf16 = fwd_config("sm120", "bfloat16", 128, 128, causal=True, small_m=small_m)
        assert fwd_codegen(dataclasses.replace(cfg, paged_kv=True)).page_offsets32
        assert not fwd_codegen(cfg).page_offsets32
        assert not fwd_codegen(dataclasses.replace(bf16, paged_kv=True)).page_offsets32
        off = dataclasses.replace(cfg, paged_kv=True, codegen=FwdCodegen(page_offsets32=False))
        assert not fwd_codegen(off).page_offsets32


def test_page_tiles_rule():
    """``FwdCodegen.page_tiles``: on with ``page_offsets32`` where the pages hold whole key tiles
    (``pages_hold_tiles``), else off whatever the field says; a field set to False keeps the row-by-row
    addressing (the A/B of the benchmarks)."""
    from fa4_sm120.configs import FwdCodegen

    for small_m, decode in ((True, True), (True, False), (False, False)):
        cfg = fwd_config(
            "sm120",
            "bfloat16",
            128,
            128,
            causal=True,
            small_m=small_m,
            decode=decode,
            kv_dtype="float8_e4m3fn",
        )
        paged = dataclasses.replace(cfg, paged_kv=True)
        whole = dataclasses.replace(paged, pages_hold_tiles=True)
        assert fwd_codegen(whole).page_tiles
        assert not fwd_codegen(paged).page_tiles
        assert not fwd_codegen(dataclasses.replace(whole, codegen=FwdCodegen(page_tiles=False))).page_tiles
        assert not fwd_codegen(
            dataclasses.replace(whole, codegen=FwdCodegen(page_offsets32=False))
        ).page_tiles
        assert not fwd_codegen(dataclasses.replace(paged, codegen=FwdCodegen(page_tiles=True))).page_tiles
        bf16 = fwd_config("sm120", "bfloat16", 128, 128, causal=True, small_m=small_m)
        assert not fwd_codegen(dataclasses.replace(bf16, paged_kv=True, pages_hold_tiles=True)).page_tiles
    # the exceptions (their sm_120a builds spill with it; tools/kv8_spill_sweep.py): the d128 prefill
    # tile of 32 rows per warp with varlen q under pack-GQA, and a window, softcap and split keys off the
    # decode rows
    fp8 = dict(kv_dtype="float8_e4m3fn")
    pack = dict(pack_gqa=True, qhead_per_kvhead=4)
    wide = fwd_config("sm120", "float16", 128, 128, causal=False, **pack, **fp8)
    assert wide.rows_per_warp >= 32
    whole = dict(paged_kv=True, pages_hold_tiles=True)
    assert fwd_codegen(dataclasses.replace(wide, **whole)).page_tiles
    assert not fwd_codegen(dataclasses.replace(wide, varlen_q=True, **whole)).page_tiles
    flags = dict(local=True, softcap=True, split_kv=True)
    for small_m, decode, on in ((True, True, True), (True, False, False), (False, False, False)):
        cfg = fwd_config(
            "sm120", "float16", 128, 128, causal=True, small_m=small_m, decode=decode, **flags, **fp8
        )
        cfg = dataclasses.replace(cfg, has_softcap=True, is_local=True, **whole)
        assert fwd_codegen(cfg).page_tiles == on, (small_m, decode)


def test_prefetch_pages_rule_over_an_fp8_cache():
    """``FwdCodegen.prefetch_pages``: paged K/V look pages up a block ahead, except over an FP8 cache
    with softcap and a window, or off the decode rows with split keys under pack-GQA with a window or
    varlen q (their sm_120a builds spill with it; ``tools/kv8_spill_sweep.py``)."""
    fp8 = "float8_e4m3fn"

    def prefetch(small_m=False, decode=False, **flags):
        kw = {k: flags.pop(k) for k in ("local", "softcap", "split_kv") if k in flags}
        cfg = fwd_config(
            "sm120", "bfloat16", 128, 128, causal=True, pack_gqa=True, qhead_per_kvhead=4, small_m=small_m,
            decode=decode, kv_dtype=fp8, **kw,
        )  # fmt: skip
        return fwd_codegen(
            dataclasses.replace(cfg, paged_kv=True, has_seqused_k=True, **flags)
        ).prefetch_pages

    assert prefetch() and prefetch(split_kv=True) and prefetch(local=True)
    assert not prefetch(split_kv=True, local=True) and not prefetch(split_kv=True, varlen_q=True)
    assert not prefetch(small_m=True, split_kv=True, local=True)
    assert prefetch(small_m=True, decode=True, split_kv=True, local=True)  # the decode rows keep it
    assert not prefetch(small_m=True, decode=True, softcap=True, local=True)


def test_qk_prefetch_rule_over_an_fp8_cache():
    """``FwdCodegen.qk_prefetch`` is off over an FP8 cache at dv 64 off the decode rows with softcap and
    split keys (the 64-row tile's sm_120a build spills 4 B with it), on elsewhere it would be."""
    fp8 = "float8_e4m3fn"

    def qk(d=64, kv_dtype=fp8, decode=False, **kw):
        cfg = fwd_config(
            "sm120", "bfloat16", d, d, causal=False, small_m=True, decode=decode, kv_dtype=kv_dtype, **kw
        )
        return fwd_codegen(cfg).qk_prefetch

    assert not qk(softcap=True, split_kv=True)
    assert qk(softcap=True) and qk(split_kv=True) and qk(kv_dtype=None, softcap=True, split_kv=True)
    assert qk(decode=True, softcap=True, split_kv=True)


def test_codegen_fields_parse_the_tools_arguments():
    from fa4_core.errors import UnsupportedConfigError
    from fa4_sm120.configs import codegen_fields

    got = codegen_fields(["kv8_one_buffer=1", "rescale_threshold=0.5", "pv_split=2", "late_v_wait=0"])
    assert got == {"kv8_one_buffer": True, "rescale_threshold": 0.5, "pv_split": 2, "late_v_wait": False}
    for bad in ("no_such_field=1", "pv_split"):
        with pytest.raises(UnsupportedConfigError, match="codegen"):
            codegen_fields([bad])


def test_late_v_wait_rule_keeps_the_early_wait_where_sm_120a_would_spill():
    """``FwdCodegen.late_v_wait`` (None: the rule): V is waited for just before P·V on every build but those
    whose sm_120a build spills with it (pack-GQA with varlen or a window; fp16 on the d64 4-warp
    128-row tile); tests/sm120/test_fwd_compile.py compiles them all."""

    def late(dtype, d, causal=False, **kw):
        flags = {k: kw.pop(k) for k in ("varlen_q", "varlen_k", "has_seqused_k") if k in kw}
        cfg = dataclasses.replace(fwd_config("sm120", dtype, d, d, causal=causal, **kw), **flags)
        return fwd_codegen(cfg).late_v_wait

    assert late("bfloat16", 128) and late("float16", 128) and late("bfloat16", 64)
    assert late("bfloat16", 128, causal=True, pack_gqa=True, qhead_per_kvhead=4)
    assert late("bfloat16", 256, causal=True) and late("bfloat16", 96)
    assert not late("float16", 64)  # the 4-warp 128x64 row: 4 B spill
    assert not late("bfloat16", 128, pack_gqa=True, qhead_per_kvhead=4, varlen_q=True, varlen_k=True)
    assert not late("bfloat16", 64, causal=True, local=True, pack_gqa=True, qhead_per_kvhead=4)


def test_variants_enumerate_the_tables():
    """``fa4_sm120.variants``: the head-dim pairs of each table and one config per forward row x dtype
    x causal (what the compile tests and ``fa4 check`` compile)."""
    from fa4_sm120.bwd_tiles import BWD_TABLE
    from fa4_sm120.tiles import FWD_TABLE
    from fa4_sm120.variants import bwd_head_dim_pairs, fwd_head_dim_pairs, fwd_row_variants, ptx_problems

    for family in ("sm120", "sm86", "sm80"):
        assert set(fwd_head_dim_pairs(family)) == {
            (r.head_dim, r.head_dim_v) for r in FWD_TABLE if r.family == family
        }
    assert set(bwd_head_dim_pairs()) == {(r.head_dim, r.head_dim_v) for r in BWD_TABLE}
    variants = list(fwd_row_variants("sm120"))
    assert len(variants) == sum(len(r.dtypes) * len(r.causal) for r in FWD_TABLE if r.family == "sm120")
    for row, dtype, causal, cfg in variants:
        assert (cfg.dtype, cfg.is_causal, cfg.head_dim, cfg.head_dim_v) == (
            dtype, causal, row.head_dim, row.head_dim_v,
        )  # fmt: skip
    good = ".target sm_120a\nmma.sync.aligned.m16n8k16.row.col"
    assert ptx_problems(good, "sm_120a") == []
    assert len(ptx_problems(".target sm_90a\nstmatrix wgmma", "sm_120a")) == 4
    assert ptx_problems(".target sm_120a", "sm_120a", mma=False) == []


def test_max_splits_is_plain_data():
    from fa4_sm120.limits import MAX_SPLITS

    assert MAX_SPLITS == 64  # each of a warp's 32 lanes reads MAX_SPLITS / 32 partial LSEs


def test_launch_bounds_match_the_shared_memory_limit():
    """A row's launch bound (``FwdTile.min_ctas_per_sm``) is the CTA count per SM120 SM that its shared
    memory (with an FP8 cache's staging tiles, where it serves one) already allows: it hands ptxas the
    registers those CTAs leave, never fewer CTAs than the row runs."""
    from fa4_sm120.occupancy import ctas_per_sm

    bounded = [row for row in FWD_TABLE if row.min_ctas_per_sm]
    assert bounded, "the d128 decode row is bounded"
    for row in bounded:
        kw = selecting_args(row, row.causal[0])
        cfg = fwd_config(row.family, row.dtypes[0], row.head_dim, row.head_dim_v, causal=row.causal[0], **kw)
        assert cfg.codegen.min_ctas_per_sm == row.min_ctas_per_sm
        assert ctas_per_sm(cfg.smem_bytes, 1, cfg.num_threads) == row.min_ctas_per_sm, row
    for row in FWD_TABLE:
        if not row.min_ctas_per_sm:
            kw = selecting_args(row, row.causal[0])
            cfg = fwd_config(
                row.family, row.dtypes[0], row.head_dim, row.head_dim_v, causal=row.causal[0], **kw
            )
            assert cfg.codegen.min_ctas_per_sm == 0
