"""Drop-in fidelity of ``fa4_torch.flash_attn_func`` / ``flash_attn_varlen_func`` with
``flash_attn.cute`` (flash-attn-4 4.0.0b36), on CPU unless marked ``gpu``.

* signatures: the same parameter names, order, kinds and defaults as the installed upstream
  (``inspect.signature`` when ``flash_attn.cute`` imports; the parsed ``flash_attn/cute/interface.py``
  when the package is installed but does not import, e.g. without triton; both skipped when it is
  absent) and as a frozen copy of 4.0.0b36's lists (always);
* the arguments fa4 has no kernel for: their default is accepted (the call reaches the device check),
  any other value raises ``NotImplementedError`` naming the argument before anything is validated,
  compiled or written; ``min_seqlen_k`` / ``disable_scheduler_metadata`` are checked and ignored;
* positional calls in upstream's order (``softmax_scale`` 6th / 14th) reach the same checks;
* the ``lse`` rule (``api``'s module docstring): with ``fa4_torch.ops.forward`` and ``ops.backward``
  replaced by recorders, ``lse`` is ``None`` without ``return_lse`` and without gradients, a tensor
  with either, and its gradient reaches the backward only with ``return_lse=True``; the GPU half runs
  the kernels;
* ``flash_attn_with_kvcache(block_table=...)``: FlashAttention-2's name of ``page_table``.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pathlib
import re

import pytest
import torch

import fa4_torch
import fa4_torch.api as api
from fa4_core.errors import UnsupportedConfigError
from fa4_torch import ops

F16 = torch.float16
FUNCS = ("flash_attn_func", "flash_attn_varlen_func")
_P = inspect.Parameter.POSITIONAL_OR_KEYWORD

# flash-attn-4 4.0.0b36, flash_attn/cute/interface.py: (name, default) in order, all positional-or-keyword
UPSTREAM_B36 = {
    "flash_attn_func": [
        ("q", inspect.Parameter.empty), ("k", inspect.Parameter.empty), ("v", inspect.Parameter.empty),
        ("qv", None), ("gather_kv_indices", None), ("softmax_scale", None), ("causal", False),
        ("window_size", (None, None)), ("learnable_sink", None), ("softcap", 0.0), ("num_splits", 1),
        ("pack_gqa", None), ("deterministic", False), ("score_mod", None), ("score_mod_bwd", None),
        ("mask_mod", None), ("aux_tensors", None), ("aux_scalars", None), ("block_sparse_tensors", None),
        ("block_sparse_tensors_bwd", None), ("return_lse", False), ("gather_bwd_recompute_p", False),
        ("gather_bwd_token_chunk", None),
    ],
    "flash_attn_varlen_func": [
        ("q", inspect.Parameter.empty), ("k", inspect.Parameter.empty), ("v", inspect.Parameter.empty),
        ("qv", None), ("cu_seqlens_q", None), ("cu_seqlens_k", None), ("max_seqlen_q", None),
        ("max_seqlen_k", None), ("min_seqlen_k", None), ("seqused_q", None), ("seqused_k", None),
        ("gather_kv_indices", None), ("page_table", None), ("softmax_scale", None), ("causal", False),
        ("window_size", (None, None)), ("learnable_sink", None), ("softcap", 0.0), ("num_splits", 1),
        ("pack_gqa", None), ("deterministic", False), ("score_mod", None), ("score_mod_bwd", None),
        ("mask_mod", None), ("block_sparse_tensors", None), ("aux_tensors", None), ("aux_scalars", None),
        ("return_lse", False), ("scheduler_metadata", None), ("seqlen_k_per_split", None),
        ("disable_scheduler_metadata", False), ("gather_bwd_recompute_p", False),
        ("gather_bwd_token_chunk", None),
    ],
}  # fmt: skip


# fa4's keyword-only additions after upstream's parameters (FP8 descales)
FA4_KEYWORD_ONLY = {
    "flash_attn_func": ["q_descale", "k_descale", "v_descale"],
    "flash_attn_varlen_func": ["q_descale", "k_descale", "v_descale"],
}


def _fa4(name):
    """Upstream's part of fa4's signature: every parameter but fa4's keyword-only additions."""
    sig = inspect.signature(getattr(api, name))
    params = list(sig.parameters.values())
    extra = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert extra == FA4_KEYWORD_ONLY[name], extra
    return [(p.name, p.kind, p.default) for p in params if p.kind is not inspect.Parameter.KEYWORD_ONLY]


def _from_signature(fn):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


