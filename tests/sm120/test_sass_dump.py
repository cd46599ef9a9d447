"""``tools/sass_dump.py``'s reading of a SASS listing: the opcode of a line (its predicate dropped), the
loops (a later branch back to an earlier instruction) in both disassemblers' forms -- ``cuobjdump``'s hex
targets and ``nvdisasm``'s labels -- and the hot loop, the smallest loop that holds MMAs. No compiler
runs here; ``python3 tools/sass_dump.py`` compiles the real rows."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import sass_dump  # noqa: E402


def _listing(branch_back_outer: str, branch_back_inner: str, labels: bool) -> list[str]:
    """An outer loop of 6 instructions without MMAs around an inner one of 3 with an MMA."""
    body = [
        ("0000", "MOV R1, c[0x0][0x28]"),
        ("0010", "FADD R2, R2, R3"),  # outer loop starts here
        ("0020", "LDSM.16.M88.4 R8, [R4]"),  # inner loop starts here
        ("0030", "IMMA.16832.S8.S8 R12, R8.ROW, R10.COL, R12"),
        ("0040", f"@P0 BRA {branch_back_inner}"),
        ("0050", "FMUL R2, R2, R3"),
        ("0060", f"@!P1 BRA {branch_back_outer}"),
        ("0070", "EXIT"),
    ]
    lines = []
    for addr, ins in body:
        if labels and addr == "0010":
            lines.append(".L_x_0:")
        if labels and addr == "0020":
            lines.append(".L_x_1:")
        lines.append(f"        /*{addr}*/                   {ins} ;")
    return lines


CUOBJDUMP = _listing("0x10", "0x20", labels=False)
NVDISASM = _listing("`(.L_x_0)", "`(.L_x_1)", labels=True)


def test_opcode_drops_the_predicate():
    assert sass_dump._opcode("        /*0040*/              @!UP0 BRA 0x10 ;") == "BRA"
    assert (
        sass_dump._opcode("        /*0030*/   IMMA.16832.S8.S8 R12, R8.ROW, R10.COL, R12 ;")
        == "IMMA.16832.S8.S8"
    )
    assert sass_dump._opcode(".L_x_0:") is None


def test_loops_in_both_disassemblers_forms():
    for lines in (CUOBJDUMP, NVDISASM):
        sizes = sorted(
            sum(1 for ln in lines[a : b + 1] if sass_dump._opcode(ln)) for a, b in sass_dump._loops(lines)
        )
        assert sizes == [3, 6], (lines, sass_dump._loops(lines))


def test_hot_loop_is_the_smallest_loop_with_mmas():
    for lines in (CUOBJDUMP, NVDISASM):
        ops = [sass_dump._opcode(ln) for ln in sass_dump._hot_loop(lines)]
        assert ops == ["LDSM.16.M88.4", "IMMA.16832.S8.S8", "BRA"], ops
    # without MMAs the largest loop is the hot one
    no_mma = [ln.replace("IMMA.16832.S8.S8", "IADD3") for ln in CUOBJDUMP]
    assert len(sass_dump._hot_loop(no_mma)) == 6
