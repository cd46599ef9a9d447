"""Training through ``torch.compile(fullgraph=True)`` (the backward as ``torch.ops.fa4.bwd``) and
through CUDA graphs: the gradients must equal the eager ones bit for bit (the same kernels on the
same inputs), and ``torch.library.opcheck`` must pass on both ops.

Bit-identical gradients need ``deterministic=True``: without it dQ is summed with atomics in a
run-dependent order (dK/dV are written once per CTA in either mode), so two eager runs already differ
in dQ's last bits; :func:`test_compile_nondeterministic` checks that mode with dK/dV exact and dQ
under the correctness rule (docs/testing.md) against the fp32 reference. Only the attention outputs and the gradients are
compared exactly: the compiled loss (``(out * w).sum()``, reduced by Inductor) may round differently.
"""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from fa4_core.testing import attention_ref, check_close  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]

BF16 = torch.bfloat16


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _rand(*shape, dtype=BF16, seed=None):
    g = None if seed is None else torch.Generator(device="cuda").manual_seed(seed)
    return torch.randn(*shape, device="cuda", dtype=dtype, generator=g)


def _leaves(*xs):
    return [x.detach().clone().requires_grad_() for x in xs]


def _train(step, inputs, n_leaves, *rest):
    """``step(*leaves, *rest) -> (loss, *outputs)``; returns ``(*outputs, *grads of the leaves)``."""
    leaves = _leaves(*inputs[:n_leaves])
    loss, *outs = step(*leaves, *rest)
    grads = torch.autograd.grad(loss, leaves)
    return [o.detach() for o in outs] + list(grads)