# ------------------------------------------------------------------------------------------ signatures
@pytest.mark.parametrize("name", FUNCS)
def test_signature_matches_the_frozen_upstream_list(name):
    assert _fa4(name) == [(n, _P, d) for n, d in UPSTREAM_B36[name]]


@pytest.mark.parametrize("name", FUNCS)
def test_public_names_are_the_api_functions(name):
    assert getattr(fa4_torch, name) is getattr(api, name)


@pytest.mark.parametrize("name", FUNCS)
def test_signature_matches_the_importable_upstream(name):
    try:
        cute = importlib.import_module("flash_attn.cute")
    except Exception as e:  # noqa: BLE001  (absent, or present without its dependencies: next test)
        pytest.skip(f"flash_attn.cute does not import: {type(e).__name__}: {e}")
    assert _fa4(name) == _from_signature(getattr(cute, name))


def _upstream_source() -> pathlib.Path | None:
    try:
        spec = importlib.util.find_spec("flash_attn")  # finds, does not import, the package
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = pathlib.Path(root) / "cute" / "interface.py"
        if path.is_file():
            return path
    return None


def _parsed(path: pathlib.Path, name: str):
    """``(name, kind, default)`` of a function in upstream's source, its defaults evaluated as literals."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            a = node.args
            assert not a.posonlyargs and not a.kwonlyargs and a.vararg is None and a.kwarg is None
            defaults = [inspect.Parameter.empty] * (len(a.args) - len(a.defaults))
            defaults += [ast.literal_eval(d) for d in a.defaults]
            return [(arg.arg, _P, d) for arg, d in zip(a.args, defaults, strict=True)]
    raise AssertionError(f"{name} not found in {path}")


@pytest.mark.parametrize("name", FUNCS)
def test_signature_matches_the_installed_upstream_source(name):
    """The installed wheel's source, parsed: works where ``flash_attn.cute`` is installed but its
    imports (triton, a GPU toolchain) are not."""
    path = _upstream_source()
    if path is None:
        pytest.skip("flash-attn-4 (flash_attn.cute) is not installed")
    assert _fa4(name) == _parsed(path, name)


def test_every_public_function_is_annotated():
    for name in (*FUNCS, "flash_attn_with_kvcache"):
        sig = inspect.signature(getattr(api, name))
        assert sig.return_annotation is not inspect.Signature.empty, name
        for p in sig.parameters.values():
            assert p.annotation is not inspect.Parameter.empty, (name, p.name)


# ------------------------------------------------------------------------------------------ unsupported
def _t(shape, dtype=F16):
    return torch.zeros(shape, dtype=dtype)


def _dense():
    return (_t((2, 5, 4, 64)), _t((2, 7, 2, 64)), _t((2, 7, 2, 64))), {}


def _varlen():
    cu = torch.tensor([0, 2, 5], dtype=torch.int32)
    return (_t((5, 4, 64)), _t((5, 2, 64)), _t((5, 2, 64))), dict(cu_seqlens_q=cu, cu_seqlens_k=cu)


_CALLABLE = lambda *a: None  # noqa: E731
_COMMON = {
    "qv": _t((2, 5, 4, 64)),
    "gather_kv_indices": torch.zeros(2, 5, 4, dtype=torch.int32),
    "score_mod": _CALLABLE,
    "score_mod_bwd": _CALLABLE,
    "mask_mod": _CALLABLE,
    "aux_tensors": [torch.zeros(3)],
    "aux_scalars": (1.0,),
    "block_sparse_tensors": object(),
    "gather_bwd_recompute_p": True,
    "gather_bwd_token_chunk": 64,
}
UNSUPPORTED = {
    "flash_attn_func": {**_COMMON, "block_sparse_tensors_bwd": object()},
    "flash_attn_varlen_func": {**_COMMON, "scheduler_metadata": object(), "seqlen_k_per_split": 128},
}
_ROWS = [(f, n, v) for f, table in UNSUPPORTED.items() for n, v in table.items()]


def test_the_unsupported_table_covers_every_upstream_only_argument():
    """Every upstream argument fa4 does not use is either in the table or a hint (checked, ignored)."""
    used = {"q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k", "seqused_q",
            "seqused_k", "page_table", "softmax_scale", "causal", "window_size", "learnable_sink", "softcap",
            "num_splits", "pack_gqa", "deterministic", "return_lse"}  # fmt: skip
    hints = {"min_seqlen_k", "disable_scheduler_metadata"}
    for name in FUNCS:
        names = {n for n, _ in UPSTREAM_B36[name]}
        assert names - used - hints == set(UNSUPPORTED[name]), name


@pytest.fixture
def nothing_runs(monkeypatch):
    """The forward must not be reached (nor the append of a KV-cache call)."""

    def forbidden(*a, **k):
        pytest.fail("fa4_torch.ops.forward was reached")

    monkeypatch.setattr(ops, "forward", forbidden)


@pytest.mark.parametrize("fn, name, value", _ROWS, ids=[f"{f}-{n}" for f, n, _ in _ROWS])
@pytest.mark.parametrize("grad", [False, True], ids=["nograd", "grad"])
def test_unsupported_argument_raises_naming_it(nothing_runs, fn, name, value, grad):
    args, kw = (_dense if fn == "flash_attn_func" else _varlen)()
    if grad:
        args = tuple(t.requires_grad_(True) for t in args)
    # an invalid dtype too: the unsupported argument is reported first, before any validation
    args = (args[0].float(), *args[1:]) if not grad else args
    with (
        torch.enable_grad(),
        pytest.raises(NotImplementedError, match=rf"^{re.escape(name)}\b.*not implemented"),
    ):
        getattr(api, fn)(*args, **kw, **{name: value})


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_gather_bwd_recompute_p_must_be_a_bool(nothing_runs, fn, bad):
    args, kw = (_dense if fn == "flash_attn_func" else _varlen)()
    with pytest.raises(TypeError, match="gather_bwd_recompute_p="):
        getattr(api, fn)(*args, **kw, gather_bwd_recompute_p=bad)


@pytest.mark.parametrize("fn", FUNCS)
def test_defaults_of_the_unsupported_arguments_reach_the_device_check(fn):
    """Every upstream-only argument at its default, passed explicitly: a CPU call gets to the device
    check (``q.device``), the first check needing a GPU."""
    args, kw = (_dense if fn == "flash_attn_func" else _varlen)()
    defaults = {n: d for n, d in UPSTREAM_B36[fn] if n in UNSUPPORTED[fn] or n in ("min_seqlen_k",)}
    with pytest.raises(UnsupportedConfigError, match=re.escape("q.device=")):
        getattr(api, fn)(*args, **kw, **defaults)


@pytest.mark.parametrize("kw", [dict(min_seqlen_k=3), dict(disable_scheduler_metadata=True)])
def test_hints_are_accepted_and_ignored(kw):
    args, base = _varlen()
    with pytest.raises(UnsupportedConfigError, match=re.escape("q.device=")):
        api.flash_attn_varlen_func(*args, **base, **kw)


@pytest.mark.parametrize(
    "kw, exc, rx",
    [
        (dict(min_seqlen_k=-1), UnsupportedConfigError, "min_seqlen_k=-1"),
        (dict(min_seqlen_k=2.5), UnsupportedConfigError, "min_seqlen_k=2.5"),
        (dict(min_seqlen_k=True), UnsupportedConfigError, "min_seqlen_k=True"),
        (dict(disable_scheduler_metadata="no"), TypeError, "disable_scheduler_metadata="),
    ],
)
def test_bad_hints_raise(nothing_runs, kw, exc, rx):
    args, base = _varlen()
    with pytest.raises(exc, match=re.escape(rx)):
        api.flash_attn_varlen_func(*args, **base, **kw)


# ------------------------------------------------------------------------------------------ positional order
def test_positional_softmax_scale_is_the_sixth_argument():
    """``flash_attn_func(q, k, v, None, None, scale)``: upstream's positions reach the scale check."""
    (q, k, v), _ = _dense()
    with pytest.raises(UnsupportedConfigError, match=re.escape("softmax_scale=-1.0")):
        api.flash_attn_func(q, k, v, None, None, -1.0)
    with pytest.raises(NotImplementedError, match="^qv"):
        api.flash_attn_func(q, k, v, q)


