"""The worked example of docs/kernel-authors.md (docs/examples/toy_kernel.py) compiles for ``sm_120a``
on the CPU and, on a GPU, computes what its torch reference computes.

The example is a file of the docs, not of a package: it is loaded by path, so the guide cannot drift
from code that builds. It imports only fa4_core and the DSL (this layer's rule); torch appears only in
the gpu test.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "toy_kernel.py"

# (tile_m, tile_n, qhead_per_kvhead, causal, rescale_threshold, tree_reduce): MHA, pack-GQA with a ratio
# that divides nothing, not causal; the next two keep the running offsets until a row max grows by more
# than 2^8; the last two reduce a row's max and sum as pairwise trees
CONFIGS = [
    (32, 64, 1, True, 0.0, False),
    (32, 64, 3, True, 0.0, False),
    (16, 32, 1, False, 0.0, False),
    (32, 64, 3, True, 8.0, False),
    (16, 32, 1, False, 8.0, False),
    (32, 64, 3, True, 0.0, True),
    (16, 36, 1, False, 8.0, True),
]


def _cfg_id(c):
    return (
        f"m{c[0]}n{c[1]}-r{c[2]}{'-causal' if c[3] else ''}{f'-t{c[4]:g}' if c[4] else ''}"
        f"{'-tree' if c[5] else ''}"
    )


def _example():
    spec = importlib.util.spec_from_file_location("fa4_docs_toy_kernel", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.compile_only
@pytest.mark.parametrize("cfg", CONFIGS, ids=_cfg_id)
def test_toy_kernel_compiles_for_sm120a(cfg, tmp_path):
    tile_m, tile_n, r, causal, t, tree = cfg
    mod = _example()
    mod.compile_for(
        "sm_120a", str(tmp_path), tile_m=tile_m, tile_n=tile_n, qhead_per_kvhead=r, causal=causal,
        rescale_threshold=t, tree_reduce=tree,
    )  # fmt: skip
    ptx_files = list(tmp_path.glob("*.sm_120a.ptx"))
    assert len(ptx_files) == 1, list(tmp_path.iterdir())
    ptx = ptx_files[0].read_text()
    assert ".target sm_120a" in ptx and ".entry" in ptx
    assert "shfl.sync.bfly" in ptx  # the quad all-reduce of OnlineSoftmax
    assert "ex2.approx" in ptx  # the exp2 of the online softmax
    assert "wgmma" not in ptx and "stmatrix" not in ptx
    assert ("vote.sync.any" in ptx) == (t > 0)  # the warp's vote on keeping the offsets
    assert ("max.NaN.f32" in ptx) == (not tree)  # TensorSSA.reduce's chain; the tree uses fmax


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_cfg_id)
@pytest.mark.parametrize("shape", [(2, 6, 1, 1), (2, 6, 77, 200), (1, 3, 300, 129), (3, 6, 64, 64)])
def test_toy_kernel_matches_reference_on_gpu(cfg, shape):
    import cutlass.cute as cute
    import torch
    from cutlass.cute.runtime import from_dlpack

    tile_m, tile_n, r, causal, t, tree = cfg
    b, h, sq, sk = shape
    mod = _example()
    kernel = mod.CausalRowLse(
        tile_m=tile_m, tile_n=tile_n, qhead_per_kvhead=r, causal=causal, rescale_threshold=t,
        tree_reduce=tree,
    )  # fmt: skip
    torch.manual_seed(0)
    s = torch.randn(b, h, sq, sk, device="cuda") * 4
    if t:  # scores grow block by block towards key 0 (visited last): both the keep and the update path
        seg = (sk - 1 - torch.arange(sk, device="cuda")) // tile_n
        s = s * (1 + 2 * seg.float())
    lse = torch.full((b, h, sq), 12345.0, device="cuda")
    scale = 0.3
    cute.compile(kernel, from_dlpack(s), from_dlpack(lse), scale)(from_dlpack(s), from_dlpack(lse), scale)
    torch.cuda.synchronize()
    ref = mod.reference_lse(s, scale, causal)
    inf = torch.isinf(ref)
    assert torch.equal(torch.isinf(lse), inf) and bool((lse[inf] == ref[inf]).all())  # rows that see nothing
    # fp32 scores, fp32 running sums and ex2.approx: a few ulp of the magnitude
    err = (lse[~inf] - ref[~inf]).abs()
    bound = 1e-5 * ref[~inf].abs().clamp(min=1.0) * 8
    assert bool((err <= bound).all()), f"max err {float(err.max()):.3g}, bound {float(bound.max()):.3g}"
