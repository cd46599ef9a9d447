"""The persistent compile cache on the GPU: a cold process compiles and writes, a fresh warm process
loads from disk (no compile at all) and gets a correct result (correctness rule (docs/testing.md) against the fp32
reference of :mod:`fa4_core.testing`). Each process is a fresh interpreter with its own temporary
``FA4_CACHE_DIR``; the first-call times (cold: compile; warm: load) are printed (``-s``), not
asserted beyond "warm is faster than cold" (speed goals are never timed tests; the goal for a warm
first call is <= 0.3 s, ``benchmarks/bench_coldstart.py`` records it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(900)]

CHILD = """
    import json, sys, time
    t0 = time.perf_counter()
    import torch
    from fa4_torch import disk_cache, flash_attn_func
    from fa4_core.testing import attention_ref, check_close
    import_s = time.perf_counter() - t0
    backward = sys.argv[1] == "bwd"
    n = int(sys.argv[2])  # 300: fewer 128-row tiles than SMs (the 64-row rows); 4096: the 128-row rows
    torch.manual_seed(0)
    dt = torch.bfloat16
    q = torch.randn(2, n, 8, 128, device="cuda", dtype=dt)
    k = torch.randn(2, n, 2, 128, device="cuda", dtype=dt)
    v = torch.randn(2, n, 2, 128, device="cuda", dtype=dt)
    dout = torch.randn(2, n, 8, 128, device="cuda", dtype=dt)
    if backward:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
    torch.cuda.synchronize()

    phases = {}

    def call():
        t0 = time.perf_counter()
        out, lse = flash_attn_func(q, k, v, causal=True, return_lse=True)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        grads = torch.autograd.grad(out, (q, k, v), dout) if backward else ()
        torch.cuda.synchronize()
        phases.setdefault("fwd_s", t1 - t0)
        phases.setdefault("bwd_s", time.perf_counter() - t1)
        return out, lse, grads

    t0 = time.perf_counter()
    out, lse, grads = call()
    first_s = time.perf_counter() - t0
    dsl_imported = "cutlass" in sys.modules
    t0 = time.perf_counter()
    call()
    second_s = time.perf_counter() - t0

    def ref(upcast):  # X_ref: fp32 leaves made from the same bf16 inputs; X_pt: in bf16
        leaf_dt = torch.float32 if upcast else dt
        qr, kr, vr = (x.detach().to(leaf_dt).requires_grad_(backward) for x in (q, k, v))
        o, l = attention_ref(qr, kr, vr, causal=True, upcast=upcast)
        g = torch.autograd.grad(o, (qr, kr, vr), dout.to(leaf_dt)) if backward else ()
        return o, l, g

    (o_ref, l_ref, g_ref), (o_pt, l_pt, g_pt) = ref(True), ref(False)
    check_close("out", out, o_ref, o_pt)
    check_close("lse", lse, l_ref, l_pt)
    for name, x, xr, xp in zip(("dq", "dk", "dv"), grads, g_ref, g_pt):
        check_close(name, x, xr, xp, grad=True)
    print(json.dumps(dict(import_s=import_s, first_s=first_s, second_s=second_s, dsl_imported=dsl_imported,
                          **phases, **disk_cache.stats())))
"""


def _env(cache_dir) -> dict:
    e = dict(os.environ)
    e.pop("FA4_DISK_CACHE", None)
    e["FA4_CACHE_DIR"] = str(cache_dir)
    return e


def _child(cache_dir, what: str, seqlen: int = 300) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), what, str(seqlen)],
        capture_output=True,
        text=True,
        env=_env(cache_dir),
        timeout=800,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _objects(cache_dir) -> list:
    return sorted(cache_dir.rglob("*.o"))


@pytest.mark.parametrize("what", ["fwd", "bwd"])
def test_cold_process_compiles_warm_process_loads(what, tmp_path):
    cache_dir = tmp_path / "fa4-cache"
    cold = _child(cache_dir, what)
    assert cold["compiled"] >= 1 and cold["written"] == cold["compiled"] and cold["loaded"] == 0, cold
    assert cold["fallbacks"] == 0 and cold["corrupt"] == 0, cold
    files = _objects(cache_dir)
    assert len(files) == cold["written"], files
    warm = _child(cache_dir, what)
    assert warm["compiled"] == 0, f"the warm process compiled: {warm}"
    assert warm["loaded"] == cold["written"] and warm["fallbacks"] == 0, warm
    assert _objects(cache_dir) == files
    print(
        f"\n{what} bf16 d128 causal GQA 8/2: first call cold {cold['first_s']:.3f} s "
        f"({cold['compiled']} kernel(s) compiled), warm {warm['first_s']:.3f} s "
        f"({warm['loaded']} loaded from {files[0].parent}); second call {warm['second_s'] * 1e3:.2f} ms; "
        f"import {warm['import_s']:.2f} s; warm: fwd {warm['fwd_s']:.3f} s, bwd {warm['bwd_s']:.3f} s, "
        f"{warm['loaded_so']} from .so, DSL imported: {warm['dsl_imported']}"
    )
    assert warm["first_s"] < cold["first_s"]


def test_warmup_command_fills_the_cache_for_the_model_process(tmp_path):
    cache_dir = tmp_path / "fa4-cache"
    cmd = [sys.executable, "-m", "fa4_torch", "warmup", "--shapes", "8,2,128", "--causal", "yes"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache_dir), timeout=800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert str(cache_dir) in r.stdout and "compiled and written" in r.stdout, r.stdout
    assert _objects(cache_dir)
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(cache_dir), timeout=800)
    assert again.returncode == 0 and "loaded from the disk cache" in again.stdout, again.stdout
    # the same variants as the warmup, a short call (64-row rows) and a long one (128-row rows):
    # nothing left to compile in either
    for seqlen in (300, 4096):
        warm = _child(cache_dir, "fwd", seqlen)
        assert warm["compiled"] == 0 and warm["loaded"] >= 1, (seqlen, warm)
