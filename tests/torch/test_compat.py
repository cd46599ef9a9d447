"""``fa4_torch.compat`` (FlashAttention-2 names) and the transformers integration's host logic, on CPU.

* signatures: FlashAttention-2's parameter names and order;
* mapping: with :mod:`fa4_torch.api` replaced by a recorder, each FA2 argument arrives as the api
  argument it maps to (``window_size`` -1 sides, ``softcap=None``, ``block_table`` -> ``page_table``
  + ``seqused_k``, ``return_attn_probs`` -> ``return_lse`` and the ``(out, lse, None)`` triple);
* the real api with CPU tensors: every function (with and without ``requires_grad``) gets through
  the structural validation to the device check (``UnsupportedConfigError`` naming ``q.device``);
* dropout / ALiBi / rotary / ``cache_leftpad`` raise ``NotImplementedError`` naming the feature,
  before anything is validated;
* packed inputs: ``q, k, v`` are views of ``qkv``/``kv`` with the unpacked shapes;
* transformers (skipped when it is not installed): importing the integration without it raises a
  clear ``ImportError``; with it, a tiny random Llama runs with ``attn_implementation="fa4"`` on the
  CPU with the api replaced by ``fa4_core.testing.attention_ref`` (fp32), which checks the
  integration's layout, GQA, causal, unpadding, packing and KV-cache handling against ``"sdpa"``.
"""

from __future__ import annotations

import importlib
import inspect
import sys

import pytest
import torch

import fa4_torch.api as api
from fa4_core.errors import UnsupportedConfigError
from fa4_torch import compat

F16 = torch.float16
B, S, H, HK, D = 2, 16, 4, 2, 64

FA2_PARAMS = {
    "flash_attn_func": [
        "q", "k", "v", "dropout_p", "softmax_scale", "causal", "window_size", "softcap", "alibi_slopes",
        "deterministic", "return_attn_probs",
    ],
    "flash_attn_qkvpacked_func": [
        "qkv", "dropout_p", "softmax_scale", "causal", "window_size", "softcap", "alibi_slopes",
        "deterministic", "return_attn_probs",
    ],
    "flash_attn_kvpacked_func": [
        "q", "kv", "dropout_p", "softmax_scale", "causal", "window_size", "softcap", "alibi_slopes",
        "deterministic", "return_attn_probs",
    ],
    "flash_attn_varlen_func": [
        "q", "k", "v", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k", "dropout_p",
        "softmax_scale", "causal", "window_size", "softcap", "alibi_slopes", "deterministic",
        "return_attn_probs", "block_table",
    ],
    "flash_attn_varlen_qkvpacked_func": [
        "qkv", "cu_seqlens", "max_seqlen", "dropout_p", "softmax_scale", "causal", "window_size", "softcap",
        "alibi_slopes", "deterministic", "return_attn_probs",
    ],
    "flash_attn_varlen_kvpacked_func": [
        "q", "kv", "cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k", "dropout_p",
        "softmax_scale", "causal", "window_size", "softcap", "alibi_slopes", "deterministic",
        "return_attn_probs",
    ],
    "flash_attn_with_kvcache": [
        "q", "k_cache", "v_cache", "k", "v", "rotary_cos", "rotary_sin", "cache_seqlens", "cache_batch_idx",
        "cache_leftpad", "block_table", "softmax_scale", "causal", "window_size", "softcap",
        "rotary_interleaved", "alibi_slopes", "num_splits", "return_softmax_lse",
    ],
}  # fmt: skip


def _t(*shape, dtype=F16, grad=False):
    return torch.zeros(shape, dtype=dtype).requires_grad_(grad)


def _cu(*lens):
    out = [0]
    for n in lens:
        out.append(out[-1] + n)
    return torch.tensor(out, dtype=torch.int32)


@pytest.mark.parametrize("name", sorted(FA2_PARAMS))
def test_fa2_signature(name):
    params = list(inspect.signature(getattr(compat, name)).parameters)
    assert params == FA2_PARAMS[name]
    assert name in compat.__all__


