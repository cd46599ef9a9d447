"""Tile table of the backward kernel (:mod:`fa4_sm120.bwd`): one row per (arch family, head dims).

Shared memory per row is ``bwd_smem_bytes = 2 B * (tile_m * (d + dv) + tile_n * (d + dv) + 2 * tile_m
* tile_n)`` (Q, dO, K, V, P, dS; every buffer a multiple of 1024 B here). Every SM120 row fits
101,376 B (a test proves it); the H100/H200 use the SM120 rows (compat mode, docs/architecture.md).

Every row adds dQ with ``red.global.add.v2.f32`` on pairs of adjacent columns (``vector_dq_red``;
``bwd_config(target=)`` keeps scalar reductions for SM80/86 targets, whose PTX lacks ``red`` on
vectors) and launches causal calls longest key blocks first (``longest_first``; 1-D grid,
:class:`fa4_core.tile_scheduler.BwdLongestFirstScheduler`). Why each row is what it is (the measurements,
the alternatives and the ``sm_120a`` registers and spills): ``docs/sm120-resources.md``.

Registers per thread (fp32 accumulators): ``acc_dK + acc_dV = tile_n * (d + dv) / threads`` live
through the whole loop, plus ``acc_S + acc_dP = 2 * tile_m * tile_n / threads`` or ``acc_dQ = tile_m *
d / threads``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fa4_core.arch import parse_arch
from fa4_core.errors import UnsupportedArchError, unsupported
from fa4_sm120.configs import BwdConfig

__all__ = [
    "BwdTile",
    "BWD_TABLE",
    "BWD_FEATURE_SETS",
    "select_bwd_tile",
    "bwd_config",
    "bwd_selecting_args",
    "excluded_before",
    "layout_notes",
    "with_candidate",
]


@dataclass(frozen=True)
class BwdTile:
    family: str
    head_dim: int
    head_dim_v: int
    tile_m: int
    tile_n: int
    num_threads: int
    mma_warps_n: int = 1
    vector_dq_red: bool = True  # dQ reductions as red.global.add.v2.f32 where the target has it (sm_90+)
    early_loads: bool = False  # the next Q and dO as two cp.async groups, each issued once its buffer is free
    longest_first: bool = True  # causal (no window): the longest key blocks of every (batch, head) first
    # S and dP on the transposed warp grid (num_warps / mma_warps_n warps along keys): fewer ldmatrix
    # bytes per FLOP where tile_n > tile_m (tools/bwd_smem_model.py: d64 64x128 over 4x2, 13.3 -> 14.6)
    sdp_transposed: bool = False
    # S and dP with every warp along the keys (a warp owns all tile_m rows of its keys): with v_in_regs
    # a warp then holds V for tile_n / num_warps keys only (d128 32x128: 32 registers)
    sdp_keys: bool = False
    v_in_regs: bool = False  # V's fragments of dP = dO·Vᵀ held in registers through the loop
    # bwd_config flags under which the table skips this row for the next row of its head dims (the
    # row's sm_120a builds with them spill)
    excludes: frozenset[str] = frozenset()


# the d128 row with V in registers spills 4-104 B on sm_120a with any of these (softcap: 8 B in fp16
# with a window); with causal and local windows alone, in both dtypes, it spills nowhere
_SPILLS_WITH_V_IN_REGS = frozenset(
    ("varlen_q", "varlen_k", "seqused_q", "seqused_k", "deterministic", "dsink", "softcap")
)

# fmt: off
BWD_TABLE: tuple[BwdTile, ...] = (
    # ---- SM120/SM121 (and H100/H200 in compat mode): 101,376 B per CTA
    BwdTile("sm120",  32,  32, 64, 64, 128, 1),  # 2*(64*64   + 64*64   + 2*64*64) = 32,768 B
    # S/dP on 2 x 4 warps, dK/dV/dQ on 4 x 2, V's dP fragments in registers: the calls without the
    # sink's gradient; the next row serves those (with varlen or seqused and deterministic, causal, their
    # builds here spill 12-76 B)
    BwdTile("sm120",  64,  64, 64, 128, 256, 2, sdp_transposed=True, v_in_regs=True,
            excludes=frozenset(("dsink",))),  # 81,920 B
    BwdTile("sm120",  64,  64, 64, 128, 256, 2),  # 2*(64*128 + 128*128 + 2*64*128) = 81,920 B
    BwdTile("sm120",  96,  96, 64, 64, 128, 1),  # 2*(64*192  + 64*192  + 2*64*64) = 65,536 B
    # S/dP on 1 x 8 warps, dK/dV/dQ on 2 x 4, V in registers: the calls without varlen, seqused,
    # deterministic, softcap or the sink's gradient; the next row serves those (their builds here spill)
    BwdTile("sm120", 128, 128, 32, 128, 256, 4, early_loads=True, sdp_keys=True, v_in_regs=True,
            excludes=_SPILLS_WITH_V_IN_REGS),  # 98,304 B
    BwdTile("sm120", 128, 128, 32, 128, 256, 4, early_loads=True),  # 2*(32*256 + 128*256 + 2*32*128) = 98,304 B
    BwdTile("sm120", 160, 160, 64, 64, 256, 2),  # 2*(64*320  + 64*320  + 2*64*64) = 98,304 B
    BwdTile("sm120", 192, 128, 64, 64, 256, 2),  # 2*(64*320  + 64*320  + 2*64*64) = 98,304 B
    BwdTile("sm120", 192, 192, 64, 32, 128, 2),  # 2*(64*384 + 32*384  + 2*64*32) = 81,920 B
    BwdTile("sm120", 224, 224, 32, 32, 128, 2),  # 2*(32*448 + 32*448  + 2*32*32) = 61,440 B
    BwdTile("sm120", 256, 256, 32, 32, 128, 2),  # 2*(32*512 + 32*512  + 2*32*32) = 69,632 B
)
# fmt: on

# The feature combinations (keyword arguments of bwd_config) that CI compiles for every row
# (tests/sm120/test_bwd_compile.py) and benchmarks/sm120_resources.py reports the worst of: each flag
# changes the generated code (and its registers), not the tile.
BWD_FEATURE_SETS: tuple[dict, ...] = (
    dict(causal=False, local=True),
    dict(causal=True, local=True, deterministic=True),
    dict(causal=False, softcap=True),
    dict(causal=True, local=True, softcap=True),
    dict(causal=False, varlen_q=True, varlen_k=True),
    dict(causal=True, varlen_q=True, varlen_k=True, seqused_q=True, seqused_k=True, deterministic=True),
    dict(causal=False, local=True, softcap=True, seqused_q=True, seqused_k=True),
    dict(causal=True, local=True, softcap=True, varlen_q=True, varlen_k=True, deterministic=True),
    # the learnable sink's exact row sums (per warp column), also inside the deterministic ordering
    dict(causal=True, dsink=True),
    dict(causal=False, local=True, varlen_q=True, varlen_k=True, deterministic=True, dsink=True),
)

CANDIDATE_FLAGS = {
    "v": "vector_dq_red",
    "e": "early_loads",
    "l": "longest_first",
    "s": "sdp_transposed",
    "k": "sdp_keys",
    "r": "v_in_regs",
}


def with_candidate(
    row: BwdTile, tile_m: int, tile_n: int, num_threads: int, mma_warps_n: int, flags: str = ""
) -> BwdTile:
    """``row`` with a sweep candidate's tile and flags, as ``benchmarks/tune_bwd.py`` and the alt-row
    tests write them: ``"v"`` vector_dq_red, ``"e"`` early_loads, ``"l"`` longest_first, ``"s"``
    sdp_transposed, ``"k"`` sdp_keys, ``"r"`` v_in_regs; a flag left out is off."""
    if set(flags) - set(CANDIDATE_FLAGS):
        raise unsupported("flags", flags, f"letters of {''.join(CANDIDATE_FLAGS)} ({CANDIDATE_FLAGS})")
    if "s" in flags and "k" in flags:
        raise unsupported("flags", flags, "at most one of s (S/dP transposed) and k (S/dP along the keys)")
    on = {field: letter in flags for letter, field in CANDIDATE_FLAGS.items()}
    return replace(
        row, tile_m=tile_m, tile_n=tile_n, num_threads=num_threads, mma_warps_n=mma_warps_n,
        excludes=frozenset(), **on,
    )  # fmt: skip


_CAP_ARCH = {"sm120": "sm_120a", "sm86": "sm_86", "sm80": "sm_80"}

# the feature flags of bwd_config (each changes the generated code, not the tile)
FEATURES = tuple("causal deterministic local softcap varlen_q varlen_k seqused_q seqused_k dsink".split())


def _sdp_warps_n(row: BwdTile) -> int:
    """``BwdConfig.sdp_warps_n`` of a row: 0 (S and dP on the row's grid) unless a flag says otherwise."""
    warps = row.num_threads // 32
    if row.sdp_keys:
        return warps
    return warps // row.mma_warps_n if row.sdp_transposed else 0


def select_bwd_tile(family: str, head_dim: int, head_dim_v: int, **features: bool) -> BwdTile:
    """The first row of the head dims whose ``excludes`` names none of the ``features`` that are on
    (keyword arguments of :func:`bwd_config`: ``deterministic``, ``varlen_q``, ``dsink``...)."""
    if family not in _CAP_ARCH:
        raise UnsupportedArchError(
            f"family={family!r} has no backward tile table; supported: {tuple(_CAP_ARCH)}"
        )
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise unsupported("features", sorted(unknown), f"keyword arguments of bwd_config: {FEATURES}")
    on = {name for name, value in features.items() if value}
    # SM86/SM80 have at least SM120's shared memory: they use the SM120 rows
    for row in BWD_TABLE:
        if (row.head_dim, row.head_dim_v) == (head_dim, head_dim_v) and not (row.excludes & on):
            return row
    raise unsupported(
        "(head_dim, head_dim_v)",
        (head_dim, head_dim_v),
        "for the backward: " + ", ".join(f"{r.head_dim}/{r.head_dim_v}" for r in BWD_TABLE),
    )


def excluded_before(row: BwdTile) -> frozenset[str]:
    """The flags that earlier rows of ``row``'s head dims exclude: the calls with any of them come to
    ``row`` (empty for the first row of its head dims)."""
    earlier = set()
    for r in BWD_TABLE:
        if r is row:
            break
        if (r.family, r.head_dim, r.head_dim_v) == (row.family, row.head_dim, row.head_dim_v):
            earlier |= r.excludes
    return frozenset(earlier)


def bwd_selecting_args(row: BwdTile) -> dict:
    """Keyword arguments of :func:`bwd_config` (besides ``causal``) under which the table picks
    ``row``: none for the first row of its head dims; for a row after one with ``excludes``, one
    flag it excludes (``deterministic`` where it can)."""
    earlier = excluded_before(row)
    if not earlier:
        return {}
    return {"deterministic" if "deterministic" in earlier else min(earlier): True}


def layout_notes(row: BwdTile) -> list[str]:
    """How a row departs from one warp grid with operands in shared memory, in words (for reports)."""
    notes = (
        ["S/dP along the keys"]
        if row.sdp_keys
        else ["S/dP on the transposed warp grid"]
        if row.sdp_transposed
        else []
    )
    return notes + (["V in registers"] if row.v_in_regs else [])


def bwd_config(
    family: str,
    dtype: str,
    head_dim: int,
    head_dim_v: int,
    *,
    causal: bool,
    deterministic: bool = False,
    local: bool = False,
    softcap: bool = False,
    varlen_q: bool = False,
    varlen_k: bool = False,
    seqused_q: bool = False,
    seqused_k: bool = False,
    dsink: bool = False,
    target: str | None = None,
) -> BwdConfig:
    """The backward config of a table row; the feature flags (local window, softcap, varlen) change
    the generated code, not the tile. ``target`` (``"sm_90"``, ``"sm_120a"``...: the GPU the kernel is
    compiled for, when it is not the family's own) turns off what its PTX lacks: ``red`` on vectors
    needs sm_90+, so an SM120 row run on an SM80/86 GPU (``FA4_ARCH``) keeps scalar dQ reductions."""
    row = select_bwd_tile(
        family, head_dim, head_dim_v, causal=causal, deterministic=deterministic, local=local,
        softcap=softcap, varlen_q=varlen_q, varlen_k=varlen_k, seqused_q=seqused_q, seqused_k=seqused_k,
        dsink=dsink,
    )  # fmt: skip
    vector_red = row.vector_dq_red and parse_arch(target or _CAP_ARCH[family]).cc >= 90
    return BwdConfig(
        dtype=dtype,
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        tile_m=row.tile_m,
        tile_n=row.tile_n,
        num_threads=row.num_threads,
        mma_warps_n=row.mma_warps_n,
        sdp_warps_n=_sdp_warps_n(row),
        v_in_regs=row.v_in_regs,
        is_causal=causal,
        deterministic=deterministic,
        arch=_CAP_ARCH[family],
        is_local=local,
        has_softcap=softcap,
        varlen_q=varlen_q,
        varlen_k=varlen_k,
        has_seqused_q=seqused_q,
        has_seqused_k=seqused_k,
        has_dsink=dsink,
        vector_dq_red=vector_red,
        early_loads=row.early_loads,
        longest_first=row.longest_first and causal and not local,
    )
