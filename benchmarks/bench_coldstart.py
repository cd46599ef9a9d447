"""Cold start: the first call of a new variant in a fresh process, without and with the persistent
compile cache (``fa4_torch.disk_cache``), beside upstream FlashAttention-4's SM120 class when installed.

For each variant (fwd d64, fwd d128 causal, fwd+bwd d128; bf16, batch 2, seqlen 1024, 16 heads) a new
interpreter is started per measurement and times, after ``import torch, fa4_torch`` and the inputs:

* ``cold``: an empty ``FA4_CACHE_DIR`` (a new one per repetition): the DSL import, the compile, the
  write of the object files and the first launch;
* ``warm``: the same directory again: the DSL import, the load of the object files, the first launch
  (goal <= 0.3 s; upstream compiles 3.0-4.6 s per variant in every new process, docs/benchmarks.md);
* ``warm_dsl_preimported``: as ``warm`` with ``cutlass.cute`` and the kernel modules imported before
  the clock starts, which separates the load from the DSL's import;
* ``upstream``: ``flash_attn.cute.flash_attn_func`` (``FLASH_ATTENTION_ARCH=sm_120``) in a fresh
  process, twice in a row (so a cache of its own, if it has one, would show in the second).

The median of ``--repeats`` runs (default 3) is reported, with each run. Writes
``<out>/<date>-<gpu>-coldstart.json``. Without a GPU it says so and exits 0.

    python benchmarks/bench_coldstart.py --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

sys.path.insert(0, os.path.dirname(__file__))

VARIANTS = [
    dict(name="fwd d64", head_dim=64, causal=False, backward=False),
    dict(name="fwd d128 causal", head_dim=128, causal=True, backward=False),
    dict(name="fwd+bwd d128", head_dim=128, causal=False, backward=True),
]
SHAPE = dict(batch=2, seqlen=1024, nheads=16)

CHILD = """
    import json, sys, time
    spec = json.loads(sys.argv[1])
    t0 = time.perf_counter()
    import torch
    if spec["impl"] == "upstream":
        from flash_attn.cute import flash_attn_func
    else:
        from fa4_torch import disk_cache, flash_attn_func
        if spec["preimport"]:
            import cutlass.cute  # noqa: F401
            import fa4_sm120.compile, fa4_sm120.bwd, fa4_sm120.bwd_pre_post  # noqa: F401
    import_s = time.perf_counter() - t0
    b, s, h, d = spec["batch"], spec["seqlen"], spec["nheads"], spec["head_dim"]
    q, k, v, dout = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    if spec["backward"]:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
    torch.cuda.synchronize()

    def call():
        out = flash_attn_func(q, k, v, causal=spec["causal"])
        out = out[0] if isinstance(out, tuple) else out
        if spec["backward"]:
            torch.autograd.grad(out, (q, k, v), dout)
        torch.cuda.synchronize()

    t0 = time.perf_counter()
    call()
    first_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    call()
    second_s = time.perf_counter() - t0
    stats = disk_cache.stats() if spec["impl"] == "fa4" else None
    print(json.dumps(dict(import_s=import_s, first_s=first_s, second_s=second_s, disk=stats)))
"""


def child(spec: dict, env: dict) -> dict:
    """One fresh process; its timings, or ``error``."""
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if r.returncode != 0:
        return dict(error=(r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1][-500:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def _median(runs: list[dict], field: str = "first_s"):
    vals = [r[field] for r in runs if field in r]
    return statistics.median(vals) if vals else None


def measure(variant: dict, repeats: int, upstream: bool) -> dict:
    base = {k: v for k, v in variant.items() if k != "name"}
    spec = dict(SHAPE, **base, impl="fa4", preimport=False)
    env = {k: v for k, v in os.environ.items() if k not in ("FA4_DISK_CACHE", "FA4_CACHE_DIR")}
    row = dict(variant=variant["name"], **SHAPE, dtype="bf16", cold=[], warm=[], warm_dsl_preimported=[])
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="fa4-coldstart-") as d:
            e = dict(env, FA4_CACHE_DIR=d)
            row["cold"].append(child(spec, e))
            row["warm"].append(child(spec, e))
            row["warm_dsl_preimported"].append(child(dict(spec, preimport=True), e))
    if upstream:
        e = dict(env, FLASH_ATTENTION_ARCH=os.environ.get("FLASH_ATTENTION_ARCH", "sm_120"))
        row["upstream"] = [child(dict(spec, impl="upstream"), e) for _ in range(2)]
    row["median_first_s"] = {
        k: _median(row[k]) for k in ("cold", "warm", "warm_dsl_preimported", "upstream") if k in row
    }
    med = row["median_first_s"]
    fmt = lambda x: "   n/a" if x is None else f"{x:6.3f}"  # noqa: E731
    print(
        f"  {variant['name']:<16} first call: cold {fmt(med['cold'])} s  warm {fmt(med['warm'])} s  "
        f"warm, DSL preimported {fmt(med['warm_dsl_preimported'])} s"
        + (f"  upstream {fmt(med.get('upstream'))} s" if upstream else "")
    )
    for k in ("cold", "warm", "upstream"):
        for r in row.get(k, []):
            if "error" in r:
                print(f"    {k} failed: {r['error']}")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    ap.add_argument("--repeats", type=int, default=3, help="fresh cold/warm process pairs per variant")
    ap.add_argument("--no-upstream", action="store_true", help="skip upstream FlashAttention-4")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("bench_coldstart: no CUDA GPU here; nothing measured (run it on the GPU machine)")
        return 0
    import _common as C

    upstream = not args.no_upstream
    if upstream:
        try:
            import importlib.util

            upstream = importlib.util.find_spec("flash_attn.cute") is not None
        except Exception:  # flash_attn's package init may fail in ways of its own
            upstream = False
    payload = dict(
        env=C.environment(),
        shape=dict(SHAPE, dtype="bf16"),
        timing="wall time of the first call (and a second) in a fresh process, after import and inputs, "
        "torch.cuda.synchronize() included; median of --repeats fresh processes",
        goal="warm first call <= 0.3 s; upstream 3.0-4.6 s per variant (docs/benchmarks.md)",
        rows=[],
    )
    path = C.results_path("coldstart", args.out)
    print(f"cold start, {payload['env']['device']}, {args.repeats} repetition(s)")
    for v in VARIANTS:
        payload["rows"].append(measure(v, args.repeats, upstream))
        C.write_results(path, payload, quiet=True)  # a run cut short keeps what it measured
    C.write_results(path, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