def test_defaults_are_fa2s():
    sig = inspect.signature(compat.flash_attn_func).parameters
    assert sig["dropout_p"].default == 0.0 and sig["window_size"].default == (-1, -1)
    assert sig["softcap"].default == 0.0 and sig["return_attn_probs"].default is False
    assert inspect.signature(compat.flash_attn_varlen_func).parameters["block_table"].default is None


# ------------------------------------------------------------------------------ mapping (recorded)
class _Recorder:
    def __init__(self, monkeypatch):
        self.calls = []
        for name in ("flash_attn_func", "flash_attn_varlen_func", "flash_attn_with_kvcache"):
            monkeypatch.setattr(api, name, self._make(name))

    def _make(self, name):
        def fn(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            q = args[0]
            out = torch.ones(q.shape, dtype=q.dtype)
            if name == "flash_attn_with_kvcache":
                return (out, "lse") if kwargs.get("return_softmax_lse") else out
            return out, ("lse" if kwargs.get("return_lse") else None)

        return fn


def test_dense_mapping(monkeypatch):
    rec = _Recorder(monkeypatch)
    q, k, v = _t(B, S, H, D), _t(B, S, HK, D), _t(B, S, HK, D)
    out = compat.flash_attn_func(q, k, v, 0.0, 0.5, True, (3, -1), None, None, True, False)
    assert isinstance(out, torch.Tensor) and out.shape == q.shape
    name, args, kw = rec.calls[-1]
    assert name == "flash_attn_func" and args[0] is q and args[1] is k and args[2] is v
    assert kw == dict(
        softmax_scale=0.5, causal=True, window_size=(3, -1), softcap=0.0, deterministic=True, return_lse=False
    )
    res = compat.flash_attn_func(q, k, v, softcap=5.0, return_attn_probs=True)
    assert isinstance(res, tuple) and len(res) == 3 and res[1] == "lse" and res[2] is None
    assert rec.calls[-1][2]["softcap"] == 5.0 and rec.calls[-1][2]["return_lse"] is True


def test_varlen_mapping(monkeypatch):
    rec = _Recorder(monkeypatch)
    q, k, v = _t(10, H, D), _t(12, HK, D), _t(12, HK, D)
    cu_q, cu_k = _cu(4, 6), _cu(5, 7)
    out, lse, p = compat.flash_attn_varlen_func(
        q, k, v, cu_q, cu_k, 6, 7, causal=True, window_size=(-1, 0), return_attn_probs=True
    )
    assert out.shape == q.shape and lse == "lse" and p is None
    name, args, kw = rec.calls[-1]
    assert name == "flash_attn_varlen_func" and args == (q, k, v)
    assert kw["cu_seqlens_q"] is cu_q and kw["cu_seqlens_k"] is cu_k
    assert (kw["max_seqlen_q"], kw["max_seqlen_k"]) == (6, 7)
    assert kw["seqused_k"] is None and kw["page_table"] is None
    assert kw["causal"] is True and kw["window_size"] == (-1, 0) and kw["return_lse"] is True


def test_varlen_block_table_maps_to_page_table_and_seqused_k(monkeypatch):
    rec = _Recorder(monkeypatch)
    q = _t(10, H, D)
    k_pages, v_pages = _t(8, 16, HK, D), _t(8, 16, HK, D)
    table = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    compat.flash_attn_varlen_func(q, k_pages, v_pages, _cu(4, 6), _cu(20, 33), 6, 33, block_table=table)
    kw = rec.calls[-1][2]
    assert kw["page_table"] is table and kw["cu_seqlens_k"] is None and kw["max_seqlen_k"] is None
    assert kw["seqused_k"].tolist() == [20, 33] and kw["seqused_k"].dtype == torch.int32


def test_kvcache_mapping(monkeypatch):
    rec = _Recorder(monkeypatch)
    q, kc, vc = _t(B, 1, H, D), _t(B, 32, HK, D), _t(B, 32, HK, D)
    kn, vn = _t(B, 1, HK, D), _t(B, 1, HK, D)
    seqlens = torch.tensor([3, 5], dtype=torch.int32)
    table = torch.zeros(B, 2, dtype=torch.int32)
    # FA2's positional order: k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx, cache_leftpad, block_table
    out, lse = compat.flash_attn_with_kvcache(
        q, kc, vc, kn, vn, None, None, seqlens, None, None, table, 0.25, True, (8, 0), None,
        return_softmax_lse=True, num_splits=3,
    )  # fmt: skip
    assert out.shape == q.shape and lse == "lse"
    name, args, kw = rec.calls[-1]
    assert name == "flash_attn_with_kvcache" and args == (q, kc, vc)
    assert kw == dict(
        k=kn, v=vn, cache_seqlens=seqlens, page_table=table, cache_batch_idx=None, softmax_scale=0.25,
        causal=True, window_size=(8, 0), softcap=0.0, num_splits=3, return_softmax_lse=True,
    )  # fmt: skip


def test_qkvpacked_splits_into_views(monkeypatch):
    rec = _Recorder(monkeypatch)
    qkv = torch.randn(B, S, 3, H, D).to(F16)
    compat.flash_attn_qkvpacked_func(qkv, causal=True)
    _, (q, k, v), kw = rec.calls[-1]
    for i, t in enumerate((q, k, v)):
        assert t.shape == (B, S, H, D) and t.stride(-1) == 1
        assert t._base is qkv and torch.equal(t, qkv[:, :, i])
    assert kw["causal"] is True
    q2 = torch.randn(B, S, H, D).to(F16)
    kv = torch.randn(B, S + 3, 2, HK, D).to(F16)
    compat.flash_attn_kvpacked_func(q2, kv, window_size=(4, 4))
    _, (qq, k, v), kw = rec.calls[-1]
    assert qq is q2 and k.shape == v.shape == (B, S + 3, HK, D)
    assert torch.equal(k, kv[:, :, 0]) and torch.equal(v, kv[:, :, 1]) and kw["window_size"] == (4, 4)


def test_varlen_packed_splits(monkeypatch):
    rec = _Recorder(monkeypatch)
    qkv = torch.randn(10, 3, H, D).to(F16)
    cu = _cu(4, 6)
    compat.flash_attn_varlen_qkvpacked_func(qkv, cu, 6, causal=True)
    _, (q, k, v), kw = rec.calls[-1]
    assert q.shape == k.shape == v.shape == (10, H, D)
    assert torch.equal(q, qkv[:, 0]) and torch.equal(v, qkv[:, 2])
    assert kw["cu_seqlens_q"] is cu and kw["cu_seqlens_k"] is cu and kw["max_seqlen_k"] == 6
    kv = torch.randn(12, 2, HK, D).to(F16)
    compat.flash_attn_varlen_kvpacked_func(q, kv, cu, _cu(5, 7), 6, 7)
    _, (_, k, v), kw = rec.calls[-1]
    assert k.shape == (12, HK, D) and torch.equal(k, kv[:, 0]) and kw["max_seqlen_k"] == 7


@pytest.mark.parametrize(
    "fn, arg, shape",
    [
        (compat.flash_attn_qkvpacked_func, "qkv", (B, S, 2, H, D)),
        (compat.flash_attn_qkvpacked_func, "qkv", (B, S, H, D)),
        (compat.flash_attn_varlen_qkvpacked_func, "qkv", (10, 2, H, D)),
    ],
)
def test_packed_bad_shape(fn, arg, shape):
    extra = (_cu(10), 10) if fn is compat.flash_attn_varlen_qkvpacked_func else ()
    with pytest.raises(UnsupportedConfigError, match=rf"{arg}\.shape"):
        fn(_t(*shape), *extra)
    with pytest.raises(UnsupportedConfigError, match="kv.shape"):
        compat.flash_attn_kvpacked_func(_t(B, S, H, D), _t(B, S, 3, HK, D))


# ------------------------------------------------------------------------------ the real api, CPU tensors
def _calls(grad):
    q, k, v = _t(B, S, H, D, grad=grad), _t(B, S, HK, D, grad=grad), _t(B, S, HK, D, grad=grad)
    qv, kv_, vv = _t(10, H, D, grad=grad), _t(12, HK, D, grad=grad), _t(12, HK, D, grad=grad)
    return {
        "func": lambda: compat.flash_attn_func(q, k, v, causal=True, window_size=(8, -1)),
        "func_probs": lambda: compat.flash_attn_func(q, k, v, softcap=10.0, return_attn_probs=True),
        "qkvpacked": lambda: compat.flash_attn_qkvpacked_func(_t(B, S, 3, H, D, grad=grad), causal=True),
        "kvpacked": lambda: compat.flash_attn_kvpacked_func(q, _t(B, S, 2, HK, D, grad=grad)),
        "varlen": lambda: compat.flash_attn_varlen_func(qv, kv_, vv, _cu(4, 6), _cu(5, 7), 6, 7, causal=True),
        "varlen_qkvpacked": lambda: compat.flash_attn_varlen_qkvpacked_func(
            _t(10, 3, H, D, grad=grad), _cu(4, 6), 6
        ),
        "varlen_kvpacked": lambda: compat.flash_attn_varlen_kvpacked_func(
            qv, _t(12, 2, HK, D, grad=grad), _cu(4, 6), _cu(5, 7), 6, 7
        ),
    }


@pytest.mark.parametrize("grad", [False, True], ids=["nograd", "grad"])
@pytest.mark.parametrize("case", sorted(_calls(False)))
def test_reaches_device_check(case, grad):
    """Valid FA2 calls get through the structural checks (and, with grad, the autograd wrapper's
    backward-support check) to the device check: the mapping produced a valid api call."""
    with pytest.raises(UnsupportedConfigError, match=r"q\.device='cpu'"):
        _calls(grad)[case]()


def test_paged_and_kvcache_reach_device_check():
    q = _t(10, H, D)
    pages = _t(8, 16, HK, D)
    table = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    with pytest.raises(UnsupportedConfigError, match=r"q\.device='cpu'"):
        compat.flash_attn_varlen_func(q, pages, pages, _cu(4, 6), _cu(20, 33), 6, 33, block_table=table)
    with pytest.raises(UnsupportedConfigError, match=r"q\.device='cpu'"):
        compat.flash_attn_with_kvcache(
            _t(B, 1, H, D),
            _t(B, 32, HK, D),
            _t(B, 32, HK, D),
            cache_seqlens=torch.tensor([3, 5], dtype=torch.int32),
        )


def test_structural_errors_still_surface():
    """A wrong head dim or dtype is reported by the api through the compat names."""
    with pytest.raises(UnsupportedConfigError, match="head_dim"):
        compat.flash_attn_func(_t(B, S, H, 48), _t(B, S, H, 48), _t(B, S, H, 48))
    with pytest.raises(UnsupportedConfigError, match="dtype"):
        compat.flash_attn_qkvpacked_func(_t(B, S, 3, H, D, dtype=torch.float32))
    with pytest.raises(UnsupportedConfigError, match="window_size"):
        compat.flash_attn_func(_t(B, S, H, D), _t(B, S, H, D), _t(B, S, H, D), window_size=(-2, 0))


# ------------------------------------------------------------------------------ FA2's names in errors
def _paged_call(**over):
    """compat.flash_attn_varlen_func with a block_table (valid on CPU but for the device), ``over``
    replacing FA2 arguments."""
    kw = dict(
        q=_t(10, H, D), k=_t(8, 16, HK, D), v=_t(8, 16, HK, D), cu_seqlens_q=_cu(4, 6), cu_seqlens_k=_cu(20, 33),
        max_seqlen_q=6, max_seqlen_k=33, block_table=torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32),
    )  # fmt: skip
    kw.update(over)
    return compat.flash_attn_varlen_func(**kw)


