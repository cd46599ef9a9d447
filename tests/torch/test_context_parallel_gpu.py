"""Context parallelism with fa4's kernels on one GPU: ``W`` processes share the GPU in a gloo group,
the ring's tensors staged through the host, every layout (contiguous ring causal and not, zigzag,
varlen; MHA and GQA; softcap; sinks) for W in {2, 4}: each rank's rows of ``out``, ``lse``, ``dq``,
``dk``, ``dv`` (and the group's ``dsink``) against the fp32 reference of the whole sequence with the
correctness rule (docs/testing.md), computed in the ranks by :mod:`cp_worker`.

The parent first runs single-GPU fa4 on each case's full sequence (forward and backward, checked with
the same rule: the baseline the ring stands beside) and the chunk kernel's calls of the case, causal
and not: that compiles every kernel variant the ranks use into the disk cache (``FA4_CACHE_DIR``,
shared between processes), so the spawned ranks load them instead of each compiling them again.
Shapes are small (head dim 64, 4 query heads, 256 tokens) and the grid uses one GQA ratio (4/2; MQA is
in the CPU grid) so that few kernel variants are compiled: the file should take about a minute once
they are in the disk cache.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cp_worker, for the spawned processes too
import cp_worker  # noqa: E402

from fa4_core.testing import attention_ref, check_close  # noqa: E402
from fa4_torch.distributed import Fa4Kernel  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600), pytest.mark.xdist_group("context-parallel")]

Case = cp_worker.Case
D = 64
GPU_CASES = [
    Case("ring", causal=False, nheads=4, nheads_kv=2, head_dim=D, seqlen=256),
    Case("ring", causal=True, head_dim=D, seqlen=256),
    Case("zigzag", causal=True, nheads=4, nheads_kv=2, head_dim=D, seqlen=256),
    Case("zigzag", causal=True, head_dim=D, seqlen=256, softcap=10.0),
    Case("zigzag", causal=True, nheads=4, nheads_kv=2, head_dim=D, seqlen=256, sink=True),
    Case("varlen", causal=True, nheads=4, nheads_kv=2, head_dim=D, docs=(37, 100, 11, 60, 48)),
    Case("varlen", causal=False, head_dim=D, docs=(128, 72, 56), heads_k_stride=1),
]


def _warm_and_check_full_sequence(case):
    """Single-GPU fa4 on the whole sequence against the same reference (the baseline the ring is
    measured beside), compiling its kernel variants into the disk cache."""
    import fa4_torch

    g = torch.Generator(device="cuda").manual_seed(3)
    varlen = case.layout == "varlen"
    h, hk = case.nheads, case.nheads_kv
    n = sum(case.docs) if varlen else case.seqlen
    lead = (n,) if varlen else (2, n)
    q, dout = (torch.randn(*lead, h, D, generator=g, device="cuda").to(torch.bfloat16) for _ in range(2))
    k, v = (torch.randn(*lead, hk, D, generator=g, device="cuda").to(torch.bfloat16) for _ in range(2))
    sink = torch.randn(h, generator=g, device="cuda") if case.sink else None
    kw = dict(causal=case.causal, softcap=case.softcap, learnable_sink=sink)
    if varlen:
        cu = torch.tensor([0, *torch.tensor(case.docs).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
        kw.update(cu_seqlens_q=cu, cu_seqlens_k=cu)

    def grads(fn, upcast=None):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        if sink is not None:  # with a gradient: the ranks' backward variant computes dsink
            leaves.append(sink.clone().requires_grad_())
            kw["learnable_sink"] = leaves[-1]
        extra = {} if upcast is None else dict(upcast=upcast)
        if varlen and upcast is None:
            extra.update(max_seqlen_q=max(case.docs), max_seqlen_k=max(case.docs))
        out = fn(*leaves[:3], **kw, **extra)[0]
        out.backward(dout.to(out.dtype))
        return out.detach(), *(t.grad for t in leaves)

    # the chunk kernel's variants (no sink in the forward: the ring adds it after the merge)
    kern = Fa4Kernel()
    cu_kw = {} if not varlen else dict(cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=n, max_seqlen_k=n)
    dense_causal = case.causal and not varlen  # its steps after the first are unmasked
    for causal in (True, False) if dense_causal else (case.causal,):
        o, m = kern.forward(q, k, v, causal=causal, softmax_scale=D**-0.5, softcap=case.softcap, **cu_kw)
        bufs = [torch.zeros(t.shape, dtype=torch.float32, device="cuda") for t in (q, k, v)]
        dsink = torch.zeros(h, device="cuda") if sink is not None else None
        kern.backward(
            dout, q, k, v, o, m, *bufs, causal=causal, softmax_scale=D**-0.5, softcap=case.softcap, sink=sink,
            dsink=dsink, **cu_kw,
        )  # fmt: skip
    fa4 = grads(fa4_torch.flash_attn_varlen_func if varlen else fa4_torch.flash_attn_func)
    ref, pt = grads(attention_ref, True), grads(attention_ref, False)
    for i, name in enumerate(("out", "dq", "dk", "dv", "dsink")[: len(fa4)]):
        check_close(name, fa4[i], ref[i], pt[i], softcap=case.softcap > 0, grad=i > 0)


@pytest.mark.parametrize("world", [2, 4])
def test_ring_on_one_gpu(world, tmp_path):
    for case in GPU_CASES:
        _warm_and_check_full_sequence(case)
    torch.cuda.synchronize()
    torch.multiprocessing.spawn(
        cp_worker.run, args=(world, str(tmp_path / "store"), GPU_CASES, True), nprocs=world, join=True
    )
