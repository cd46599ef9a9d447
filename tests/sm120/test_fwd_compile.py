"""Every forward variant the tile tables can pick compiles for ``sm_120a`` on the CPU, and its PTX is
the mma.sync family's: ``mma.sync.aligned.m16n8k16`` present, no ``stmatrix`` (wgmma's register
layout: the seed bug), no ``wgmma``; its shared memory (checked against the kernel's own
``SharedStorage`` when traced) fits the arch cap. ``ptxas -arch=sm_120a -v`` gives the real SM120
registers and spills of each variant; they are printed (``-s``) and must assemble.

Variants: every row of every family x dtype x causal, deduplicated on the fields that change the
code, plus the flags rows do not carry (pack-GQA with ratios that do not divide the tile, local).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess

import pytest

from fa4_core.arch import parse_arch, smem_capacity
from fa4_sm120.compile import compile_fwd
from fa4_sm120.fwd import FlashAttentionForwardSm120, FwdConfig
from fa4_sm120.tiles import FWD_TABLE, family_cap_arch, fwd_config
from fa4_sm120.variants import fwd_row_variants, ptx_problems

pytestmark = pytest.mark.compile_only


def _variants():
    seen = {}
    for _, _, _, cfg in fwd_row_variants():  # a row behind a plain_only row: its split-KV calls
        code_key = dataclasses.replace(cfg, arch="sm_120a")
        if FlashAttentionForwardSm120.supports(code_key):
            seen.setdefault(code_key, cfg)
    extra = [
        fwd_config("sm120", "bfloat16", 128, 128, causal=True, pack_gqa=True, qhead_per_kvhead=7),
        fwd_config("sm120", "float16", 64, 64, causal=False, pack_gqa=True, qhead_per_kvhead=5),
        fwd_config("sm120", "bfloat16", 256, 256, causal=True, pack_gqa=True, qhead_per_kvhead=3),
        fwd_config("sm120", "bfloat16", 128, 128, causal=False, local=True),
        # the 4-warp d128 row with the flags it keeps (a window, split-KV or softcap takes the
        # 8-warp row)
        dataclasses.replace(
            fwd_config("sm120", "bfloat16", 128, 128, causal=False, pack_gqa=True, qhead_per_kvhead=4),
            varlen_q=True,
            varlen_k=True,
            has_seqused_q=True,
            has_seqused_k=True,
            has_sink=True,
        ),  # fmt: skip
        dataclasses.replace(
            fwd_config("sm120", "float16", 128, 128, causal=False),
            varlen_q=True,
            varlen_k=True,
            has_sink=True,
        ),
        fwd_config("sm120", "bfloat16", 128, 128, causal=False, softcap=True),
        dataclasses.replace(
            fwd_config("sm120", "float16", 128, 128, causal=False), paged_kv=True, has_seqused_k=True
        ),
        fwd_config("sm120", "bfloat16", 64, 64, causal=True, local=True, pack_gqa=True, qhead_per_kvhead=4),
    ]
    # the serving flags (varlen, seqused, paged K/V, KV-cache slots, split-KV, softcap, sinks)
    serving = fwd_config("sm120", "bfloat16", 128, 128, causal=True, pack_gqa=True, qhead_per_kvhead=4)
    # decode's small-m row with the same flags (and a window)
    decode = fwd_config(
        "sm120", "bfloat16", 128, 128, causal=True, pack_gqa=True, qhead_per_kvhead=4, small_m=True
    )
    for flags in (
        dict(paged_kv=True, has_seqused_k=True, split_kv=True),
        dict(kv_batch_idx=True, has_seqused_k=True, split_kv=True),
        dict(has_softcap=True, has_sink=True, is_local=True),
        dict(varlen_q=True, varlen_k=True, has_softcap=True, split_kv=True),
    ):
        extra.append(dataclasses.replace(decode, **flags))
    for flags in (
        dict(varlen_q=True, varlen_k=True),
        dict(varlen_q=True, varlen_k=True, has_seqused_q=True, has_seqused_k=True),
        dict(varlen_q=True, paged_kv=True, has_seqused_k=True),
        dict(paged_kv=True, has_seqused_k=True, split_kv=True),
        dict(kv_batch_idx=True, has_seqused_k=True, split_kv=True),
        dict(has_softcap=True, has_sink=True),
        dict(varlen_q=True, varlen_k=True, has_softcap=True, split_kv=True),
    ):
        extra.append(dataclasses.replace(serving, **flags))
    extra.append(
        dataclasses.replace(
            fwd_config("sm120", "float16", 256, 256, causal=False),
            paged_kv=True,
            has_seqused_k=True,
            is_local=True,
        )
    )
    # the d64 candidate of tests/torch/test_fwd_gpu.py::test_fwd_alt_rows (128x64 over 8 warps) with
    # the flags whose 4-warp builds spill
    d64_8w = dict(tile_m=128, tile_n=64, num_threads=256)
    for causal, flags in (
        (False, dict(is_local=True)),
        (True, dict(has_softcap=True)),
        (True, dict(varlen_q=True, varlen_k=True)),
    ):
        extra.append(
            dataclasses.replace(fwd_config("sm120", "bfloat16", 64, 64, causal=causal), **d64_8w, **flags)
        )
    for cfg in extra:
        seen.setdefault(cfg, cfg)
    return list(seen)


VARIANTS = _variants()


def _id(cfg: FwdConfig) -> str:
    s = f"{cfg.dtype[:4]}-d{cfg.head_dim}_{cfg.head_dim_v}-{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}"
    s += "-causal" if cfg.is_causal else ""
    s += "-local" if cfg.is_local else ""
    s += f"-pack{cfg.qhead_per_kvhead}" if cfg.pack_gqa else ""
    for flag in (
        "varlen_q",
        "varlen_k",
        "has_seqused_q",
        "has_seqused_k",
        "paged_kv",
        "kv_batch_idx",
        "split_kv",
        "has_softcap",
        "has_sink",
    ):
        s += f"-{flag}" if getattr(cfg, flag) else ""
    return s


@pytest.mark.parametrize("cfg", VARIANTS, ids=_id)
def test_variant_compiles_for_sm120a(cfg, tmp_path):
    assert cfg.smem_bytes <= smem_capacity(parse_arch("sm_120a"))
    compile_fwd(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=str(tmp_path))
    ptx_files = [p for p in os.listdir(tmp_path) if p.endswith(".ptx")]
    assert len(ptx_files) == 1, ptx_files
    ptx = (tmp_path / ptx_files[0]).read_text()
    # .target sm_120a, mma.sync.aligned.m16n8k16 present, no stmatrix, no wgmma
    assert ptx_problems(ptx, "sm_120a") == []
    assert "ldmatrix.sync.aligned" in ptx and ".trans" in ptx  # V through ldmatrix.trans
    assert "cp.async.cg.shared.global" in ptx  # 128-bit async loads
    # static shared memory is none: all of it is the dynamic SharedStorage checked at trace time
    static = sum(int(x) for x in re.findall(r"\.shared \.align \d+ \.b8 \w+\[(\d+)\]", ptx))
    assert static == 0
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        return
    r = subprocess.run(
        [ptxas, "-arch=sm_120a", "-v", str(tmp_path / ptx_files[0]), "-o", os.devnull],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    regs = max(map(int, re.findall(r"Used (\d+) registers", r.stderr)))
    spill = sum(int(a) for a in re.findall(r"(\d+) bytes spill stores", r.stderr))
    print(
        f"\n[sm_120a resources] {_id(cfg)}: {regs} registers, {spill} B spill stores, {cfg.smem_bytes} B smem"
    )
    plain_only = {
        (r.head_dim, r.head_dim_v, r.tile_m, r.tile_n, r.num_threads) for r in FWD_TABLE if r.plain_only
    }
    if (cfg.head_dim, cfg.head_dim_v, cfg.tile_m, cfg.tile_n, cfg.num_threads) in plain_only:
        # the row is in the table on the condition that the variants it serves do not spill
        assert spill == 0, f"{_id(cfg)}: {spill} B spill stores"


@pytest.mark.parametrize("family", ["sm120", "sm86", "sm80"])
def test_every_row_fits_its_family_cap(family):
    cap = smem_capacity(parse_arch(family_cap_arch(family)))
    rows = [r for r in FWD_TABLE if r.family == family]
    assert rows
    for row in rows:
        cfg = fwd_config(family, "bfloat16", row.head_dim, row.head_dim_v, causal=False)
        assert cfg.smem_bytes <= cap, (row, cfg.smem_bytes, cap)


@pytest.mark.parametrize("sink", [False, True])
@pytest.mark.parametrize("dv", [64, 128, 256])
def test_combine_compiles_for_sm120a(dv, sink, tmp_path):
    from fa4_sm120.combine import CombineConfig, compile_combine

    compile_combine(
        CombineConfig("bfloat16", dv, has_sink=sink),
        tvm_ffi=False,
        gpu_arch="sm_120a",
        dump_dir=str(tmp_path),
    )
    ptx = next(p for p in tmp_path.iterdir() if p.suffix == ".ptx").read_text()
    assert ptx_problems(ptx, "sm_120a", mma=False) == []  # .target sm_120a, no stmatrix, no wgmma
    assert "shfl.sync.bfly" in ptx  # the warp all-reduce of the split LSEs