@pytest.mark.parametrize(
    "over, rx",
    [
        (dict(cu_seqlens_k=_cu(20, 33).view(1, 3)), r"cu_seqlens_k\.dim\(\)=2"),
        (dict(cu_seqlens_k=_cu(20, 33).long()), r"cu_seqlens_k\.dtype="),
        (dict(cu_seqlens_k=_cu(20)), r"cu_seqlens_k\.shape=\(2,\).*cu_seqlens_q's \(3,\)"),
        (dict(cu_seqlens_k=None), r"cu_seqlens_k="),
        (dict(cu_seqlens_k=[0, 20, 53]), r"cu_seqlens_k="),
        (dict(cu_seqlens_k=_cu(20, 33).to("meta")), r"cu_seqlens_k\.device="),
        (dict(cu_seqlens_k=torch.tensor([0, 20, 10], dtype=torch.int32)), r"cu_seqlens_k=.*monotone"),
        (dict(cu_seqlens_k=torch.tensor([1, 20, 53], dtype=torch.int32)), r"cu_seqlens_k\[0\]=1"),
        (dict(cu_seqlens_k=_cu(20, 49)), r"cu_seqlens_k=.*at most 48.*block_table"),
        (dict(max_seqlen_k=-1), r"max_seqlen_k=-1"),
        (dict(block_table=torch.tensor([[0, 1, 2], [3, 4, 5]])), r"block_table\.dtype="),
        (dict(block_table=torch.tensor([[0, 1, 2]], dtype=torch.int32)), r"block_table\.shape\[0\]="),
        (
            dict(block_table=torch.tensor([[0, 1, 2], [3, 4, 8]], dtype=torch.int32)),
            r"block_table=.*\[0, 8\)",
        ),
        (dict(k=_t(8, 0, HK, D), v=_t(8, 0, HK, D)), r"k\.shape\[1\] \(page_size\)=0"),
    ],
)
def test_paged_varlen_errors_name_fa2_arguments(over, rx):
    """With ``block_table``, fa4 gets ``page_table`` and ``seqused_k``: the errors still name
    ``block_table`` and ``cu_seqlens_k``, the arguments the caller passed."""
    with pytest.raises(UnsupportedConfigError, match=rx) as info:
        _paged_call(**over)
    msg = str(info.value)
    assert "page_table" not in msg and "seqused_k" not in msg, msg


