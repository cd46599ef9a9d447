"""The forward tune script's verdict (benchmarks/tune_tiles.py: sweep) on the CPU, with the timed
child processes replaced by fixed figures: a candidate replaces the current row only when it wins by
>= 2% in both passes, and an ablation (letters A, L: the output is wrong) is timed but never adopted."""

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


def test_an_ablation_is_timed_but_never_adopted(tune, monkeypatch):
    figures = {"128x32x128": 330.0, "128x32x128-A": 420.0, "128x32x128-L": 360.0, "128x32x128-AL": 500.0}
    res = _run(tune, monkeypatch, figures, ["128,32,128", "128,32,128,A", "128,32,128,L", "128,32,128,AL"])
    assert res["verdict"] == "128x32x128"
    assert set(res["passes"]) == set(figures)
    assert len(res["passes"]["128x32x128-AL"]) == 2  # among the best three: timed twice


def test_a_real_candidate_wins_beside_ablations(tune, monkeypatch):
    figures = {"128x32x128": 330.0, "128x64x128": 340.0, "128x32x128-x": 336.0, "128x32x128-A": 420.0}
    cands = ["128,32,128", "128,64,128", "128,32,128,x", "128,32,128,A"]
    assert _run(tune, monkeypatch, figures, cands)["verdict"] == "128x64x128"  # +3.0%; x: +1.8%


def test_unknown_letters_are_refused(tune):
    with pytest.raises(SystemExit, match="letters of"):
        tune._parse("128,32,128,Z")
