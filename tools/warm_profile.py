"""Where a warm first call's time goes: fill a temporary FA4_CACHE_DIR in one process (fwd + bwd, bf16
d128 causal GQA 8/2), then, in a fresh process, profile the first forward and the first backward
with cProfile and print the top entries by cumulative time. Usage: python3 tools/warm_profile.py"""

import os
import subprocess
import sys
import tempfile

CHILD = r"""
import cProfile, pstats, sys, time
import torch
from fa4_torch import flash_attn_func
q = torch.randn(2, 300, 8, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
k = torch.randn(2, 300, 2, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
v = torch.randn(2, 300, 2, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
torch.cuda.synchronize()
prof = sys.argv[1] == "profile"
for phase in ("fwd", "bwd"):
    p = cProfile.Profile()
    t = time.perf_counter()
    if prof:
        p.enable()
    if phase == "fwd":
        out = flash_attn_func(q, k, v, causal=True)[0]
    else:
        torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    torch.cuda.synchronize()
    if prof:
        p.disable()
    print(f"== {phase} first call {time.perf_counter() - t:.3f} s")
    if prof:
        pstats.Stats(p).sort_stats("cumulative").print_stats(25)
"""

env = dict(os.environ, FA4_CACHE_DIR=tempfile.mkdtemp())
for mode in ("fill", "profile"):
    r = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, capture_output=True, text=True)
    print(f"--- {mode} (rc {r.returncode})")
    print(r.stdout[-12000:] if mode == "profile" else r.stdout, r.stderr[-3000:] if r.returncode else "")
