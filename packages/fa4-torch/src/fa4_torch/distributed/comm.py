"""Communication of the ring, on ``torch.distributed`` only.

* :class:`RingComm`: one exchange in flight at a time with the ring's neighbours (send to
  ``rank + 1``, receive from ``rank - 1`` within the group) through ``batch_isend_irecv``. On a CUDA
  device with a backend that takes CUDA tensors (NCCL), the operations are issued on a side stream
  that first waits for the compute stream, so the next block travels while the current one is
  computed; :meth:`RingComm.wait` makes the compute stream wait for it. With the ``gloo`` backend and
  CUDA tensors the exchange is staged through host tensors (copies to and from the host around the
  point-to-point calls): several processes can then share one GPU, which is how the tests run.
* :func:`all_gather` / :func:`reduce_scatter`: the collectives of the varlen path (along dim 0),
  with the same staging; ``gloo`` has no reduce-scatter, so it sums with an all-reduce and slices.

The receive buffers are the caller's (the ring keeps two and alternates them: double buffering).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["RingComm", "stages_through_host", "all_gather", "reduce_scatter"]


def stages_through_host(group, device: torch.device) -> bool:
    """Whether tensors on ``device`` travel through host copies: CUDA tensors over ``gloo``."""
    return device.type == "cuda" and dist.get_backend(group) == dist.Backend.GLOO


class RingComm:
    """Point-to-point exchanges around the ring of ``group`` (``None``: the default group)."""

    def __init__(self, group, device: torch.device, tag: int = 0):
        self.group = group
        self.tag = tag  # two rings in flight at once (K/V and dK/dV) keep their messages apart
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        ranks = dist.get_process_group_ranks(group if group is not None else dist.group.WORLD)
        self.send_peer = ranks[(self.rank + 1) % self.world_size]
        self.recv_peer = ranks[(self.rank - 1) % self.world_size]
        self.stage = stages_through_host(group, device)
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" and not self.stage else None
        self._reqs: list = []
        self._copy_back: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._keep: list[torch.Tensor] = []

    def start(self, sends: list[torch.Tensor], recvs: list[torch.Tensor]) -> None:
        """Send ``sends`` to the next rank and receive ``recvs`` (same shapes, in order) from the
        previous one; asynchronous until :meth:`wait`. One exchange in flight at a time."""
        if self._reqs:
            raise RuntimeError("RingComm.start: the previous exchange was not waited for")
        if self.stage:
            host_sends = [t.detach().cpu() for t in sends]
            host_recvs = [torch.empty(r.shape, dtype=r.dtype) for r in recvs]
            self._copy_back = list(zip(recvs, host_recvs))
            self._keep = host_sends
            sends, recvs = host_sends, host_recvs
        ops = [dist.P2POp(dist.isend, t.contiguous(), self.send_peer, self.group, self.tag) for t in sends]
        ops += [dist.P2POp(dist.irecv, r, self.recv_peer, self.group, self.tag) for r in recvs]
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))
            with torch.cuda.stream(self.stream):
                self._reqs = dist.batch_isend_irecv(ops)
            for op in ops:  # the side stream uses them: the allocator must not reuse them before
                op.tensor.record_stream(self.stream)
            self._keep = [op.tensor for op in ops]
        else:
            self._reqs = dist.batch_isend_irecv(ops)
            self._keep = self._keep or [op.tensor for op in ops]

    def wait(self) -> None:
        """Complete the exchange: the receive buffers hold the previous rank's tensors (for the
        compute stream, on a GPU)."""
        for req in self._reqs:
            req.wait()
        self._reqs = []
        if self.stream is not None:
            torch.cuda.current_stream(self.stream.device).wait_stream(self.stream)
        for dst, src in self._copy_back:
            dst.copy_(src)
        self._copy_back = []
        self._keep = []


def all_gather(t: torch.Tensor, group) -> torch.Tensor:
    """The ranks' ``t`` (equal shapes) concatenated along dim 0, in rank order."""
    world = dist.get_world_size(group)
    if world == 1:
        return t
    stage = stages_through_host(group, t.device)
    src = t.detach().contiguous()
    if stage:
        src = src.cpu()
    parts = [torch.empty_like(src) for _ in range(world)]
    dist.all_gather(parts, src, group=group)
    full = torch.cat(parts, 0)
    return full.to(t.device) if stage else full


def reduce_scatter(t: torch.Tensor, group) -> torch.Tensor:
    """The sum over ranks of ``t``, this rank's slice of dim 0 (``t.shape[0]`` divisible by the world size)."""
    world = dist.get_world_size(group)
    if world == 1:
        return t
    rank = dist.get_rank(group)
    rows = t.shape[0] // world
    if dist.get_backend(group) == dist.Backend.GLOO:  # no reduce-scatter in gloo: all-reduce, then slice
        buf = t.detach().contiguous()
        host = buf.cpu() if buf.device.type == "cuda" else buf.clone()
        dist.all_reduce(host, group=group)
        return host[rank * rows : (rank + 1) * rows].to(t.device)
    out = torch.empty((rows, *t.shape[1:]), dtype=t.dtype, device=t.device)
    dist.reduce_scatter_tensor(out, t.contiguous(), group=group)
    return out
