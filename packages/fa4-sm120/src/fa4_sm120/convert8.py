"""8-bit conversions of fp32 registers in inline PTX, shared by the 8-bit forward
(:mod:`fa4_sm120.fwd_q8`) and its quantizers (:mod:`fa4_sm120.quantize`).

* :func:`pack_e4m3x4`: four fp32 values -> one register of four e4m3 (``cvt.rn.satfinite``: to
  nearest even, saturated at ±448);
* :func:`pack_s8x4`: four fp32 values -> one register of four int8, rounded to nearest even through
  the bits of ``x + 1.5 * 2^23`` (:data:`F32_MAGIC`) and clamped to ±127;
* :data:`F32_MAGIC`, :data:`F32_MAGIC_BITS`: the same constant the other way, an int32 ``s`` with
  ``|s| < 2^22`` to fp32 as ``bits(s + F32_MAGIC_BITS) - F32_MAGIC`` (no quarter-rate ``I2F``).
"""

from __future__ import annotations

import cutlass.cute as cute
from cutlass import Float32, Int32
from cutlass._mlir.dialects import llvm
from cutlass.cutlass_dsl import T

__all__ = ["F32_MAGIC", "F32_MAGIC_BITS", "pack_e4m3x4", "pack_s8x4"]

F32_MAGIC = 12582912.0  # 1.5 * 2^23
F32_MAGIC_BITS = 0x4B400000  # its bit pattern


def _asm_i32(inputs, asm: str, constraints: str) -> Int32:
    return Int32(
        llvm.inline_asm(
            T.i32(),
            [x.ir_value() for x in inputs],
            asm,
            constraints,
            has_side_effects=False,
            is_align_stack=False,
            asm_dialect=llvm.AsmDialect.AD_ATT,
        )
    )


def pack_e4m3x4(x0: Float32, x1: Float32, x2: Float32, x3: Float32) -> Int32:
    """Four fp32 values -> one register of four e4m3 (``x0`` in the lowest byte), saturated, RNE."""
    return _asm_i32(
        (x0, x1, x2, x3),
        "{ .reg .b16 lo, hi; cvt.rn.satfinite.e4m3x2.f32 lo, $2, $1; "
        "cvt.rn.satfinite.e4m3x2.f32 hi, $4, $3; mov.b32 $0, {lo, hi}; }",
        "=r,f,f,f,f",
    )


def pack_s8x4(x0: Float32, x1: Float32, x2: Float32, x3: Float32) -> Int32:
    """Four fp32 values -> one register of four int8 (``x0`` lowest), clamped to ``[-127, 127]`` and
    rounded to nearest even: the low byte of ``x + 1.5 * 2^23``'s bits is the two's complement of the
    rounded value."""
    b = [
        cute.arch.fmin(cute.arch.fmax(x, Float32(-127.0)), Float32(127.0)) + Float32(F32_MAGIC)
        for x in (x0, x1, x2, x3)
    ]
    return _asm_i32(
        b,
        "{ .reg .b32 lo, hi; prmt.b32 lo, $1, $2, 0x0040; prmt.b32 hi, $3, $4, 0x0040; "
        "prmt.b32 $0, lo, hi, 0x5410; }",
        "=r,f,f,f,f",
    )
