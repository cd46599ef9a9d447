"""Backward numerics on the GPU: dq, dk, dv of ``flash_attn_func`` against the fp32 reference
gradients with the DESIGN §4 rule (element-wise), and the deterministic mode bit for bit.

The reference gradients come from ``torch.autograd`` through :func:`fa4_core.testing.attention_ref`:
``X_ref`` in fp32 from the same low-precision inputs made fp32 leaf tensors (``upcast=True``), ``X_pt``
in the input dtype (``upcast=False``). GQA gradients of the reference are summed over the query heads
of a KV head by autograd itself (the reference repeats K/V heads).

Grid: fp16/bf16 x head dims 64/128 x causal x head ratios 1, 2, 4, 7 (MHA and GQA/MQA; 7 does not
divide anything) x sequence-length pairs that are not multiples of the 64-row tiles, with seqlen_q
!= seqlen_k both ways (causal rows with no visible key when seqlen_q > seqlen_k); the other backward
head dims (96, 160, 192/128) on a smaller grid; the LSE gradient; determinism on several shapes.
Cases are grouped by compiled variant (``xdist_group``) so that ``--dist loadgroup`` compiles each
once.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")

from fa4_core.testing import attention_ref, check_close  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    dtype: str
    batch: int
    seqlen_q: int
    seqlen_k: int
    nheads: int
    nheads_kv: int
    head_dim: int
    head_dim_v: int | None = None
    causal: bool = False
    deterministic: bool = False
    dlse: bool = False

    def __str__(self):
        dv = self.head_dim_v or self.head_dim
        return (
            f"{self.dtype}-b{self.batch}-q{self.seqlen_q}-k{self.seqlen_k}-h{self.nheads}_{self.nheads_kv}"
            f"-d{self.head_dim}_{dv}{'-causal' if self.causal else ''}{'-det' if self.deterministic else ''}"
            f"{'-dlse' if self.dlse else ''}"
        )

    @property
    def group(self):
        return f"{self.dtype}-d{self.head_dim}_{self.head_dim_v or self.head_dim}-{self.causal}-{self.deterministic}"


def _inputs(c: Case):
    torch.manual_seed(hash(str(c)) % (2**31))
    dt = DTYPES[c.dtype]
    dv = c.head_dim_v or c.head_dim
    q = torch.randn(c.batch, c.seqlen_q, c.nheads, c.head_dim, device="cuda", dtype=dt)
    k = torch.randn(c.batch, c.seqlen_k, c.nheads_kv, c.head_dim, device="cuda", dtype=dt)
    v = torch.randn(c.batch, c.seqlen_k, c.nheads_kv, dv, device="cuda", dtype=dt)
    dout = torch.randn(c.batch, c.seqlen_q, c.nheads, dv, device="cuda", dtype=dt)
    dlse = torch.randn(c.batch, c.nheads, c.seqlen_q, device="cuda") if c.dlse else None
    return q, k, v, dout, dlse


def _grads(fn, q, k, v, dout, dlse, dtype):
    qq, kk, vv = (x.detach().to(dtype).requires_grad_() for x in (q, k, v))
    out, lse = fn(qq, kk, vv)
    loss = (out.float() * dout.float()).sum()
    if dlse is not None:
        loss = loss + (lse * dlse).sum()
    dq, dk, dv = torch.autograd.grad(loss, (qq, kk, vv))
    return out, dq, dk, dv


def run_case(c: Case):
    from fa4_torch import flash_attn_func

    q, k, v, dout, dlse = _inputs(c)
    dt = DTYPES[c.dtype]
    ours = _grads(
        lambda a, b, w: flash_attn_func(
            a, b, w, causal=c.causal, deterministic=c.deterministic, return_lse=True
        ),
        q, k, v, dout, dlse, dt,
    )  # fmt: skip
    ref = _grads(lambda a, b, w: attention_ref(a, b, w, causal=c.causal), q, k, v, dout, dlse, torch.float32)
    pt = _grads(
        lambda a, b, w: attention_ref(a, b, w, causal=c.causal, upcast=False), q, k, v, dout, dlse, dt
    )
    for name, x, x_ref, x_pt in zip(("out", "dq", "dk", "dv"), ours, ref, pt):
        assert x.dtype == dt
        check_close(name, x, x_ref, x_pt, grad=name != "out")


# head ratios 1, 2, 4, 7 (MQA at 7/1); seqlen pairs: tile-aligned, ragged, q < k, q > k
HEADS = ((4, 4), (4, 2), (8, 2), (7, 1))
SEQLENS = ((128, 128), (113, 203), (300, 129), (1, 77), (257, 1))
MAIN = [
    Case(dt, 2, sq, sk, hq, hkv, d, causal=causal)
    for dt, d, causal, (hq, hkv), (sq, sk) in itertools.product(
        DTYPES, (64, 128), (False, True), HEADS, SEQLENS
    )
]
OTHER_DIMS = [
    Case("bf16", 2, sq, sk, 4, hkv, d, dv, causal=causal)
    for (d, dv), causal, hkv, (sq, sk) in itertools.product(
        ((96, 96), (160, 160), (192, 128)), (False, True), (4, 2), ((113, 203), (300, 129))
    )
]
LONGER = [
    Case(dt, 1, s, s, 8, hkv, d, causal=causal)
    for dt, d, causal, hkv, s in itertools.product(DTYPES, (64, 128), (False, True), (8, 2), (1000,))
]
DLSE = [
    Case(dt, 2, sq, sk, 4, 2, 64, causal=False, dlse=True)
    for dt, (sq, sk) in itertools.product(DTYPES, ((113, 203), (128, 128)))
]
DET = [
    Case("bf16", 2, sq, sk, hq, hkv, d, causal=causal, deterministic=True)
    for d, causal, (hq, hkv), (sq, sk) in itertools.product(
        (64, 128), (False, True), ((4, 4), (8, 2)), ((300, 129), (777, 777))
    )
]
ALL = MAIN + OTHER_DIMS + LONGER + DLSE + DET


@pytest.mark.parametrize("c", [pytest.param(c, marks=pytest.mark.xdist_group(c.group)) for c in ALL], ids=str)
def test_bwd(c):
    run_case(c)


DET_SHAPES = [
    Case(dt, b, sq, sk, hq, hkv, d, causal=causal, deterministic=True)
    for dt, d, causal, (b, sq, sk, hq, hkv) in itertools.product(
        ("bf16",), (64, 128), (False, True), ((2, 777, 777, 4, 4), (1, 1500, 1100, 8, 2), (3, 200, 900, 7, 1))
    )
]


@pytest.mark.parametrize(
    "c", [pytest.param(c, marks=pytest.mark.xdist_group(c.group)) for c in DET_SHAPES], ids=str
)
def test_deterministic_bit_identical(c):
    from fa4_torch import flash_attn_func

    q, k, v, dout, _ = _inputs(c)
    runs = []
    for _ in range(3):
        qq, kk, vv = (x.detach().clone().requires_grad_() for x in (q, k, v))
        out, _ = flash_attn_func(qq, kk, vv, causal=c.causal, deterministic=True)
        out.backward(dout)
        runs.append((qq.grad, kk.grad, vv.grad))
    for later in runs[1:]:
        for name, a, b in zip(("dq", "dk", "dv"), runs[0], later):
            assert torch.equal(a, b), f"{name} differs between two deterministic runs"
    # and it is the right answer
    run_case(c)


def test_grad_of_unsupported_feature_raises():
    from fa4_torch import flash_attn_func

    q = torch.randn(1, 64, 2, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    with pytest.raises(NotImplementedError, match="window"):
        flash_attn_func(q, q, q, window_size=(16, 0))
    with pytest.raises(NotImplementedError, match="softcap"):
        flash_attn_func(q, q, q, softcap=5.0)
    q256 = torch.randn(1, 64, 2, 256, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    from fa4_core.errors import UnsupportedConfigError

    with pytest.raises(UnsupportedConfigError, match="head_dim"):
        flash_attn_func(q256, q256, q256)


def test_backward_through_dot_backward():
    """``.backward()`` (not only ``autograd.grad``) fills ``.grad`` of all three inputs."""
    from fa4_torch import flash_attn_func

    q, k, v = (
        torch.randn(1, 100, 4, 64, device="cuda", dtype=torch.float16, requires_grad=True) for _ in range(3)
    )
    out, _ = flash_attn_func(q, k, v, causal=True)
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in (q, k, v))
