"""The variants the tile tables select and what their PTX must show, as plain data (no DSL import).

Written once for everything that enumerates or inspects kernels: the compile tests (``tests/sm120``),
``fa4 check`` (:mod:`fa4_torch.cli.check`) and the torch tests.

* :func:`fwd_head_dim_pairs` / :func:`bwd_head_dim_pairs`: the ``(head_dim, head_dim_v)`` pairs with a
  row in a family's forward table / in the backward table, in table order;
* :func:`fwd_row_variants`: every forward row of a family (or of all) x its dtypes x its causal
  values, with the :class:`~fa4_sm120.configs.FwdConfig` that the table builds for it (the selecting
  arguments of :func:`fa4_sm120.tiles.selecting_args`: a ``small_m`` row for small-m calls, the row
  behind a ``plain_only`` one for split-KV calls);
* :func:`ptx_problems`: what a kernel of the mma.sync family must show in its PTX (its ``.target``,
  ``mma.sync.aligned.m16n8k16``) and must not (``stmatrix``: paired with wgmma's register layout,
  not mma.sync's, the seed bug; ``wgmma``: Hopper only). An empty list when the PTX is right.
"""

from __future__ import annotations

from collections.abc import Iterator

from fa4_sm120.bwd_tiles import BWD_TABLE
from fa4_sm120.configs import FwdConfig
from fa4_sm120.tiles import FWD_TABLE, FwdTile, fwd_config, selecting_args

__all__ = ["fwd_head_dim_pairs", "bwd_head_dim_pairs", "fwd_row_variants", "ptx_problems", "MMA_SYNC"]

MMA_SYNC = "mma.sync.aligned.m16n8k16"  # the fp16/bf16 tensor instruction of the family


def fwd_head_dim_pairs(family: str = "sm120") -> tuple[tuple[int, int], ...]:
    """The ``(head_dim, head_dim_v)`` pairs with a row in ``family``'s forward table."""
    return tuple(dict.fromkeys((r.head_dim, r.head_dim_v) for r in FWD_TABLE if r.family == family))


def bwd_head_dim_pairs() -> tuple[tuple[int, int], ...]:
    """The ``(head_dim, head_dim_v)`` pairs with a row in the backward table (the gradients fa4 has)."""
    return tuple(dict.fromkeys((r.head_dim, r.head_dim_v) for r in BWD_TABLE))


def fwd_row_variants(family: str | None = None) -> Iterator[tuple[FwdTile, str, bool, FwdConfig]]:
    """``(row, dtype, causal, config)`` for every forward row of ``family`` (``None``: every family)
    x the row's dtypes x its causal values, in table order."""
    for row in FWD_TABLE:
        if family is not None and row.family != family:
            continue
        for dtype in row.dtypes:
            for causal in row.causal:
                sel = selecting_args(row, causal)
                cfg = fwd_config(row.family, dtype, row.head_dim, row.head_dim_v, causal=causal, **sel)
                yield row, dtype, causal, cfg


def ptx_problems(ptx: str, target: str, *, mma: bool = True) -> list[str]:
    """What is wrong with the PTX of an mma.sync-family kernel built for ``target`` (``sm_120a``):
    another ``.target``, no :data:`MMA_SYNC` (``mma``: kernels with tensor-core math), ``stmatrix``
    or ``wgmma`` present. Empty when nothing is."""
    problems = []
    if f".target {target}" not in ptx:
        problems.append(f"PTX is not for {target}")
    if mma and MMA_SYNC not in ptx:
        problems.append(f"no {MMA_SYNC}")
    if "stmatrix" in ptx:
        problems.append("stmatrix present (wgmma's register layout)")
    if "wgmma" in ptx:
        problems.append("wgmma present (Hopper only)")
    return problems