def test_positional_varlen_order():
    """``(q, k, v, qv, cu_q, cu_k, max_q, max_k, min_k, used_q, used_k, gather, page_table, scale)``."""
    (q, k, v), kw = _varlen()
    cu = kw["cu_seqlens_q"]
    with pytest.raises(UnsupportedConfigError, match=re.escape("softmax_scale=-1.0")):
        api.flash_attn_varlen_func(q, k, v, None, cu, cu, 2, 3, None, None, None, None, None, -1.0)
    with pytest.raises(UnsupportedConfigError, match=re.escape("max_seqlen_q=-2")):
        api.flash_attn_varlen_func(q, k, v, None, cu, cu, -2)


# ------------------------------------------------------------------------------------------ lse rule (CPU)
@pytest.fixture
def recorded(monkeypatch):
    """``ops.forward`` returns zeros of the right shapes; ``ops.backward`` records its ``dlse``."""
    import fa4_torch.autograd as ag

    seen = {}

    def forward(q, k, v, *a, **kw):
        out = torch.zeros((*q.shape[:-1], v.shape[-1]), dtype=q.dtype)
        lse = torch.zeros((q.shape[0], q.shape[2], q.shape[1]) if q.dim() == 4 else (q.shape[1], q.shape[0]))
        return out, lse

    def backward(dout, q, k, v, out, lse, dlse, *a):
        seen["dlse"] = dlse
        return torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v), None

    monkeypatch.setattr(ops, "forward", forward)
    monkeypatch.setattr(ops, "backward", backward)
    monkeypatch.setattr(ag, "device_family", lambda device: "sm120")
    return seen


