"""Pack-GQA: fold the query heads that share a KV head into the row (M) mode of a tile.

With ``r = nheads // nheads_kv`` query heads per KV head, one CTA of KV head ``h_kv`` processes the
packed rows ``p = q_idx * r + h`` (``0 <= h < r``), so a tile of ``tile_m`` rows holds ``tile_m / r``
query positions of all ``r`` heads and K/V are loaded once for all of them. ``r`` need not divide
``tile_m``: a tile may begin and end in the middle of a query position.

Row addresses are computed **arithmetically** from the strides (``q_idx * stride_seq + head *
stride_head``), never by ``crd2idx`` on a sliced composite mode (the upstream bug that crashed every GQA
shape). The same functions run on Python ints (tests) and on DSL integers (kernels).
"""

from __future__ import annotations

__all__ = ["packed_rows", "unpack_row", "packed_row_offset", "query_range_of_rows"]


def packed_rows(seqlen_q, qhead_per_kvhead):
    """Number of packed rows for one KV head."""
    return seqlen_q * qhead_per_kvhead


def unpack_row(row, qhead_per_kvhead):
    """Packed row -> ``(q_idx, h)`` with ``h`` the head within the KV head's group."""
    q_idx = row // qhead_per_kvhead
    return q_idx, row - q_idx * qhead_per_kvhead


def packed_row_offset(row, head_kv, qhead_per_kvhead, stride_seq, stride_head):
    """Element offset of packed row ``row`` of KV head ``head_kv`` (batch offset not included)."""
    q_idx, h = unpack_row(row, qhead_per_kvhead)
    return q_idx * stride_seq + (head_kv * qhead_per_kvhead + h) * stride_head


def query_range_of_rows(row_start, row_end, qhead_per_kvhead):
    """Query positions ``[first, last]`` touched by packed rows ``[row_start, row_end)``, row_end > row_start."""
    return row_start // qhead_per_kvhead, (row_end - 1) // qhead_per_kvhead
