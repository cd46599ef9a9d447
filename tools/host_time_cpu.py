"""Host time of cached fa4 calls without a GPU: the Python between the call and the kernel launch, with
the launch stubbed (every compiled function is a no-op), the device check passed and the device facts
pinned (132 SMs, H200-like limits), on CPU or meta tensors. For a refactor of fa4-torch: compare two
checkouts in interleaved rounds, each measured in a fresh interpreter.

Calls: a dense forward (b1 s128 h16 d64, and causal with the LSE: the dense memo), a dense call with a
learnable sink and a varlen call (validated on every call), a batch-1 decode step through
``flash_attn_with_kvcache`` (32/8 heads, d128, 4,096-row cache, contiguous and page-64: the KV-cache
memo and the split-KV combine), and the same over an FP8 (e4m3) cache with descales. Each figure is the fastest of 20 chunks of ``N / 20`` calls (µs per
call); ``--compare`` prints the median and the minimum over the rounds. CPU index tensors are read on
the host by the validation (``cache_seqlens``, ``cu_seqlens``), meta ones are not (as CUDA ones).

    python3 tools/host_time_cpu.py [--root DIR] [--device cpu|meta] [-n 20000]
    python3 tools/host_time_cpu.py --compare OTHER_ROOT [--rounds 7]   # OTHER_ROOT first, then --root
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import types

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def measure(root: str, n: int, device: str) -> dict:
    for pkg in ("fa4-core", "fa4-sm120", "fa4-torch"):
        sys.path.insert(0, os.path.join(root, "packages", pkg, "src"))
    import torch

    props = types.SimpleNamespace(
        multi_processor_count=132,
        shared_memory_per_multiprocessor=233_472,
        shared_memory_per_block_optin=232_448,
        regs_per_multiprocessor=65_536,
        max_threads_per_multi_processor=2048,
    )
    torch.cuda.current_device = lambda: 0
    torch.cuda.get_device_properties = lambda idx=None: props
    torch.cuda.get_device_capability = lambda device=None: (9, 0)

    import fa4_torch
    from fa4_torch.cache import CompileCache

    CompileCache.get_or_compile = lambda self, key, build: lambda *args: None  # every kernel a no-op
    try:
        from fa4_torch import validate

        validate.check_devices = lambda q, named: None
    except ImportError:  # a checkout before fa4_torch.validate: the check lived in fa4_torch.api
        import fa4_torch.api as api

        api._check_devices = lambda q, named: None
    assert os.path.realpath(fa4_torch.__file__).startswith(os.path.realpath(root)), fa4_torch.__file__

    bf = torch.bfloat16
    q, k, v = (torch.randn(1, 128, 16, 64, dtype=bf).to(device) for _ in range(3))
    qd = torch.randn(1, 1, 32, 128, dtype=bf).to(device)
    kc, vc = (torch.randn(1, 4096, 8, 128, dtype=bf).to(device) for _ in range(2))
    lens = torch.full((1,), 4000, dtype=torch.int32).to(device)
    kp, vp = kc.view(64, 64, 8, 128), vc.view(64, 64, 8, 128)
    table = torch.arange(64, dtype=torch.int32).view(1, 64).to(device)
    sink = torch.zeros(16, dtype=torch.float32).to(device)
    cu = torch.tensor([0, 128], dtype=torch.int32).to(device)
    qv, kv, vv = (x[0] for x in (q, k, v))
    kc8, vc8 = (x.to(torch.float8_e4m3fn) for x in (kc, vc))
    kp8, vp8 = kc8.view(64, 64, 8, 128), vc8.view(64, 64, 8, 128)
    descale = torch.ones((), dtype=torch.float32).to(device)
    calls = {
        "dense": lambda: fa4_torch.flash_attn_func(q, k, v),
        "dense_causal_lse": lambda: fa4_torch.flash_attn_func(q, k, v, causal=True, return_lse=True),
        "dense_sink": lambda: fa4_torch.flash_attn_func(q, k, v, learnable_sink=sink),
        "varlen": lambda: fa4_torch.flash_attn_varlen_func(
            qv, kv, vv, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=128, max_seqlen_k=128
        ),
        "decode": lambda: fa4_torch.flash_attn_with_kvcache(qd, kc, vc, cache_seqlens=lens),
        "decode_page64": lambda: fa4_torch.flash_attn_with_kvcache(
            qd, kp, vp, cache_seqlens=lens, page_table=table
        ),
        "decode_fp8": lambda: fa4_torch.flash_attn_with_kvcache(
            qd, kc8, vc8, cache_seqlens=lens, k_descale=descale, v_descale=descale
        ),
        "decode_fp8_page64": lambda: fa4_torch.flash_attn_with_kvcache(
            qd, kp8, vp8, cache_seqlens=lens, page_table=table, k_descale=descale, v_descale=descale
        ),
    }
    out = {}
    chunk = max(1, n // 20)
    for name, fn in calls.items():
        for _ in range(200):
            fn()
        best = float("inf")
        for _ in range(20):
            t0 = time.perf_counter()
            for _ in range(chunk):
                fn()
            best = min(best, (time.perf_counter() - t0) / chunk * 1e6)
        out[name] = best
    return out


def _child(root: str, n: int, device: str) -> dict:
    env = {key: val for key, val in os.environ.items() if key != "PYTHONPATH"}
    cmd = [sys.executable, __file__, "--root", root, "-n", str(n), "--device", device]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=ROOT, help="the checkout to measure (default: this one)")
    ap.add_argument("--compare", metavar="OTHER_ROOT", help="another checkout, measured in turn with --root")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("-n", type=int, default=20000, help="calls per figure")
    ap.add_argument("--device", choices=("cpu", "meta"), default="cpu")
    a = ap.parse_args()
    if not a.compare:
        print(json.dumps(measure(a.root, a.n, a.device)))
        return 0
    runs: dict[str, list[dict]] = {a.compare: [], a.root: []}
    for _ in range(a.rounds):
        for root in runs:
            runs[root].append(_child(root, a.n, a.device))
    names = list(runs[a.root][0])
    print(f"{a.device} tensors, {a.rounds} rounds of {a.n} calls; µs per call (median, min over rounds)")
    print(f"{'call':18} {'OTHER_ROOT':>18} {'--root':>18}")
    for name in names:
        cells = [
            f"{statistics.median(r[name] for r in rs):8.2f} {min(r[name] for r in rs):8.2f}"
            for rs in runs.values()
        ]
        print(f"{name:18} {cells[0]:>18} {cells[1]:>18}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
