"""Shared-memory operand bytes per FLOP of the backward's five products (S = Q·Kᵀ, dP = dO·Vᵀ,
dV += Pᵀ·dO, dK += dSᵀ·Q, dQ = dS·K) for every tile that fits a shared-memory budget, with the best
warp layout per product (mma.sync m16n8k16, both operands through ``ldmatrix``: a warp of an
``wm x wn`` layout reads ``M/wm x K`` of A and ``N/wn x K`` of B for its share of an ``M x N x K``
product). ``--v-in-regs``: V held in registers for the whole CTA (FlashAttention-2's ``Is_V_in_regs``),
so dP reads only dO. A model, not a measurement: bank conflicts, the registers it needs and the dQ
reductions are left out. Prints the tiles ordered by FLOP/B.

    python3 tools/bwd_smem_model.py --head-dim 128 --warps 8 --smem 101376
"""

from __future__ import annotations

import argparse


def product(m: int, n: int, k: int, warps: int, b_in_regs: bool = False, grid: int = 0):
    """``(bytes, wm, wn)`` of the cheapest warp layout of an ``m x n x k`` product (only ``wm = grid``
    when given), or None."""
    best = None
    for wm in (grid,) if grid else (1, 2, 4, 8):
        wn = warps // wm
        if warps % wm or m % (16 * wm) or n % (8 * wn):
            continue
        cost = 2 * k * (m * wn + (0 if b_in_regs else n * wm))  # 16-bit A and B fragments of every warp
        if best is None or cost < best[0]:
            best = (cost, wm, wn)
    return best


def tiles(d: int, dv: int, warps: int, smem_cap: int, v_in_regs: bool = False):
    for tm in range(16, 257, 16):
        for tn in range(32, 257, 32):
            smem = 2 * (tm * (d + dv) + tn * (d + dv) + 2 * tm * tn)
            if smem > smem_cap:
                continue
            # S and dP share one grid (dS = P * (dP - D) element by element); the others are free
            sdp = None
            for wm in (1, 2, 4, 8):
                s_, dp = product(tm, tn, d, warps, grid=wm), product(tm, tn, dv, warps, v_in_regs, grid=wm)
                if s_ and dp and (sdp is None or s_[0] + dp[0] < sdp[0][0] + sdp[1][0]):
                    sdp = (s_, dp)
            if sdp is None:
                continue
            prods = [
                *sdp,
                product(tn, dv, tm, warps),
                product(tn, d, tm, warps),
                product(tm, d, tn, warps),
            ]
            if None in prods:
                continue
            flops = 2 * tm * tn * (3 * d + 2 * dv)
            acc = (tn * (d + dv) + 2 * tm * tn) // (32 * warps)  # dK, dV, S, dP fp32 per thread
            yield flops / sum(p[0] for p in prods), tm, tn, smem, acc, [(p[1], p[2]) for p in prods]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--warps", type=int, default=8)
    ap.add_argument("--smem", type=int, default=101_376, help="bytes per CTA (SM120: 101,376)")
    ap.add_argument("--v-in-regs", action="store_true", help="dP = dO·Vᵀ with V in registers")
    a = ap.parse_args()
    print("FLOP/B  tile (m x n)  smem B  fp32 acc/thread  warp layouts (S, dP, dV, dK, dQ)")
    for fpb, tm, tn, smem, acc, lay in sorted(
        tiles(a.head_dim, a.head_dim, a.warps, a.smem, a.v_in_regs), reverse=True
    ):
        print(f"{fpb:6.2f}  {tm:3d} x {tn:3d}  {smem:7d}  {acc:4d}  {lay}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
