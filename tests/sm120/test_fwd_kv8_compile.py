"""Every forward variant with an FP8 (e4m3) K/V cache that the tile tables pick compiles for
``sm_120a`` on the CPU without spills: its PTX fetches K/V with ``cp.async`` of 8-bit elements,
widens them with ``cvt.rn.f16x2.e4m3x2`` and keeps the 16-bit ``mma.sync.aligned.m16n8k16``.

Variants: decode's rows (the 16-row decode rows of d64 and d128, the 64-row small-m rows of the others
and of chunks of up to 64 query rows), with the serving flags the kvcache path sets (contiguous / paged K/V, cache slots, split-KV, pack-GQA, softcap, sinks, windows),
both dtypes, and the rows longer query chunks take (prefill over the cache). The decode rows build
with their early loads (``FwdCodegen.kv8_early_loads``), bf16 queries on fp16 MMAs
(``FwdCodegen.kv8_f16_mma``).
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from fa4_core.arch import parse_arch, smem_capacity
from fa4_core.errors import UnsupportedConfigError
from fa4_sm120.compile import compile_fwd, ptxas_resources
from fa4_sm120.configs import kv8_copy
from fa4_sm120.fwd import FlashAttentionForwardSm120, FwdConfig
from fa4_sm120.tiles import fwd_config
from fa4_sm120.variants import ptx_problems

pytestmark = pytest.mark.compile_only

FP8 = "float8_e4m3fn"
# what flash_attn_with_kvcache / flash_attn_varlen_func set around an FP8 cache
SERVING = (
    dict(has_seqused_k=True),  # contiguous cache, cache_seqlens
    dict(has_seqused_k=True, split_kv=True),
    dict(paged_kv=True, has_seqused_k=True),
    dict(paged_kv=True, has_seqused_k=True, split_kv=True),
    dict(kv_batch_idx=True, has_seqused_k=True, split_kv=True),
    dict(paged_kv=True, has_seqused_k=True, has_softcap=True, has_sink=True, is_local=True),
    dict(varlen_q=True, varlen_k=True, has_softcap=True, split_kv=True),
    dict(varlen_q=True, paged_kv=True, has_seqused_k=True),
)


def _variants() -> list[FwdConfig]:
    out = []
    for dtype in ("bfloat16", "float16"):
        for d in (64, 128):
            for pack in (1, 4):
                decode = fwd_config(
                    "sm120", dtype, d, d, causal=True, pack_gqa=pack > 1, qhead_per_kvhead=pack,
                    small_m=True, decode=True, kv_dtype=FP8,
                )  # fmt: skip
                for flags in SERVING:
                    if flags.get("has_softcap") and flags.get("split_kv"):
                        flags = {**flags, "has_softcap": dtype == "bfloat16"}
                    out.append(dataclasses.replace(decode, **flags))
    # chunks of 17-64 query rows (speculative decode, short prefill): the 64-row small-m rows
    for d in (64, 128):
        chunk = fwd_config(
            "sm120",
            "bfloat16",
            d,
            d,
            causal=True,
            pack_gqa=True,
            qhead_per_kvhead=4,
            small_m=True,
            kv_dtype=FP8,
        )
        out += [dataclasses.replace(chunk, **flags) for flags in SERVING]
    # the other head dims' decode rows, and the rows of longer chunks (prefill over the cache)
    for d in (32, 96, 160, 192):
        cfg = fwd_config("sm120", "bfloat16", d, d, causal=True, small_m=True, kv_dtype=FP8)
        out.append(dataclasses.replace(cfg, paged_kv=True, has_seqused_k=True, split_kv=True))
    for d in (64, 128, 192):
        for causal in (False, True):
            cfg = fwd_config("sm120", "bfloat16", d, d, causal=causal, kv_dtype=FP8)
            out.append(dataclasses.replace(cfg, paged_kv=True, has_seqused_k=True))
    # d32's 128-row prefill tile without a mask over contiguous keys (its early V wait, fwd_codegen)
    cfg = fwd_config("sm120", "bfloat16", 32, 32, causal=False, kv_dtype=FP8)
    out.append(dataclasses.replace(cfg, has_seqused_k=True))
    for causal in (False, True):  # varlen prefill of packed GQA heads over a paged cache
        cfg = fwd_config(
            "sm120", "bfloat16", 128, 128, causal=causal, pack_gqa=True, qhead_per_kvhead=4, kv_dtype=FP8
        )
        out.append(dataclasses.replace(cfg, varlen_q=True, paged_kv=True, has_seqused_k=True))
    # the prefill rows' worst cases of tools/kv8_spill_sweep.py: d64 (its 32-key tiles) with a window
    # and the softcap; d128 paged with split keys and a window (no page prefetch)
    for d, flags, extra in (
        (64, dict(local=True, softcap=True), dict(has_seqused_k=True, has_softcap=True, is_local=True)),
        (128, dict(local=True, split_kv=True), dict(paged_kv=True, has_seqused_k=True, is_local=True)),
    ):
        cfg = fwd_config(
            "sm120", "bfloat16", d, d, causal=True, pack_gqa=True, qhead_per_kvhead=4, kv_dtype=FP8, **flags
        )
        out.append(dataclasses.replace(cfg, **extra))
    # pages holding whole key tiles (FwdCodegen.page_tiles): a paged decode row with split keys
    cfg = fwd_config(
        "sm120", "bfloat16", 128, 128, causal=True, pack_gqa=True, qhead_per_kvhead=4, small_m=True,
        decode=True, split_kv=True, kv_dtype=FP8,
    )  # fmt: skip
    out.append(dataclasses.replace(cfg, paged_kv=True, pages_hold_tiles=True, has_seqused_k=True))
    # ... and an exception of its rule: the d128 prefill tile of 32 rows per warp, varlen q, pack-GQA
    cfg = fwd_config(
        "sm120", "bfloat16", 128, 128, causal=False, pack_gqa=True, qhead_per_kvhead=4, kv_dtype=FP8
    )
    out.append(
        dataclasses.replace(cfg, varlen_q=True, paged_kv=True, pages_hold_tiles=True, has_seqused_k=True)
    )
    return list(dict.fromkeys(out))


VARIANTS = _variants()


def _id(cfg: FwdConfig) -> str:
    s = f"{cfg.dtype[:4]}-d{cfg.head_dim}-{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}"
    s += "-warpsn" if cfg.warp_split_n else ""
    s += "-causal" if cfg.is_causal else ""
    s += f"-pack{cfg.qhead_per_kvhead}" if cfg.pack_gqa else ""
    for flag in ("varlen_q", "varlen_k", "paged_kv", "kv_batch_idx", "split_kv", "has_softcap", "has_sink"):
        s += f"-{flag}" if getattr(cfg, flag) else ""
    s += "-local" if cfg.is_local else ""
    s += "-page_tiles" if cfg.pages_hold_tiles else ""
    return s


@pytest.mark.parametrize("cfg", VARIANTS, ids=_id)
def test_kv8_variant_compiles_for_sm120a_without_spills(cfg, tmp_path):
    assert cfg.smem_bytes <= smem_capacity(parse_arch("sm_120a"))
    compile_fwd(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=str(tmp_path))
    ptx_files = [p for p in os.listdir(tmp_path) if p.endswith(".ptx")]
    assert len(ptx_files) == 1, ptx_files
    ptx = (tmp_path / ptx_files[0]).read_text()
    assert ptx_problems(ptx, "sm_120a") == []  # m16n8k16 present, no stmatrix, no wgmma
    assert "cvt.rn.f16x2.e4m3x2" in ptx  # the FP8 tiles widened in registers
    _, elems = kv8_copy(cfg.head_dim, cfg.num_threads, cfg.tile_n)
    assert ("cp.async.cg.shared.global" if elems == 16 else "cp.async.ca.shared.global") in ptx
    if cfg.dtype == "bfloat16":  # fp16 MMAs (FwdCodegen.kv8_f16_mma): no fp32 round trip to bf16
        assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in ptx
        assert "m16n8k16.row.col.f32.bf16.bf16.f32" not in ptx
        assert "cvt.f32.f16" not in ptx
    res = ptxas_resources(str(tmp_path / ptx_files[0]))
    if res is None:
        return
    regs, spill, err = res
    assert err is None, err
    print(
        f"\n[sm_120a resources] {_id(cfg)}: {regs} registers, {spill} B spill stores, {cfg.smem_bytes} B smem"
    )
    assert spill == 0, f"{_id(cfg)}: {spill} B spill stores"


def test_kv8_smem_counts_the_staging_tiles():
    """The 8-bit staging tiles of K and V are counted; with K and V widened into one 16-bit buffer
    (the d128 64-row rule, FwdCodegen.kv8_one_buffer) V's 16-bit buffer is not."""
    from fa4_sm120.configs import FwdCodegen

    bf16 = fwd_config("sm120", "bfloat16", 128, 128, causal=True, small_m=True)
    fp8 = fwd_config("sm120", "bfloat16", 128, 128, causal=True, small_m=True, kv_dtype=FP8)
    assert (bf16.tile_m, bf16.tile_n) == (fp8.tile_m, fp8.tile_n) == (64, 64)
    assert fp8.kv8_one_buffer and fp8.smem_bytes == bf16.smem_bytes + 64 * 128 * 2 - 64 * 128 * 2 == 49_152
    two = dataclasses.replace(fp8, codegen=FwdCodegen(kv8_one_buffer=False))
    assert two.smem_bytes == bf16.smem_bytes + 64 * 128 * 2 == 65_536


def test_kv8_copy_layouts():
    assert kv8_copy(128, 128, 64) == (8, 16)  # a row of 128 bytes per 8 threads: 16 rows per pass
    assert kv8_copy(64, 128, 128) == (4, 16)
    assert kv8_copy(96, 128, 64) == (2, 16)
    assert kv8_copy(160, 256, 64) == (4, 8)  # no 16-byte layout fits 64 rows: the 16-bit one, 8 bytes


def test_kv8_unsupported_head_dims_and_dtype_are_typed_errors():
    with pytest.raises(UnsupportedConfigError, match="float8_e4m3fn K/V cache"):
        fwd_config("sm120", "bfloat16", 256, 256, causal=False, small_m=True, kv_dtype=FP8)
    cfg = dataclasses.replace(fwd_config("sm120", "bfloat16", 128, 128, causal=False), kv_dtype="int8")
    with pytest.raises(UnsupportedConfigError, match="kv_dtype"):
        FlashAttentionForwardSm120.can_implement(cfg)
