"""Shared-memory arithmetic of the forward kernel (bytes), shared by the tile table and the kernel.

``fwd_smem_bytes = 2 * (sQ + stages * (sK + sV))`` elements of 16-bit data, where
``sQ = tile_m * max(head_dim, head_dim_v)`` (the O tile of the epilogue reuses Q's buffer),
``sK = tile_n * head_dim`` and ``sV = tile_n * head_dim_v``; each buffer is 1024-byte aligned, and the
sizes here are multiples of 1024 for every supported tile, so the sum is exact. With Q kept in
registers the Q buffer is still allocated (it is the staging buffer of the load and of O).

An FP8 K/V cache (``FwdConfig.kv_dtype``) adds the 8-bit staging tiles its ``cp.async`` lands in,
``kv8_staging_bytes = tile_n * (head_dim + head_dim_v)`` bytes (each 1024-byte aligned), before the
tiles are widened into the 16-bit K and V buffers.
"""

from __future__ import annotations

__all__ = ["fwd_smem_bytes", "kv8_staging_bytes", "q8_fwd_smem_bytes", "bwd_smem_bytes", "ELEM_BYTES"]

ELEM_BYTES = 2  # fp16 / bf16


def _align(x: int, a: int = 1024) -> int:
    return (x + a - 1) // a * a


def fwd_smem_bytes(tile_m: int, tile_n: int, head_dim: int, head_dim_v: int, num_stages: int) -> int:
    q = _align(tile_m * max(head_dim, head_dim_v) * ELEM_BYTES)
    k = _align(tile_n * head_dim * ELEM_BYTES * num_stages)
    v = _align(tile_n * head_dim_v * ELEM_BYTES * num_stages)
    return q + k + v


def kv8_staging_bytes(tile_n: int, head_dim: int, head_dim_v: int) -> int:
    """The 8-bit K and V staging tiles of an FP8 K/V cache (one byte per element)."""
    return _align(tile_n * head_dim) + _align(tile_n * head_dim_v)


def q8_fwd_smem_bytes(tile_m: int, tile_n: int, head_dim: int, head_dim_v: int, num_stages: int = 1) -> int:
    """The 8-bit forward: 1-byte Q, K and (transposed) V tiles, K and Vᵀ ``num_stages`` times; O
    (16-bit) reuses Q's buffer."""
    q = _align(max(tile_m * head_dim, tile_m * head_dim_v * ELEM_BYTES))
    return q + _align(tile_n * head_dim * num_stages) + _align(tile_n * head_dim_v * num_stages)


def bwd_smem_bytes(tile_m: int, tile_n: int, head_dim: int, head_dim_v: int) -> int:
    """Bytes of the kernel's ``SharedStorage``: sQ, sdO, sK, sV, sP, sdS (each 1024-B aligned)."""
    return (
        _align(tile_m * head_dim * ELEM_BYTES)
        + _align(tile_m * head_dim_v * ELEM_BYTES)
        + _align(tile_n * head_dim * ELEM_BYTES)
        + _align(tile_n * head_dim_v * ELEM_BYTES)
        + 2 * _align(tile_m * tile_n * ELEM_BYTES)
    )
