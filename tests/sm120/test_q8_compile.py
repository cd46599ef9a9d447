"""Every variant of the 8-bit forward that its tile table can pick (head dims 64/128 x causal x INT8/FP8
Q·Kᵀ x fp32/fp16 P·V accumulation, bf16 output; fp16 output once) compiles for ``sm_120a`` on the CPU;
its PTX has the 8-bit ``mma.sync.aligned.m16n8k32`` of its recipe (s8 with s32 accumulation or e4m3
with f32; e4m3 with f32 or f16 for P·V), the e4m3 conversions of P, the 16-bit ``ldmatrix`` of every
operand and no ``wgmma``/``stmatrix``; ``ptxas -arch=sm_120a -v`` assembles it without spills."""

from __future__ import annotations

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


def _id(cfg: Q8FwdConfig) -> str:
    return (
        f"{cfg.dtype}-d{cfg.head_dim}-{'causal' if cfg.is_causal else 'full'}-qk_{cfg.qk}-pv_{cfg.pv_accum}"
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
        ({"is_local": True}, "is_local"),
        ({"varlen_q": True}, "varlen_q"),
        ({"pack_gqa": True, "qhead_per_kvhead": 2}, "pack_gqa"),
        ({"has_softcap": True}, "has_softcap"),
        ({"has_sink": True}, "has_sink"),
        ({"tile_n": 32}, "tile_n"),
        ({"codegen": FwdCodegen(rescale_threshold=1.0)}, "rescale_threshold"),
    ],
)
def test_q8_unsupported_variants_name_the_field(change, arg):
    import dataclasses

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
