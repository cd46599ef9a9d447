"""Backward diagnosis on the GPU machine: where the time of a causal backward goes.

For each shape: do_bench's median (L2 flushed, as bench_bwd), the queued wall time per call
(``host_us``: host or GPU, whichever is slower) and the kernels' own durations from
``torch.profiler`` (mean per launch). With ``--budgets`` the causal calls are timed again with other
L2 budgets of the longest-first groups (MiB; the kernel is unchanged, only ``lpt_group`` differs).

    python3 tools/bwd_diag.py --out $OUT [--budgets 16 64 100000] [--host]

``--host``: the host side of one cached backward call, causal and not (4 x 1024, 16 heads, d64): the
time until the call returns with the GPU idle before it (median of 200), and cProfile's top entries.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))

import torch  # noqa: E402

import _common as C  # noqa: E402
from fa4_core.tile_scheduler import BwdLongestFirstScheduler  # noqa: E402
from fa4_torch import flash_attn_func  # noqa: E402

SHAPES = [  # (batch, seqlen, heads, kv heads, head dim, causal)
    (4, 1024, 16, 16, 64, False),
    (4, 1024, 16, 16, 64, True),
    (4, 1024, 32, 8, 64, True),
    (1, 8192, 16, 16, 64, True),
    (1, 8192, 32, 8, 64, True),
    (2, 4096, 32, 8, 128, True),
    (1, 8192, 32, 8, 128, True),
    (4, 1024, 16, 16, 128, True),
]


def one(shape, budget_mb=None) -> dict:
    b, s, hq, hkv, d, causal = shape
    q = torch.randn(b, s, hq, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(b, s, hkv, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(b, s, hkv, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    dout = torch.randn(b, s, hq, d, device="cuda", dtype=torch.bfloat16)
    flops = 2.5 * C.attn_flops(b, hq, s, s, d, causal=causal)
    original = BwdLongestFirstScheduler.group_size
    if budget_mb is not None:
        budget = int(budget_mb * (1 << 20))
        BwdLongestFirstScheduler.group_size = staticmethod(lambda per, n: original(per, n, budget))
    try:
        o = flash_attn_func(q, k, v, causal=causal)[0]
        fn = lambda: torch.autograd.grad(o, (q, k, v), dout, retain_graph=True)  # noqa: E731
        fn()
        ms = C.bench_ms(fn)
        row = dict(shape=shape, budget_mb=budget_mb, bench_ms=ms, tflops=flops / ms / 1e9,
                   queued_us=C.host_us(fn, iters=200), kernels_us=C.kernel_us(fn))  # fmt: skip
    finally:
        BwdLongestFirstScheduler.group_size = original
    print(json.dumps(row), flush=True)
    return row


def host_side(causal: bool) -> dict:
    import cProfile
    import io
    import pstats

    b, s, h, d = 4, 1024, 16, 64
    q, k, v = (
        torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)
    )
    dout = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
    o = flash_attn_func(q, k, v, causal=causal)[0]
    fn = lambda: torch.autograd.grad(o, (q, k, v), dout, retain_graph=True)  # noqa: E731
    lat = C.idle_host_us(fn)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(100):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    row = dict(causal=causal, host_us_p50=lat["p50"], host_us_p10=lat["p10"], host_us_p90=lat["p90"])
    print(json.dumps(row), flush=True)
    print(text.getvalue()[-6000:], flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--budgets", nargs="*", type=float, default=[])
    ap.add_argument("--host", action="store_true")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("bwd_diag: no CUDA GPU here; nothing measured")
        return 0
    C.bench_ms(lambda: torch.randn(4096, 4096, device="cuda") @ torch.randn(4096, 4096, device="cuda"))
    rows = [host_side(c) for c in (False, True)] if a.host else []
    rows += [one(sh) for sh in SHAPES]
    for mb in a.budgets:
        rows += [one(sh, mb) for sh in SHAPES if sh[5]]
    with open(os.path.join(a.out, "bwd-diag.json"), "w") as f:
        json.dump({"env": C.environment(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