@pytest.mark.parametrize("fn", FUNCS)
def test_lse_rule_without_gradients(recorded, fn):
    args, kw = (_dense if fn == "flash_attn_func" else _varlen)()
    assert getattr(api, fn)(*args, **kw)[1] is None
    assert isinstance(getattr(api, fn)(*args, **kw, return_lse=True)[1], torch.Tensor)
    with torch.no_grad():  # requires_grad under no_grad records nothing: the same as without
        assert getattr(api, fn)(*(t.requires_grad_(True) for t in args), **kw)[1] is None


@pytest.mark.parametrize("fn", FUNCS)
@pytest.mark.parametrize("return_lse", [False, True])
def test_lse_rule_with_gradients(recorded, fn, return_lse):
    args, kw = (_dense if fn == "flash_attn_func" else _varlen)()
    args = tuple(t.requires_grad_(True) for t in args)
    out, lse = getattr(api, fn)(*args, **kw, return_lse=return_lse)
    assert isinstance(lse, torch.Tensor)
    assert lse.requires_grad is return_lse  # without return_lse its gradient is ignored (upstream: dlse)
    loss = out.float().sum() + (lse.sum() if return_lse else 0.0)
    loss.backward()
    assert (recorded["dlse"] is not None) is return_lse


# ------------------------------------------------------------------------------------------ block_table
def test_kvcache_block_table_is_page_table(monkeypatch):
    seen = {}
    signature = inspect.signature(ops.forward)

    def forward(*a, **kw):  # ops.forward's arguments, positional or not
        bound = signature.bind(*a, **kw)
        seen["page_table"] = bound.arguments.get("page_table")
        q = bound.arguments["q"]
        return torch.zeros_like(q), torch.zeros(q.shape[0], q.shape[2], q.shape[1])

    monkeypatch.setattr(ops, "forward", forward)
    q = _t((2, 1, 4, 64))
    pages = _t((4, 16, 2, 64))
    table = torch.arange(4, dtype=torch.int32).view(2, 2)
    api.flash_attn_with_kvcache(q, pages, pages, cache_seqlens=3, block_table=table)
    assert seen["page_table"] is table


def test_kvcache_block_table_errors_name_it():
    q = _t((2, 1, 4, 64))
    pages = _t((4, 16, 2, 64))
    table = torch.arange(4, dtype=torch.int32).view(2, 2)
    with pytest.raises(UnsupportedConfigError, match="^block_table=.*page_table"):
        api.flash_attn_with_kvcache(q, pages, pages, cache_seqlens=3, page_table=table, block_table=table)
    with pytest.raises(UnsupportedConfigError, match=r"block_table") as info:
        api.flash_attn_with_kvcache(q, pages, pages, cache_seqlens=3, block_table=table.long())
    assert "page_table" not in str(info.value)


# ------------------------------------------------------------------------------------------ lse rule (GPU)
@pytest.mark.gpu
@pytest.mark.parametrize("fn", FUNCS)
def test_lse_rule_on_gpu(fn):
    torch.manual_seed(0)
    args, kw = (_dense if fn == "flash_attn_func" else _varlen)()
    args = tuple(torch.randn_like(t, device="cuda") for t in args)
    kw = {n: t.cuda() for n, t in kw.items()}
    f = getattr(api, fn)
    assert f(*args, **kw)[1] is None
    _, ref = f(*args, **kw, return_lse=True)
    grads = tuple(t.clone().requires_grad_(True) for t in args)
    out, lse = f(*grads, **kw)
    assert lse is not None and not lse.requires_grad
    torch.testing.assert_close(lse, ref)
    out.float().sum().backward()
    assert all(t.grad is not None for t in grads)
    grads2 = tuple(t.clone().requires_grad_(True) for t in args)
    out2, lse2 = f(*grads2, **kw, return_lse=True)
    assert lse2.requires_grad
    (out2.float().sum() + lse2.sum()).backward()
    assert not torch.equal(grads2[0].grad, grads[0].grad)  # dlse reached the backward
