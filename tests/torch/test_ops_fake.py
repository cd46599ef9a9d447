"""The ``torch.library`` ops ``fa4::fwd`` / ``fa4::bwd`` on the CPU: schemas, fake implementations,
the eager/compiled routing of the backward, and ``torch.compile(fullgraph=True)`` traces of training
steps (forward and backward) that contain both ops. Nothing here compiles or launches a kernel.

What a CPU-only torch cannot do, and how these tests get around it:

* the ops' real implementations need CUDA, so the compiled graphs are *traced* here, not run: the
  traces run under an ambient ``FakeTensorMode``, where every op (ours included) dispatches to its fake
  implementation, so the forward and the backward graphs execute on fake tensors;
* autograd on fake **CUDA** tensors aborts the process on a CPU build (``AccumulateGrad`` asks for a
  CUDA device guard), so the compile traces use fake CPU tensors with the dispatch family pinned
  (``fa4_torch.autograd.device_family``, its documented seam); the direct fake-implementation tests use
  fake CUDA tensors;
* ``torch.library.opcheck`` runs the real implementation: it is in ``test_compile_bwd_gpu.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")

from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402

import fa4_torch.autograd as ag  # noqa: E402
import fa4_torch.ops as ops  # noqa: E402
from fa4_torch import flash_attn_func, flash_attn_varlen_func, launch_bwd  # noqa: E402
from fa4_torch.validate import UNBOUNDED, canonical_window  # noqa: E402

BF16, F32, I32 = torch.bfloat16, torch.float32, torch.int32


# ------------------------------------------------------------------------------------------- schemas
FWD_SCHEMA = (
    "fa4::fwd(Tensor q, Tensor k, Tensor v, float? softmax_scale, bool causal, SymInt window_left, "
    "SymInt window_right, SymInt pack_gqa, float softcap, Tensor? learnable_sink, SymInt num_splits, "
    "Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, SymInt max_seqlen_q, SymInt max_seqlen_k, "
    "Tensor? seqused_q, Tensor? seqused_k, Tensor? page_table, Tensor? kv_batch_idx) -> (Tensor, Tensor)"
)
BWD_SCHEMA = (
    "fa4::bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor? dlse, "
    "Tensor? learnable_sink, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, Tensor? seqused_q, "
    "Tensor? seqused_k, float softmax_scale, bool causal, SymInt window_left, SymInt window_right, "
    "float softcap, bool deterministic, SymInt max_seqlen_q, SymInt max_seqlen_k, bool want_dsink) "
    "-> (Tensor, Tensor, Tensor, Tensor)"
)


def test_op_schemas():
    """Functional (no mutated or aliased arguments), the argument order the call sites use."""
    assert str(torch.ops.fa4.fwd.default._schema) == FWD_SCHEMA
    assert str(torch.ops.fa4.bwd.default._schema) == BWD_SCHEMA
    for op in (torch.ops.fa4.fwd, torch.ops.fa4.bwd):
        assert not op.default._schema.is_mutable


# ------------------------------------------------------------------------------------ fake impls
@dataclass(frozen=True)
class Case:
    """Dense and varlen, MHA / GQA / MQA, ``d != dv``, with/without the sink (and its gradient) and
    the LSE gradient: every branch of the two fake implementations."""

    varlen: bool = False
    batch: int = 2
    seqlen_q: int = 113
    seqlen_k: int = 203
    nheads: int = 8
    nheads_kv: int = 2
    d: int = 64
    dv: int = 64
    sink: bool = False
    dlse: bool = False
    want_dsink: bool = False

    def __str__(self):
        return (
            f"{'varlen' if self.varlen else 'dense'}-h{self.nheads}_{self.nheads_kv}-d{self.d}_{self.dv}"
            f"{'-sink' if self.sink else ''}{'-dsink' if self.want_dsink else ''}{'-dlse' if self.dlse else ''}"
        )


CASES = [
    Case(),
    Case(nheads_kv=8),  # MHA
    Case(nheads_kv=1, seqlen_q=1),  # MQA decode-like
    Case(d=192, dv=128),
    Case(sink=True, want_dsink=True, dlse=True),
    Case(sink=True, want_dsink=False),  # the sink is a constant: no dsink
    Case(dlse=True),
    Case(varlen=True),
    Case(varlen=True, d=192, dv=128, sink=True, want_dsink=True, dlse=True),
    Case(varlen=True, nheads_kv=1, dlse=True),
]


def _fake_inputs(c: Case):
    """Fake CUDA tensors of the case (call inside a ``FakeTensorMode``)."""
    dev = "cuda"
    if c.varlen:
        tq, tk = c.batch * c.seqlen_q, c.batch * c.seqlen_k
        q = torch.empty(tq, c.nheads, c.d, device=dev, dtype=BF16)
        k = torch.empty(tk, c.nheads_kv, c.d, device=dev, dtype=BF16)
        v = torch.empty(tk, c.nheads_kv, c.dv, device=dev, dtype=BF16)
        cu_q = torch.empty(c.batch + 1, device=dev, dtype=I32)
        cu_k = torch.empty(c.batch + 1, device=dev, dtype=I32)
        out_shape, lse_shape = (tq, c.nheads, c.dv), (c.nheads, tq)
    else:
        q = torch.empty(c.batch, c.seqlen_q, c.nheads, c.d, device=dev, dtype=BF16)
        k = torch.empty(c.batch, c.seqlen_k, c.nheads_kv, c.d, device=dev, dtype=BF16)
        v = torch.empty(c.batch, c.seqlen_k, c.nheads_kv, c.dv, device=dev, dtype=BF16)
        cu_q = cu_k = None
        out_shape, lse_shape = (c.batch, c.seqlen_q, c.nheads, c.dv), (c.batch, c.nheads, c.seqlen_q)
    sink = torch.empty(c.nheads, device=dev, dtype=F32) if c.sink else None
    return q, k, v, cu_q, cu_k, sink, out_shape, lse_shape


@pytest.mark.parametrize("c", CASES, ids=str)
def test_fake_impls_shapes(c: Case):
    with FakeTensorMode():
        q, k, v, cu_q, cu_k, sink, out_shape, lse_shape = _fake_inputs(c)
        seqlens = (c.seqlen_q, c.seqlen_k) if c.varlen else (-1, -1)
        out, lse = torch.ops.fa4.fwd(
            q, k, v, None, True, -1, -1, -1, 0.0, sink, 1, cu_q, cu_k, *seqlens, None, None, None, None
        )
        assert (tuple(out.shape), out.dtype, out.device.type) == (out_shape, BF16, "cuda")
        assert (tuple(lse.shape), lse.dtype, lse.device.type) == (lse_shape, F32, "cuda")
        dout = torch.empty(out_shape, device="cuda", dtype=BF16)
        dlse = torch.empty(lse_shape, device="cuda", dtype=F32) if c.dlse else None
        dq, dk, dv, dsink = torch.ops.fa4.bwd(
            dout, q, k, v, out, lse, dlse, sink, cu_q, cu_k, None, None,
            0.125, True, -1, 0, 0.0, False, *seqlens, c.want_dsink,
        )  # fmt: skip
    for g, x in ((dq, q), (dk, k), (dv, v)):
        assert (g.shape, g.dtype, g.device.type) == (x.shape, BF16, "cuda")
        assert g.is_contiguous()
    if c.want_dsink:
        assert (tuple(dsink.shape), dsink.dtype) == ((c.nheads,), F32)
    else:
        assert (tuple(dsink.shape), dsink.dtype) == ((0,), F32)


# --------------------------------------------------------------------------- the backward routing
class _Ctx:
    """What ``save_context`` and ``backward`` use of an autograd context."""

    def __init__(self, needs_input_grad):
        self.needs_input_grad = needs_input_grad

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors

    def set_materialize_grads(self, value):
        pass


def _ctx(*, sink=False, needs_sink=True, causal=False, window=(None, None), max_seqlen=(None, None)):
    q = torch.zeros(2, 8, 4, 64, dtype=BF16)
    k = v = torch.zeros(2, 8, 2, 64, dtype=BF16)
    out, lse = torch.zeros_like(q), torch.zeros(2, 4, 8)
    s = torch.zeros(4) if sink else None
    ctx = _Ctx((True,) * 9 + (needs_sink, False))
    ag.save_context(
        ctx, q, k, v, out, lse, softmax_scale=None, causal=causal, window_size=window, softcap=0.5,
        learnable_sink=s, deterministic=True, max_seqlen_q=max_seqlen[0], max_seqlen_k=max_seqlen[1],
    )  # fmt: skip
    return ctx


ROUTES = [
    dict(),
    dict(causal=True),
    dict(window=(5, None)),
    dict(window=(None, 3)),
    dict(causal=True, window=(7, 2)),
    dict(window=(0, 0)),
    dict(sink=True),
    dict(sink=True, needs_sink=False),
    dict(max_seqlen=(8, 6)),
]


@pytest.mark.parametrize("kw", ROUTES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "plain")
@pytest.mark.parametrize("dlse", [False, True])
def test_backward_routes_match(monkeypatch, kw, dlse):
    """Eager: the autograd backward calls ``launch_bwd.backward`` directly (never the op). Compiling:
    it calls ``fa4::bwd``, whose implementation calls ``launch_bwd.backward`` with exactly the eager
    arguments (so the same kernels)."""
    ctx = _ctx(**kw)
    dout = torch.ones(2, 8, 4, 64, dtype=BF16)
    dl = torch.ones(2, 4, 8) if dlse else None
    calls, op_args = [], []

    def fake_bwd(*a):
        calls.append(a)
        return torch.zeros(1), torch.zeros(2), torch.zeros(3), (torch.zeros(4) if a[-1] else None)

    def no_op(*a):
        raise AssertionError("the eager backward went through the custom op")

    impl = ops.bwd_op._init_fn  # the op's Python implementation, without the dispatcher

    def record_op(*a):
        op_args.append(a)
        return impl(*a)

    monkeypatch.setattr(launch_bwd, "backward", fake_bwd)
    monkeypatch.setattr(ops, "bwd_op", no_op)
    eager = ag.backward(ctx, dout, dl)
    monkeypatch.setattr(ops, "bwd_op", record_op)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    compiled = ag.backward(ctx, dout, dl)
    assert len(calls) == 2 and len(op_args) == 1
    e, c = calls
    assert len(e) == len(c)
    for i, (x, y) in enumerate(zip(e, c)):
        if isinstance(x, torch.Tensor) or x is None:
            assert x is y, i
        else:
            assert x == y and type(x) is type(y), (i, x, y)
    want = kw.get("sink", False) and kw.get("needs_sink", True)
    assert e[-1] is want
    a = op_args[0]
    assert all(type(x) in (int, float, bool) for x in a[12:]), "no None among the op's scalars"
    wl, wr = canonical_window(kw.get("window", (None, None)), kw.get("causal", False))[1:]
    assert a[14:16] == (-1 if wl == UNBOUNDED else wl, -1 if wr == UNBOUNDED else wr)
    assert (eager[3] is None) == (compiled[3] is None) == (not want)


# ------------------------------------------------------------------------ torch.compile traces
def _backend(graphs):
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    def rec(name):
        def compiler(gm, example_inputs):
            graphs[name] = gm
            return make_boxed_func(gm)

        return compiler

    return aot_autograd(fw_compiler=rec("fw"), bw_compiler=rec("bw"))


def _targets(gm, op):
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target is op.default]


@pytest.fixture
def pinned_family(monkeypatch):
    """CPU fake tensors stand in for CUDA ones (see the module docstring); the backward support check
    asks for the dispatch family of q's device, which a CPU has none of. The stand-in calls a
    ``torch.cuda`` query that Dynamo cannot trace (as the real one's ``get_device_capability``), so a
    trace passes only if Dynamo calls the lookup at trace time instead of tracing into it."""

    def family(device):
        torch.cuda.device_count()  # a graph break if traced ("torch.* op returned non-Tensor")
        return "sm120"

    monkeypatch.setattr(ag, "device_family", family)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _leaf(*shape, dtype=BF16):
    return torch.randn(*shape, dtype=dtype).requires_grad_()


@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_traces_fwd_and_bwd_dense(pinned_family, dynamic):
    graphs = {}

    def step(q, k, v, w):
        out, _ = flash_attn_func(q, k, v, causal=True)
        return (out.float() * w).sum()

    with FakeTensorMode():
        q, k, v = _leaf(2, 128, 8, 64), _leaf(2, 160, 2, 64), _leaf(2, 160, 2, 64)
        w = torch.randn(2, 128, 8, 64)
        loss = torch.compile(step, backend=_backend(graphs), fullgraph=True, dynamic=dynamic)(q, k, v, w)
        loss.backward()
        assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
    (fwd,) = _targets(graphs["fw"], torch.ops.fa4.fwd)
    assert fwd.args[4] is True  # causal
    (bwd,) = _targets(graphs["bw"], torch.ops.fa4.bwd)
    assert not _targets(graphs["fw"], torch.ops.fa4.bwd) and not _targets(graphs["bw"], torch.ops.fa4.fwd)
    a = bwd.args
    assert a[12] == pytest.approx(64**-0.5) and a[13] is True and a[14:16] == (-1, 0)
    assert a[7] is None and a[-1] is False  # no sink, no dsink


def test_compile_traces_fwd_and_bwd_varlen(pinned_family):
    graphs = {}

    def step(q, k, v, cu_q, cu_k, w):
        out, _ = flash_attn_varlen_func(
            q, k, v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=100, max_seqlen_k=120,
            causal=True, window_size=(64, None), deterministic=True,
        )  # fmt: skip
        return (out.float() * w).sum()

    with FakeTensorMode():
        q, k, v = _leaf(142, 8, 192), _leaf(200, 2, 192), _leaf(200, 2, 128)
        cu_q = torch.tensor([0, 5, 105, 142], dtype=I32)
        cu_k = torch.tensor([0, 50, 170, 200], dtype=I32)
        w = torch.randn(142, 8, 128)
        torch.compile(step, backend=_backend(graphs), fullgraph=True)(q, k, v, cu_q, cu_k, w).backward()
        assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
    assert len(_targets(graphs["fw"], torch.ops.fa4.fwd)) == 1
    (bwd,) = _targets(graphs["bw"], torch.ops.fa4.bwd)
    a = bwd.args
    assert a[8] is not None and a[9] is not None  # cu_seqlens_q/k
    assert a[13:16] == (True, 64, 0) and a[17] is True and a[18:20] == (100, 120)


def test_compile_traces_sink_and_lse_gradient(pinned_family):
    graphs = {}

    def step(q, k, v, sink, w):
        out, lse = flash_attn_func(q, k, v, learnable_sink=sink, return_lse=True)
        return (out.float() * w).sum() + (lse * lse).sum()

    with FakeTensorMode():
        q, k, v = _leaf(2, 77, 4, 64), _leaf(2, 90, 4, 64), _leaf(2, 90, 4, 64)
        sink = _leaf(4, dtype=F32)
        w = torch.randn(2, 77, 4, 64)
        torch.compile(step, backend=_backend(graphs), fullgraph=True)(q, k, v, sink, w).backward()
        assert sink.grad.shape == (4,) and sink.grad.dtype == F32
    (bwd,) = _targets(graphs["bw"], torch.ops.fa4.bwd)
    a = bwd.args
    assert a[6] is not None and a[7] is not None and a[-1] is True  # dlse, the sink, want_dsink


def test_compile_raises_unsupported_backward(pinned_family):
    """The backward support check still runs at the forward, at trace time. Under ``fullgraph=True``
    Dynamo reports the typed error as its own ``Unsupported`` ("Observed exception"), whose message
    carries ours (the argument, the value, what is supported)."""

    def step(q, k, v):
        return flash_attn_func(q, k, v)[0].sum()

    with FakeTensorMode():
        q, k, v = _leaf(1, 16, 2, 64), _leaf(1, 16, 2, 64), _leaf(1, 16, 2, 128)  # 64/128: no bwd row
        with pytest.raises(Exception, match=r"\(head_dim, head_dim_v\)=\(64, 128\) is not supported"):
            torch.compile(step, backend=_backend({}), fullgraph=True)(q, k, v)