def test_kvcache_errors_name_block_table():
    q, kc = _t(B, 1, H, D), _t(8, 16, HK, D)
    lens = torch.tensor([3, 5], dtype=torch.int32)
    table = torch.tensor([[0, 1], [2, 3]], dtype=torch.int32)
    for kw, rx in (
        (dict(block_table=table.long()), r"block_table\.dtype="),
        (dict(block_table=table[:1]), r"block_table\.shape\[0\]="),
        (
            dict(block_table=table, cache_batch_idx=torch.tensor([0, 1], dtype=torch.int32)),
            r"with a block_table",
        ),
        (
            dict(block_table=table, cache_seqlens=torch.tensor([3, 33], dtype=torch.int32)),
            r"cache_seqlens=\[3, 33\]",
        ),
    ):
        kw = {"cache_seqlens": lens, **kw}
        with pytest.raises(UnsupportedConfigError, match=rx) as info:
            compat.flash_attn_with_kvcache(q, kc, kc, **kw)
        assert "page_table" not in str(info.value), str(info.value)


@pytest.mark.parametrize("name", ["causal", "deterministic", "return_attn_probs"])
@pytest.mark.parametrize("value", ["False", "True", 0, None])
def test_bool_arguments_are_bools(name, value):
    q = _t(B, S, H, D)
    with pytest.raises(TypeError, match=rf"{name}={value!r} is not supported"):
        compat.flash_attn_func(q, q, q, **{name: value})
    qv = _t(10, H, D)
    with pytest.raises(TypeError, match=rf"{name}="):
        compat.flash_attn_varlen_func(qv, qv, qv, _cu(4, 6), _cu(4, 6), 6, 6, **{name: value})


