"""Forward accuracy beside the peers: per shape, the max-abs error of fa4, PyTorch SDPA (flash) and
upstream FlashAttention-4's SM120 class (when installed) against the fp32 reference on the same inputs,
and fa4's error as a ratio of SDPA flash's.

Grids: ``seed`` (240 shapes) and ``anchor`` (40 shapes), as in ``bench_fwd.py``. The summary gives,
per group (dtype, head dim, causal), the median and the worst ratio; the bound fa4 holds itself to
(and ``tests/torch/test_accuracy_gpu.py`` asserts on the seed grid) is a worst ratio of at most
1.25 and a median of at most 1.02. Writes ``<out>/<date>-<gpu>-accuracy.json``.

    python benchmarks/accuracy_fwd.py --grid seed --out benchmarks/results
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(__file__))
import torch  # noqa: E402

import _common as C  # noqa: E402
from bench_fwd import ANCHOR, DT, SEED  # noqa: E402
from fa4_core.testing import attention_ref  # noqa: E402
from fa4_torch import flash_attn_func  # noqa: E402

GRIDS = {"seed": SEED, "anchor": ANCHOR}


def inputs(shape: dict, seed: int = 0):
    """The shape's q, k, v (standard normal, a fixed generator seed per shape)."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    dt = DT[shape["dtype"]]
    b, s, hq, hkv, d = (shape[k] for k in ("batch", "seqlen", "nheads", "nheads_kv", "head_dim"))
    q = torch.randn(b, s, hq, d, device="cuda", dtype=dt, generator=g)
    k = torch.randn(b, s, hkv, d, device="cuda", dtype=dt, generator=g)
    v = torch.randn(b, s, hkv, d, device="cuda", dtype=dt, generator=g)
    return q, k, v


def reference(q, k, v, causal: bool) -> torch.Tensor:
    """The fp32 reference output (:func:`fa4_core.testing.attention_ref`), one batch at a time."""
    return torch.cat(
        [attention_ref(q[i : i + 1], k[i : i + 1], v[i : i + 1], causal=causal)[0] for i in range(q.shape[0])]
    )


def errors(shape: dict) -> dict:
    """Max-abs error against the fp32 reference of fa4 and each peer on the shape's inputs."""
    q, k, v = inputs(shape)
    causal = shape["causal"]
    ref = reference(q, k, v, causal)
    outs = {"fa4": lambda: flash_attn_func(q, k, v, causal=causal)[0]}
    sdpa = C.sdpa_fn("flash", q, k, v, causal)
    outs["sdpa_flash"] = lambda: sdpa().transpose(1, 2)
    up = C.upstream_fn(q, k, v, causal)
    if up is not None:
        outs["fa4_upstream_sm120"] = lambda: (lambda r: r[0] if isinstance(r, tuple) else r)(up())
    row = dict(shape)
    for name, fn in outs.items():
        try:
            row[f"{name}_err"] = (fn().float() - ref).abs().max().item()
        except Exception as e:  # a peer that cannot run the shape is reported, not fatal
            row[f"{name}_error"] = f"{type(e).__name__}: {e}"[:200]
    if "sdpa_flash_err" in row:
        for name in outs:
            if f"{name}_err" in row and name != "sdpa_flash":
                row[f"{name}_ratio"] = row[f"{name}_err"] / row["sdpa_flash_err"]
    return row


def summary(rows: list[dict], name: str = "fa4") -> dict:
    """Median and worst ratio to SDPA flash's error, overall and per (dtype, head dim, causal)."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        if f"{name}_ratio" not in r:
            continue
        key = f"{r['dtype']} d{r['head_dim']} {'causal' if r['causal'] else 'non-causal'}"
        groups.setdefault(key, []).append(r[f"{name}_ratio"])
        groups.setdefault("all", []).append(r[f"{name}_ratio"])
    return {
        k: {"median": statistics.median(v), "max": max(v), "n": len(v)} for k, v in sorted(groups.items())
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", nargs="+", default=["seed"], choices=sorted(GRIDS))
    ap.add_argument("--out", default=None, help="folder for the JSON (none: print only)")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("accuracy_fwd: no CUDA GPU here; nothing measured")
        return 1
    torch.backends.cuda.matmul.allow_tf32 = False
    payload = {"env": C.environment(), "grids": {}}
    for grid in a.grid:
        rows = []
        for shape in GRIDS[grid]:
            row = errors(shape)
            rows.append(row)
            print(
                " ".join(f"{k}={row[k]}" for k in shape)
                + "".join(f" {k}={row[k]:.3g}" for k in row if k.endswith(("_err", "_ratio"))),
                flush=True,
            )
        payload["grids"][grid] = {"rows": rows, "summary": {}}
        for name in ("fa4", "fa4_upstream_sm120"):
            s = summary(rows, name)
            payload["grids"][grid]["summary"][name] = s
            for k, v in s.items():
                print(
                    f"{grid} {name} ratio to sdpa_flash, {k}: median {v['median']:.3f} max {v['max']:.3f} (n={v['n']})"
                )
    if a.out:
        C.write_results(C.results_path("accuracy", a.out), payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
