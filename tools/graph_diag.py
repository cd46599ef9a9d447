"""Diagnose CUDA-graph capture of fa4's forward + backward in a fresh process (one configuration per
run): prints OK or the failing call's traceback. Usage: python3 tools/graph_diag.py DET SINK MODE
(DET, SINK: 0/1; MODE: global | thread_local | relaxed) [keep]."""

import sys
import traceback

import torch

from fa4_torch import flash_attn_func

det, sink, mode = bool(int(sys.argv[1])), bool(int(sys.argv[2])), sys.argv[3]
g0 = torch.Generator(device="cuda").manual_seed(0)


def r(*s, dtype=torch.bfloat16):
    return torch.randn(*s, device="cuda", dtype=dtype, generator=g0)


leaves = [x.requires_grad_() for x in (r(2, 300, 8, 64), r(2, 333, 2, 64), r(2, 333, 2, 64))]
if sink:
    leaves.append(r(8, dtype=torch.float32).requires_grad_())
w = r(2, 300, 8, 64, dtype=torch.float32)


def step():
    s = leaves[3] if sink else None
    out, lse = flash_attn_func(*leaves[:3], causal=True, learnable_sink=s, deterministic=det, return_lse=True)
    loss = (out.float() * w).sum() + lse.sum()
    keep = sys.argv[4:] == ["keep"]  # keep the outputs' autograd graph (the failing pattern)
    o, l_ = (out, lse) if keep else (out.detach(), lse.detach())
    return (o, l_, *torch.autograd.grad(loss, leaves))


eager = [t.clone() for t in step()]
side = torch.cuda.Stream()
side.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(side):
    step()
torch.cuda.current_stream().wait_stream(side)
g = torch.cuda.CUDAGraph()
try:
    with torch.cuda.graph(g, capture_error_mode=mode):
        captured = step()
    g.replay()
    torch.cuda.synchronize()
    same = all(torch.equal(a, b) for a, b in zip(captured, eager))
    print(f"det={det} sink={sink} mode={mode}: OK, replay equal to eager: {same}")
except Exception:
    print(f"det={det} sink={sink} mode={mode}: FAILED")
    traceback.print_exc()
