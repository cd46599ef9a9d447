"""Every variant of the 8-bit forward that its tile table can pick (head dims 64/128 x causal x INT8/FP8
Q·Kᵀ x fp32/fp16 P·V accumulation, bf16 output; fp16 output once; the varlen form's; windows, the
softcap and sinks per head dim and format, :data:`FEATURES`) compiles for ``sm_120a`` on the CPU;
its PTX has the 8-bit ``mma.sync.aligned.m16n8k32`` of its recipe (s8 with s32 accumulation or e4m3
with f32; e4m3 with f32 or f16 for P·V), the e4m3 conversions of P, the 16-bit ``ldmatrix`` of every
operand and no ``wgmma``/``stmatrix``; ``ptxas -arch=sm_120a -v`` assembles it without spills. The
same for the opt-in variants of :data:`OPT_IN` (``q_in_regs``, ``num_stages=2``, both; at d64 the
former row)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import re

import pytest

from fa4_core.arch import parse_arch, smem_capacity
from fa4_core.errors import UnsupportedConfigError
from fa4_sm120.compile import ptxas_resources
from fa4_sm120.configs import FwdCodegen, Q8FwdConfig
from fa4_sm120.fwd_q8 import FlashAttentionForwardQ8Sm120
from fa4_sm120.tiles import Q8_FWD_TILES, q8_fwd_config
from fa4_sm120.variants import ptx_problems

VARIANTS = [
    q8_fwd_config("bfloat16", d, causal=c, qk=qk, pv_accum=acc)
    for d, c, qk, acc in itertools.product(Q8_FWD_TILES, (False, True), ("int8", "fp8"), ("fp32", "fp16"))
] + [q8_fwd_config("float16", 128, causal=False, qk="int8", pv_accum="fp32")]
# the varlen form: padded batches with per-sequence lengths
VARIANTS += [
    q8_fwd_config("bfloat16", d, causal=c, qk=qk, pv_accum=acc, seqused=True)
    for d, c, qk, acc in itertools.product(Q8_FWD_TILES, (False, True), ("int8", "fp8"), ("fp32", "fp16"))
]
# windows, the softcap and sinks: each alone, then all of them with the varlen form's lengths and fp16
# accumulation (the most registers)
FEATURES = [
    dict(causal=False, local=True, pv_accum="fp32"),
    dict(causal=True, softcap=True, pv_accum="fp32"),
    dict(causal=False, sink=True, pv_accum="fp16"),
    dict(causal=True, local=True, softcap=True, sink=True, seqused=True, pv_accum="fp16"),
]
VARIANTS += [
    q8_fwd_config("bfloat16", d, qk=qk, **f)
    for d, qk, f in itertools.product(Q8_FWD_TILES, ("int8", "fp8"), FEATURES)
]

# the spill-free alternatives to the table's rows that tools/q8_variants.py times (Q8FwdConfig fields
# replaced on the row's config): at d128, Q's A fragments once per CTA, K/Vᵀ double-buffered (one
# barrier per key block), both; at d64, the former row (64-key blocks, 8 warps of 16 rows, one stage)
OPT_IN = {
    "q_in_regs": dict(q_in_regs=True),
    "stages2": dict(num_stages=2),
    "q_in_regs+stages2": dict(q_in_regs=True, num_stages=2),
    "m128n64x256": dict(tile_m=128, tile_n=64, num_threads=256, q_in_regs=False, num_stages=1),
}
OPT_IN_DIMS = {
    "q_in_regs": (128,),
    "stages2": (128,),
    "q_in_regs+stages2": (128,),
    "m128n64x256": (64,),
}
ALTERNATIVES = [
    dataclasses.replace(q8_fwd_config("bfloat16", d, causal=c, qk=qk, pv_accum="fp32"), **change)
    for name, change in OPT_IN.items()
    for d, c, qk in itertools.product(OPT_IN_DIMS[name], (False, True), ("int8", "fp8"))
] + [
    dataclasses.replace(
        q8_fwd_config("bfloat16", 128, causal=False, qk="int8", pv_accum="fp16"), **OPT_IN[name]
    )
    for name in ("q_in_regs+stages2",)
]
VARIANTS = list(dict.fromkeys(VARIANTS))  # each build once
# the alternatives compile in `nox -s compile-all` (per release), not in CI's `nox -s compile`
VARIANTS += [
    pytest.param(cfg, marks=pytest.mark.alternative)
    for cfg in dict.fromkeys(ALTERNATIVES)
    if cfg not in VARIANTS
]


def _id(cfg: Q8FwdConfig) -> str:
    extra = "".join(
        (
            f"-{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}",
            "-q_in_regs" if cfg.q_in_regs else "",
            f"-stages{cfg.num_stages}" if cfg.num_stages != 1 else "",
            "-seqused" if cfg.has_seqused_q else "",
            "-local" if cfg.is_local else "",
            "-softcap" if cfg.has_softcap else "",
            "-sink" if cfg.has_sink else "",
        )
    )
    return (
        f"{cfg.dtype}-d{cfg.head_dim}-{'causal' if cfg.is_causal else 'full'}-qk_{cfg.qk}-pv_{cfg.pv_accum}"
        + extra
    )


@pytest.mark.compile_only
@pytest.mark.parametrize("cfg", VARIANTS, ids=_id)
def test_q8_variant_compiles_for_sm120a(cfg, tmp_path):
    assert cfg.smem_bytes <= smem_capacity(parse_arch("sm_120a"))
    FlashAttentionForwardQ8Sm120.compile(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=str(tmp_path))
    ptx_files = [p for p in os.listdir(tmp_path) if p.endswith(".ptx")]
    assert len(ptx_files) == 1, ptx_files
    ptx = (tmp_path / ptx_files[0]).read_text()
    assert ptx_problems(ptx, "sm_120a", mma=False) == []  # .target sm_120a, no stmatrix, no wgmma
    mmas = set(re.findall(r"mma\.sync\.aligned\.[a-z0-9.]+", ptx))
    qk = {
        "int8": "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32",
        "fp8": "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32",
    }[cfg.qk]
    pv = f"mma.sync.aligned.m16n8k32.row.col.{cfg.pv_accum[:1]}{cfg.pv_accum[2:]}.e4m3.e4m3.{cfg.pv_accum[:1]}{cfg.pv_accum[2:]}"
    assert mmas == {qk, pv}, mmas
    assert "m16n8k16" not in ptx  # no 16-bit MMA left
    assert "cvt.rn.satfinite.e4m3x2.f32" in ptx  # P to e4m3 in registers
    assert "cvt.rn.f32.s32" not in ptx  # INT8 scores to fp32 by their bits, not the quarter-rate I2F
    assert "ldmatrix.sync.aligned" in ptx and ".trans" not in ptx  # every operand K-major, 16-bit ldmatrix
    assert "cp.async.cg.shared.global" in ptx
    res = ptxas_resources(str(tmp_path / ptx_files[0]))
    if res is None:  # no ptxas on PATH
        return
    regs, spill, err = res
    assert err is None, err
    print(
        f"\n[sm_120a resources] q8 {_id(cfg)}: {regs} registers, {spill} B spill stores, {cfg.smem_bytes} B smem"
    )
    assert spill == 0, f"{_id(cfg)}: {spill} B spill stores"


@pytest.mark.parametrize(
    "change, arg",
    [
        ({"qk": "int4"}, "qk"),
        ({"pv_accum": "bf16"}, "pv_accum"),
        ({"head_dim": 96, "head_dim_v": 96}, "(head_dim, head_dim_v)"),
        ({"varlen_q": True}, "varlen_q"),
        ({"pack_gqa": True, "qhead_per_kvhead": 2}, "pack_gqa"),
        ({"paged_kv": True}, "paged_kv"),
        ({"split_kv": True}, "split_kv"),
        ({"tile_n": 16}, "tile_n"),
        ({"num_stages": 3}, "num_stages"),
        ({"q8_b_split": 3}, "q8_b_split"),
        ({"codegen": FwdCodegen(pv_split=3)}, "pv_split"),
        ({"codegen": FwdCodegen(rescale_threshold=1.0)}, "rescale_threshold"),
        ({"codegen": FwdCodegen(min_ctas_per_sm=13)}, "min_ctas_per_sm"),  # 52 warps > 48 per SM
        ({"codegen": FwdCodegen(min_ctas_per_sm=-1)}, "min_ctas_per_sm"),
    ],
)
def test_q8_unsupported_variants_name_the_field(change, arg):
    cfg = dataclasses.replace(
        q8_fwd_config("bfloat16", 128, causal=False, qk="int8", pv_accum="fp32"), **change
    )
    with pytest.raises(UnsupportedConfigError, match=re.escape(arg)):
        FlashAttentionForwardQ8Sm120.can_implement(cfg)
    assert not FlashAttentionForwardQ8Sm120.supports(cfg)


def test_q8_smem_is_the_kernels_arithmetic():
    # 1-byte Q/K/Vᵀ tiles, the 16-bit O tile in Q's buffer (d128: 32 KB), each 1024-B aligned
    cfg = q8_fwd_config("bfloat16", 128, causal=False, qk="int8", pv_accum="fp32")
    assert cfg.smem_bytes == 64 * 128 * 2 + 64 * 128 + 128 * 64
    # K and Vᵀ twice with num_stages=2
    assert dataclasses.replace(cfg, num_stages=2).smem_bytes == 64 * 128 * 2 + 2 * (64 * 128 + 128 * 64)
    # 32 rows per warp on 32-key blocks at d64: the 16-bit O tile (128 x 64) dominates Q's buffer
    cfg64 = dataclasses.replace(
        q8_fwd_config("bfloat16", 64, causal=False, qk="int8", pv_accum="fp32"),
        tile_m=128,
        tile_n=32,
        num_threads=128,
        num_stages=2,
    )
    assert cfg64.smem_bytes == 128 * 64 * 2 + 2 * (32 * 64 + 64 * 32)


@pytest.mark.compile_only
def test_launch_bound_caps_the_registers(tmp_path):
    """``codegen.min_ctas_per_sm`` reaches the PTX as ``.minnctapersm`` and ptxas keeps the registers
    within what that many CTAs leave (65,536 / (3 * 128) -> 168), without spills on this build."""
    cfg = dataclasses.replace(  # the d64 row on 64 query rows (16 per warp)
        q8_fwd_config("bfloat16", 64, causal=False, qk="int8", pv_accum="fp32"),
        tile_m=64,
        codegen=FwdCodegen(min_ctas_per_sm=3),
    )
    FlashAttentionForwardQ8Sm120.compile(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=str(tmp_path))
    ptx_file = next(p for p in tmp_path.iterdir() if p.suffix == ".ptx")
    assert re.search(r"^\.minnctapersm 3$", ptx_file.read_text(), re.M)
    res = ptxas_resources(str(ptx_file))
    if res is None:  # no ptxas on PATH
        return
    regs, spill, err = res
    assert err is None, err
    assert regs <= 65536 // (3 * 128) and spill == 0, (regs, spill)
