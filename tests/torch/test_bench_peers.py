"""The benchmarks' peer timing (benchmarks/_common.py: bench_peers) on the CPU, with do_bench replaced
by a recorder: the peers are interleaved in rotated order, each result is the median of its round
medians, and a peer that raises is dropped with its error while the others are still measured."""

from __future__ import annotations

import os
import sys
import types

import pytest

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


@pytest.fixture
def common(monkeypatch):
    calls = []
    fake = types.ModuleType("triton.testing")

    def do_bench(fn, warmup, rep, return_mode):
        assert return_mode == "median" and rep >= 1
        return fn()

    fake.do_bench = do_bench
    monkeypatch.setitem(sys.modules, "triton", types.ModuleType("triton"))
    monkeypatch.setitem(sys.modules, "triton.testing", fake)
    monkeypatch.syspath_prepend(BENCH)
    import _common

    return _common, calls


def test_peers_interleave_in_rotated_order_and_take_the_median(common):
    C, calls = common
    drift = iter([0.5, 9.0, 1.0, 1.0, 1.0, 1.0])  # a: the warm call, then one slow round of five

    def peer(name, value):
        def fn():
            calls.append(name)
            return next(drift) if name == "a" else value

        return fn

    ms, errors = C.bench_peers({"a": peer("a", 0), "b": peer("b", 2.0), "c": peer("c", 3.0)}, rounds=5)
    assert errors == {}
    assert ms == {"a": 1.0, "b": 2.0, "c": 3.0}
    # one untimed warm call each, then rounds a b c / b c a / c a b / a b c / b c a
    assert calls[:3] == ["a", "b", "c"]
    assert calls[3:] == list("abcbcacababcbca")


def test_a_failing_peer_is_recorded_and_the_others_still_run(common):
    C, _ = common
    state = {"n": 0}

    def flaky():
        state["n"] += 1
        if state["n"] > 2:  # the warm call and one round pass, then it fails
            raise RuntimeError("boom")
        return 5.0

    def broken():
        raise ValueError("unsupported head dim 72")

    ms, errors = C.bench_peers({"ok": lambda: 1.5, "flaky": flaky, "broken": broken}, rounds=4)
    assert ms == {"ok": 1.5}
    assert errors == {"flaky": "RuntimeError: boom", "broken": "ValueError: unsupported head dim 72"}