@pytest.mark.parametrize("kw", [dict(causal="True"), dict(return_softmax_lse="False"), dict(num_splits=65),
                                dict(softmax_scale=0.0)])  # fmt: skip
def test_kvcache_scalars_checked(kw):
    q, kc = _t(B, 1, H, D), _t(B, 32, HK, D)
    with pytest.raises((TypeError, UnsupportedConfigError), match=next(iter(kw))):
        compat.flash_attn_with_kvcache(q, kc, kc, cache_seqlens=3, **kw)


# ------------------------------------------------------------------------------ not implemented
NOT_IMPLEMENTED = [
    ("dropout", lambda: compat.flash_attn_func(None, None, None, dropout_p=0.1)),
    ("dropout", lambda: compat.flash_attn_qkvpacked_func(None, 0.5)),
    ("dropout", lambda: compat.flash_attn_varlen_func(None, None, None, None, None, 1, 1, dropout_p=0.1)),
    ("dropout", lambda: compat.flash_attn_kvpacked_func(None, None, dropout_p=1.0)),
    ("ALiBi", lambda: compat.flash_attn_func(None, None, None, alibi_slopes=torch.zeros(H))),
    ("ALiBi", lambda: compat.flash_attn_varlen_kvpacked_func(None, None, None, None, 1, 1, alibi_slopes=[1.0])),
    ("ALiBi", lambda: compat.flash_attn_with_kvcache(None, None, None, alibi_slopes=torch.zeros(H))),
    ("rotary", lambda: compat.flash_attn_with_kvcache(None, None, None, rotary_cos=torch.zeros(4, 8))),
    ("cache_leftpad", lambda: compat.flash_attn_with_kvcache(None, None, None, cache_leftpad=torch.zeros(2))),
]  # fmt: skip


