"""The forward tune script's verdict (benchmarks/tune_tiles.py: sweep) on the CPU, with the timed
child processes replaced by fixed figures: a candidate replaces the current row only when it wins by
>= 2% in both passes."""

from __future__ import annotations

import os

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


@pytest.fixture
def tune(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    import tune_tiles

    return tune_tiles


def _run(tune, monkeypatch, figures: dict, cands: list[str]) -> dict:
    def fake_time(head_dim, causal, cand, emulate):
        return {"tflops": [figures[tune._name(cand)]] * 2, "sm120": {}}

    monkeypatch.setattr(tune, "_time", fake_time)
    return tune.sweep(128, False, [tune._parse(c) for c in cands], True)


def test_a_candidate_wins_only_by_the_margin(tune, monkeypatch):
    figures = {"128x32x128": 330.0, "128x64x128": 340.0, "128x32x128-x": 336.0, "128x32x128-r": 300.0}
    cands = ["128,32,128", "128,64,128", "128,32,128,x", "128,32,128,r"]
    res = _run(tune, monkeypatch, figures, cands)
    assert res["verdict"] == "128x64x128"  # +3.0%; x: +1.8%
    assert set(res["passes"]) == set(figures)
    assert len(res["passes"]["128x32x128"]) == 2  # the current row is timed twice


def test_letters_set_codegen_fields(tune):
    from fa4_sm120.configs import FwdCodegen

    tm, tn, th, letters = tune._parse("128,32,128,rsw")
    assert FwdCodegen(**dict(tune.KNOBS[c] for c in letters)) == FwdCodegen(
        rescale_threshold=0.0, pv_split=1, late_v_wait=True
    )


def test_unknown_letters_are_refused(tune):
    with pytest.raises(SystemExit, match="letters of"):
        tune._parse("128,32,128,Z")
