"""One call of fa4 (and, with ``--peer sdpa``, PyTorch SDPA flash) inside a CUDA profiler range, for
Nsight Compute: everything before (compilation, warm-up) runs outside the range.

    ncu --profile-from-start off --set full -o OUT python3 benchmarks/profile_ncu.py fwd 1 8192 16 128
    ncu --profile-from-start off --set full --import-source no python3 benchmarks/profile_ncu.py bwd 2 4096 16 128 --causal

Arguments: ``fwd|bwd batch seqlen nheads head_dim [--nheads-kv N] [--causal] [--peer fa4|sdpa|upstream]``
(``upstream``: upstream FlashAttention-4 forced onto its SM120 class, forward only).
"""

from __future__ import annotations

import argparse
import os

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["fwd", "bwd"])
    ap.add_argument("batch", type=int)
    ap.add_argument("seqlen", type=int)
    ap.add_argument("nheads", type=int)
    ap.add_argument("head_dim", type=int)
    ap.add_argument("--nheads-kv", type=int, default=None)
    ap.add_argument("--causal", action="store_true")
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--peer", choices=["fa4", "sdpa", "upstream"], default="fa4")
    a = ap.parse_args(argv)
    hkv = a.nheads_kv or a.nheads
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(h):
        return torch.randn(a.batch, a.seqlen, h, a.head_dim, device="cuda", dtype=torch.bfloat16, generator=g)

    q, k, v = r(a.nheads), r(hkv), r(hkv)
    if a.peer == "fa4":
        from fa4_torch import flash_attn_func

        def fwd(q, k, v):
            return flash_attn_func(q, k, v, causal=a.causal, deterministic=a.deterministic)[0]
    elif a.peer == "upstream":
        if a.mode != "fwd":
            ap.error("--peer upstream: forward only (its SM120 class has no backward to compare)")
        os.environ.setdefault("FLASH_ATTENTION_ARCH", "sm_120")  # before the import, as the benchmarks
        from flash_attn.cute import flash_attn_func as up

        def fwd(q, k, v):
            o = up(q, k, v, causal=a.causal)
            return o[0] if isinstance(o, tuple) else o
    else:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        def fwd(q, k, v):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                o = torch.nn.functional.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=a.causal,
                    enable_gqa=hkv != a.nheads,
                )  # fmt: skip
            return o.transpose(1, 2)

    if a.mode == "fwd":

        def call():
            with torch.no_grad():
                fwd(q, k, v)
    else:
        leaves = [x.requires_grad_() for x in (q, k, v)]
        out = fwd(*leaves)
        dout = torch.randn_like(out)

        def call():
            torch.autograd.grad(out, leaves, dout, retain_graph=True)

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    call()
    torch.cuda.synchronize()
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