def _assert_equal(names, got, want):
    for name, a, b in zip(names, got, want, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if not torch.equal(a, b):
            diff = (a.float() - b.float()).abs()
            raise AssertionError(f"{name}: compiled != eager, max |diff| {diff.max().item():.3g}")


DENSE = [
    # (batch, seqlen_q, seqlen_k, nheads, nheads_kv, d, dv, kwargs): GQA causal with ragged lengths;
    # a local window with softcap (MQA, d 64); d != dv non-causal
    (2, 300, 333, 8, 2, 128, 128, dict(causal=True)),
    (2, 257, 190, 4, 1, 64, 64, dict(window_size=(64, 0), softcap=30.0)),
    (1, 129, 200, 4, 2, 192, 128, dict()),
]


@pytest.mark.parametrize("backend", ["inductor", "aot_eager"])
@pytest.mark.parametrize(
    "case", DENSE, ids=lambda c: f"b{c[0]}-q{c[1]}-k{c[2]}-h{c[3]}_{c[4]}-d{c[5]}_{c[6]}"
)
def test_compile_training_step_dense(case, backend):
    from fa4_torch import flash_attn_func

    b, sq, sk, hq, hkv, d, dv, kw = case

    def step(q, k, v, w):
        out, _ = flash_attn_func(q, k, v, deterministic=True, **kw)
        return (out.float() * w).sum(), out

    inputs = (_rand(b, sq, hq, d), _rand(b, sk, hkv, d), _rand(b, sk, hkv, dv))
    w = _rand(b, sq, hq, dv, dtype=torch.float32)
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    names = ("out", "dq", "dk", "dv")
    _assert_equal(names, _train(compiled, inputs, 3, w), _train(step, inputs, 3, w))
    inputs2 = (_rand(b, sq, hq, d), *inputs[1:])  # a second call reuses the compiled graph
    _assert_equal(names, _train(compiled, inputs2, 3, w), _train(step, inputs2, 3, w))


def _cu(lens):
    return torch.tensor([0, *itertools.accumulate(lens)], dtype=torch.int32, device="cuda")


@pytest.mark.parametrize("seqused", [False, True])
def test_compile_training_step_varlen(seqused):
    from fa4_torch import flash_attn_varlen_func

    lens_q, lens_k = (5, 100, 37), (50, 7, 120)
    cu_q, cu_k = _cu(lens_q), _cu(lens_k)
    used_k = torch.tensor([50, 3, 64], dtype=torch.int32, device="cuda") if seqused else None
    tq, tk = sum(lens_q), sum(lens_k)

    def step(q, k, v, w, cu_q, cu_k):
        out, _ = flash_attn_varlen_func(
            q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max(lens_q),
            max_seqlen_k=max(lens_k), seqused_k=used_k, causal=True, deterministic=True,
        )  # fmt: skip
        return (out.float() * w).sum(), out

    inputs = (_rand(tq, 8, 64), _rand(tk, 2, 64), _rand(tk, 2, 64))
    w = _rand(tq, 8, 64, dtype=torch.float32)
    compiled = torch.compile(step, fullgraph=True)
    _assert_equal(
        ("out", "dq", "dk", "dv"),
        _train(compiled, inputs, 3, w, cu_q, cu_k),
        _train(step, inputs, 3, w, cu_q, cu_k),
    )


@pytest.mark.parametrize("varlen", [False, True])
def test_compile_sink_and_lse_in_the_loss(varlen):
    """The dLSE path (the returned LSE is part of the loss) and the sink's gradient."""
    from fa4_torch import flash_attn_func, flash_attn_varlen_func

    hq, hkv, d = 6, 2, 64
    if varlen:
        lens_q, lens_k = (77, 1, 130), (90, 64, 33)
        cu_q, cu_k = _cu(lens_q), _cu(lens_k)
        q_shape, k_shape, lse_shape = (sum(lens_q), hq, d), (sum(lens_k), hkv, d), (hq, sum(lens_q))

        def attn(q, k, v, sink):
            return flash_attn_varlen_func(
                q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max(lens_q),
                max_seqlen_k=max(lens_k), causal=True, learnable_sink=sink, deterministic=True,
                return_lse=True,
            )  # fmt: skip
    else:
        q_shape, k_shape, lse_shape = (2, 177, hq, d), (2, 150, hkv, d), (2, hq, 177)

        def attn(q, k, v, sink):
            return flash_attn_func(q, k, v, learnable_sink=sink, deterministic=True, return_lse=True)

    def step(q, k, v, sink, w, w_lse):
        out, lse = attn(q, k, v, sink)
        return (out.float() * w).sum() + (lse * w_lse).sum(), out, lse

    inputs = (_rand(*q_shape), _rand(*k_shape), _rand(*k_shape), _rand(hq, dtype=torch.float32))
    w = _rand(*q_shape, dtype=torch.float32)
    w_lse = _rand(*lse_shape, dtype=torch.float32)
    compiled = torch.compile(step, fullgraph=True)
    got = _train(compiled, inputs, 4, w, w_lse)
    want = _train(step, inputs, 4, w, w_lse)
    _assert_equal(("out", "lse", "dq", "dk", "dv", "dsink"), got, want)
    assert want[-1].abs().max() > 0  # the sink's gradient is there, not zeros


def test_compile_nondeterministic():
    """The default (atomic dQ) mode: dK/dV exact, dQ and the rest against the fp32 reference."""
    from fa4_torch import flash_attn_func

    def step(q, k, v, w):
        out, _ = flash_attn_func(q, k, v, causal=True)
        return (out.float() * w).sum(), out

    inputs = (_rand(2, 300, 8, 128, seed=1), _rand(2, 333, 2, 128, seed=2), _rand(2, 333, 2, 128, seed=3))
    w = _rand(2, 300, 8, 128, dtype=torch.float32, seed=4)
    out, dq, dk, dv = _train(torch.compile(step, fullgraph=True), inputs, 3, w)
    e_out, _, e_dk, e_dv = _train(step, inputs, 3, w)
    _assert_equal(("out", "dk", "dv"), (out, dk, dv), (e_out, e_dk, e_dv))

    def ref_step(dtype, upcast):
        def f(q, k, v, w):
            o, _ = attention_ref(q, k, v, causal=True, upcast=upcast)
            return (o.float() * w).sum(), o

        return _train(f, [x.to(dtype) for x in inputs], 3, w)

    ref, pt = ref_step(torch.float32, True), ref_step(BF16, False)
    for name, x, x_ref, x_pt in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), ref, pt):
        check_close(name, x, x_ref, x_pt, grad=name != "out")


