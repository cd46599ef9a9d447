"""fa4_core.testing: the reference equals naive per-element Python loops, and check_close enforces docs/testing.md.

The naive model is written independently of the reference: for every (batch, head, query) it loops over
the keys in float64 Python arithmetic, applying the visibility rule, softcap and sink literally. Cases
cover MHA/GQA/MQA, seqlen_q <, =, > seqlen_k, causal, windows (one- and two-sided, with causal), softcap,
learnable sinks, rows with no visible key, varlen with seqused, and paged K/V. The numpy path runs
everywhere (the core tests need no torch); torch parity (fp32 and the bf16 ``upcast=False`` path) runs
where torch is installed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from fa4_core.testing import attention_ref, check_close, tolerance


def naive_one(q, k, v, *, scale, left, right, softcap, sink):
    """q (sq, hq, d), k (sk, hkv, d), v (sk, hkv, dv) numpy -> out (sq, hq, dv), lse (hq, sq), float64."""
    sq, hq, _ = q.shape
    sk, hkv, _ = k.shape
    dv = v.shape[2]
    g = hq // hkv
    out = np.zeros((sq, hq, dv))
    lse = np.full((hq, sq), -math.inf)
    for h in range(hq):
        hk = h // g
        for i in range(sq):
            scores = []
            for j in range(sk):
                if right is not None and j > i + sk - sq + right:
                    continue
                if left is not None and j < i + sk - sq - left:
                    continue
                s = sum(float(q[i, h, t]) * scale * float(k[j, hk, t]) for t in range(q.shape[2]))
                if softcap:
                    s = softcap * math.tanh(s / softcap)
                scores.append((j, s))
            logits = [s for _, s in scores] + ([float(sink[h])] if sink is not None else [])
            if not logits:
                continue
            m = max(logits)
            z = sum(math.exp(x - m) for x in logits)
            lse[h, i] = m + math.log(z)
            for j, s in scores:
                p = math.exp(s - m) / z
                for t in range(dv):
                    out[i, h, t] += p * float(v[j, hk, t])
    return out, lse


@dataclass
class Case:
    b: int = 2
    sq: int = 5
    sk: int = 7
    hq: int = 4
    hkv: int = 2
    d: int = 8
    dv: int = 8
    causal: bool = False
    window: tuple = (None, None)
    softcap: float = 0.0
    sink: bool = False
    scale: float | None = None
    kw: dict = field(default_factory=dict)


# Small shapes so the loops stay fast; each row adds one feature or one alignment case.
CASES = {
    "mha": Case(hq=3, hkv=3),
    "gqa": Case(),
    "mqa_dv": Case(hq=4, hkv=1, dv=5),
    "causal_sq<sk": Case(causal=True),
    "causal_sq>sk": Case(sq=9, sk=4, causal=True),  # first rows see nothing: out 0, lse -inf
    "causal_square": Case(sq=6, sk=6, causal=True),
    "window": Case(sq=8, sk=8, window=(2, 1)),
    "window_left_only": Case(sq=6, sk=9, window=(1, None)),
    "window_right_only_sq>sk": Case(sq=9, sk=5, window=(None, 0)),
    "causal_window": Case(sq=7, sk=7, causal=True, window=(2, 3)),  # causal forces right = 0
    "window_-1": Case(window=(-1, 2)),  # -1 means unbounded
    "softcap": Case(softcap=1.5, scale=0.7),
    "sink": Case(sink=True),
    "sink_empty_rows": Case(sq=8, sk=3, causal=True, sink=True),
    "softcap_sink_window": Case(softcap=2.0, sink=True, window=(3, 0)),
}


def make_inputs(c, rng):
    q = rng.standard_normal((c.b, c.sq, c.hq, c.d)).astype(np.float32)
    k = rng.standard_normal((c.b, c.sk, c.hkv, c.d)).astype(np.float32)
    v = rng.standard_normal((c.b, c.sk, c.hkv, c.dv)).astype(np.float32)
    sink = rng.standard_normal(c.hq).astype(np.float32) if c.sink else None
    return q, k, v, sink


def naive_bounds(c):
    left, right = (None if w is None or w < 0 else w for w in c.window)
    if c.causal:
        right = 0
    return left, right


@pytest.mark.parametrize("name", list(CASES))
def test_reference_equals_naive(name):
    c = CASES[name]
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    q, k, v, sink = make_inputs(c, rng)
    out, lse = attention_ref(
        q,
        k,
        v,
        causal=c.causal,
        window_size=c.window,
        softcap=c.softcap,
        learnable_sink=sink,
        softmax_scale=c.scale,
    )
    assert out.shape == (c.b, c.sq, c.hq, c.dv) and out.dtype == np.float32
    assert lse.shape == (c.b, c.hq, c.sq) and lse.dtype == np.float32
    left, right = naive_bounds(c)
    scale = c.scale if c.scale is not None else 1 / math.sqrt(c.d)
    for b in range(c.b):
        o, l = naive_one(q[b], k[b], v[b], scale=scale, left=left, right=right, softcap=c.softcap, sink=sink)
        np.testing.assert_allclose(out[b], o, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.isinf(lse[b]), np.isinf(l))
        np.testing.assert_allclose(lse[b], l, rtol=1e-5, atol=1e-5)
    if name == "causal_sq>sk":  # rows 0..4 have no visible key
        assert np.all(out[:, :5] == 0) and np.all(np.isneginf(lse[:, :, :5]))
    if name == "sink_empty_rows":  # with a sink, an empty row has lse = sink
        np.testing.assert_allclose(lse[:, :, 0], np.broadcast_to(sink, (c.b, c.hq)), rtol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_seqused_equals_naive(causal):
    rng = np.random.default_rng(1)
    lens_q, lens_k, used_q, used_k = [3, 0, 6, 5], [4, 2, 9, 3], [3, 0, 4, 5], [4, 1, 9, 2]
    hq, hkv, d = 4, 2, 8
    cu_q, cu_k = np.cumsum([0] + lens_q), np.cumsum([0] + lens_k)
    q = rng.standard_normal((cu_q[-1], hq, d)).astype(np.float32)
    k = rng.standard_normal((cu_k[-1], hkv, d)).astype(np.float32)
    v = rng.standard_normal((cu_k[-1], hkv, d)).astype(np.float32)
    out, lse = attention_ref(
        q,
        k,
        v,
        causal=causal,
        cu_seqlens_q=cu_q.astype(np.int32),
        cu_seqlens_k=cu_k.astype(np.int32),
        seqused_q=np.array(used_q, np.int32),
        seqused_k=np.array(used_k, np.int32),
    )
    assert out.shape == (cu_q[-1], hq, d) and lse.shape == (hq, cu_q[-1])
    for b in range(4):
        qs = slice(cu_q[b], cu_q[b] + used_q[b])
        ks = slice(cu_k[b], cu_k[b] + used_k[b])
        o, l = naive_one(
            q[qs],
            k[ks],
            v[ks],
            scale=1 / math.sqrt(d),
            left=None,
            right=0 if causal else None,
            softcap=0.0,
            sink=None,
        )
        np.testing.assert_allclose(out[qs], o, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lse[:, qs], l, rtol=1e-5, atol=1e-5)
        # rows past seqused_q: 0 / -inf
        rest = slice(cu_q[b] + used_q[b], cu_q[b + 1])
        assert np.all(out[rest] == 0) and np.all(np.isneginf(lse[:, rest]))


def test_paged_kv_equals_naive():
    rng = np.random.default_rng(2)
    b, sq, hq, hkv, d, page, max_pages, n_pages = 3, 4, 2, 1, 8, 4, 3, 10
    q = rng.standard_normal((b, sq, hq, d)).astype(np.float32)
    k_page = rng.standard_normal((n_pages, page, hkv, d)).astype(np.float32)
    v_page = rng.standard_normal((n_pages, page, hkv, d)).astype(np.float32)
    table = rng.permutation(n_pages)[: b * max_pages].reshape(b, max_pages).astype(np.int32)
    used_k = np.array([12, 5, 9], np.int32)
    out, lse = attention_ref(
        q, None, None, causal=True, k_page=k_page, v_page=v_page, page_table=table, seqused_k=used_k
    )
    for i in range(b):
        kb = np.concatenate([k_page[p] for p in table[i]])[: used_k[i]]
        vb = np.concatenate([v_page[p] for p in table[i]])[: used_k[i]]
        o, l = naive_one(q[i], kb, vb, scale=1 / math.sqrt(d), left=None, right=0, softcap=0.0, sink=None)
        np.testing.assert_allclose(out[i], o, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(lse[i], l, rtol=1e-5, atol=1e-5)


def test_upcast_false_numpy_fp16():
    """X_pt in fp16 is close to, and not identical to, X_ref: the rounding the tolerance is built from."""
    rng = np.random.default_rng(3)
    q, k, v, _ = make_inputs(Case(sq=16, sk=16, d=32, dv=32), rng)
    q, k, v = (x.astype(np.float16) for x in (q, k, v))
    out_ref, lse_ref = attention_ref(q, k, v, causal=True)
    out_pt, lse_pt = attention_ref(q, k, v, causal=True, upcast=False)
    assert out_ref.dtype == np.float32 and out_pt.dtype == np.float16 and lse_pt.dtype == np.float32
    err = np.abs(out_pt.astype(np.float32) - out_ref).max()
    assert 0 < err < 1e-2
    check_close("out", out_pt, out_ref, out_pt)
    check_close("lse", lse_pt, lse_ref, lse_pt)


# -- check_close / tolerance -------------------------------------------------------------------------
def test_tolerance_formula():
    ref = np.array([0.1, -0.2, 0.05, 0.0], np.float32)
    pt = ref + np.array([0, 1e-3, 0, 0], np.float32)
    # atol: the +0.3-0.3 round trip in fp16 of values < 0.3 loses up to half an ulp of [0.25, 0.5)
    r16 = ref.astype(np.float16)
    noise = float(np.abs((r16 + np.float16(0.3)) - np.float16(0.3) - r16).max())
    assert noise > 0
    pt_err = float(np.abs(pt.astype(np.float64) - ref).max())
    assert tolerance(ref, pt, dtype=np.float16) == pytest.approx(2 * pt_err + 2 * noise)
    assert tolerance(ref, pt, dtype=np.float16, softcap=True) == pytest.approx(3 * pt_err + 2 * noise)
    assert tolerance(ref, pt, dtype=np.float16, softcap=True, grad=True) == pytest.approx(
        3 * pt_err + 2 * noise + 3e-4
    )
    assert tolerance(ref, pt, dtype=np.float16, grad=True) == pytest.approx(2 * pt_err + 2 * noise)
    # the same round trip in fp32 is far smaller: the dtype of X matters
    assert tolerance(ref, ref, dtype=np.float32) < 1e-6 < tolerance(ref, ref, dtype=np.float16)


def test_check_close_fails_with_location():
    ref = np.zeros((2, 3), np.float32)
    pt = ref + 1e-3
    bound = tolerance(ref, pt, dtype=np.float16)
    x = ref.astype(np.float16)
    check_close("out", x, ref, pt)
    x[1, 2] = bound * 1.5
    with pytest.raises(AssertionError, match=r"out: max\|X - X_ref\| = .* at index \(1, 2\).*bound"):
        check_close("out", x, ref, pt)
    x[1, 2] = np.nan
    with pytest.raises(AssertionError, match=r"index \(1, 2\)"):
        check_close("out", x, ref, pt)
    with pytest.raises(AssertionError, match="shape"):
        check_close("out", x[:1], ref, pt)


def test_check_close_neg_inf_lse():
    ref = np.array([[-np.inf, 1.0, 2.0]], np.float32)
    pt = np.array([[-np.inf, 1.001, 2.0]], np.float32)
    check_close("lse", np.array([[-np.inf, 1.0005, 2.0]], np.float32), ref, pt)
    with pytest.raises(AssertionError, match="infinite"):
        check_close("lse", np.array([[0.0, 1.0, 2.0]], np.float32), ref, pt)
    with pytest.raises(AssertionError, match=r"index \(0, 1\)"):  # the finite rest is still compared
        check_close("lse", np.array([[-np.inf, 1.01, 2.0]], np.float32), ref, pt)


def test_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, fa4_core.testing; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- torch parity (optional) -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gqa", "causal_sq>sk", "window", "softcap_sink_window", "sink_empty_rows"])
def test_torch_matches_numpy(name):
    torch = pytest.importorskip("torch")
    c = CASES[name]
    q, k, v, sink = make_inputs(c, np.random.default_rng(4))
    kw = dict(causal=c.causal, window_size=c.window, softcap=c.softcap, softmax_scale=c.scale)
    out, lse = attention_ref(q, k, v, learnable_sink=sink, **kw)
    t = [torch.from_numpy(x) for x in (q, k, v)]
    tsink = None if sink is None else torch.from_numpy(sink)
    out_t, lse_t = attention_ref(*t, learnable_sink=tsink, **kw)
    assert out_t.dtype == torch.float32 and lse_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lse_t.numpy(), lse, rtol=1e-5, atol=1e-6)
    # bf16: X_ref from the bf16 inputs in fp32, X_pt in bf16; X_pt passes its own check
    tb = [x.bfloat16() for x in t]
    out_ref, lse_ref = attention_ref(*tb, learnable_sink=tsink, **kw)
    out_pt, lse_pt = attention_ref(*tb, learnable_sink=tsink, upcast=False, **kw)
    assert out_ref.dtype == torch.float32 and out_pt.dtype == torch.bfloat16 and lse_pt.dtype == torch.float32
    check_close("out", out_pt, out_ref, out_pt, softcap=bool(c.softcap))
    check_close("lse", lse_pt, lse_ref, lse_pt, softcap=bool(c.softcap))
    # a wrong output (the seed bug: right shape, wrong values) fails
    with pytest.raises(AssertionError):
        check_close("out", out_pt.flip(0), out_ref, out_pt)


def test_torch_varlen_paged():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    cu_q = torch.tensor([0, 3, 7], dtype=torch.int32)
    q = torch.from_numpy(rng.standard_normal((7, 2, 8)).astype(np.float32))
    k_page = torch.from_numpy(rng.standard_normal((6, 4, 1, 8)).astype(np.float32))
    v_page = torch.from_numpy(rng.standard_normal((6, 4, 1, 8)).astype(np.float32))
    table = torch.tensor([[5, 0], [2, 3]], dtype=torch.int32)
    used_k = torch.tensor([6, 8], dtype=torch.int32)
    kw = dict(causal=True, cu_seqlens_q=cu_q, seqused_k=used_k, page_table=table)
    out_t, lse_t = attention_ref(q, None, None, k_page=k_page, v_page=v_page, **kw)
    out_n, lse_n = attention_ref(
        q.numpy(),
        None,
        None,
        k_page=k_page.numpy(),
        v_page=v_page.numpy(),
        **{a: b.numpy() if hasattr(b, "numpy") else b for a, b in kw.items()},
    )
    assert out_t.shape == (7, 2, 8) and lse_t.shape == (2, 7)
    np.testing.assert_allclose(out_t.numpy(), out_n, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lse_t.numpy(), lse_n, rtol=1e-5, atol=1e-6)
