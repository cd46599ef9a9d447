"""The body of the context-parallel tests, run in each of ``W`` spawned processes of one gloo group.

Not a test module (pytest does not collect it): ``tests/torch/test_context_parallel.py`` (CPU, the
fp32 reference chunk kernel) and ``tests/torch/test_context_parallel_gpu.py`` (fa4's kernels, the
ranks sharing one GPU with the tensors staged through the host) spawn :func:`run`. Every rank builds
the same full-sequence inputs from the case's seed, takes its shard, runs the ring forward and
backward, and checks its own rows of ``out``, ``lse``, ``dq``, ``dk``, ``dv`` (and the group's sum of
``dsink``) against the full-sequence reference through autograd; an assertion on any rank fails the
spawn, which names the rank and the case.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fa4_core.testing import attention_ref, check_close
from fa4_torch.distributed import (
    Fa4Kernel,
    ReferenceKernel,
    llama3_flash_attn_prepare_cu_seqlens,
    llama3_flash_attn_varlen_func,
    ring_flash_attn_func,
    zigzag_ring_flash_attn_func,
    zigzag_split,
)


@dataclass(frozen=True)
class Case:
    layout: str  # ring | zigzag | varlen
    causal: bool
    nheads: int = 4
    nheads_kv: int = 4
    head_dim: int = 16
    seqlen: int = 0  # the whole sequence (dense); 0: 16 * W rows per batch entry
    batch: int = 2
    softcap: float = 0.0
    sink: bool = False
    docs: tuple = ()  # varlen: document lengths of the pack (their sum a multiple of W)
    heads_k_stride: int = 0  # varlen: 0 = all K/V heads at once

    def __str__(self):
        return (
            f"{self.layout}{'-causal' if self.causal else ''}-h{self.nheads}_{self.nheads_kv}-d{self.head_dim}"
            f"{f'-softcap{self.softcap:g}' if self.softcap else ''}{'-sink' if self.sink else ''}"
            f"{f'-docs{list(self.docs)}' if self.docs else ''}{f'-stride{self.heads_k_stride}' if self.heads_k_stride else ''}"
        )


def _shard(x, case, rank, world, dim):
    if case.layout == "zigzag":
        return zigzag_split(x, rank, world, dim=dim)
    return x.chunk(world, dim=dim)[rank].contiguous()


def check_case(case: Case, rank: int, world: int, device: torch.device, dtype: torch.dtype, kernel) -> None:
    gen = torch.Generator().manual_seed(zlib.crc32(f"{case}-{world}".encode()))
    varlen = case.layout == "varlen"
    h, hk, d = case.nheads, case.nheads_kv, case.head_dim
    if varlen:
        total = sum(case.docs)
        shape_q, shape_k = (total, h, d), (total, hk, d)
    else:
        s = case.seqlen or 16 * world
        shape_q, shape_k = (case.batch, s, h, d), (case.batch, s, hk, d)
    q, k, v, dout = (
        torch.randn(shp, generator=gen).to(dtype).to(device) for shp in (shape_q, shape_k, shape_k, shape_q)
    )
    sink = torch.randn(h, generator=gen) if case.sink else None
    sink = sink.to(device) if sink is not None else None
    cu = None
    if varlen:
        cu = torch.tensor([0, *torch.tensor(case.docs).cumsum(0).tolist()], dtype=torch.int32)

    def reference(upcast):
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        sk = sink.detach().clone().requires_grad_() if sink is not None else None
        kw = dict(causal=case.causal, softcap=case.softcap, learnable_sink=sk, upcast=upcast)
        if varlen:
            cud = cu.to(device)
            kw.update(cu_seqlens_q=cud, cu_seqlens_k=cud)
        out, lse = attention_ref(*leaves, **kw)
        out.backward(dout.to(out.dtype))
        return out.detach(), lse.detach(), *(t.grad for t in leaves), (sk.grad if sk is not None else None)

    ref = reference(True)
    pt = reference(False) if dtype != torch.float32 else None

    dim = 0 if varlen else 1
    lq, lk, lv = (_shard(t, case, rank, world, dim).requires_grad_() for t in (q, k, v))
    ldout = _shard(dout, case, rank, world, dim)
    lsink = sink.detach().clone().requires_grad_() if sink is not None else None
    common = dict(
        causal=case.causal, softcap=case.softcap, learnable_sink=lsink, kernel=kernel, return_attn_probs=True
    )
    if varlen:
        cu_q, cu_k, max_q, max_k, kslice = llama3_flash_attn_prepare_cu_seqlens(cu, case.causal, rank, world)
        out, lse, _ = llama3_flash_attn_varlen_func(
            lq,
            lk,
            lv,
            cu_q.to(device),
            cu_k.to(device),
            max_q,
            max_k,
            case.heads_k_stride or hk,
            kslice,
            **common,
        )
    elif case.layout == "zigzag":
        out, lse, _ = zigzag_ring_flash_attn_func(lq, lk, lv, **common)
    else:
        out, lse, _ = ring_flash_attn_func(lq, lk, lv, **common)
    out.backward(ldout)
    got = {"out": out, "lse": lse, "dq": lq.grad, "dk": lk.grad, "dv": lv.grad}
    if lsink is not None:
        dsink = lsink.grad.clone()
        if (
            dist.get_backend() == dist.Backend.GLOO
        ):  # on the host: gloo's CUDA all-reduce is not in every build
            dsink = dsink.cpu()
        dist.all_reduce(dsink)  # each rank holds its rows' share
        got["dsink"] = dsink.to(device)
    names = ["out", "lse", "dq", "dk", "dv", "dsink"]
    lse_dim = -1
    for i, name in enumerate(names):
        if name not in got:
            continue
        x = got[name].detach()

        def local(t, name=name):
            if name == "dsink":
                return t
            return _shard(t, case, rank, world, lse_dim if name == "lse" else dim)

        x_ref = local(ref[i])
        where = f"{case} W={world} rank {rank}: {name}"
        if pt is None:
            torch.testing.assert_close(
                x.float(), x_ref.float(), atol=2e-5, rtol=1e-4, msg=lambda m, where=where: f"{where}: {m}"
            )
        else:
            try:
                check_close(name, x, x_ref, local(pt[i]), softcap=case.softcap > 0, grad=name.startswith("d"))
            except AssertionError as e:
                raise AssertionError(f"{where}: {e}") from None


def run(rank: int, world: int, init_file: str, cases: list, on_gpu: bool) -> None:
    """One rank: join the gloo group through ``init_file`` and check every case."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if on_gpu:
            device, dtype, kernel = torch.device("cuda", 0), torch.bfloat16, Fa4Kernel()
            torch.cuda.set_device(device)
        else:
            device, dtype, kernel = torch.device("cpu"), torch.float32, ReferenceKernel()
            torch.set_num_threads(1)
        for case in cases:
            check_case(case, rank, world, device, dtype, kernel)
    finally:
        dist.destroy_process_group()
