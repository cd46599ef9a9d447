"""The validation matrix of ``fa4_torch.flash_attn_func`` (CPU, no GPU, nothing compiles).

A table of :class:`Case` rows, generated below, each a call that must fail before anything compiles
or launches:

* structural errors (dtype, ndim, shapes, strides, alignment, head dims, ``nheads % nheads_kv``,
  window, softmax scale, ``pack_gqa``, ``num_splits``, ``softcap``, ``learnable_sink``) raise
  :class:`fa4_core.errors.UnsupportedConfigError` (a ``ValueError``) whose message names the argument
  (``arg=value ...; supported: ...``). They are checked before the device, so CPU tensors reach them;
* calls that are otherwise valid but on the CPU (or the meta device) raise it naming ``q.device`` —
  these rows also prove that valid layouts (slices, transposed seq/head dims, GQA, every supported
  head dim) are *not* rejected by the structural checks;
* features of later releases (``qv``, ``score_mod``, ``mask_mod``, ``aux_tensors``,
  ``block_sparse_tensors``; inputs that require grad until ``fa4_torch.autograd`` lands) raise
  ``NotImplementedError`` naming the feature. Softcap, learnable sinks and split-KV are implemented:
  their valid values reach the device check, their invalid ones are structural errors.

Every row also checks that nothing was compiled: ``fa4_torch.api.FWD_CACHE`` and the fast-path dict
stay empty, and ``fa4_sm120.compile.compile_fwd`` (and the api's compile/arch hooks) fail the test if
they are reached. Rows marked ``xfail`` (strict) document known deviations of ``api.py`` from the
contract; when one is fixed its row XPASSes, fails, and the mark must go.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fa4_sm120.compile
import fa4_torch.api as api
from fa4_core.errors import UnsupportedConfigError

F16, BF16 = torch.float16, torch.bfloat16

# ------------------------------------------------------------------------------------------ tensors


def _t(shape, dtype=F16, device="cpu"):
    return torch.zeros(shape, dtype=dtype, device=device)


def _strided(shape, stride, dtype=F16):
    """A view with the given strides over a fresh (allocator-aligned) buffer."""
    numel = 1 + sum((s - 1) * st for s, st in zip(shape, stride, strict=True) if s > 0)
    return torch.zeros(numel + 64, dtype=dtype).as_strided(shape, stride)


def _misaligned(shape, offset, dtype=F16):
    """A contiguous tensor whose base is ``offset`` elements past a 64-byte aligned buffer."""
    numel = math.prod(shape)
    buf = torch.zeros(numel + 16, dtype=dtype)
    assert buf.data_ptr() % 64 == 0
    t = buf[offset : offset + numel].view(shape)
    assert t.data_ptr() % 16 != 0
    return t


def _padded(shape, pad, dtype=F16):
    """``buf[..., :d]`` of a ``d + pad`` wide buffer: row strides are not multiples of ``d``."""
    *lead, d = shape
    return _t((*lead, d + pad), dtype)[..., :d]


def _qkv(b=2, sq=5, sk=7, h=4, hkv=2, d=64, dv=None, dtype=F16, device="cpu"):
    dv = d if dv is None else dv
    return {
        "q": _t((b, sq, h, d), dtype, device),
        "k": _t((b, sk, hkv, d), dtype, device),
        "v": _t((b, sk, hkv, dv), dtype, device),
    }


# ------------------------------------------------------------------------------------------ table


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], dict] = field(repr=False)  # -> kwargs of flash_attn_func (q, k, v included)
    exc: type[Exception] = UnsupportedConfigError
    match: str = ""  # regex that the message must contain (re.search)
    xfail: str | None = None  # a known deviation of api.py from the contract (strict xfail)


def _arg(name: str) -> str:
    """The regex of ``unsupported(name, ...)``'s message: ``name=value is not supported``."""
    return re.escape(name) + "="


CASES: list[Case] = []


def _add(id_, make, exc=UnsupportedConfigError, match="", xfail=None):
    CASES.append(Case(id_, make, exc, match, xfail))


