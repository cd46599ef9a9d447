"""Context parallelism on the CPU: the fp32 LSE merge against a full-sequence reference, and the whole
ring (contiguous, zigzag, varlen; MHA and GQA; softcap; sinks) over a gloo group of ``W`` spawned
processes with the plain-PyTorch fp32 chunk kernel, forward and gradients against the full-sequence
reference through autograd (:mod:`cp_worker`). Both sides are fp32 computations of the same numbers
in different orders, so the bound is a fixed fp32 tolerance (``atol 2e-5, rtol 1e-4``), far below the
error of any mistake in the ring's bookkeeping.

Grid: W in {2, 4} (4 makes the zigzag plan see ``src < rank`` and ``src > rank`` on one rank, and
documents span three ranks); one group per W runs every case, to keep the suite fast.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available in this torch build", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # cp_worker, for the spawned processes too
import cp_worker  # noqa: E402

from fa4_core.errors import UnsupportedConfigError  # noqa: E402
from fa4_torch.distributed import (  # noqa: E402
    ReferenceKernel,
    llama3_flash_attn_prepare_cu_seqlens,
    ring_flash_attn_func,
    zigzag_merge,
    zigzag_split,
)
from fa4_torch.distributed.merge import apply_sink, merge_, new_accumulators  # noqa: E402

Case = cp_worker.Case

CPU_CASES = [
    Case("ring", causal=False),
    Case("ring", causal=True, nheads=4, nheads_kv=2),
    Case("zigzag", causal=True),
    Case("zigzag", causal=True, nheads=4, nheads_kv=1, softcap=5.0),
    Case("zigzag", causal=True, nheads=4, nheads_kv=2, sink=True),
    Case("zigzag", causal=False, sink=True),
    Case("varlen", causal=True, nheads=4, nheads_kv=2, docs=(5, 19, 8, 16, 3, 13)),  # 64 tokens
    Case("varlen", causal=False, docs=(30, 2, 32), sink=True),
    Case("varlen", causal=True, nheads=4, nheads_kv=2, docs=(40, 24), heads_k_stride=1, softcap=3.0),
]


def _full(q, k, v, causal, sink=None):
    """fp64 attention of the whole sequence: (out, lse) (the merge test's reference)."""
    s = torch.einsum("bqhd,bkhd->bhqk", q.double(), k.double()) / q.shape[-1] ** 0.5
    if causal:
        sq, sk = q.shape[1], k.shape[1]
        s = s.masked_fill(torch.ones(sq, sk, dtype=torch.bool).triu(sk - sq + 1), float("-inf"))
    if sink is not None:
        s = torch.cat([s, sink.double()[None, :, None, None].expand(*s.shape[:-1], 1)], -1)
    lse = torch.logsumexp(s, -1)
    p = torch.exp(s - lse[..., None])
    if sink is not None:
        p = p[..., :-1]
    return torch.einsum("bhqk,bkhd->bqhd", p, v.double()), lse


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("sink", [False, True])
def test_merge_matches_the_full_sequence(causal, sink):
    """Keys split into uneven chunks, each chunk's (out, lse) from the reference chunk kernel merged in
    fp32 (in a shuffled order) equal attention over all keys; with 24 queries against 40 keys causal,
    the first chunks leave rows that see no key (lse -inf) until a later chunk."""
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 24, 3, 16, generator=g)
    k, v = torch.randn(2, 2, 40, 3, 16, generator=g)
    sk = torch.randn(3, generator=g) if sink else None
    out_ref, lse_ref = _full(q, k, v, causal, sk)
    out, lse = new_accumulators(q, 16, varlen=False)
    bounds = [0, 7, 16, 17, 33, 40]
    kern = ReferenceKernel()
    for i in (3, 0, 4, 2, 1):
        a, b = bounds[i], bounds[i + 1]
        # causal in the full square (bottom-right): query i sees key j <= i + 16; this chunk's share
        # is the chunk's keys with that mask, computed by masking the reference's scores directly
        o, m = _chunk(kern, q, k[:, a:b], v[:, a:b], causal, a, 40)
        merge_(out, lse, o, m)
    if sink:
        apply_sink(out, lse, sk)
    torch.testing.assert_close(out.double(), out_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.double(), lse_ref, atol=1e-5, rtol=1e-5)


