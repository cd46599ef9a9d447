"""The LSE merge of partial attention results, in fp32.

A query row's attention over a union of key sets is the LSE-weighted combination of its attention
over each set: with partial results ``(o_a, lse_a)`` and ``(o_b, lse_b)``,

    lse = log(exp(lse_a) + exp(lse_b)),   o = exp(lse_a - lse) * o_a + exp(lse_b - lse) * o_b.

A row that sees no key of a set has ``lse = -inf`` and contributes nothing; a row that sees no key
at all keeps ``lse = -inf`` and ``o = 0`` (the kernels' convention). A learnable sink is one more
term of the softmax with no value: it enters once, after every key block (:func:`apply_sink`); its
gradient comes from the chunk kernels' backward (:mod:`fa4_torch.distributed.kernels`).

Layouts (the kernels'): dense ``out (batch, seqlen, heads, d)`` with ``lse (batch, heads, seqlen)``;
varlen ``out (total, heads, d)`` with ``lse (heads, total)``. The accumulators are fp32 and updated
in place, so a slice along the sequence (a view) can be merged into.
"""

from __future__ import annotations

import torch

__all__ = ["new_accumulators", "merge_", "apply_sink"]


def new_accumulators(q: torch.Tensor, head_dim_v: int, varlen: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """-> ``(out, lse)``: fp32 zeros of ``q``'s rows with ``head_dim_v`` columns, and ``-inf``."""
    out = torch.zeros((*q.shape[:-1], head_dim_v), dtype=torch.float32, device=q.device)
    if varlen:
        lse_shape = (q.shape[1], q.shape[0])
    else:
        lse_shape = (q.shape[0], q.shape[2], q.shape[1])
    lse = torch.full(lse_shape, float("-inf"), dtype=torch.float32, device=q.device)
    return out, lse


def _per_row(w: torch.Tensor) -> torch.Tensor:
    """``(b, h, s)`` -> ``(b, s, h, 1)``; ``(h, t)`` -> ``(t, h, 1)``: an LSE-shaped factor on ``out``."""
    return w.transpose(-1, -2).unsqueeze(-1)


def merge_(out: torch.Tensor, lse: torch.Tensor, blk_out: torch.Tensor, blk_lse: torch.Tensor) -> None:
    """Merge the partial result ``(blk_out, blk_lse)`` into the fp32 accumulators ``(out, lse)`` in place."""
    blk_lse = blk_lse.float()
    new = torch.logaddexp(lse, blk_lse)
    base = torch.where(torch.isneginf(new), torch.zeros_like(new), new)  # rows with no key yet: weights 0
    w_old = torch.exp(lse - base)
    w_blk = torch.exp(blk_lse - base)
    out.mul_(_per_row(w_old)).add_(blk_out.float() * _per_row(w_blk))
    lse.copy_(new)


def apply_sink(out: torch.Tensor, lse: torch.Tensor, sink: torch.Tensor) -> None:
    """Add the learnable sink (fp32 ``(heads,)``, one logit per query head) to the merged softmax, in
    place: ``lse' = log(exp(lse) + exp(sink))``, ``out' = exp(lse - lse') * out``."""
    s = sink.float()[:, None] if lse.dim() == 2 else sink.float()[None, :, None]
    new = torch.logaddexp(lse, s.expand_as(lse))
    out.mul_(_per_row(torch.exp(lse - new)))
    lse.copy_(new)
