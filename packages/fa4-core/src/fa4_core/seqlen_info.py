"""Per-batch sequence offset and length for fixed-length and variable-length (varlen) attention.

For batch index ``b`` of ``num_batch`` sequences:

* fixed length (``cu_seqlens is None``): ``offset = 0`` (the batch is its own tensor mode) and
  ``seqlen = seqlen_static``;
* varlen (``cu_seqlens`` of length ``num_batch + 1``, prefix sums): ``offset = cu_seqlens[b]``,
  ``seqlen = cu_seqlens[b + 1] - cu_seqlens[b]``;
* ``seqused`` (length ``num_batch``) overrides the length in both cases: ``seqlen = seqused[b]``
  (only the first ``seqused[b]`` rows of the sequence/slot are used; the offset is unchanged).

**Clamped reads.** Grids are sized on the host without reading device tensors, so a CTA may be launched
for a batch index ``b >= num_batch`` (e.g. a persistent or over-sized grid). Such a ``b`` sees
``seqlen = 0`` and every read is made at ``b_c = min(b, num_batch - 1)``, so ``cu_seqlens[b_c + 1]``
and ``seqused[b_c]`` never leave the tensors. The validity factor ``min(max(num_batch - b, 0), 1)`` is
integer arithmetic (no branch), so the same code runs on Python ints and lists in tests and on DSL
``Int32`` and ``cute.Tensor`` inside a kernel. ``num_batch >= 1`` and ``b >= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fa4_core._intmath import imax, imin

__all__ = ["SeqlenInfo", "SeqlenInfoQK", "batch_valid"]


def batch_valid(batch_idx, num_batch):
    """1 if ``batch_idx < num_batch`` else 0, as an integer (Python int or DSL Int32)."""
    return imin(imax(num_batch - batch_idx, 0), 1)


@dataclass(frozen=True)
class SeqlenInfo:
    """``offset`` (row offset into a packed varlen tensor, 0 for fixed length) and ``seqlen``."""

    offset: Any
    seqlen: Any
    has_cu_seqlens: bool = False
    has_seqused: bool = False

    @staticmethod
    def create(batch_idx, num_batch, seqlen_static=None, cu_seqlens=None, seqused=None) -> SeqlenInfo:
        """Offset and length of sequence ``batch_idx``; see the module docstring for the rules.

        ``seqlen_static`` is the fixed length (required when ``cu_seqlens`` is None); ``cu_seqlens``
        and ``seqused`` are anything indexable by the batch index (list, numpy array, ``cute.Tensor``).
        """
        valid = batch_valid(batch_idx, num_batch)
        b = imin(batch_idx, num_batch - 1)
        if cu_seqlens is None:
            if seqlen_static is None and seqused is None:
                raise ValueError("SeqlenInfo.create: need seqlen_static when cu_seqlens is None")
            offset = 0
            length = seqlen_static
        else:
            offset = cu_seqlens[b]
            length = cu_seqlens[b + 1] - offset
        if seqused is not None:
            length = seqused[b]
        return SeqlenInfo(
            offset=offset,
            seqlen=length * valid,
            has_cu_seqlens=cu_seqlens is not None,
            has_seqused=seqused is not None,
        )


@dataclass(frozen=True)
class SeqlenInfoQK:
    """The query side and the key side of one batch index (fields ``offset_q``, ``seqlen_q``, ...)."""

    q: SeqlenInfo
    k: SeqlenInfo

    @property
    def offset_q(self):
        return self.q.offset

    @property
    def seqlen_q(self):
        return self.q.seqlen

    @property
    def offset_k(self):
        return self.k.offset

    @property
    def seqlen_k(self):
        return self.k.seqlen

    @staticmethod
    def create(
        batch_idx,
        num_batch,
        seqlen_q_static=None,
        seqlen_k_static=None,
        cu_seqlens_q=None,
        cu_seqlens_k=None,
        seqused_q=None,
        seqused_k=None,
    ) -> SeqlenInfoQK:
        return SeqlenInfoQK(
            q=SeqlenInfo.create(batch_idx, num_batch, seqlen_q_static, cu_seqlens_q, seqused_q),
            k=SeqlenInfo.create(batch_idx, num_batch, seqlen_k_static, cu_seqlens_k, seqused_k),
        )