@pytest.mark.parametrize(
    "feature, call", NOT_IMPLEMENTED, ids=[f"{f}-{i}" for i, (f, _) in enumerate(NOT_IMPLEMENTED)]
)
def test_not_implemented_before_validation(feature, call):
    """Raised first: the tensors here are None, which validation would reject."""
    with pytest.raises(NotImplementedError, match=feature):
        call()


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.1", True])
def test_bad_dropout_value(bad):
    with pytest.raises(UnsupportedConfigError, match="dropout_p"):
        compat.flash_attn_func(_t(B, S, H, D), _t(B, S, H, D), _t(B, S, H, D), dropout_p=bad)


def test_zero_dropout_int_is_accepted():
    with pytest.raises(UnsupportedConfigError, match=r"q\.device"):
        compat.flash_attn_func(_t(B, S, H, D), _t(B, S, H, D), _t(B, S, H, D), dropout_p=0)


# ------------------------------------------------------------------------------ transformers integration
def test_integration_without_transformers_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "fa4_torch.integrations.transformers", raising=False)
    with pytest.raises(ImportError, match="pip install transformers"):
        importlib.import_module("fa4_torch.integrations.transformers")
    import fa4_torch.integrations  # the package itself imports nothing optional

    assert fa4_torch.integrations.__doc__


def _ref_backend(monkeypatch, seen):
    """Replace the api by the fp32 reference (CPU), recording which path each call took."""
    from fa4_core.testing import attention_ref

    def win(ws):
        return tuple(None if (w is None or w < 0) else w for w in ws)

    def dense(q, k, v, softmax_scale=None, causal=False, window_size=(None, None), learnable_sink=None,
              softcap=0.0, deterministic=False, return_lse=False, **kw):  # fmt: skip
        seen.append(("dense", causal, tuple(q.shape), tuple(k.shape)))
        assert q.shape[:2] != k.shape[:2] or q.shape[1] == k.shape[1]
        out, lse = attention_ref(
            q, k, v, causal=causal, window_size=win(window_size), softcap=softcap,
            learnable_sink=learnable_sink, softmax_scale=softmax_scale,
        )  # fmt: skip
        return out.to(q.dtype), lse

    def varlen(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None,
               softmax_scale=None, causal=False, window_size=(None, None), learnable_sink=None, softcap=0.0,
               deterministic=False, return_lse=False, **kw):  # fmt: skip
        seen.append(("varlen", causal, cu_seqlens_q.tolist(), cu_seqlens_k.tolist()))
        assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
        lens_q = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).tolist()
        assert max_seqlen_q == max(lens_q)
        out, lse = attention_ref(
            q, k, v, causal=causal, window_size=win(window_size), softcap=softcap,
            learnable_sink=learnable_sink, softmax_scale=softmax_scale,
            cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k,
        )  # fmt: skip
        return out.to(q.dtype), lse

    monkeypatch.setattr(api, "flash_attn_func", dense)
    monkeypatch.setattr(api, "flash_attn_varlen_func", varlen)