# --------------------------------------------------------------------------------------- opcheck
def _fwd_args(q, k, v, *, causal=True, sink=None, cu_q=None, cu_k=None, max_q=-1, max_k=-1):
    return (q, k, v, None, causal, -1, -1, -1, 0.0, sink, 1, cu_q, cu_k, max_q, max_k, None, None, None, None)


def _opcheck_inputs(varlen, sink):
    hq, hkv, d = 4, 2, 64
    s = _rand(hq, dtype=torch.float32) if sink else None
    if varlen:
        lens_q, lens_k = (33, 1, 70), (40, 64, 9)
        cu_q, cu_k = _cu(lens_q), _cu(lens_k)
        q, k, v = _rand(sum(lens_q), hq, d), _rand(sum(lens_k), hkv, d), _rand(sum(lens_k), hkv, d)
        fwd = _fwd_args(q, k, v, sink=s, cu_q=cu_q, cu_k=cu_k, max_q=max(lens_q), max_k=max(lens_k))
        lse_shape = (hq, sum(lens_q))
    else:
        q, k, v = _rand(2, 97, hq, d), _rand(2, 130, hkv, d), _rand(2, 130, hkv, d)
        fwd = _fwd_args(q, k, v, sink=s)
        cu_q = cu_k = None
        lse_shape = (2, hq, 97)
    out, lse = torch.ops.fa4.fwd(*fwd)
    dout = _rand(*out.shape)
    dlse = _rand(*lse_shape, dtype=torch.float32)
    max_q, max_k = fwd[13], fwd[14]
    bwd = (
        dout, q, k, v, out, lse, dlse, s, cu_q, cu_k, None, None, d**-0.5, True, -1, 0, 0.0, True,
        max_q, max_k, sink,
    )  # fmt: skip
    return fwd, bwd


@pytest.mark.parametrize("sink", [False, True])
@pytest.mark.parametrize("varlen", [False, True])
def test_opcheck(varlen, sink):
    """Schema, fake vs real metadata, and AOT dispatch with dynamic shapes, for both ops (the inputs do
    not require grad: the autograd of fa4 is the ``autograd.Function``, not a registered formula)."""
    fwd, bwd = _opcheck_inputs(varlen, sink)
    torch.library.opcheck(torch.ops.fa4.fwd.default, fwd)
    torch.library.opcheck(torch.ops.fa4.bwd.default, bwd)


# ------------------------------------------------------------------------------------ CUDA graphs
@pytest.mark.parametrize("sink", [False, True])
def test_cuda_graph_fwd_bwd_replay(sink):
    """Capture forward + backward once, replay on new inputs written into the captured buffers."""
    from fa4_torch import flash_attn_func

    q0, k0, v0 = _rand(2, 300, 8, 64), _rand(2, 333, 2, 64), _rand(2, 333, 2, 64)
    w = _rand(2, 300, 8, 64, dtype=torch.float32)
    leaves = _leaves(q0, k0, v0) + (_leaves(_rand(8, dtype=torch.float32)) if sink else [])

    def step():
        s = leaves[3] if sink else None
        out, lse = flash_attn_func(
            *leaves[:3], causal=True, learnable_sink=s, deterministic=True, return_lse=True
        )
        loss = (out.float() * w).sum() + lse.sum()
        # detached: an output kept with its autograd graph keeps the leaves' AccumulateGrad nodes
        # alive, bound to the stream they were made on (the legacy default stream here), and the
        # captured backward would then have to wait on that stream, which capture forbids
        return (out.detach(), lse.detach(), *torch.autograd.grad(loss, leaves))

    eager = [t.clone() for t in step()]  # compiles the kernels outside the capture
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as torch.cuda.graph's docs ask
        step()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        captured = step()
    g.replay()
    torch.cuda.synchronize()
    names = ("out", "lse", "dq", "dk", "dv", "dsink")[: len(captured)]
    _assert_equal(names, captured, eager)
    with torch.no_grad():
        for t in leaves:
            t.copy_(torch.randn_like(t))
        w.copy_(torch.randn_like(w))
    g.replay()
    torch.cuda.synchronize()
    _assert_equal(names, captured, step())
