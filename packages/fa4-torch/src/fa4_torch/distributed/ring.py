"""Ring attention over a ``torch.distributed`` group: the sequence split across the ranks, K/V blocks
travelling around the ring, partial results merged through their LSEs (fp32).

Each rank holds ``q``, ``k``, ``v`` of its part of the sequence, ``(batch, local_seqlen, heads, d)``
(K/V with their own, unrepeated heads: GQA). With ``W`` ranks the forward runs ``W`` steps; at step
``s`` rank ``r`` holds the K/V block of rank ``src = (r - s) mod W`` and, while the chunk kernel
computes on it, sends it on to ``r + 1`` and receives the next one from ``r - 1`` (:class:`RingComm`,
two receive buffers used in turn). The backward runs the same ring again: K/V travel as in the
forward and, beside them, the fp32 dK/dV accumulators of each block, each rank adding its share
before passing them on; after ``W`` steps each block's dK/dV is back at its owner.

Which (query rows, key rows, causal) a step computes is the layout's plan (:func:`_plan`):

* ``ring`` (contiguous chunks, rank ``r`` holds chunk ``r``): non-causal, every step the whole pair;
  causal, step 0 the diagonal block (causal), ``src < r`` the whole pair, ``src > r`` nothing (the
  last rank does ``W`` steps of work, the first one: unbalanced);
* ``zigzag`` (causal, balanced: rank ``r`` holds chunks ``r`` and ``2W - 1 - r`` of ``2W``): step 0
  the local pair (causal: the two chunks concatenated are a causal square), ``src < r`` all local
  queries against the block's first chunk, ``src > r`` the local second chunk's queries against the
  whole block; every step costs half a square, on every rank.

Every step is causal with equal lengths or not causal, so the mask's alignment never matters here.
A learnable sink enters the merged softmax once, after the last step; its gradient is this rank's
share (sum it over the group, as for any parameter; data-parallel gradient reduction does).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from fa4_torch.distributed.checks import check_ring_args
from fa4_torch.distributed.comm import RingComm
from fa4_torch.distributed.kernels import ChunkKernel, Fa4Kernel
from fa4_torch.distributed.merge import apply_sink, merge_, new_accumulators

__all__ = ["ring_flash_attn_func", "zigzag_ring_flash_attn_func", "zigzag_split", "zigzag_merge"]

_ALL = slice(None)


def _plan(layout: str, causal: bool, rank: int, src: int, step: int, local: int):
    """-> ``(query rows, key rows, causal)`` of this step, or None when the block is not seen."""
    if not causal:
        return _ALL, _ALL, False
    if step == 0:
        return _ALL, _ALL, True
    if layout == "ring":
        return (_ALL, _ALL, False) if src < rank else None
    half = local // 2
    if src < rank:
        return _ALL, slice(0, half), False
    return slice(half, None), _ALL, False


def _rows(t: torch.Tensor, rows: slice) -> torch.Tensor:
    return t if rows is _ALL else t[:, rows]


def _lse_rows(t: torch.Tensor, rows: slice) -> torch.Tensor:
    return t if rows is _ALL else t[..., rows]


def ring_forward(kernel: ChunkKernel, comm: RingComm, layout, q, k, v, scale, causal, softcap, sink):
    """-> ``(out, lse)`` fp32 of the local queries over the whole sequence."""
    world, rank = comm.world_size, comm.rank
    out, lse = new_accumulators(q, v.shape[-1], varlen=False)
    bufs = [(torch.empty_like(k), torch.empty_like(v)) for _ in range(2)] if world > 1 else []
    kk, vv = k, v
    for step in range(world):
        if step + 1 < world:
            comm.start([kk, vv], list(bufs[step % 2]))
        plan = _plan(layout, causal, rank, (rank - step) % world, step, q.shape[1])
        if plan is not None:
            qr, kr, c = plan
            o, m = kernel.forward(
                _rows(q, qr), _rows(kk, kr), _rows(vv, kr), causal=c, softmax_scale=scale, softcap=softcap
            )
            merge_(_rows(out, qr), _lse_rows(lse, qr), o, m)
        if step + 1 < world:
            comm.wait()
            kk, vv = bufs[step % 2]
    if sink is not None:
        apply_sink(out, lse, sink)
    return out, lse


def ring_backward(kernel, kv_comm, d_comm, layout, dout, q, k, v, out, lse, scale, causal, softcap, sink=None,
                  dsink=None):  # fmt: skip
    """-> fp32 ``(dq, dk, dv)`` of the local q, k, v; the local rows' share of the sink's gradient
    added into ``dsink``."""
    world, rank = kv_comm.world_size, kv_comm.rank
    dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
    kv_bufs = [(torch.empty_like(k), torch.empty_like(v)) for _ in range(2)] if world > 1 else []
    d_bufs = [
        (torch.empty(k.shape, dtype=torch.float32, device=k.device),
         torch.empty(v.shape, dtype=torch.float32, device=v.device))
        for _ in range(2 if world > 1 else 0)
    ]  # fmt: skip
    kk, vv = k, v
    dk = torch.zeros(k.shape, dtype=torch.float32, device=k.device)  # this rank's own block, step 0
    dv = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
    # later steps: the block's share lands in scratch while its accumulator is still on the wire
    dk_blk, dv_blk = (torch.empty_like(dk), torch.empty_like(dv)) if world > 1 else (None, None)
    for step in range(world):
        if step + 1 < world:
            kv_comm.start([kk, vv], list(kv_bufs[step % 2]))
        plan = _plan(layout, causal, rank, (rank - step) % world, step, q.shape[1])
        if plan is not None:
            qr, kr, c = plan
            if step == 0:
                gk, gv = _rows(dk, kr), _rows(dv, kr)
            else:
                gk, gv = _rows(dk_blk, kr).zero_(), _rows(dv_blk, kr).zero_()
            kernel.backward(
                _rows(dout, qr), _rows(q, qr), _rows(kk, kr), _rows(vv, kr), _rows(out, qr), _lse_rows(lse, qr),
                _rows(dq, qr), gk, gv, causal=c, softmax_scale=scale, softcap=softcap, sink=sink, dsink=dsink,
            )  # fmt: skip
        if step > 0:  # the block's accumulator, from the rank that held the block at the previous step
            d_comm.wait()
            dk, dv = d_bufs[(step - 1) % 2]
            if plan is not None:
                _rows(dk, kr).add_(gk)
                _rows(dv, kr).add_(gv)
        if step + 1 < world:
            kv_comm.wait()
            kk, vv = kv_bufs[step % 2]
        if world > 1:
            d_comm.start([dk, dv], list(d_bufs[step % 2]))
    if world > 1:  # the last exchange brings this rank's own block's dK/dV home
        d_comm.wait()
        dk, dv = d_bufs[(world - 1) % 2]
    return dq, dk, dv


class RingAttnFunc(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, sink, scale, causal, softcap, layout, group, kernel):
        comm = RingComm(group, q.device, tag=0)
        out, lse = ring_forward(kernel, comm, layout, q, k, v, scale, causal, softcap, sink)
        out = out.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse, sink)
        ctx.args = (scale, causal, softcap, layout, group, kernel)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        q, k, v, out, lse, sink = ctx.saved_tensors
        scale, causal, softcap, layout, group, kernel = ctx.args
        kv_comm = RingComm(group, q.device, tag=0)
        d_comm = RingComm(group, q.device, tag=1)
        want_dsink = sink is not None and ctx.needs_input_grad[3]
        dsink = torch.zeros(sink.shape, dtype=torch.float32, device=sink.device) if want_dsink else None
        dq, dk, dv = ring_backward(
            kernel, kv_comm, d_comm, layout, dout, q, k, v, out, lse, scale, causal, softcap, sink if want_dsink else None,
            dsink,
        )  # fmt: skip
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dsink, None, None, None, None, None, None


def _ring(layout, q, k, v, dropout_p, softmax_scale, causal, window_size, alibi_slopes, deterministic,
          return_attn_probs, group, softcap, learnable_sink, kernel):  # fmt: skip
    scale = check_ring_args(
        q, k, v, dropout_p=dropout_p, softmax_scale=softmax_scale, causal=causal, window_size=window_size,
        alibi_slopes=alibi_slopes, deterministic=deterministic, return_attn_probs=return_attn_probs,
        softcap=softcap, learnable_sink=learnable_sink, zigzag=layout == "zigzag",
    )  # fmt: skip
    if kernel is None:
        kernel = Fa4Kernel(deterministic=deterministic)
    if group is None:
        group = dist.group.WORLD
    out, lse = RingAttnFunc.apply(
        q, k, v, learnable_sink, scale, causal, float(softcap), layout, group, kernel
    )
    return (out, lse, None) if return_attn_probs else out


def ring_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1),
                         alibi_slopes=None, deterministic=False, return_attn_probs=False, group=None, *,
                         softcap=0.0, learnable_sink=None, kernel: ChunkKernel | None = None):  # fmt: skip
    """Ring attention, rank ``r`` holding the ``r``-th contiguous chunk of the sequence:
    ``q (batch, local_seqlen, nheads, d)``, ``k``/``v (batch, local_seqlen, nheads_kv, d)``, the same
    local length on every rank. Returns ``out`` (the local rows), or ``(out, lse, None)`` with
    ``return_attn_probs=True`` (ring-flash-attention's convention; ``lse (batch, nheads, local_seqlen)``
    fp32, no gradient through it). Causal is allowed but unbalanced: use
    :func:`zigzag_ring_flash_attn_func`. ``dropout_p``, ``alibi_slopes`` and ``window_size`` other
    than their defaults raise :class:`~fa4_core.errors.UnsupportedConfigError`. fa4's own:
    ``softcap``, ``learnable_sink`` (fp32 ``(nheads,)``; its gradient is this rank's share), and
    ``kernel`` (the chunk kernel, :class:`~fa4_torch.distributed.Fa4Kernel` by default)."""
    return _ring("ring", q, k, v, dropout_p, softmax_scale, causal, window_size, alibi_slopes, deterministic,
                 return_attn_probs, group, softcap, learnable_sink, kernel)  # fmt: skip


def zigzag_ring_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=True, window_size=(-1, -1),
                                alibi_slopes=None, deterministic=False, return_attn_probs=False, group=None, *,
                                softcap=0.0, learnable_sink=None, kernel: ChunkKernel | None = None):  # fmt: skip
    """Load-balanced causal ring attention: the sequence cut into ``2W`` chunks, rank ``r`` holding
    chunks ``r`` and ``2W - 1 - r`` concatenated (:func:`zigzag_split`), so its local length is even.
    Otherwise as :func:`ring_flash_attn_func` (``causal=False`` runs the plain ring on this layout)."""
    return _ring("zigzag", q, k, v, dropout_p, softmax_scale, causal, window_size, alibi_slopes, deterministic,
                 return_attn_probs, group, softcap, learnable_sink, kernel)  # fmt: skip


def zigzag_split(x: torch.Tensor, rank: int, world_size: int, dim: int = 1) -> torch.Tensor:
    """Rank ``rank``'s part of the full-sequence tensor ``x`` in the zigzag layout: chunks ``rank`` and
    ``2 * world_size - 1 - rank`` of ``2 * world_size`` along ``dim``, concatenated (a copy)."""
    if x.shape[dim] % (2 * world_size):
        raise ValueError(
            f"x.shape[{dim}]={x.shape[dim]} is not a multiple of 2 * world_size = {2 * world_size}"
        )
    chunks = x.chunk(2 * world_size, dim=dim)
    return torch.cat([chunks[rank], chunks[2 * world_size - 1 - rank]], dim=dim)


def zigzag_merge(parts: list[torch.Tensor], dim: int = 1) -> torch.Tensor:
    """The inverse of :func:`zigzag_split`: the ranks' parts (in rank order) -> the full sequence."""
    world = len(parts)
    halves = [p.chunk(2, dim=dim) for p in parts]
    return torch.cat(
        [halves[i][0] for i in range(world)] + [halves[i][1] for i in reversed(range(world))], dim=dim
    )
