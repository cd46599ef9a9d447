"""Plots of the benchmark results (docs/benchmarks.md): TFLOP/s (forward, backward) or bandwidth (decode) against
sequence length, one panel per head dim / causal / heads, fa4 beside the peers of the same run.

The bench scripts call these after writing their JSON; this file also re-plots any results file without
a GPU (matplotlib only; without it nothing is drawn and the scripts say so):

    python benchmarks/plots.py benchmarks/results/2026-12-01-NVIDIA-H200-bwd.json ...

The kind comes from the file name (``...-fwd.json``, ``...-bwd.json``, ``...-decode.json``); the PNG is
written beside it.
"""

from __future__ import annotations

import json
import os
import sys

FWD_PEERS = ("fa4", "sdpa_flash", "sdpa_cudnn", "fa4_upstream_sm120")
# backward: each peer's backward alone (fa4 also deterministic)
BWD_SERIES = ("fa4", "fa4_det", "sdpa_flash", "sdpa_cudnn", "fa4_upstream_sm120")
DECODE_SERIES = ("fa4", "sdpa_flash", "sdpa_cudnn", "fa4_upstream_sm120")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # a machine without matplotlib still gets the JSON
        print("no plot:", e)
        return None
    return plt


def _panels(rows, keys):
    """The distinct values of ``keys`` that the rows have, sorted."""
    return sorted({tuple(r[k] for k in keys) for r in rows})


def _draw(rows, path, title, panel_keys, panel_name, x_key, series, y_of, ylabel, xlabel):
    plt = _pyplot()
    if plt is None or not rows:
        return None
    panels = _panels(rows, panel_keys)
    ncols = min(4, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 4 * nrows), sharey=True, squeeze=False)
    for ax, key in zip(axes.flat, panels):
        sel = sorted((r for r in rows if tuple(r[k] for k in panel_keys) == key), key=lambda r: r[x_key])
        for name in series:
            pts = [(r[x_key], y_of(r, name)) for r in sel if y_of(r, name) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_title(panel_name(key), fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)
    _palette(path)
    print(f"wrote {path}")
    return path


def _palette(path: str) -> None:
    """Re-save the plot as a 256-colour PNG (a third of the size; the results travel to the GPU machine
    with the checkout under a 64 MiB cap). Pillow comes with matplotlib; without it the plot stays."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as im:
        q = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    q.save(path, "PNG", optimize=True)


def _get(key):
    return lambda r, name: r.get(key.format(name))


def _attention_panel(k) -> str:
    return f"d{k[0]} {'causal' if k[1] else 'full'} h{k[2]}/{k[3]}"


def _attention(kind, series, key, rows, path, device):
    return _draw(
        rows, path, f"{kind}, bf16, {device}", ("head_dim", "causal", "nheads", "nheads_kv"), _attention_panel,
        "seqlen", series, _get(key), "TFLOP/s", "seqlen",
    )  # fmt: skip


def plot_fwd(rows, path, device=""):
    """Forward TFLOP/s vs seqlen per (head dim, causal, heads)."""
    return _attention("forward", FWD_PEERS, "{}_tflops", rows, path, device)


def plot_bwd(rows, path, device=""):
    """Backward TFLOP/s (2.5x forward FLOPs) vs seqlen per (head dim, causal, heads)."""
    return _attention("backward", BWD_SERIES, "{}_bwd_tflops", rows, path, device)


def plot_decode(rows, path, device=""):
    """Decode: fraction of the copy bandwidth vs KV length per (batch, K/V layout)."""
    return _draw(
        rows, path, f"decode (1 query token, 32/8 heads, d128), {device}", ("layout", "batch"),
        lambda k: f"{k[0]} batch {k[1]}",
        "kv_len", DECODE_SERIES, _get("{}_frac_copy_bw"), "fraction of copy bandwidth", "KV length",
    )  # fmt: skip


def plot_file(json_path: str):
    """Draw the PNG of one results file beside it; returns the PNG path (None if nothing drawn)."""
    with open(json_path) as f:
        payload = json.load(f)
    device = payload.get("env", {}).get("device", "")
    base = json_path[: -len(".json")]
    if base.endswith("-fwd"):
        rows = payload["grids"]["anchor"]["rows"] if "grids" in payload else payload.get("rows", [])
        return plot_fwd(rows, base + ".png", device)
    if base.endswith("-bwd"):
        rows = payload.get("rows", []) + payload.get("rows_large-d", [])
        return plot_bwd(rows, base + ".png", device)
    if base.endswith("-decode"):
        return plot_decode(payload.get("rows", []), base + ".png", device)
    print(f"plots: {json_path} is not a -fwd/-bwd/-decode results file; skipped")
    return None


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__)
        return 2
    for p in paths:
        if not os.path.exists(p):
            print(f"plots: no such file {p}")
            return 1
        plot_file(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
