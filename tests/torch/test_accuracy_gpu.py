"""Forward accuracy no worse than PyTorch SDPA's flash kernel, shape by shape, over the seed grid.

The element-wise rule (``fa4_core.testing.check_close``, in test_fwd_gpu.py) bounds fa4's error by
twice that of the reference computed in the input dtype; this test holds fa4 to its peer on the same
inputs instead: on each of the 240 seed-grid shapes (fp16/bf16 x causal x batch {1, 2} x seqlen {128,
512, 1024, 2048, 4096} x heads {16/16, 16/8, 16/1} x head dim {64, 128}), fa4's max-abs error against
the fp32 reference is at most 1.25x SDPA flash's, and the median of that ratio over the grid is at most
1.02. A speed technique that rounds more than SDPA's kernel (the lazy O rescale kept P relative to a
stale row max, 1.3-2.3x at d128 non-causal) fails here although it passes the element-wise rule.
``benchmarks/accuracy_fwd.py`` reports the same ratios beside upstream FlashAttention-4.
"""

from __future__ import annotations

import itertools
import statistics

import pytest

torch = pytest.importorskip("torch")

from fa4_core.testing import attention_ref  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(1200), pytest.mark.xdist_group("large-reference")]

MAX_RATIO = 1.25
MEDIAN_RATIO = 1.02
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
SEED_GRID = list(
    itertools.product(
        ("fp16", "bf16"), (False, True), (1, 2), (128, 512, 1024, 2048, 4096), (16, 8, 1), (64, 128)
    )
)


def _max_errors(dtype, causal, batch, seqlen, nheads_kv, head_dim) -> tuple[float, float]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    from fa4_torch import flash_attn_func

    g = torch.Generator(device="cuda").manual_seed(seqlen * 1000 + nheads_kv * 10 + batch)
    dt = DTYPES[dtype]
    q = torch.randn(batch, seqlen, 16, head_dim, device="cuda", dtype=dt, generator=g)
    k = torch.randn(batch, seqlen, nheads_kv, head_dim, device="cuda", dtype=dt, generator=g)
    v = torch.randn(batch, seqlen, nheads_kv, head_dim, device="cuda", dtype=dt, generator=g)
    ref = torch.cat(
        [attention_ref(q[i : i + 1], k[i : i + 1], v[i : i + 1], causal=causal)[0] for i in range(batch)]
    )
    out = flash_attn_func(q, k, v, causal=causal)[0]
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        peer = sdpa(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=causal,
            enable_gqa=nheads_kv != 16,
        ).transpose(1, 2)
    return (out.float() - ref).abs().max().item(), (peer.float() - ref).abs().max().item()


def test_seed_grid_error_within_sdpa_flash():
    ratios, worse = [], []
    for shape in SEED_GRID:
        err, peer_err = _max_errors(*shape)
        assert peer_err > 0.0, shape
        ratio = err / peer_err
        ratios.append(ratio)
        if ratio > MAX_RATIO:
            worse.append(f"{shape}: fa4 {err:.3g} vs SDPA flash {peer_err:.3g} ({ratio:.2f}x)")
    median = statistics.median(ratios)
    assert not worse, f"{len(worse)} shapes over {MAX_RATIO}x SDPA flash's error:\n" + "\n".join(worse)
    assert median <= MEDIAN_RATIO, f"median ratio {median:.3f} > {MEDIAN_RATIO}"
