"""The SM120 static resource table: every forward and backward tile-table row (SM120 family), compiled for
``sm_120a`` on the CPU, with ``ptxas -arch=sm_120a -v`` registers and spills, shared memory, and the
CTAs / warps per SM that SM120 gives it (fa4_sm120.occupancy). No GPU needed.

    python benchmarks/sm120_resources.py --features > docs/sm120-resources.md

``--features`` adds, per forward and backward row, the worst registers and spills over its feature
variants.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from fa4_sm120 import compile as compile_mod
from fa4_sm120.compile import compile_fwd
from fa4_sm120.occupancy import ctas_per_sm
from fa4_sm120.tiles import FWD_TABLE, fwd_config, selecting_args


def ptxas_resources(ptx_path: str):
    regs, spill, err = compile_mod.ptxas_resources(ptx_path)
    if err or regs is None:
        raise RuntimeError(f"ptxas -arch=sm_120a {ptx_path}: {err}")
    return regs, spill


def main():
    if shutil.which("ptxas") is None:
        print("sm120_resources: ptxas (CUDA 13) is not on PATH; nothing measured")
        return 1
    from fa4_sm120.bwd import compile_bwd
    from fa4_sm120.bwd_tiles import (
        BWD_FEATURE_SETS,
        BWD_TABLE,
        bwd_config,
        bwd_selecting_args,
        layout_notes,
        select_bwd_tile,
    )

    features = "--features" in sys.argv[1:]

    header = "| head dims | causal | calls | tile (m x n x threads) | smem B | registers | spill stores B | CTAs/SM | warps/SM |"
    kinds = (
        ("Forward", FWD_TABLE, compile_fwd, fwd_config),
        ("Backward (main kernel)", BWD_TABLE, compile_bwd, bwd_config),
    )
    for title, table, compile_fn, make_cfg in kinds:
        print(f"\n{title}:\n\n{header}\n|---|---|---|---|---|---|---|---|---|")
        for row in table:
            if row.family != "sm120":
                continue
            for causal in getattr(row, "causal", (False, True)):
                # a forward row behind a plain_only row of its dims serves that case's window and
                # split-KV calls, a backward row behind one with excludes the calls it excludes:
                # compile it as the table picks it
                sel = selecting_args(row, causal) if table is FWD_TABLE else bwd_selecting_args(row)
                cfg = make_cfg("sm120", "bfloat16", row.head_dim, row.head_dim_v, causal=causal, **sel)
                regs, spill = build_resources(compile_fn, cfg)
                occ = ctas_per_sm(cfg.smem_bytes, regs, cfg.num_threads)
                tile = f"{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}"
                if getattr(cfg, "mma_warps_n", 1) > 1:
                    warps = f"{cfg.num_threads // 32 // cfg.mma_warps_n}x{cfg.mma_warps_n} warps"
                    notes = layout_notes(row) if table is BWD_TABLE else []
                    tile += f" ({'; '.join([warps, *notes])})"
                calls = _calls(row, sel)
                print(
                    f"| {cfg.head_dim}/{cfg.head_dim_v} | {causal} | {calls} | {tile} | {cfg.smem_bytes} | {regs} | "
                    f"{spill} | {occ} | {occ * cfg.num_threads // 32} |",
                    flush=True,
                )
    if features:
        _forward_features()
        print(
            "\nBackward feature variants (bwd_tiles.BWD_FEATURE_SETS: windows, softcap, varlen/seqused, "
            "deterministic, the sink's row sums), per row the most registers and spill stores of any:\n\n"
            "| head dims | tile | registers (max) | spill stores B (max) | variants that spill |\n|---|---|---|---|---|"
        )
        for row in BWD_TABLE:
            if row.family != "sm120":
                continue
            worst_regs, worst_spill, spilling = 0, 0, []
            for feat in BWD_FEATURE_SETS:
                if select_bwd_tile("sm120", row.head_dim, row.head_dim_v, **feat) is not row:
                    continue  # another row of its head dims serves these calls
                cfg = bwd_config("sm120", "bfloat16", row.head_dim, row.head_dim_v, **feat)
                regs, spill = build_resources(compile_bwd, cfg)
                worst_regs, worst_spill = max(worst_regs, regs), max(worst_spill, spill)
                if spill:
                    spilling.append(f"{'+'.join(k for k, v in feat.items() if v)} {spill} B")
            tile = f"{row.tile_m}x{row.tile_n}x{row.num_threads}"
            if layout_notes(row):
                tile += f" ({', '.join(layout_notes(row))})"
            print(
                f"| {row.head_dim}/{row.head_dim_v} | {tile} | {worst_regs} | {worst_spill} | "
                f"{'; '.join(spilling) or 'none'} |",
                flush=True,
            )
    return 0


# forward flags (FwdConfig fields) of the serving and training paths; each changes the generated code
FWD_FEATURE_SETS = (
    dict(is_local=True),
    dict(has_softcap=True),
    dict(has_sink=True),
    dict(varlen_q=True, varlen_k=True),
    dict(varlen_q=True, varlen_k=True, has_seqused_q=True, has_seqused_k=True),
    dict(varlen_q=True, paged_kv=True, has_seqused_k=True),
    dict(paged_kv=True, has_seqused_k=True, split_kv=True),
    dict(kv_batch_idx=True, has_seqused_k=True, split_kv=True),
    dict(varlen_q=True, varlen_k=True, has_softcap=True, split_kv=True),
)


def _forward_features():
    import dataclasses

    from fa4_sm120.fwd import FlashAttentionForwardSm120

    print(
        "\nForward feature variants (windows, softcap, sinks, varlen/seqused, paged K/V, KV-cache slots, "
        "split-KV; without and with pack-GQA 4), per row the most registers and spill stores of the "
        "variants the table gives it (a plain-only row: none with a window, split-KV or softcap):\n\n"
        "| head dims | causal | tile | registers (max) | spill stores B (max) | variants that spill |\n"
        "|---|---|---|---|---|---|"
    )
    for row in FWD_TABLE:
        if row.family != "sm120":
            continue
        for causal in row.causal:
            sel = selecting_args(row, causal)
            worst_regs, worst_spill, spilling = 0, 0, []
            for ratio in (1, 4):
                base = fwd_config(
                    "sm120", "bfloat16", row.head_dim, row.head_dim_v, causal=causal, pack_gqa=ratio > 1,
                    qhead_per_kvhead=ratio, **sel,
                )  # fmt: skip
                base = dataclasses.replace(base, split_kv=False)  # the tile only: the flags come next
                for feat in FWD_FEATURE_SETS:
                    if row.plain_only and (
                        feat.get("is_local") or feat.get("split_kv") or feat.get("has_softcap")
                    ):
                        continue
                    cfg = dataclasses.replace(base, **feat)
                    if not FlashAttentionForwardSm120.supports(cfg):
                        continue
                    regs, spill = build_resources(compile_fwd, cfg)
                    worst_regs, worst_spill = max(worst_regs, regs), max(worst_spill, spill)
                    if spill:
                        name = "+".join(k.removeprefix("has_").removeprefix("is_") for k in feat)
                        spilling.append(f"{name}{' gqa4' if ratio > 1 else ''} {spill} B")
            tile = f"{row.tile_m}x{row.tile_n}x{row.num_threads}"
            print(
                f"| {row.head_dim}/{row.head_dim_v} | {causal} | {tile} | {worst_regs} | {worst_spill} | "
                f"{'; '.join(spilling) or 'none'} |",
                flush=True,
            )


def _calls(row, sel: dict) -> str:
    """Which calls the table gives ``row`` (the "calls" column)."""
    if getattr(row, "plain_only", False):
        return "plain (no window, split-KV or softcap)"
    if getattr(row, "excludes", None):
        return "none of " + ", ".join(sorted(row.excludes))
    if not sel:
        return "all"
    if sel.get("decode"):
        return "decode over an FP8 cache (≤ 16 rows per tile; warps along the keys)"
    if sel.get("small_m"):
        return "small-m (decode, fewer 128-row tiles than SMs)"
    if hasattr(row, "excludes"):  # a backward row after one with excludes: the calls that one leaves
        from fa4_sm120.bwd_tiles import excluded_before

        return "any of " + ", ".join(sorted(excluded_before(row)))
    return "window, split-KV or softcap"


def build_resources(compile_fn, cfg) -> tuple[int, int]:
    """``(registers, spill store bytes)`` of ``cfg`` compiled by ``compile_fn`` for ``sm_120a`` (``ptxas
    -v``); raises where ptxas is missing or fails (also the spill sweeps' build, ``tools/*_spill_sweep.py``)."""
    d = tempfile.mkdtemp()
    try:
        compile_fn(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=d)
        ptx = next(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".ptx"))
        return ptxas_resources(ptx)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def sweep_build(name: str, compile_fn, cfg, tile: str) -> tuple:
    """One build of a spill sweep: ``(name, registers, spill bytes, tile)``, or ``(name, None, the
    error, "")`` for a combination the kernel refuses or ptxas fails on (reported, not counted)."""
    try:
        regs, spill = build_resources(compile_fn, cfg)
    except Exception as e:
        return name, None, f"{type(e).__name__}: {str(e)[:120]}", ""
    return name, regs, spill, tile


def run_sweep(build, jobs: list, workers: int) -> int:
    """``build(job) -> (name, registers, spill bytes or error, tile)`` over ``jobs`` in ``workers``
    processes (the spill sweeps of ``tools/``): one line per build, then the builds that spill or fail;
    returns 1 if any did, else 0."""
    from concurrent.futures import ProcessPoolExecutor

    spilled = []
    with ProcessPoolExecutor(max_workers=workers) as ex:
        for name, regs, spill, tile in ex.map(build, jobs):
            print(f"{name:<48} {tile:<24} regs {regs}  spill {spill}", flush=True)
            if regs is None or spill:
                spilled.append((name, spill))
    print(f"\n{len(jobs)} builds; {len(spilled)} spill or fail:")
    for name, spill in spilled:
        print(f"  {name}: {spill}")
    return 1 if spilled else 0


if __name__ == "__main__":
    raise SystemExit(main())
