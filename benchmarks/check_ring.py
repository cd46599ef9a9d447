"""Correctness of context parallelism on several GPUs: every layout of :mod:`fa4_torch.distributed`
over NCCL (one GPU per rank), each rank's rows of out, lse, dq, dk, dv (and the group's dsink)
against the fp32 reference of the whole sequence with the correctness rule (docs/testing.md). The
checks are those of the one-GPU tests (``tests/torch/cp_worker.py``), at larger shapes (head dim 128,
32/8 heads, 4096 tokens: 2W chunks of at least 256 rows for W <= 8).

    torchrun --nproc-per-node N benchmarks/check_ring.py

Also run first by ``benchmarks/bench_ring.py`` (docs/context-parallel.md). Prints one line per case
on rank 0; a failing check raises on its rank (torchrun then stops every rank).
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "torch"))  # cp_worker: the checks of the tests

import cp_worker  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from fa4_torch.distributed import Fa4Kernel  # noqa: E402

Case = cp_worker.Case
S, D = 4096, 128
CASES = [
    Case("ring", causal=False, nheads=32, nheads_kv=8, head_dim=D, seqlen=S, batch=1),
    Case("ring", causal=True, nheads=8, nheads_kv=8, head_dim=D, seqlen=S, batch=1),
    Case("zigzag", causal=True, nheads=32, nheads_kv=8, head_dim=D, seqlen=S, batch=1),
    Case("zigzag", causal=True, nheads=8, nheads_kv=2, head_dim=64, seqlen=S, batch=2, softcap=15.0),
    Case("zigzag", causal=True, nheads=8, nheads_kv=2, head_dim=D, seqlen=S, batch=1, sink=True),
    Case("varlen", causal=True, nheads=32, nheads_kv=8, head_dim=D, docs=(1000, 37, 2000, 611, 448)),
    Case(
        "varlen", causal=False, nheads=8, nheads_kv=2, head_dim=D, docs=(2048, 1024, 1024), heads_k_stride=1
    ),
]


def init() -> tuple[int, int, torch.device]:
    """NCCL group of torchrun's ranks, one GPU each (``LOCAL_RANK``)."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local)
    torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl", device_id=device)
    return dist.get_rank(), dist.get_world_size(), device


def check_all(rank: int, world: int, device: torch.device) -> list[str]:
    lines = []
    for case in CASES:
        t0 = time.perf_counter()
        cp_worker.check_case(case, rank, world, device, torch.bfloat16, Fa4Kernel())
        dist.barrier()
        lines.append(f"ok  W={world}  {case}  ({time.perf_counter() - t0:.1f} s)")
        if rank == 0:
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    rank, world, device = init()
    check_all(rank, world, device)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
