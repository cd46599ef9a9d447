"""The SM120 static resource table: every forward and backward tile-table row (SM120 family), compiled for
``sm_120a`` on the CPU, with ``ptxas -arch=sm_120a -v`` registers and spills, shared memory, and the
CTAs / warps per SM that SM120 gives it (fa4_sm120.occupancy). No GPU needed.

    python benchmarks/sm120_resources.py > docs/sm120-resources.md
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

from fa4_sm120.compile import compile_fwd
from fa4_sm120.occupancy import ctas_per_sm
from fa4_sm120.tiles import FWD_TABLE, fwd_config, selecting_args


def ptxas_resources(ptx_path: str):
    r = subprocess.run(
        ["ptxas", "-arch=sm_120a", "-v", ptx_path, "-o", os.devnull], capture_output=True, text=True
    )
    regs = max(map(int, re.findall(r"Used (\d+) registers", r.stderr)))
    spill = sum(int(x) for x in re.findall(r"(\d+) bytes spill stores", r.stderr))
    return regs, spill


def main():
    if shutil.which("ptxas") is None:
        print("sm120_resources: ptxas (CUDA 13) is not on PATH; nothing measured")
        return 1
    from fa4_sm120.bwd import compile_bwd
    from fa4_sm120.bwd_tiles import BWD_TABLE, bwd_config

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
                # split-KV calls: compile it as the table picks it
                sel = selecting_args(row, causal) if table is FWD_TABLE else {}
                cfg = make_cfg("sm120", "bfloat16", row.head_dim, row.head_dim_v, causal=causal, **sel)
                d = tempfile.mkdtemp()
                compile_fn(cfg, tvm_ffi=False, gpu_arch="sm_120a", dump_dir=d)
                ptx = next(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".ptx"))
                regs, spill = ptxas_resources(ptx)
                occ = ctas_per_sm(cfg.smem_bytes, regs, cfg.num_threads)
                tile = f"{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}"
                if getattr(cfg, "mma_warps_n", 1) > 1:
                    tile += f" ({cfg.num_threads // 32 // cfg.mma_warps_n}x{cfg.mma_warps_n} warps)"
                calls = (
                    "plain (no window, no split-KV)"
                    if getattr(row, "plain_only", False)
                    else ("window or split-KV" if sel else "all")
                )
                print(
                    f"| {cfg.head_dim}/{cfg.head_dim_v} | {causal} | {calls} | {tile} | {cfg.smem_bytes} | {regs} | "
                    f"{spill} | {occ} | {occ * cfg.num_threads // 32} |",
                    flush=True,
                )
                shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