def _with(base: dict, **over) -> dict:
    kw = dict(base)
    kw.update(over)
    return kw


NAMES = ("q", "k", "v")

# --- not a tensor at all --------------------------------------------------------------------------
_NON_TENSORS = {"None": None, "list": [[1.0]], "ndarray": np.zeros((2, 5, 4, 64), np.float16), "float": 1.0}
for name, (label, val) in itertools.product(NAMES, _NON_TENSORS.items()):
    _add(
        f"not-a-tensor-{name}-{label}",
        lambda name=name, val=val: _with(_qkv(), **{name: val}),
        match=_arg(name),
    )

# --- wrong dtypes, one tensor at a time (and all three) -------------------------------------------
_BAD_DTYPES = [
    torch.float32,
    torch.float64,
    torch.int8,
    torch.uint8,
    torch.int32,
    torch.int64,
    torch.bool,
    torch.float8_e4m3fn,
    torch.float8_e5m2,
    torch.complex64,
]
for name, dt in itertools.product(NAMES, _BAD_DTYPES):
    _add(
        f"dtype-{name}-{dt}",
        lambda name=name, dt=dt: _with(_qkv(), **{name: _qkv(dtype=dt)[name]}),
        match=_arg(f"{name}.dtype"),
    )
for dt in (torch.float32, torch.int8, torch.float64):
    _add(f"dtype-all-{dt}", lambda dt=dt: _qkv(dtype=dt), match=_arg("q.dtype"))

# --- mixed fp16 / bf16 ----------------------------------------------------------------------------
for dts in itertools.product((F16, BF16), repeat=3):
    if len(set(dts)) == 1:
        continue
    for d in (64, 128):
        _add(
            f"mixed-dtypes-{'-'.join(str(x)[6:] for x in dts)}-d{d}",
            lambda dts=dts, d=d: {n: _qkv(d=d, dtype=dt)[n] for n, dt in zip(NAMES, dts, strict=True)},
            match=re.escape("(q.dtype, k.dtype, v.dtype)="),
        )

# --- wrong ndim -----------------------------------------------------------------------------------
_NDIM_SHAPES = {0: (), 1: (64,), 2: (5, 64), 3: (5, 4, 64), 5: (2, 5, 4, 1, 64), 6: (1, 2, 5, 4, 1, 64)}
for name, (nd, shape) in itertools.product(NAMES, _NDIM_SHAPES.items()):
    for dt in (F16, BF16):
        _add(
            f"ndim-{name}-{nd}-{str(dt)[6:]}",
            lambda name=name, shape=shape, dt=dt: _with(_qkv(dtype=dt), **{name: _t(shape, dt)}),
            match=_arg(f"{name}.dim()"),
        )

