"""``tools/bwd_spill_sweep.py``: every combination of the backward's flags that ``--pin`` leaves free is
compiled for ``sm_120a`` (the table's row, or a ``--cand`` in its place), and the builds that spill are
listed with a non-zero exit. A stand-in ptxas on PATH gives fixed resources, so only the free flag's two
builds run; the real ptxas runs in ``test_bwd_compile.py``."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from fa4_sm120.bwd_tiles import FEATURES

pytestmark = pytest.mark.compile_only

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
import bwd_spill_sweep  # noqa: E402

# fixed resources from the environment (FAKE_REGS, FAKE_SPILL) for every build
PTXAS = """#!/bin/sh
echo "ptxas info    : Used ${FAKE_REGS} registers, used 1 barriers" >&2
echo "ptxas info    : 0 bytes stack frame, ${FAKE_SPILL} bytes spill stores, ${FAKE_SPILL} bytes spill loads" >&2
"""


@pytest.fixture
def fake_ptxas(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "ptxas"
    exe.parent.mkdir()
    exe.write_text(PTXAS)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_REGS", "240")
    return monkeypatch


def _pins(free: str) -> list[str]:
    return [a for name in FEATURES if name != free for a in ("--pin", f"{name}=0")]


def test_sweep_lists_the_spilling_builds(fake_ptxas, capsys):
    fake_ptxas.setenv("FAKE_SPILL", "12")
    rc = bwd_spill_sweep.main(["--head-dim", "64", "-j", "1", *_pins("causal")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "2 of 2 builds spill" in out and "\n  causal 12 B" in out and "\n  plain 12 B" in out
    assert "64x128x256 sdp2x4 vregs" in out  # the table's d64 row for these calls


def test_sweep_of_a_candidate_without_spills(fake_ptxas, capsys):
    fake_ptxas.setenv("FAKE_SPILL", "0")
    rc = bwd_spill_sweep.main(["--head-dim", "64", "--cand", "64,128,256,2,vl", "-j", "1", *_pins("dsink")])
    out = capsys.readouterr().out
    assert rc == 0 and "0 of 2 builds spill" in out
    assert "sdp" not in out and "vregs" not in out and out.count("240 registers, 0 B spill stores") == 2


def test_a_bad_pin_is_an_error_naming_it(capsys):
    with pytest.raises(SystemExit):
        bwd_spill_sweep.main(["--head-dim", "64", "--pin", "windowed=1"])
    assert "windowed=1" in capsys.readouterr().err