def _chunk(kern, q, k, v, causal, k0, sk_total):
    """The chunk ``[k0, k0 + len)`` of a bottom-right causal ``(24 x sk_total)`` attention through the
    kernel: query i sees global key j iff j <= i + sk_total - sq; rows seeing none get lse -inf."""
    if not causal:
        return kern.forward(q, k, v, causal=False, softmax_scale=q.shape[-1] ** -0.5, softcap=0.0)
    sq = q.shape[1]
    out = torch.zeros(*q.shape[:-1], v.shape[-1])
    lse = torch.full((q.shape[0], q.shape[2], sq), float("-inf"))
    for i in range(sq):
        last = i + sk_total - sq - k0  # the last visible local key
        if last < 0:
            continue
        o, m = kern.forward(
            q[:, i : i + 1], k[:, : last + 1], v[:, : last + 1], causal=False,
            softmax_scale=q.shape[-1] ** -0.5, softcap=0.0,
        )  # fmt: skip
        out[:, i : i + 1], lse[..., i : i + 1] = o, m
    return out, lse


def test_zigzag_split_and_merge_are_inverse():
    x = torch.arange(2 * 24).reshape(2, 24)
    parts = [zigzag_split(x, r, 3) for r in range(3)]
    assert parts[0][0].tolist() == [0, 1, 2, 3, 20, 21, 22, 23]
    assert torch.equal(zigzag_merge(parts), x)


def test_prepare_cu_seqlens():
    """Documents [0,5) [5,24) [24,32) over W=4 parts of 8: rank 1 holds [8,16), all inside document 1,
    whose keys start at 5: causal, up to 16; not causal, the whole document."""
    cu = torch.tensor([0, 5, 24, 32], dtype=torch.int32)
    cu_q, cu_k, mq, mk, sl = llama3_flash_attn_prepare_cu_seqlens(cu, True, 1, 4)
    assert (cu_q.tolist(), cu_k.tolist(), mq, mk, sl) == ([0, 8], [0, 11], 8, 11, slice(5, 16))
    cu_q, cu_k, mq, mk, sl = llama3_flash_attn_prepare_cu_seqlens(cu, False, 1, 4)
    assert (cu_q.tolist(), cu_k.tolist(), mk, sl) == ([0, 8], [0, 19], 19, slice(5, 24))
    cu_q, cu_k, mq, mk, sl = llama3_flash_attn_prepare_cu_seqlens(cu, True, 0, 4)
    assert (cu_q.tolist(), cu_k.tolist(), sl) == ([0, 5, 8], [0, 5, 8], slice(0, 8))
    with pytest.raises(UnsupportedConfigError, match="cu_seqlens"):
        llama3_flash_attn_prepare_cu_seqlens(torch.tensor([0, 30], dtype=torch.int32), True, 0, 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(dropout_p=0.1), "dropout_p"),
        (dict(window_size=(8, 0)), "window_size"),
        (dict(alibi_slopes=torch.ones(4)), "alibi_slopes"),
        (dict(causal="yes"), "causal"),
        (dict(softcap=-1.0), "softcap"),
        (dict(learnable_sink=torch.ones(3)), "learnable_sink"),
    ],
)
def test_ring_rejects_what_does_not_compose(kwargs, match):
    """Typed errors before any communication (no process group exists here)."""
    q = torch.randn(1, 8, 4, 16)
    with pytest.raises((UnsupportedConfigError, TypeError), match=match):
        ring_flash_attn_func(q, q, q, kernel=ReferenceKernel(), **kwargs)


@pytest.mark.parametrize("world", [2, 4])
def test_ring_over_gloo(world, tmp_path):
    """Forked where the platform allows (a spawned process spends seconds importing torch; the workers
    run torch on one thread, so the fork meets no OpenMP pool)."""
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    torch.multiprocessing.start_processes(
        cp_worker.run, args=(world, str(tmp_path / "store"), CPU_CASES, False), nprocs=world, join=True,
        start_method=method,
    )  # fmt: skip
