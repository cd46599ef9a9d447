"""Every backward variant the tile table can pick compiles for ``sm_120a`` on the CPU, and its PTX is
the mma.sync family's: ``mma.sync.aligned.m16n8k16`` present, no ``stmatrix`` (wgmma's register
layout: the seed bug, and the dQ store of the seed backward), no ``wgmma``, ``ldmatrix .trans`` for
the transposed operands (Pᵀ, dSᵀ, Qᵀ, dOᵀ, Kᵀ), ``red.global.add.f32`` for dQ; its shared memory
(checked against the kernel's own ``SharedStorage`` when traced) fits 101,376 B. ``ptxas -arch=sm_120a
-v`` gives the SM120 registers and spills of each variant (printed with ``-s``).

Variants: every backward table row x dtype x causal x deterministic; every row (bf16, fp16 on d128)
x the feature sets of the extended backward (local windows, softcap, varlen with cu_seqlens and
seqused, the sink gradient's row sums, and their combinations with causal/deterministic); the pre/postprocess kernels for every head
dim of the table (with and without the LSE gradient).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from fa4_core.arch import parse_arch, smem_capacity
from fa4_sm120.bwd import BwdConfig, compile_bwd
from fa4_sm120.bwd_pre_post import PrePostConfig, compile_postprocess, compile_preprocess
from fa4_sm120.bwd_tiles import BWD_FEATURE_SETS, BWD_TABLE, bwd_config
from fa4_sm120.variants import ptx_problems

pytestmark = pytest.mark.compile_only

CAP = smem_capacity(parse_arch("sm_120a"))

# the configs the table picks (two rows of the same head dims give each call once)
VARIANTS = list(
    dict.fromkeys(
        bwd_config(row.family, dtype, row.head_dim, row.head_dim_v, causal=causal, deterministic=det)
        for row in BWD_TABLE
        for dtype in ("float16", "bfloat16")
        for causal in (False, True)
        for det in (False, True)
    )
)


FEATURES = BWD_FEATURE_SETS
FEATURE_VARIANTS = list(
    dict.fromkeys(
        bwd_config(row.family, dtype, row.head_dim, row.head_dim_v, **feat)
        for row in BWD_TABLE
        for dtype in (("float16", "bfloat16") if row.head_dim == 128 else ("bfloat16",))
        for feat in FEATURES
    )
)


def _id(cfg: BwdConfig) -> str:
    s = f"{cfg.dtype[:4]}-d{cfg.head_dim}_{cfg.head_dim_v}-{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}"
    s += "-causal" if cfg.is_causal else ""
    s += "-local" if cfg.is_local else ""
    s += "-softcap" if cfg.has_softcap else ""
    s += "-varlenq" if cfg.varlen_q else ""
    s += "-varlenk" if cfg.varlen_k else ""
    s += "-usedq" if cfg.has_seqused_q else ""
    s += "-usedk" if cfg.has_seqused_k else ""
    s += "-det" if cfg.deterministic else ""
    s += "-dsink" if cfg.has_dsink else ""
    s += f"-wn{cfg.mma_warps_n}" if cfg.mma_warps_n != 1 else ""
    s += f"-sdpwn{cfg.sdp_warps_n}" if cfg.sdp_warps_n else ""
    s += "-vregs" if cfg.v_in_regs else ""
    s += "-vred" if cfg.vector_dq_red else ""
    s += "-early" if cfg.early_loads else ""
    s += "-lpt" if cfg.longest_first else ""
    return s


def _ptx(tmp_path) -> str:
    files = [p for p in os.listdir(tmp_path) if p.endswith(".ptx")]
    assert len(files) == 1, files
    return (tmp_path / files[0]).read_text(), str(tmp_path / files[0])


def _resources(path: str):
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        return None
    r = subprocess.run([ptxas, "-arch=sm_120a", "-v", path, "-o", os.devnull], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    regs = max(map(int, re.findall(r"Used (\d+) registers", r.stderr)))
    spill = sum(int(a) for a in re.findall(r"(\d+) bytes spill stores", r.stderr))
    return regs, spill


# candidates of benchmarks/tune_bwd.py that are not table rows, and table rows in another form, as
# tests/torch/test_bwd_gpu.py::test_bwd_alt_rows checks them: (d, dv, tile_m, tile_n, threads,
# mma_warps_n, flags: "v" vector_dq_red, "e" early_loads, "l" longest_first, "s" S and dP on the
# transposed warp grid, "k" S and dP with every warp along the keys, "r" V in registers; a flag left
# out is off).
CANDIDATES = [
    BwdConfig(
        dt,
        d,
        dv,
        tm,
        tn,
        th,
        wn,
        is_causal=causal,
        vector_dq_red="v" in fl,
        early_loads="e" in fl,
        longest_first=causal and "l" in fl,
        sdp_warps_n=th // 32 if "k" in fl else th // 32 // wn if "s" in fl else 0,
        v_in_regs="r" in fl,
        **feat,
    )  # fmt: skip
    for d, dv, tm, tn, th, wn, fl in (
        (128, 128, 64, 64, 128, 1, "vl"),
        (128, 128, 64, 64, 128, 1, "ve"),
        (128, 128, 32, 128, 256, 4, "v"),
        (128, 128, 32, 128, 256, 4, "ve"),
        (96, 96, 64, 64, 128, 1, "ve"),
        (64, 64, 64, 128, 256, 2, "ve"),
        (64, 64, 32, 128, 256, 4, "ve"),
        (64, 64, 64, 128, 256, 2, "vls"),  # S/dP on 2x4 warps, dK/dV/dQ on 4x2
        (64, 64, 64, 128, 256, 2, "vlsr"),  # ... and V's fragments of dP in registers
        (64, 64, 64, 128, 256, 2, "velsr"),  # ... and early Q/dO loads
        (128, 128, 32, 128, 256, 4, "vlkr"),  # the d128 row without early loads
        (128, 128, 32, 128, 256, 4, "velkr"),  # S/dP on 1x8 warps, V in registers (32 per thread)
        (160, 160, 64, 64, 256, 2, "vel"),
        (192, 128, 64, 64, 256, 2, "ve"),
        (192, 192, 32, 32, 128, 2, "vl"),  # spill-free where the 64x32 row's plain build spills 8 B
    )
    for dt, causal, feat in (
        ("bfloat16", False, {}),
        ("float16", True, dict(deterministic=True, varlen_q=True, varlen_k=True)),
    )
]


@pytest.mark.parametrize("cfg", VARIANTS + FEATURE_VARIANTS + CANDIDATES, ids=_id)
def test_bwd_variant_compiles_for_sm120a(cfg, tmp_path):
    assert cfg.smem_bytes <= CAP
    compile_bwd(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=str(tmp_path))
    ptx, path = _ptx(tmp_path)
    # .target sm_120a, mma.sync.aligned.m16n8k16 present, no stmatrix, no wgmma
    assert ptx_problems(ptx, "sm_120a") == []
    assert "ldmatrix.sync.aligned" in ptx and ".trans" in ptx
    assert "cp.async.cg.shared.global" in ptx
    # K/V, then Q and dO of the first and of every next query block: one cp.async group each with
    # early_loads (the wait before S leaves dO in flight), one for both otherwise; v_in_regs waits for
    # K/V alone before the loop (the first Q/dO group left in flight)
    commits = ptx.count("cp.async.commit_group")
    assert commits == (5 if cfg.early_loads else 3), commits
    waits_1 = bool(re.search(r"cp\.async\.wait_group\s+1;", ptx))
    assert waits_1 == (cfg.early_loads or cfg.v_in_regs), waits_1
    # longest_first: a 1-D grid, every coordinate decoded from blockIdx.x
    assert ("%ctaid.y" in ptx) == (not cfg.longest_first), cfg.longest_first
    if cfg.vector_dq_red:  # every dQ reduction a pair; the scalar f32 ones left are the sink's row sums
        assert re.search(r"red(\.relaxed)?(\.gpu)?\.global\.add\.v2\.f32", ptx)
        assert cfg.has_dsink or not re.search(r"red(\.relaxed)?(\.gpu)?\.global\.add\.f32", ptx)
    else:
        assert re.search(r"red(\.relaxed)?(\.gpu)?\.global\.add\.f32", ptx)
    if cfg.has_softcap:
        assert "tanh.approx.f32" in ptx
    if cfg.deterministic:
        assert "ld.acquire.gpu" in ptx and re.search(r"atom(\.global)?\.release(\.gpu)?\.add", ptx)
    static = sum(int(x) for x in re.findall(r"\.shared \.align \d+ \.b8 \w+\[(\d+)\]", ptx))
    assert static == 0
    res = _resources(path)
    if res is not None:
        print(f"\n[sm_120a resources] bwd {_id(cfg)}: {res[0]} registers, {res[1]} B spill stores, "
              f"{cfg.smem_bytes} B smem")  # fmt: skip


@pytest.mark.parametrize("kind", ["pre", "pre-dlse", "post"])
@pytest.mark.parametrize(
    "head_dim", sorted({r.head_dim for r in BWD_TABLE} | {r.head_dim_v for r in BWD_TABLE})
)
def test_pre_post_compile_for_sm120a(kind, head_dim, tmp_path):
    cfg = PrePostConfig("bfloat16", head_dim, has_dlse=kind == "pre-dlse")
    fn = compile_postprocess if kind == "post" else compile_preprocess
    fn(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=str(tmp_path))
    ptx, path = _ptx(tmp_path)
    assert ptx_problems(ptx, "sm_120a", mma=False) == []  # .target sm_120a, no stmatrix, no wgmma
    res = _resources(path)
    if res is not None:
        print(f"\n[sm_120a resources] {kind} d{head_dim}: {res[0]} registers, {res[1]} B spill stores")


def test_every_bwd_row_fits_sm120():
    for row in BWD_TABLE:
        cfg = bwd_config(row.family, "bfloat16", row.head_dim, row.head_dim_v, causal=False)
        assert cfg.smem_bytes <= CAP, (row, cfg.smem_bytes)


def test_vector_dq_red_only_where_the_target_has_it(monkeypatch):
    """A row with vector dQ reductions keeps them for sm_90+ targets and drops them (scalar ``red``)
    for an SM80/86 target; a config asking for them on an SM80/86 family is a typed error."""
    import dataclasses

    from fa4_core.errors import UnsupportedConfigError
    from fa4_sm120 import bwd_tiles
    from fa4_sm120.bwd import FlashAttentionBackwardSm120

    table = tuple(
        dataclasses.replace(r, vector_dq_red=True) if r.head_dim == 128 else r for r in bwd_tiles.BWD_TABLE
    )
    monkeypatch.setattr(bwd_tiles, "BWD_TABLE", table)
    for target, want in (("sm_120a", True), ("sm_90", True), ("sm_90a", True), ("sm_86", False),
                         ("sm_80", False), (None, True)):  # fmt: skip
        cfg = bwd_tiles.bwd_config("sm120", "bfloat16", 128, 128, causal=False, target=target)
        assert cfg.vector_dq_red is want, target
    assert bwd_tiles.bwd_config("sm86", "bfloat16", 128, 128, causal=False).vector_dq_red is False
    bad = dataclasses.replace(
        bwd_tiles.bwd_config("sm86", "bfloat16", 128, 128, causal=False), vector_dq_red=True
    )
    with pytest.raises(UnsupportedConfigError, match="vector_dq_red.*sm_86"):
        FlashAttentionBackwardSm120.can_implement(bad)
