"""Tile sweep for the forward tile table: candidate rows ``tile_m,tile_n,threads`` per head dim, causal
and not, on the anchor shapes, each timed in a fresh process through the public API, beside the
current table row.

Protocol: every candidate runs once in its own interpreter (the table's row of ``(d, d)``
replaced in that process, the call going through ``flash_attn_func`` and its dispatch: pack-GQA,
split-KV, the compile caches); the best three are timed again, in reverse order, in fresh processes;
a candidate replaces the current row only if it beats it by >= 2% in both passes (``verdict`` in the
JSON). Candidates that the kernel cannot implement (shared memory over the SM120 cap, tiles the warps
cannot split) are reported and skipped. The processes share ``FA4_CACHE_DIR``, so the second pass
loads what the first compiled. Check the ``sm_120a`` registers/spills of a winner with
``benchmarks/sm120_resources.py``.

``--emulate-sm120``: each candidate launches with the dynamic shared memory that lets the H100/H200
run no more CTAs per SM than SM120 would (``fa4_sm120.occupancy.emulated_launch_smem`` from its
``sm_120a`` registers).

    python benchmarks/tune_tiles.py --head-dim 128 --cands 128,64,256 128,32,128 --out DIR

A candidate may end in a fourth field of letters that set fields of the forward's code-generation
choices (:class:`fa4_sm120.configs.FwdCodegen`, part of the config and so of every compile-cache key):
``r`` rescale O on every new row max (``rescale_threshold=0``), ``l`` only when a row max grew by more
than 2^8 (``rescale_threshold=8``), ``o`` ldmatrix addresses re-derived per
key block (``opaque_smem``), ``p`` prefetch the Q·Kᵀ operands (``qk_prefetch``), ``s`` P·V in one pass
(``pv_split=1``), ``x`` the softmax's row max and sum as pairwise trees (``tree_reduce``), ``w`` / ``e``
V waited for just before P·V / before the softmax (``late_v_wait``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))

SHAPES = [(8, 512, 16, 16), (4, 1024, 16, 16), (2, 2048, 32, 8), (1, 4096, 16, 16), (1, 8192, 32, 8)]
MARGIN = 1.02
KNOBS = {
    "r": ("rescale_threshold", 0.0),
    "l": ("rescale_threshold", 8.0),
    "o": ("opaque_smem", True),
    "p": ("qk_prefetch", True),
    "s": ("pv_split", 1),
    "x": ("tree_reduce", True),
    "w": ("late_v_wait", True),
    "e": ("late_v_wait", False),
}


def _parse(text: str):
    """``tm,tn,th[,letters]`` -> ``(tm, tn, th, letters)``."""
    parts = text.split(",")
    letters = parts[3] if len(parts) > 3 else ""
    if len(parts) not in (3, 4) or any(c not in KNOBS for c in letters):
        raise SystemExit(f"candidate {text!r}: expected tm,tn,threads[,letters of {''.join(KNOBS)}]")
    return (*map(int, parts[:3]), letters)


def _name(cand) -> str:
    return "x".join(map(str, cand[:3])) + (f"-{cand[3]}" if cand[3] else "")


def _child(head_dim: int, causal: bool, cand, emulate: bool) -> dict:
    """In the fresh process: put the candidate in the table, time the shapes -> TFLOP/s per shape."""
    import torch

    import _common as C
    from fa4_sm120 import tiles
    from fa4_torch import flash_attn_func

    tm, tn, th, letters = cand
    from fa4_sm120.configs import FwdCodegen

    codegen = FwdCodegen(**dict(KNOBS[c] for c in letters))
    # the row of the timed (long, plain) calls: the first of the head dims for this causal flag that
    # is not a small-m row
    base = next(
        r
        for r in tiles.FWD_TABLE
        if r.family == "sm120"
        and (r.head_dim, r.head_dim_v) == (head_dim,) * 2
        and causal in r.causal
        and not r.small_m
    )
    cand_row = dataclasses.replace(base, tile_m=tm, tile_n=tn, num_threads=th)
    tiles.FWD_TABLE = tuple(cand_row if r is base else r for r in tiles.FWD_TABLE)
    from fa4_sm120.fwd import FlashAttentionForwardSm120

    original, launch, info = tiles.fwd_config, {}, {}

    def variant(*a, **kw):  # the candidate's code-generation choices, and SM120's occupancy
        cfg = dataclasses.replace(original(*a, **kw), codegen=codegen)
        if not emulate:
            return cfg
        if cfg not in launch:
            from fa4_sm120.compile import compile_fwd
            from fa4_sm120.occupancy import ctas_per_sm, emulated_launch_smem

            regs = C.sm120_regs(compile_fwd, cfg)
            launch[cfg] = emulated_launch_smem(cfg.smem_bytes, regs, cfg.num_threads)
            info[f"r{cfg.qhead_per_kvhead}"] = dict(
                regs=regs, ctas_per_sm=ctas_per_sm(cfg.smem_bytes, regs, th)
            )
        return dataclasses.replace(cfg, launch_smem=launch[cfg])

    tiles.fwd_config = variant
    probe = tiles.fwd_config("sm120", "bfloat16", head_dim, head_dim, causal=causal)
    FlashAttentionForwardSm120.can_implement(probe)  # UnsupportedConfigError -> rejected
    C.bench_ms(lambda: torch.randn(4096, 4096, device="cuda") @ torch.randn(4096, 4096, device="cuda"))
    out = []
    for b, s, hq, hkv in SHAPES:
        q = torch.randn(b, s, hq, head_dim, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(b, s, hkv, head_dim, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        with torch.no_grad():
            ms = C.bench_ms(lambda q=q, k=k, v=v: flash_attn_func(q, k, v, causal=causal))
        out.append(C.attn_flops(b, hq, s, s, head_dim, causal=causal) / ms / 1e9)
    return dict(tflops=out, sm120=info)


def _time(head_dim: int, causal: bool, cand, emulate: bool) -> dict | None:
    """One candidate in a fresh interpreter; None when the kernel cannot implement it."""
    cmd = [sys.executable, __file__, "--child", str(head_dim), str(int(causal)), ",".join(map(str, cand))]
    if emulate:
        cmd.append("--emulate-sm120")
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode == 3:
        print(f"  {_name(cand)}: rejected: {r.stdout.strip().splitlines()[-1]}")
        return None
    if r.returncode != 0:
        raise RuntimeError(f"candidate {cand} failed:\n{r.stdout[-2000:]}{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def sweep(head_dim: int, causal: bool, cands, emulate: bool) -> dict:
    """Both passes for one (head_dim, causal); ``cands[0]`` is the current row."""
    key = f"d{head_dim}-causal{causal}"
    passes: dict[str, list[dict]] = {}
    for cand in cands:
        res = _time(head_dim, causal, cand, emulate)
        if res is not None:
            passes[_name(cand)] = [res]
            t = res["tflops"]
            print(f"{key} {_name(cand)} (pass 1): " + " ".join(f"{x:.0f}" for x in t)
                  + f" | mean {sum(t) / len(t):.1f} {res['sm120'] or ''}", flush=True)  # fmt: skip

    def mean(name, i):
        t = passes[name][i]["tflops"]
        return sum(t) / len(t)

    best3 = sorted(passes, key=lambda n: -mean(n, 0))[:3]
    current = _name(cands[0])
    by_name = {_name(c): c for c in cands}
    again = best3 if current in best3 else [*best3, current]
    for name in reversed(again):
        cand = by_name[name]
        passes[name].append(_time(head_dim, causal, cand, emulate))
        print(f"{key} {name} (pass 2): mean {mean(name, 1):.1f}", flush=True)
    verdict = current
    if current in passes:
        for name in again:
            if name == current:
                continue
            if all(mean(name, i) >= MARGIN * mean(current, i) for i in (0, 1)):
                if verdict == current or min(mean(name, i) for i in (0, 1)) > min(
                    mean(verdict, i) for i in (0, 1)
                ):
                    verdict = name
    print(f"== {key}: keep {verdict} (current {current}; " + ", ".join(
        f"{n} {'/'.join(f'{mean(n, i):.1f}' for i in range(len(passes[n])))}" for n in again) + ")")  # fmt: skip
    return dict(current=current, verdict=verdict, passes=passes)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head-dim", type=int, nargs="+", default=[128])
    ap.add_argument(
        "--cands", nargs="+", help="tile_m,tile_n,threads[,knob letters]; the first is the current row"
    )
    ap.add_argument("--causal", choices=["no", "yes", "both"], default="both")
    ap.add_argument("--out", default=None)
    ap.add_argument("--emulate-sm120", action="store_true", help="launch with SM120's CTAs per SM")
    ap.add_argument("--child", nargs=3, metavar=("D", "CAUSAL", "CAND"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        from fa4_core.errors import UnsupportedConfigError

        d, causal, cand = int(a.child[0]), bool(int(a.child[1])), _parse(a.child[2])
        try:
            print(json.dumps(_child(d, causal, cand, a.emulate_sm120)))
        except UnsupportedConfigError as e:
            print(e)
            return 3
        return 0
    import torch

    import _common as C

    if not torch.cuda.is_available():
        print("tune_tiles: no CUDA GPU here; nothing measured")
        return 0
    if not a.cands:
        ap.error("--cands is required")
    cands = [_parse(c) for c in a.cands]
    causals = {"no": (False,), "yes": (True,), "both": (False, True)}[a.causal]
    results = {}
    for d in a.head_dim:
        for causal in causals:
            results[f"d{d}-causal{causal}"] = sweep(d, causal, cands, a.emulate_sm120)
            if a.out:
                name = "tune-fwd-emulated-sm120.json" if a.emulate_sm120 else "tune-fwd.json"
                payload = {"env": C.environment(), "emulate_sm120": a.emulate_sm120, "shapes": SHAPES}
                C.write_results(os.path.join(a.out, name), {**payload, "results": results}, quiet=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
