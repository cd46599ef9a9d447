"""Every quantizer of the 8-bit forward that its tables can pick (``fa4_sm120.tiles.q8_quantize_configs``:
head dims 64/128 x INT8/FP8 x fp16/bf16 input, Q with and without smoothing's shift, K, V, and the
statistics kernel of K's mean and V's channel scales; V's layout of e4m3 inputs,
``q8_fp8_v_config``; dense and padded batches with per-sequence lengths) compiles for ``sm_120a`` on the CPU; its PTX takes reciprocals with ``rcp.rn``/``div.rn``
(PyTorch's rounding, so the 8-bit values are the reference's bit for bit), converts with the
instructions of its format (the statistics: none; their CTAs combined through a gpu-scope counter),
moves 16-byte vectors in, and ``ptxas -arch=sm_120a -v`` assembles it without spills."""

from __future__ import annotations

import itertools
import os

import pytest

from fa4_core.errors import UnsupportedConfigError
from fa4_sm120.compile import ptxas_resources
from fa4_sm120.configs import QuantizeConfig
from fa4_sm120.limits import Q8_QK_FORMATS
from fa4_sm120.quantize import Quantize8Sm120, QuantizeStatsSm120
from fa4_sm120.tiles import Q8_FWD_TILES, q8_fp8_v_config, q8_quantize_configs

VARIANTS = sorted(
    {
        cfg
        for dt, d, qk, smooth, used in itertools.product(
            ("bfloat16", "float16"), Q8_FWD_TILES, Q8_QK_FORMATS, (True, False), (False, True)
        )
        for cfg in q8_quantize_configs(dt, d, qk=qk, smooth=smooth, seqused=used).values()
    },
    key=repr,
)
# V's layout of e4m3 inputs (FlashAttention-3's FP8 inputs)
FP8_V = [q8_fp8_v_config(d, seqused=used) for d, used in itertools.product(Q8_FWD_TILES, (False, True))]


def _id(cfg: QuantizeConfig) -> str:
    return (
        f"{cfg.role}-{cfg.dtype}-d{cfg.head_dim}-b{cfg.block}-{cfg.fmt}"
        + ("-smooth" if cfg.smooth else "")
        + ("-seqused" if cfg.seqused else "")
        + (f"-u{cfg.unroll}" if cfg.unroll != 1 else "")
    )


def _compile(cfg: QuantizeConfig, tmp_path) -> str:
    """``cfg``'s quantizer compiled for sm_120a: the path of its one PTX file."""
    Quantize8Sm120.compile(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=str(tmp_path))
    ptx_files = [p for p in os.listdir(tmp_path) if p.endswith(".ptx")]
    assert len(ptx_files) == 1, ptx_files
    return str(tmp_path / ptx_files[0])


def _assert_no_spills(cfg: QuantizeConfig, ptx_path: str) -> None:
    res = ptxas_resources(ptx_path)
    if res is None:  # no ptxas on PATH
        return
    regs, spill, err = res
    assert err is None, err
    print(f"\n[sm_120a resources] quantize {_id(cfg)}: {regs} registers, {spill} B spill stores")
    assert spill == 0, f"{_id(cfg)}: {spill} B spill stores"


@pytest.mark.compile_only
@pytest.mark.parametrize("cfg", VARIANTS, ids=_id)
def test_quantizer_compiles_for_sm120a(cfg, tmp_path):
    path = _compile(cfg, tmp_path)
    ptx = open(path).read()
    assert ".target sm_120a" in ptx
    # the reciprocals IEEE-rounded (as PyTorch's 1 / x), never approximate
    assert ("div.rn.f32" in ptx or "rcp.rn.f32" in ptx) and "div.approx" not in ptx and "div.full" not in ptx
    assert "rcp.approx" not in ptx
    if cfg.role == "stats":  # fp32 sums and maxima only; the last CTA of a head found by a counter
        assert "cvt.rn.satfinite" not in ptx and "prmt.b32" not in ptx
        assert "atom.global" in ptx and "fence.acq_rel.gpu" in ptx
    elif cfg.fmt == "fp8":
        assert "cvt.rn.satfinite.e4m3x2.f32" in ptx and "prmt.b32" not in ptx
    else:
        assert "prmt.b32" in ptx and "cvt.rn.satfinite.e4m3x2.f32" not in ptx
    assert "ld.global.v4" in ptx or "ld.global.nc.v4" in ptx  # 16-byte loads of the 16-bit input
    assert "mma" not in ptx
    # Q and K (and the statistics) reduce over the CTA; V's transposition stays within each thread
    assert ("bar.sync" in ptx) == (cfg.role != "v")
    _assert_no_spills(cfg, path)


@pytest.mark.compile_only
@pytest.mark.parametrize("cfg", FP8_V, ids=_id)
def test_fp8_v_layout_compiles_for_sm120a(cfg, tmp_path):
    # e4m3 V as given: 8-byte loads, the bytes moved into place (no conversion, no arithmetic), no spills
    path = _compile(cfg, tmp_path)
    ptx = open(path).read()
    assert ".target sm_120a" in ptx and "ld.global.v2.b32" in ptx and "st.global.v4.b32" in ptx
    assert "prmt.b32" in ptx and "bar.sync" not in ptx and "mma" not in ptx
    assert "cvt.rn" not in ptx and "div." not in ptx and "rcp." not in ptx and "mul.f32" not in ptx
    _assert_no_spills(cfg, path)


@pytest.mark.parametrize(
    "change, arg",
    [
        ({"dtype": "float32"}, "dtype"),
        ({"head_dim": 96}, "head_dim"),
        ({"role": "o"}, "role"),
        ({"role": "v", "fmt": "int8"}, "fmt"),
        ({"role": "v", "fmt": "fp8", "smooth": True}, "smooth"),
        ({"num_threads": 256}, "num_threads"),
        ({"block": 12}, "block"),
        ({"role": "v", "fmt": "fp8", "block": 48}, "block"),
        ({"role": "stats", "fmt": "int8"}, "fmt"),
        ({"role": "stats", "fmt": "fp8", "smooth": True}, "smooth"),
        ({"role": "stats", "fmt": "fp8", "unroll": 0}, "unroll"),
        ({"unroll": 2}, "unroll"),
        ({"role": "stats", "fmt": "fp8", "block": 60, "unroll": 4}, "block"),  # passes of 8 rows
        ({"role": "stats", "fmt": "fp8"}, "role"),  # Quantize8Sm120 leaves it to QuantizeStatsSm120
    ],
)
def test_quantizer_rejects_unsupported_configs(change, arg):
    base = dict(dtype="bfloat16", head_dim=128, block=64, role="q", fmt="int8")
    cfg = QuantizeConfig(**{**base, **change})
    with pytest.raises(UnsupportedConfigError, match=arg):
        Quantize8Sm120(cfg)
    assert not Quantize8Sm120.supports(cfg)


def test_statistics_kernel_takes_only_the_statistics():
    stats = QuantizeConfig("bfloat16", 128, 256, "stats", "fp8", unroll=4)
    assert QuantizeStatsSm120.supports(stats)
    assert not QuantizeStatsSm120.supports(QuantizeConfig("bfloat16", 128, 64, "q", "int8"))