# --- k/v sizes that do not match q / each other ---------------------------------------------------
_SHAPES = [  # (b, sq, sk, h, hkv, d, dv)
    (1, 1, 1, 1, 1, 64, 64),
    (2, 5, 7, 4, 2, 64, 64),
    (3, 17, 9, 8, 8, 128, 128),
    (2, 3, 11, 6, 1, 192, 128),
]
for b, sq, sk, h, hkv, d, dv in _SHAPES:
    tag = f"b{b}-q{sq}-k{sk}-h{h}_{hkv}-d{d}_{dv}"

    def base(b=b, sq=sq, sk=sk, h=h, hkv=hkv, d=d, dv=dv):
        return _qkv(b, sq, sk, h, hkv, d, dv)

    _add(  # k and v agree with each other, not with q
        f"batch-kv-{tag}",
        lambda base=base, b=b, sk=sk, hkv=hkv, d=d, dv=dv: _with(
            base(), k=_t((b + 1, sk, hkv, d)), v=_t((b + 1, sk, hkv, dv))
        ),
        match=_arg("k.shape[0] (batch)"),
    )
    _add(  # k differs from v (and q): the k/v agreement check names v's shape and k's
        f"batch-k-{tag}",
        lambda base=base, b=b, sk=sk, hkv=hkv, d=d: _with(base(), k=_t((b + 1, sk, hkv, d))),
        match=_arg("v.shape[:-1]") + ".*k's",
    )
    _add(
        f"batch-v-{tag}",
        lambda base=base, b=b, sk=sk, hkv=hkv, dv=dv: _with(base(), v=_t((b + 1, sk, hkv, dv))),
        match=_arg("v.shape[:-1]"),
    )
    for dk in {d // 2 if d // 2 in (32, 64, 96) else 32, 256 if d != 256 else 128}:
        _add(
            f"head_dim-k{dk}-{tag}",
            lambda base=base, b=b, sk=sk, hkv=hkv, dk=dk: _with(base(), k=_t((b, sk, hkv, dk))),
            match=_arg("k.shape[-1] (head_dim)"),
        )
    _add(
        f"seqlen_k-v-{tag}",
        lambda base=base, b=b, sk=sk, hkv=hkv, dv=dv: _with(base(), v=_t((b, sk + 1, hkv, dv))),
        match=_arg("v.shape[:-1]"),
    )
    _add(
        f"nheads_kv-v-{tag}",
        lambda base=base, b=b, sk=sk, hkv=hkv, dv=dv: _with(base(), v=_t((b, sk, hkv * 2, dv))),
        match=_arg("v.shape[:-1]"),
    )

# --- nheads % nheads_kv != 0 ----------------------------------------------------------------------
for h, hkv in [
    (3, 2),
    (4, 3),
    (5, 2),
    (6, 4),
    (7, 2),
    (7, 3),
    (16, 3),
    (16, 5),
    (28, 8),
    (40, 16),
    (1, 2),
    (2, 4),
    (4, 0),
]:
    for d in (64, 128):
        _add(
            f"gqa-{h}_{hkv}-d{d}",
            lambda h=h, hkv=hkv, d=d: _qkv(h=h, hkv=hkv, d=d),
            match=re.escape("nheads % nheads_kv="),
        )

# --- last dimension not contiguous ----------------------------------------------------------------
_SHAPE4 = {"q": (2, 5, 4, 64), "k": (2, 7, 2, 64), "v": (2, 7, 2, 64)}
for name in NAMES:
    b, s, h, d = _SHAPE4[name]
    variants = {
        "transpose-hd": lambda b=b, s=s, h=h, d=d: _t((b, s, d, h)).transpose(-1, -2),
        "transpose-sd": lambda b=b, s=s, h=h, d=d: _t((b, d, h, s)).transpose(1, 3),
        "permute-bd": lambda b=b, s=s, h=h, d=d: _t((d, s, h, b)).permute(3, 1, 2, 0),
        "step2": lambda b=b, s=s, h=h, d=d: _t((b, s, h, 2 * d))[..., ::2],
        "stride8": lambda b=b, s=s, h=h, d=d: _strided((b, s, h, d), (s * h * d * 8, h * d * 8, d * 8, 8)),
    }
    for label, mk in variants.items():
        _add(
            f"last-stride-{name}-{label}",
            lambda name=name, mk=mk: _with(_qkv(), **{name: mk()}),
            match=_arg(f"{name}.stride(-1)"),
        )

# --- row strides not multiples of 8 elements (16 bytes) -------------------------------------------
for name, pad in itertools.product(NAMES, (1, 2, 3, 4, 5, 6, 7, 12, 20)):
    b, s, h, d = _SHAPE4[name]
    _add(  # q[..., :64] of a (64 + pad)-wide buffer: stride(2) = 64 + pad
        f"padded-{name}-pad{pad}",
        lambda name=name, shape=(b, s, h, d), pad=pad: _with(_qkv(), **{name: _padded(shape, pad)}),
        match=rf"\b{name}\.stride\([012]\)=",  # the outer strides are off by the same pad
    )
for name, dim, pad in itertools.product(NAMES, (0, 1, 2), (1, 4, 6)):
    # row strides that are multiples of 8 (and large enough for every shape used), one of them padded
    stride = [8192, 1024, 128, 1]
    stride[dim] += pad
    _add(
        f"row-stride-{name}-dim{dim}-pad{pad}",
        lambda name=name, stride=tuple(stride): _with(_qkv(), **{name: _strided(_SHAPE4[name], stride)}),
        match=_arg(f"{name}.stride({dim})"),
    )
for name in NAMES:  # a single head: stride(2) is irrelevant, stride(1) = 68 is not
    _add(
        f"padded-onehead-{name}",
        lambda name=name: _with(_qkv(h=1, hkv=1), **{name: _padded((2, 5 if name == "q" else 7, 1, 64), 4)}),
        match=rf"\b{name}\.stride\([01]\)=",
    )

# --- misaligned base pointers ---------------------------------------------------------------------
for name, off, dt in itertools.product(NAMES, range(1, 8), (F16, BF16)):
    _add(
        f"misaligned-{name}-off{off}-{str(dt)[6:]}",
        lambda name=name, off=off, dt=dt: _with(
            _qkv(dtype=dt), **{name: _misaligned(_SHAPE4[name], off, dt)}
        ),
        match=_arg(f"{name}.data_ptr() % 16"),
    )

# --- head dims outside the supported set ----------------------------------------------------------
_BAD_DIMS_MULT8 = (8, 16, 24, 40, 48, 56, 72, 80, 88, 104, 112, 120, 136, 168, 200, 264, 288, 320, 512)
_BAD_DIMS_ODD = (1, 4, 12, 36, 100, 129, 250)
for d, dt in itertools.product(_BAD_DIMS_MULT8, (F16, BF16)):
    _add(
        f"head_dim-{d}-{str(dt)[6:]}",
        lambda d=d, dt=dt: _qkv(d=d, dv=64, dtype=dt),
        match=r"(?<![\w.])head_dim=",
    )
    _add(
        f"head_dim_v-{d}-{str(dt)[6:]}",
        lambda d=d, dt=dt: _qkv(d=64, dv=d, dtype=dt),
        match=_arg("head_dim_v"),
    )
for d in _BAD_DIMS_ODD:
    # one row of one head: no row stride is checked, so the head dim is the first error
    _add(
        f"head_dim-odd-{d}-single-row",
        lambda d=d: _qkv(b=1, sq=1, sk=1, h=1, hkv=1, d=d, dv=64),
        match=r"(?<![\w.])head_dim=",
    )
    _add(
        f"head_dim_v-odd-{d}-single-row",
        lambda d=d: _qkv(b=1, sq=1, sk=1, h=1, hkv=1, d=64, dv=d),
        match=_arg("head_dim_v"),
    )
    # a plain contiguous tensor: the message should name the head dim, not the stride it implies
    _add(
        f"head_dim-odd-{d}-contiguous",
        lambda d=d: _qkv(d=d, dv=64),
        match=r"(?<![\w.])head_dim=",
    )

# --- window_size ----------------------------------------------------------------------------------
_BAD_WINDOW_SIDES = [  # (window_size, regex)
    ((-2, None), _arg("window_size[0]")),
    ((-5, 3), _arg("window_size[0]")),
    ((-1000, -1), _arg("window_size[0]")),
    ((None, -2), _arg("window_size[1]")),
    ((3, -100), _arg("window_size[1]")),
    ((-1, -7), _arg("window_size[1]")),
    ((1.5, None), _arg("window_size[0]")),
    ((None, 2.0), _arg("window_size[1]")),
    (("a", 0), _arg("window_size[0]")),
    ((0, "8"), _arg("window_size[1]")),
    (([1], None), _arg("window_size[0]")),
    ((None, float("nan")), _arg("window_size[1]")),
    ((None, float("inf")), _arg("window_size[1]")),
    ([-3, 0], _arg("window_size[0]")),
]
_BAD_WINDOW_SHAPES = [(1,), (1, 2, 3), (), [], 5, "ab", {0: 1, 1: 2}, 2.5]
for causal in (False, True):
    for i, (w, rx) in enumerate(_BAD_WINDOW_SIDES):
        _add(
            f"window-side{i}-{w!r}-causal{causal}",
            lambda w=w, c=causal: _with(_qkv(), window_size=w, causal=c),
            match=rx,
        )
    for i, w in enumerate(_BAD_WINDOW_SHAPES):
        _add(
            f"window-shape{i}-{w!r}-causal{causal}",
            lambda w=w, c=causal: _with(_qkv(), window_size=w, causal=c),
            match=_arg("window_size"),
        )

# --- softmax_scale --------------------------------------------------------------------------------
for i, s in enumerate([float("nan"), float("inf"), float("-inf"), "0.125", b"1", [0.125], 1j, object()]):
    _add(
        f"softmax_scale-{i}-{type(s).__name__}",
        lambda s=s: _with(_qkv(), softmax_scale=s),
        match=_arg("softmax_scale"),
    )

# --- pack_gqa -------------------------------------------------------------------------------------
for i, p in enumerate(["yes", "True", 2, -1, 1.5, [True], (True,), object()]):
    _add(f"pack_gqa-{i}-{p!r}", lambda p=p: _with(_qkv(), pack_gqa=p), match=_arg("pack_gqa"))
for p in (1, 0, 1.0, 0.0):
    _add(
        f"pack_gqa-intlike-{p!r}",
        lambda p=p: _with(_qkv(), pack_gqa=p),
        match=_arg("pack_gqa"),
    )

# --- num_splits -----------------------------------------------------------------------------------
for i, n in enumerate([-1, -2, -64, 1.5, 2.0, "2", None, [1]]):
    _add(f"num_splits-{i}-{n!r}", lambda n=n: _with(_qkv(), num_splits=n), match=_arg("num_splits"))

# --- softcap --------------------------------------------------------------------------------------
for i, c in enumerate(
    [-1.0, -1e-3, -30, float("-inf"), float("inf"), float("nan"), True, "1.0", None, [1.0]]
):
    _add(f"softcap-{i}-{c!r}", lambda c=c: _with(_qkv(), softcap=c), match=_arg("softcap"))
# --- learnable_sink: fp32 (nheads,) ---------------------------------------------------------------
_BAD_SINKS = {  # label: (make, regex); q has 4 heads
    "fp16": (lambda: torch.zeros(4, dtype=F16), _arg("learnable_sink.dtype")),
    "bf16": (lambda: torch.zeros(4, dtype=BF16), _arg("learnable_sink.dtype")),
    "fp64": (lambda: torch.zeros(4, dtype=torch.float64), _arg("learnable_sink.dtype")),
    "int32": (lambda: torch.zeros(4, dtype=torch.int32), _arg("learnable_sink.dtype")),
    "2d": (lambda: torch.zeros(1, 4), _arg("learnable_sink.dim()")),
    "0d": (lambda: torch.zeros(()), _arg("learnable_sink.dim()")),
    "3-heads": (lambda: torch.zeros(3), _arg("learnable_sink.shape")),
    "8-heads": (lambda: torch.zeros(8), _arg("learnable_sink.shape")),
    "kv-heads": (lambda: torch.zeros(2), _arg("learnable_sink.shape")),
    "strided": (lambda: torch.zeros(8)[::2], _arg("learnable_sink.stride(0)")),
    "meta": (lambda: torch.zeros(4, device="meta"), _arg("learnable_sink.device")),
}
for label, (mk, rx) in _BAD_SINKS.items():
    _add(f"learnable_sink-{label}", lambda mk=mk: _with(_qkv(), learnable_sink=mk()), match=rx)
for label, val in {"list": [0.0] * 4, "ndarray": np.zeros(4, np.float32), "float": 0.5}.items():
    _add(
        f"learnable_sink-not-a-tensor-{label}",
        lambda val=val: _with(_qkv(), learnable_sink=val),
        match=_arg("learnable_sink"),
    )

# --- valid except for the device: the error names q.device ----------------------------------------
_DIM_PAIRS = [
    (32, 32),
    (64, 64),
    (96, 96),
    (128, 128),
    (160, 160),
    (192, 128),
    (192, 192),
    (224, 224),
    (256, 256),
]
_HEADS = [(4, 4), (4, 2), (4, 1), (28, 4)]
for dt, (d, dv), (h, hkv), causal in itertools.product((F16, BF16), _DIM_PAIRS, _HEADS, (False, True)):
    _add(
        f"cpu-{str(dt)[6:]}-d{d}_{dv}-h{h}_{hkv}-causal{causal}",
        lambda dt=dt, d=d, dv=dv, h=h, hkv=hkv, c=causal: _with(
            _qkv(b=1, sq=3, sk=5, h=h, hkv=hkv, d=d, dv=dv, dtype=dt), causal=c
        ),
        match=_arg("q.device"),
    )
_VALID_KWARGS = {
    "window-left": {"window_size": (16, None)},
    "window-right": {"window_size": (None, 0)},
    "window-both": {"window_size": (3, 5)},
    "window-minus1": {"window_size": (-1, -1)},
    "window-list": {"window_size": [4, 4]},
    "window-none": {"window_size": None},
    "window-causal": {"window_size": (8, 8), "causal": True},
    "scale-float": {"softmax_scale": 0.1},
    "scale-int": {"softmax_scale": 1},
    "scale-np": {"softmax_scale": np.float64(0.5)},
    "pack-true": {"pack_gqa": True},
    "pack-false": {"pack_gqa": False},
    "pack-none": {"pack_gqa": None},
    "splits-0": {"num_splits": 0},
    "splits-1": {"num_splits": 1},
    "softcap-0": {"softcap": 0.0},
    "softcap-int0": {"softcap": 0},
    "softcap-0.5": {"softcap": 0.5},
    "softcap-int": {"softcap": 30},
    "splits-2": {"num_splits": 2},
    "splits-3": {"num_splits": 3},
    "splits-1000": {"num_splits": 1000},
    "sink": {"learnable_sink": torch.zeros(4)},
    "sink-softcap-splits": {"learnable_sink": torch.zeros(4), "softcap": 5.0, "num_splits": 4},
    "lse": {"return_lse": True},
    "deterministic": {"deterministic": True},
}
for label, kw in _VALID_KWARGS.items():
    _add(f"cpu-valid-{label}", lambda kw=kw: _with(_qkv(), **kw), match=_arg("q.device"))
_VALID_LAYOUTS = {  # last dim contiguous, row strides multiples of 8, aligned: all must pass
    "padded8": lambda: {n: _padded(_SHAPE4[n], 8) for n in NAMES},
    "qkv-packed": lambda: dict(
        zip(NAMES, _t((2, 7, 3, 2, 64)).unbind(2), strict=True)  # (b, s, 3, h, d) -> q, k, v
    ),
    "bhsd-transposed": lambda: {n: _t((2, _SHAPE4[n][2], _SHAPE4[n][1], 64)).transpose(1, 2) for n in NAMES},
    "expanded-kv-heads": lambda: _with(
        _qkv(), k=_t((2, 7, 1, 64)).expand(2, 7, 2, 64), v=_t((2, 7, 1, 64)).expand(2, 7, 2, 64)
    ),
    "offset-by-8": lambda: {
        n: torch.zeros(math.prod(_SHAPE4[n]) + 8, dtype=F16)[8:].view(_SHAPE4[n]) for n in NAMES
    },
    "batch0": lambda: _qkv(b=0),
    "seqlen1": lambda: _qkv(sq=1, sk=1),
    "seqlen_k0": lambda: _qkv(sk=0),
    "odd-stride-size1-dim": lambda: _with(
        _qkv(b=1, sq=5, h=1, hkv=1), q=_strided((1, 5, 1, 64), (1000, 64, 3, 1))
    ),
}
for label, mk in _VALID_LAYOUTS.items():
    _add(f"cpu-layout-{label}", mk, match=_arg("q.device"))
_add("meta-device", lambda: _qkv(device="meta"), match=_arg("q.device"))
for name in NAMES:
    _add(
        f"meta-device-{name}-only",
        lambda name=name: _with(_qkv(), **{name: _qkv(device="meta")[name]}),
        match=r"\.device=",
    )

# --- later releases: NotImplementedError naming the feature ---------------------------------------
_LATER = {
    "qv": ({"qv": torch.zeros(2, 5, 4, 64, dtype=F16)}, "qv"),
    "score_mod": ({"score_mod": lambda *a: a[0]}, "score_mod"),
    "mask_mod": ({"mask_mod": lambda *a: True}, "mask_mod"),
    "aux_tensors": ({"aux_tensors": [torch.zeros(1)]}, "aux_tensors"),
    "block_sparse_tensors": ({"block_sparse_tensors": (torch.zeros(1),)}, "block_sparse_tensors"),
}
for label, (kw, rx) in _LATER.items():
    _add(f"later-{label}", lambda kw=kw: _with(_qkv(), **kw), exc=NotImplementedError, match=rf"\b{rx}\b")


def _params():
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
        yield pytest.param(c, id=c.id, marks=marks)


# ------------------------------------------------------------------------------------------ tests


@pytest.fixture(autouse=True)
def nothing_compiles(monkeypatch):
    """Fail the test if anything tries to compile or look at a GPU; check the caches stay empty."""

    def forbidden(what):
        def fail(*args, **kwargs):
            pytest.fail(f"{what} was called during validation")

        return fail

    api._reset_caches()
    monkeypatch.setattr(fa4_sm120.compile, "compile_fwd", forbidden("fa4_sm120.compile.compile_fwd"))
    monkeypatch.setattr(api, "_compile_for", forbidden("fa4_torch.api._compile_for"))
    monkeypatch.setattr(api, "device_family", forbidden("fa4_torch.api.device_family"))
    monkeypatch.setattr(api, "_heuristic_splits", forbidden("fa4_torch.api._heuristic_splits"))
    yield
    assert len(api.FWD_CACHE) == 0, api.FWD_CACHE.keys()
    assert not api._fast


def test_the_table_is_large_and_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 300


@pytest.mark.parametrize("case", list(_params()))
def test_validation(case: Case):
    kwargs = case.make()
    q, k, v = kwargs.pop("q"), kwargs.pop("k"), kwargs.pop("v")
    with pytest.raises(case.exc) as info:
        api.flash_attn_func(q, k, v, **kwargs)
    msg = str(info.value)
    assert re.search(case.match, msg), f"message {msg!r} does not match {case.match!r}"
    if case.exc is UnsupportedConfigError:
        assert isinstance(info.value, ValueError)
        assert "is not supported" in msg and "supported:" in msg, msg
    else:
        assert "not implemented" in msg, msg


def test_keyword_order_matches_flash_attn_cute():
    import inspect

    params = list(inspect.signature(api.flash_attn_func).parameters)
    assert params[:12] == [
        "q",
        "k",
        "v",
        "softmax_scale",
        "causal",
        "window_size",
        "learnable_sink",
        "softcap",
        "num_splits",
        "pack_gqa",
        "deterministic",
        "return_lse",
    ]


def test_public_entry_point_validates_too():
    from fa4_torch import flash_attn_func

    with pytest.raises(UnsupportedConfigError, match=_arg("q.dtype")):
        flash_attn_func(**_qkv(dtype=torch.float32))


@pytest.mark.parametrize("name", [*NAMES, "learnable_sink"])
def test_requires_grad_under_no_grad_is_validated_like_any_input(name):
    kw = _with(_qkv(), learnable_sink=torch.zeros(4))
    kw[name].requires_grad_(True)
    with torch.no_grad(), pytest.raises(UnsupportedConfigError, match=_arg("q.device")):
        api.flash_attn_func(**kw)


# The backward is being wired by another engineer (fa4_torch.autograd). Until it lands, inputs that
# require grad under grad mode must raise NotImplementedError rather than return an output whose
# gradient silently does not exist; once fa4_torch.autograd exists this check no longer applies.
@pytest.mark.skipif(
    importlib.util.find_spec("fa4_torch.autograd") is not None,
    reason="fa4_torch.autograd exists: requires_grad inputs are supported (the backward tests cover them)",
)
@pytest.mark.parametrize("name", [*NAMES, "learnable_sink"])
def test_requires_grad_raises_not_implemented_until_the_backward_lands(name):
    kw = _with(_qkv(), learnable_sink=torch.zeros(4))
    kw[name].requires_grad_(True)
    with torch.enable_grad(), pytest.raises(NotImplementedError, match=r"backward|grad"):
        api.flash_attn_func(**kw)


# ------------------------------------------------------------------------------------------ random

_CORRUPTIONS = ("dtype", "misalign", "row-stride", "head-dim", "gqa", "window", "ndim")


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    b=st.integers(1, 3),
    sq=st.integers(1, 40),
    sk=st.integers(1, 40),
    hkv=st.integers(1, 4),
    ratio=st.integers(1, 4),
    dims=st.sampled_from(_DIM_PAIRS),
    dtype=st.sampled_from([F16, BF16]),
    causal=st.booleans(),
    name=st.sampled_from(NAMES),
    corruption=st.sampled_from(_CORRUPTIONS),
    amount=st.integers(1, 7),
)
def test_random_invalid_calls(b, sq, sk, hkv, ratio, dims, dtype, causal, name, corruption, amount):
    """A valid call with one thing broken: the error is typed and names the right argument."""
    d, dv = dims
    kw = _qkv(b, sq, sk, hkv * ratio, hkv, d, dv, dtype)
    shape = tuple(kw[name].shape)
    if corruption == "dtype":
        kw[name] = kw[name].float()
        rx = _arg(f"{name}.dtype")
    elif corruption == "misalign":
        kw[name] = _misaligned(shape, amount, dtype)
        rx = _arg(f"{name}.data_ptr() % 16")
    elif corruption == "row-stride":
        kw[name] = _padded(shape, amount, dtype)  # stride(2) = last + amount; stride(0/1) follow
        if math.prod(shape[:3]) == 1:  # one row: no row stride matters, the call is valid
            rx = _arg("q.device")
        else:
            rx = rf"\b{name}\.stride\([012]\)="
    elif corruption == "head-dim":
        bad = 8 * amount + 256  # 264 .. 312: multiples of 8 above 256
        if name == "v":
            kw["v"] = _t((b, sk, hkv, bad), dtype)
            rx = _arg("head_dim_v")
        else:
            kw["q"], kw["k"] = _t((b, sq, hkv * ratio, bad), dtype), _t((b, sk, hkv, bad), dtype)
            rx = r"(?<![\w.])head_dim="
    elif corruption == "gqa":
        kv = max(hkv, 2)
        h = kv * ratio + 1 + amount % (kv - 1)  # h % kv in [1, kv - 1]
        kw = _qkv(b, sq, sk, h, kv, d, dv, dtype)
        rx = re.escape("nheads % nheads_kv=")
    elif corruption == "window":
        kw["window_size"] = (-1 - amount, None) if amount % 2 else (None, -1 - amount)
        rx = _arg("window_size[0]" if amount % 2 else "window_size[1]")
    else:  # ndim
        kw[name] = kw[name].reshape(shape[0] * shape[1], *shape[2:])
        rx = _arg(f"{name}.dim()")
    with pytest.raises(UnsupportedConfigError) as info:
        api.flash_attn_func(**kw, causal=causal)
    assert re.search(rx, str(info.value)), (str(info.value), rx)
    assert len(api.FWD_CACHE) == 0 and not api._fast


@pytest.mark.skipif(
    importlib.util.find_spec("fa4_torch.autograd") is None,
    reason="fa4_torch.autograd is not there yet (the NotImplementedError test above applies)",
)
@pytest.mark.parametrize("name", NAMES)
def test_requires_grad_inputs_are_validated_before_anything_compiles(name):
    kw = _qkv()
    kw[name].requires_grad_(True)
    with torch.enable_grad(), pytest.raises(UnsupportedConfigError, match=_arg("q.device")):
        api.flash_attn_func(**kw)
    with torch.enable_grad(), pytest.raises(UnsupportedConfigError, match=_arg("k.dtype")):
        api.flash_attn_func(**_with(kw, k=kw["k"].float()))
