"""The FP8 K/V staging path's shared-memory accesses, computed from the kernel's own layouts (traced on
the CPU, no GPU): every thread's ``cp.async`` destination in the 8-bit staging tile, the same elements
read back, and the 16-bit stores they are widened into.

* Each (row, 16-byte chunk) of a K or V block is copied exactly once, and the staging layout maps
  them one-to-one (the widening reads back what the thread itself copied).
* No bank conflicts: a 128-bit access is served a quarter warp at a time and a 64-bit one a half warp
  at a time; an access costs one shared-memory wavefront per such phase when the phase's threads hit
  distinct 4-byte words in each bank. Before the row-paired copy of d128 (8 threads per 128-byte
  row), one row's 16-byte chunks j and j+4 widened into the same banks of two 64-column atoms: every
  widened store took two wavefronts per phase.
"""

from __future__ import annotations

import collections

import cutlass
import cutlass.cute as cute
import pytest

from fa4_sm120.configs import kv8_copy
from fa4_sm120.fwd import FlashAttentionForwardSm120
from fa4_sm120.mma_sync import smem_layout
from fa4_sm120.tiles import fwd_config

pytestmark = pytest.mark.compile_only

FP8 = "float8_e4m3fn"
BANK_ROW = 128  # bytes: 32 banks of 4 bytes


def _configs():
    out = []
    for d in (64, 128):  # the decode rows
        out.append(
            fwd_config("sm120", "bfloat16", d, d, causal=True, small_m=True, decode=True, kv_dtype=FP8)
        )
    for d in (32, 64, 96, 128, 160, 192):  # the 64-row small-m rows (chunks) and the longer-chunk rows
        out.append(fwd_config("sm120", "bfloat16", d, d, causal=True, small_m=True, kv_dtype=FP8))
        out.append(fwd_config("sm120", "bfloat16", d, d, causal=False, kv_dtype=FP8))
    return list(dict.fromkeys(out))


def _id(cfg) -> str:
    return f"d{cfg.head_dim}-{cfg.tile_m}x{cfg.tile_n}x{cfg.num_threads}" + (
        "-warpsn" if cfg.warp_split_n else ""
    )


def _accesses(cfg):
    """``{(thread, m, k): ((row, col), staging byte offset)}`` of K's copy (m, k: the thread's copies)."""
    kern = FlashAttentionForwardSm120(cfg)
    d = cfg.head_dim
    out = {}

    @cute.jit
    def trace():
        copy = kern._kv_gmem_copy(d)
        staging = kern._staging_layout(d)
        ident = cute.make_identity_tensor((cfg.tile_n, d))
        for t in cutlass.range_constexpr(cfg.num_threads):
            coords = copy.get_slice(t).partition_S(ident)
            for m in cutlass.range_constexpr(cute.size(coords.shape[1])):
                for k in cutlass.range_constexpr(cute.size(coords.shape[2])):
                    c = coords[0, m, k]
                    out[(t, m, k)] = (tuple(int(x) for x in c), int(staging(c)))

    cute.compile(trace)
    return out


def _wavefronts(addrs: list[int], nbytes: int) -> int:
    """Shared-memory wavefronts of one warp's access of ``nbytes`` per thread at byte ``addrs``."""
    per_phase = 32 * 4 // nbytes if nbytes > 4 else 32
    total = 0
    for p in range(0, len(addrs), per_phase):
        words = collections.defaultdict(set)
        for a in addrs[p : p + per_phase]:
            for w in range(a // 4, (a + nbytes) // 4):
                words[w % 32].add(w)
        total += max(len(s) for s in words.values())
    return total


@pytest.mark.parametrize("cfg", _configs(), ids=_id)
def test_kv8_staging_and_widening_are_conflict_free(cfg):
    acc = _accesses(cfg)
    _, elems = kv8_copy(cfg.head_dim, cfg.num_threads, cfg.tile_n)
    # each 16- (8-)byte chunk of the (tile_n, d) block copied once, to its own staging bytes
    coords = [v[0] for v in acc.values()]
    assert sorted(coords) == [(r, c) for r in range(cfg.tile_n) for c in range(0, cfg.head_dim, elems)]
    assert len({v[1] for v in acc.values()}) == len(acc)
    assert max(v[1] for v in acc.values()) < cfg.tile_n * cfg.head_dim
    ideal_8bit = 32 * elems // BANK_ROW
    ideal_16bit = 32 * 16 // BANK_ROW  # per 16-byte store of the widened elements
    copies = sorted({(m, k) for _, m, k in acc})
    for warp in range(cfg.num_threads // 32):
        threads = range(32 * warp, 32 * warp + 32)
        for m, k in copies:
            staging = [acc[(t, m, k)][1] for t in threads]
            assert _wavefronts(staging, elems) == ideal_8bit, (warp, m, k, "staging")
            for h in range(elems // 8):  # the widened elements: a 16-byte store per 8 of them
                wide = [2 * _offset_of(cfg, acc[(t, m, k)][0], 8 * h) for t in threads]
                assert _wavefronts(wide, 16) == ideal_16bit, (warp, m, k, h, "widened")


_OFFSETS: dict = {}


def _offset_of(cfg, coord, dc: int) -> int:
    """The 16-bit buffer's element offset of ``(row, col + dc)``."""
    key = (cfg.tile_n, cfg.head_dim)
    table = _OFFSETS.get(key)
    if table is None:
        table = _OFFSETS[key] = _wide_offsets(cfg.tile_n, cfg.head_dim)
    return table[(coord[0], coord[1] + dc)]


def _wide_offsets(rows: int, cols: int) -> dict:
    out = {}

    @cute.jit
    def trace():
        wide = smem_layout(rows, cols)
        for r in cutlass.range_constexpr(rows):
            for c in cutlass.range_constexpr(0, cols, 8):
                out[(r, c)] = int(wide((r, c)))

    cute.compile(trace)
    return out
