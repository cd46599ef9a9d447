"""``fa4_torch.attention_backward``, the backward on an external out/LSE: its argument checks on the
CPU (typed errors naming the argument, before anything launches), and on the GPU its gradients
against the autograd path (bit for bit with the forward's own out/LSE), the accumulation into given
buffers, and a key split in two (forward per chunk, fp32 LSE merge, backward per chunk on the merged
out/LSE) against the fp32 reference with the correctness rule (docs/testing.md).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import fa4_torch  # noqa: E402
from fa4_core.errors import UnsupportedConfigError  # noqa: E402
from fa4_core.testing import attention_ref, check_close  # noqa: E402
from fa4_torch import launch_bwd, plan, validate  # noqa: E402

BF16 = torch.bfloat16


def _args(b=2, sq=8, sk=12, h=4, hk=2, d=64, dtype=BF16, device="cpu"):
    z = lambda *s, dt=dtype: torch.zeros(s, dtype=dt, device=device)  # noqa: E731
    return dict(
        dout=z(b, sq, h, d), q=z(b, sq, h, d), k=z(b, sk, hk, d), v=z(b, sk, hk, d), out=z(b, sq, h, d),
        lse=z(b, h, sq, dt=torch.float32),
    )  # fmt: skip


@pytest.fixture
def past_the_device_check(monkeypatch):
    """CPU tensors treated as a GPU's; the launch is replaced by a recorder (the control)."""
    import fa4_torch.autograd as ag

    calls = []
    monkeypatch.setattr(validate, "check_devices", lambda q, named: None)
    monkeypatch.setattr(ag, "device_family", lambda device: "sm120")
    monkeypatch.setattr(plan, "num_sms", lambda device: 1)

    def fake_backward(dout, q, k, v, *rest):
        calls.append(rest)
        return torch.ones_like(q), torch.ones_like(k), torch.ones_like(v), None

    monkeypatch.setattr(launch_bwd, "backward", fake_backward)
    return calls


def test_valid_calls_reach_the_launch_and_accumulate(past_the_device_check):
    a = _args()
    dq = torch.full(a["q"].shape, 2.0)
    gq, gk, gv = fa4_torch.attention_backward(**a, causal=True, dq=dq)
    assert gq is dq and torch.equal(dq, torch.full_like(dq, 3.0))
    assert gk.dtype == BF16 and torch.equal(gk, torch.ones_like(gk))
    assert len(past_the_device_check) == 1


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (dict(lse=torch.zeros(2, 4, 9)), r"lse\.shape"),
        (dict(lse=torch.zeros(2, 4, 8, dtype=BF16)), r"lse\.dtype"),
        (dict(out=torch.zeros(2, 8, 4, 64)), r"out\.dtype"),
        (dict(dout=torch.zeros(2, 8, 4, 32, dtype=BF16)), r"dout\.shape"),
        (dict(dk=torch.zeros(2, 12, 4, 64)), r"dk\.shape"),
        (dict(dv=torch.zeros(2, 12, 2, 64, dtype=torch.float16)), r"dv\.dtype"),
        (dict(window_size=(3,)), "window_size"),
        (dict(softcap=-1.0), "softcap"),
        (dict(max_seqlen_q=-2), "max_seqlen_q"),
        (dict(dsink=torch.zeros(4)), "dsink"),
        (dict(learnable_sink=torch.zeros(4), dsink=torch.zeros(3)), r"dsink\.shape"),
    ],
)
def test_bad_arguments_raise_before_the_launch(past_the_device_check, change, match):
    kw = _args()
    kw.update(change)
    with pytest.raises(UnsupportedConfigError, match=match):
        fa4_torch.attention_backward(**kw)
    assert not past_the_device_check


def test_cpu_tensors_are_refused():
    with pytest.raises(UnsupportedConfigError, match=r"q\.device"):
        fa4_torch.attention_backward(**_args())


# ------------------------------------------------------------------------------------------ GPU
def _inputs(b, sq, sk, h, hk, d, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    mk = lambda *s: torch.randn(s, generator=g, device="cuda").to(BF16)  # noqa: E731
    return mk(b, sq, h, d), mk(b, sk, hk, d), mk(b, sk, hk, d), mk(b, sq, h, d)


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_matches_autograd_and_accumulates(causal):
    q, k, v, dout = _inputs(2, 200, 328, 4, 2, 64, 1)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out, lse = fa4_torch.flash_attn_func(*leaves, causal=causal, return_lse=True)
    out.backward(dout)
    gq, gk, gv = fa4_torch.attention_backward(dout, q, k, v, out.detach(), lse.detach(), causal=causal)
    for name, x, y in (("dq", gq, leaves[0].grad), ("dk", gk, leaves[1].grad), ("dv", gv, leaves[2].grad)):
        assert torch.equal(x, y), name
    dq = torch.ones(q.shape, dtype=torch.float32, device="cuda")
    fa4_torch.attention_backward(dout, q, k, v, out.detach(), lse.detach(), causal=causal, dq=dq)
    assert torch.equal(dq, 1 + gq.float())


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.parametrize("causal", [False, True])
def test_gpu_key_split_through_the_merged_lse(causal):
    """Keys cut at 128 of 328, 200 queries: bottom-right causal, query i sees keys up to 128 + i, so
    every query sees the whole first chunk (no mask) and the second chunk is a causal square."""
    from fa4_torch.distributed.merge import merge_, new_accumulators

    q, k, v, dout = _inputs(2, 200, 328, 4, 2, 64, 2)
    cut = 128
    out, lse = new_accumulators(q, 64, varlen=False)
    chunks = ((slice(0, cut), False), (slice(cut, None), causal))
    for ks, c in chunks:
        o, m = fa4_torch.flash_attn_func(q, k[:, ks], v[:, ks], causal=c, return_lse=True)
        merge_(out, lse, o, m)
    out_lo = out.to(BF16)
    dq = torch.zeros(q.shape, dtype=torch.float32, device="cuda")
    dk = torch.zeros(k.shape, dtype=torch.float32, device="cuda")
    dv = torch.zeros(v.shape, dtype=torch.float32, device="cuda")
    for ks, c in chunks:
        fa4_torch.attention_backward(
            dout, q, k[:, ks], v[:, ks], out_lo, lse, causal=c, dq=dq, dk=dk[:, ks], dv=dv[:, ks]
        )

    def ref(upcast):
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        o, m = attention_ref(*leaves, causal=causal, upcast=upcast)
        o.backward(dout.to(o.dtype))
        return o.detach(), m.detach(), *(t.grad for t in leaves)

    r, p = ref(True), ref(False)
    for i, (name, x) in enumerate((("out", out_lo), ("lse", lse), ("dq", dq), ("dk", dk), ("dv", dv))):
        check_close(name, x.to(BF16) if name.startswith("d") else x, r[i], p[i], grad=name.startswith("d"))