def _tiny_llama(impl, state=None):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, vocab_size=1000,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation=impl).eval()
    if state is not None:
        model.load_state_dict(state)
    return model


def test_integration_llama_cpu_reference(monkeypatch):
    pytest.importorskip("transformers")
    import fa4_torch.integrations.transformers as integ

    seen = []
    _ref_backend(monkeypatch, seen)
    integ.register()
    sdpa = _tiny_llama("sdpa")
    fa4 = _tiny_llama("fa4", sdpa.state_dict())
    torch.manual_seed(1)
    ids = torch.randint(0, 1000, (2, 12))

    def close(a, b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)

    with torch.no_grad():
        # dense causal: one dense call per layer
        close(fa4(ids).logits, sdpa(ids).logits)
        assert [s[:2] for s in seen] == [("dense", True)] * 2
        # left padding: unpadded varlen, compared on the real tokens
        mask = torch.ones(2, 12, dtype=torch.long)
        mask[0, :5] = 0
        seen.clear()
        a, b = fa4(ids, attention_mask=mask).logits, sdpa(ids, attention_mask=mask).logits
        close(a[mask.bool()], b[mask.bool()])
        assert seen[0] == ("varlen", True, [0, 7, 19], [0, 7, 19])
        # prefill with a cache, then one decoding step with the padding mask (q_len = 1 per row)
        seen.clear()
        out = fa4(ids, attention_mask=mask, use_cache=True)
        nxt = torch.randint(0, 1000, (2, 1))
        mask2 = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)
        step = fa4(nxt, attention_mask=mask2, past_key_values=out.past_key_values).logits
        full = sdpa(torch.cat([ids, nxt], 1), attention_mask=mask2).logits[:, -1:]
        close(step, full)
        assert seen[-1] == ("varlen", False, [0, 1, 2], [0, 8, 21])
        # no padding, decoding against the cache: dense, q_len 1, causal off (nothing to mask)
        seen.clear()
        out = fa4(ids, use_cache=True)
        step = fa4(nxt, past_key_values=out.past_key_values).logits
        close(step, sdpa(torch.cat([ids, nxt], 1)).logits[:, -1:])
        assert seen[-1][:2] == ("dense", False) and seen[-1][2][1] == 1 and seen[-1][3][1] == 13
        # two sequences packed into one row (positions restart): varlen, no cross-attention
        seen.clear()
        row = torch.cat([ids[0, :5], ids[1, :7]])[None]
        pos = torch.cat([torch.arange(5), torch.arange(7)])[None]
        packed = fa4(row, position_ids=pos).logits
        close(packed[0, :5], sdpa(ids[:1, :5]).logits[0])
        close(packed[0, 5:], sdpa(ids[1:, :7]).logits[0])
        assert seen[0] == ("varlen", True, [0, 5, 12], [0, 5, 12])


def test_integration_rejects_4d_mask_and_dropout(monkeypatch):
    pytest.importorskip("transformers")
    import fa4_torch.integrations.transformers as integ

    _ref_backend(monkeypatch, [])
    module = torch.nn.Module()
    module.is_causal = True
    q = torch.zeros(1, 4, 8, 64)
    k = torch.zeros(1, 2, 8, 64)
    with pytest.raises(NotImplementedError, match="2-D padding mask"):
        integ.fa4_attention_forward(module, q, k, k, torch.ones(1, 1, 8, 8, dtype=torch.bool))
    with pytest.raises(NotImplementedError, match="dropout"):
        integ.fa4_attention_forward(module, q, k, k, None, dropout=0.1)
    out, weights = integ.fa4_attention_forward(module, q, k, k, None, scaling=0.1)
    assert out.shape == (1, 8, 4, 64) and weights is None
    from transformers import AttentionInterface

    assert AttentionInterface._global_mapping["fa4"] is integ.fa4_attention_forward
