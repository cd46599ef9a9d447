"""Occupancy arithmetic: CTAs per SM on SM120 for a kernel variant, and the launch shared memory that
makes a bigger GPU (H100/H200, 228 KB per SM) run no more CTAs per SM than SM120 would.

Compat mode measures on Hopper, which fits 2-3 CTAs of a 64 KB tile per SM where SM120 (100 KB of
shared memory per SM) fits one. Timings taken without this emulation favour tiles that SM120 cannot
co-schedule; ``benchmarks/tune_tiles.py --emulate-sm120`` uses :func:`emulated_launch_smem`.

Facts per SM: SM120/SM121 102,400 B shared memory (1 KB reserved per CTA), 65,536 registers
(allocated per warp in units of 256), 48 warps; SM90 233,472 B, 65,536 registers, 64 warps.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SmFacts", "SM120", "SM90", "ctas_per_sm", "emulated_launch_smem"]


@dataclass(frozen=True)
class SmFacts:
    smem_per_sm: int
    smem_per_cta_max: int
    reserved_per_cta: int
    regs_per_sm: int
    max_warps: int
    max_ctas: int


SM120 = SmFacts(102_400, 101_376, 1024, 65_536, 48, 32)
SM90 = SmFacts(233_472, 232_448, 1024, 65_536, 64, 32)


def ctas_per_sm(smem: int, regs_per_thread: int, threads: int, facts: SmFacts = SM120) -> int:
    warps = -(-threads // 32)
    regs_per_warp = -(-regs_per_thread * 32 // 256) * 256
    by_smem = facts.smem_per_sm // (smem + facts.reserved_per_cta) if smem else facts.max_ctas
    by_regs = facts.regs_per_sm // (regs_per_warp * warps)
    by_warps = facts.max_warps // warps
    return max(0, min(by_smem, by_regs, by_warps, facts.max_ctas))


def emulated_launch_smem(smem: int, regs_per_thread: int, threads: int, host: SmFacts = SM90) -> int:
    """Dynamic shared memory to request on ``host`` so that it runs at most as many CTAs per SM as
    SM120 does for this variant (never less than the kernel's own ``smem``)."""
    occ = ctas_per_sm(smem, regs_per_thread, threads, SM120)
    if occ == 0:
        raise ValueError(
            f"a CTA with {smem} B and {regs_per_thread} registers x {threads} threads does not fit SM120"
        )
    want = host.smem_per_sm // occ - host.reserved_per_cta
    # one more CTA must not fit: (want + reserved) * (occ + 1) > smem_per_sm
    return max(smem, min(want, host.smem_per_cta_max))
