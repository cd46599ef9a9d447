"""Context-parallel scaling: fa4's zigzag ring attention over NCCL, one GPU per rank, beside PyTorch's
``context_parallel`` on SDPA (flash and cuDNN backends), after the correctness check of
``benchmarks/check_ring.py``.

    torchrun --nproc-per-node N benchmarks/bench_ring.py [--out benchmarks/results]

Grid: total sequence lengths 32k..1M (``--seqlens``) with at most ``--max-tokens-per-gpu`` tokens per GPU
(default 128k: a 1M sequence needs 8 GPUs), batch 1, 32 query / 8 K/V heads, head dim 128, bf16,
causal (zigzag layout). Per length, on every rank, timed with CUDA events (median of a few runs,
the slowest rank's): forward and forward+backward of the ring; the same chunk-kernel steps without
communication (a no-op exchange: the compute alone); the K/V exchanges alone (W - 1 of them; the
backward's K/V plus fp32 dK/dV). Reported per length: tokens/s per GPU and TFLOP/s per GPU (FLOPs of
docs/benchmarks.md: causal forward ``2·B·H·S²·D``, backward 2.5x, fwd+bwd 3.5x, divided by W), the
share of communication hidden, ``(compute + comm - ring) / comm`` clipped to [0, 1], and the peak
memory. Peers: ``context_parallel`` (torch's ring, round-robin load balancing) on
``F.scaled_dot_product_attention(is_causal=True)`` with K/V heads repeated to 32 (SDPA's CP path
takes no GQA), skipped where it does not fit or is not available, with the reason. With N = 1 the ring
has one step and no communication (the one-GPU baseline). ``--skip-check`` skips the correctness
check, ``--no-peers`` the peers. Rank 0 writes ``<out>/<date>-<gpu>-ring-<N>gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import check_ring  # noqa: E402
from fa4_torch.distributed import Fa4Kernel, zigzag_ring_flash_attn_func  # noqa: E402
from fa4_torch.distributed import ring as ring_mod  # noqa: E402
from fa4_torch.distributed.comm import RingComm  # noqa: E402

H, HK, D = 32, 8, 128


def _tokens(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1024, "m": 1024 * 1024}.get(s[-1], 1)
    return int(s[:-1] if s[-1] in "km" else s) * mult


class NoComm:
    """The ring's exchange as a no-op: the chunk kernels' steps alone (the buffers keep what they hold)."""

    def __init__(self, rank, world):
        self.rank, self.world_size = rank, world

    def start(self, sends, recvs):
        pass

    def wait(self):
        pass


def timed(fn, device, runs: int) -> float:
    """Median seconds of ``fn`` over ``runs`` (after one warm-up), the slowest rank's."""
    fn()
    times = []
    for _ in range(runs):
        dist.barrier()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1e3)
    t = torch.tensor(sorted(times)[len(times) // 2], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def ring_case(seqlen: int, rank: int, world: int, device, runs: int) -> dict:
    local = seqlen // world
    g = torch.Generator(device=device).manual_seed(rank)
    q = torch.randn(1, local, H, D, device=device, dtype=torch.bfloat16, generator=g)
    k, v = (torch.randn(1, local, HK, D, device=device, dtype=torch.bfloat16, generator=g) for _ in range(2))
    dout = torch.randn_like(q)
    kern = Fa4Kernel()
    scale = D**-0.5
    row = {"seqlen": seqlen, "tokens_per_gpu": local}

    def fwd():
        with torch.no_grad():
            zigzag_ring_flash_attn_func(q, k, v, causal=True, kernel=kern)

    leaves = [t.clone().requires_grad_() for t in (q, k, v)]

    def fwd_bwd():
        out = zigzag_ring_flash_attn_func(*leaves, causal=True, kernel=kern)
        out.backward(dout)

    def fwd_compute():
        ring_mod.ring_forward(kern, NoComm(rank, world), "zigzag", q, k, v, scale, True, 0.0, None)

    out_lo, lse = ring_mod.ring_forward(kern, NoComm(rank, world), "zigzag", q, k, v, scale, True, 0.0, None)
    out_lo = out_lo.to(torch.bfloat16)

    def bwd_compute():
        nc = NoComm(rank, world)
        ring_mod.ring_backward(kern, nc, nc, "zigzag", dout, q, k, v, out_lo, lse, scale, True, 0.0)

    kv_bufs = (torch.empty_like(k), torch.empty_like(v))
    d_send = [torch.zeros(k.shape, dtype=torch.float32, device=device) for _ in range(2)]
    d_bufs = [torch.empty_like(t) for t in d_send]

    def exchange(sends, recvs):
        def go():
            comm = RingComm(dist.group.WORLD, device)
            for _ in range(world - 1):
                comm.start(sends, recvs)
                comm.wait()

        return go

    try:
        torch.cuda.reset_peak_memory_stats(device)
        row["fwd_s"] = timed(fwd, device, runs)
        row["fwd_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
        row["fwdbwd_s"] = timed(fwd_bwd, device, runs)
        row["fwdbwd_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        row["fwd_compute_s"] = timed(fwd_compute, device, runs)
        row["bwd_compute_s"] = timed(bwd_compute, device, runs)
        row["fwd_comm_s"] = timed(exchange([k, v], list(kv_bufs)), device, runs) if world > 1 else 0.0
        row["bwd_comm_s"] = (
            timed(exchange([k, v, *d_send], [*kv_bufs, *d_bufs]), device, runs) if world > 1 else 0.0
        )
    except torch.OutOfMemoryError as e:
        row["skipped"] = f"out of memory: {str(e).splitlines()[0]}"
        return row
    flops = 2 * H * seqlen * seqlen * D  # causal forward: 4·H·S·(S/2)·D
    row["fwd_tflops_per_gpu"] = flops / world / row["fwd_s"] / 1e12
    row["fwdbwd_tflops_per_gpu"] = 3.5 * flops / world / row["fwdbwd_s"] / 1e12
    row["fwd_tokens_per_s_per_gpu"] = local / row["fwd_s"]
    row["fwdbwd_tokens_per_s_per_gpu"] = local / row["fwdbwd_s"]
    if world > 1:
        fwd_bwd_compute = row["fwd_compute_s"] + row["bwd_compute_s"]
        comm = row["fwd_comm_s"] + row["bwd_comm_s"]
        row["fwd_comm_hidden"] = min(
            1.0, max(0.0, (row["fwd_compute_s"] + row["fwd_comm_s"] - row["fwd_s"]) / row["fwd_comm_s"])
        )
        row["fwdbwd_comm_hidden"] = min(1.0, max(0.0, (fwd_bwd_compute + comm - row["fwdbwd_s"]) / comm))
    return row


def torch_cp_case(seqlen: int, world: int, device, mesh, backend: str, runs: int) -> dict:
    """PyTorch's context_parallel on SDPA (``backend``: flash | cudnn), forward and fwd+bwd: the full
    buffers sharded in place inside the context and restored after it (as torch's own tests use it,
    gradients switched on inside the context), K/V heads repeated to 32."""
    from torch.distributed.tensor.experimental import context_parallel
    from torch.nn.attention import SDPBackend, sdpa_kernel

    row = {"seqlen": seqlen, "peer": f"torch_cp_sdpa_{backend}"}
    try:
        which = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[backend]
        bufs = [torch.randn(1, H, seqlen, D, device=device, dtype=torch.bfloat16) for _ in range(3)]

        def run(backward: bool):
            with context_parallel(mesh, buffers=bufs, buffer_seq_dims=[2, 2, 2]):
                for t in bufs:
                    t.requires_grad_(backward)
                with sdpa_kernel(which), torch.set_grad_enabled(backward):
                    out = torch.nn.functional.scaled_dot_product_attention(*bufs, is_causal=True)
                if backward:
                    out.sum().backward()
                for t in bufs:
                    t.requires_grad_(False)
                    t.grad = None

        torch.cuda.reset_peak_memory_stats(device)
        row["fwd_s"] = timed(lambda: run(False), device, runs)
        row["fwdbwd_s"] = timed(lambda: run(True), device, runs)
        row["fwdbwd_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
        flops = 2 * H * seqlen * seqlen * D
        row["fwd_tflops_per_gpu"] = flops / world / row["fwd_s"] / 1e12
        row["fwdbwd_tflops_per_gpu"] = 3.5 * flops / world / row["fwdbwd_s"] / 1e12
        row["fwd_tokens_per_s_per_gpu"] = seqlen / world / row["fwd_s"]
    except Exception as e:  # a peer that cannot run here is reported, not fatal
        row["skipped"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seqlens", default="32k,64k,128k,256k,512k,1m")
    ap.add_argument("--max-tokens-per-gpu", default="128k")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    rank, world, device = check_ring.init()
    checks = [] if args.skip_check else check_ring.check_all(rank, world, device)
    cap = _tokens(args.max_tokens_per_gpu)
    seqlens = [s for s in map(_tokens, args.seqlens.split(",")) if s // world <= cap and s % (2 * world) == 0]
    rows, peers = [], []
    mesh = None
    if not args.no_peers:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cuda", (world,))
    for s in seqlens:
        t0 = time.perf_counter()
        row = ring_case(s, rank, world, device, args.runs)
        rows.append(row)
        torch.cuda.empty_cache()
        if rank == 0:
            print(
                json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}),
                f"({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
        if not args.no_peers:
            for backend in ("flash", "cudnn"):
                peer = torch_cp_case(s, world, device, mesh, backend, args.runs)
                peers.append(peer)
                if rank == 0:
                    print(
                        json.dumps(
                            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in peer.items()}
                        ),
                        flush=True,
                    )
    if rank == 0:
        sys.path.insert(0, HERE)
        import _common as C

        env = C.environment()
        env["world_size"] = world
        path = C.results_path(f"ring-{world}gpu", args.out)
        C.write_results(
            path,
            {"env": env, "heads": [H, HK], "head_dim": D, "checks": checks, "ring": rows, "peers": peers},
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
