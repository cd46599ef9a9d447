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

Every row also checks that nothing was compiled: ``fa4_torch.launch.FWD_CACHE`` and ``KERNELS`` stay
empty, and ``fa4_sm120.compile.compile_fwd`` (and the compile, dispatch and split-heuristic seams of
``fa4_torch.launch`` / ``fa4_torch.plan``) fail the test if they are reached. Rows marked ``xfail`` (strict) document known deviations of ``api.py`` from the
contract; when one is fixed its row XPASSes, fails, and the mark must go.

After the table: bool arguments (``TypeError``), ``num_splits`` above the combine kernel's maximum,
``max_seqlen_q/k``, paged K/V without rows; the memos (a hit never skips a check); gradients the
backward cannot give, rejected before the forward compiles (CPU tensors past a stubbed device check;
on a GPU too); and ``flash_attn_with_kvcache``, whose append writes nothing until every argument has
been checked (the caches compared bit for bit after each error, CPU; the GPU counterpart is
``test_kvcache_validation_gpu.py``).
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
from fa4_sm120.variants import fwd_head_dim_pairs
from fa4_torch import launch, plan, validate

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
    # an FP8 k or v is an FP8 K/V cache: alone (without the other in FP8) it is a mixed-dtype call
    fp8_alone = name != "q" and dt is torch.float8_e4m3fn
    _add(
        f"dtype-{name}-{dt}",
        lambda name=name, dt=dt: _with(_qkv(), **{name: _qkv(dtype=dt)[name]}),
        match=re.escape("(q.dtype, k.dtype, v.dtype)=") if fp8_alone else _arg(f"{name}.dtype"),
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
# zero or negative: a fully masked row would score +inf or nan; FlashAttention never takes one
for s in (0.0, -0.0, 0, -1, -0.125, -1e-30, np.float64(-0.5)):
    _add(
        f"softmax_scale-not-positive-{s!r}",
        lambda s=s: _with(_qkv(), softmax_scale=s),
        match=_arg("softmax_scale") + ".*> 0",
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
for n in (65, 128, 1000, 1 << 40):  # above the combine kernel's 64: an error, not a silent cap
    _add(
        f"num_splits-above-max-{n}",
        lambda n=n: _with(_qkv(), num_splits=n),
        match=_arg("num_splits") + ".*64",
    )

# --- bool arguments: True or False only ("False" is truthy), TypeError naming the argument ---------
_NOT_BOOLS = {"str-False": "False", "str-True": "True", "str-empty": "", "int1": 1, "int0": 0, "None": None,
              "float": 1.0, "np-bool": np.bool_(True), "list": [True], "tensor": torch.tensor(True)}  # fmt: skip
for name, (label, val) in itertools.product(("causal", "deterministic", "return_lse"), _NOT_BOOLS.items()):
    _add(
        f"flag-{name}-{label}",
        lambda name=name, val=val: _with(_qkv(), **{name: val}),
        exc=TypeError,
        match=_arg(name) + ".*True or False",
    )

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
_DIM_PAIRS = list(fwd_head_dim_pairs("sm120"))  # every pair with a forward row
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
    "splits-64": {"num_splits": 64},
    "scale-tiny": {"softmax_scale": 1e-30},
    "causal-false": {"causal": False},
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

    launch.reset_caches()
    monkeypatch.setattr(fa4_sm120.compile, "compile_fwd", forbidden("fa4_sm120.compile.compile_fwd"))
    monkeypatch.setattr(launch, "compile_forward", forbidden("fa4_torch.launch.compile_forward"))
    monkeypatch.setattr(plan, "device_family", forbidden("fa4_torch.plan.device_family"))
    monkeypatch.setattr(plan, "heuristic_splits", forbidden("fa4_torch.plan.heuristic_splits"))
    yield
    assert len(launch.FWD_CACHE) == 0, launch.FWD_CACHE.keys()
    assert not launch.KERNELS


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
    elif case.exc is TypeError:
        assert not isinstance(info.value, ValueError)
        assert "is not supported" in msg and "supported:" in msg, msg
    else:
        assert "not implemented" in msg, msg


def test_keyword_order_matches_flash_attn_cute():
    """The leading parameters in ``flash_attn.cute``'s order (the whole list: ``test_signature.py``)."""
    import inspect

    params = list(inspect.signature(api.flash_attn_func).parameters)
    assert params[:13] == [
        "q",
        "k",
        "v",
        "qv",
        "gather_kv_indices",
        "softmax_scale",
        "causal",
        "window_size",
        "learnable_sink",
        "softcap",
        "num_splits",
        "pack_gqa",
        "deterministic",
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
    assert len(launch.FWD_CACHE) == 0 and not launch.KERNELS


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


# ------------------------------------------------------------------------------------------ limits


def test_max_splits_is_the_combine_kernels():
    """``num_splits`` above ``fa4_sm120.combine.MAX_SPLITS`` is rejected (the combine module and the
    validation read one constant, ``fa4_sm120.limits.MAX_SPLITS``: the combine module imports the DSL)."""
    pytest.importorskip("cutlass")
    from fa4_sm120 import limits
    from fa4_sm120.combine import MAX_SPLITS

    assert MAX_SPLITS is limits.MAX_SPLITS
    with pytest.raises(UnsupportedConfigError, match=_arg("num_splits") + f".*{MAX_SPLITS}"):
        api.flash_attn_func(**_qkv(), num_splits=MAX_SPLITS + 1)


@pytest.mark.parametrize("name", ["max_seqlen_q", "max_seqlen_k"])
@pytest.mark.parametrize("value", [-1, -100, 1.5, "8", True])
def test_bad_max_seqlen_is_rejected_varlen_or_not(name, value):
    """Checked whenever given, also where the call does not use it (batch-dense q or k)."""
    q = _t((6, 4, 64))
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    with pytest.raises(UnsupportedConfigError, match=_arg(name)):
        api.flash_attn_varlen_func(q, q, q, cu_seqlens_q=cu, cu_seqlens_k=cu, **{name: value})
    with pytest.raises(UnsupportedConfigError, match=_arg(name)):
        api.flash_attn_varlen_func(**_qkv(), **{name: value})


def test_page_table_with_cu_seqlens_k_names_both():
    q = _t((6, 4, 64))
    pages = _t((8, 16, 2, 64))
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    table = torch.zeros(2, 3, dtype=torch.int32)
    with pytest.raises(UnsupportedConfigError, match=re.escape("(page_table, cu_seqlens_k)=")):
        api.flash_attn_varlen_func(q, pages, pages, cu_seqlens_q=cu, cu_seqlens_k=cu, page_table=table)


@pytest.mark.parametrize("shape, rx", [((8, 0, 2, 64), r"k\.shape\[1\] \(page_size\)=0"),
                                       ((0, 16, 2, 64), r"k\.shape\[0\] \(num_pages\)=0")])  # fmt: skip
def test_paged_kv_without_rows_is_rejected(shape, rx):
    q = _t((6, 4, 64))
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    table = torch.zeros(2, 3, dtype=torch.int32)
    used = torch.zeros(2, dtype=torch.int32)
    with pytest.raises(UnsupportedConfigError, match=rx):
        api.flash_attn_varlen_func(q, _t(shape), _t(shape), cu_seqlens_q=cu, seqused_k=used, page_table=table)


# ------------------------------------------------------------------------------------------ memo


class _FakeKernel:
    def __init__(self, on_call=None):
        self.calls = 0
        self.on_call = on_call

    def __call__(self, *args):
        self.calls += 1
        if self.on_call is not None:
            self.on_call()


@pytest.fixture
def clean_memos():
    launch.DENSE_MEMO.clear()
    launch.CACHE_MEMO.clear()
    yield
    launch.DENSE_MEMO.clear()
    launch.CACHE_MEMO.clear()


@pytest.mark.parametrize(
    "kw, exc, rx",
    [
        ({"softmax_scale": float("nan")}, UnsupportedConfigError, "softmax_scale"),
        ({"softmax_scale": 0.0}, UnsupportedConfigError, "softmax_scale"),
        ({"softmax_scale": -0.125}, UnsupportedConfigError, "softmax_scale"),
        ({"num_splits": 1000}, UnsupportedConfigError, "num_splits"),
        ({"causal": "False"}, TypeError, "causal"),
        ({"causal": 1}, TypeError, "causal"),
        ({"return_lse": "False"}, TypeError, "return_lse"),
        ({"deterministic": "no"}, TypeError, "deterministic"),
    ],
)
def test_a_memo_hit_cannot_bypass_the_scalar_checks(clean_memos, kw, exc, rx):
    """The dense memo holds a valid call's kernel; the same tensors with a bad scalar never launch it
    (the memo key holds every scalar the validation reads, with its type; the flags the memo key does
    not hold are checked by the public function on every call)."""
    qkv = _qkv()
    fn = _FakeKernel()
    sig = launch.dense_signature(*qkv.values(), 0.125, False, (None, None), None, 0.0, 1)
    launch.DENSE_MEMO[sig] = launch.Launch(fn, (2, 5, 4, 64), (2, 4, 5), (0.125, 1 << 30, 1 << 30, 0.0, 5, 1))
    api.flash_attn_func(**qkv, softmax_scale=0.125)  # the memo entry is live: the fake kernel runs
    assert fn.calls == 1
    with pytest.raises(exc, match=_arg(rx)):
        api.flash_attn_func(**_with(_with(qkv, softmax_scale=0.125), **kw))
    assert fn.calls == 1


# ------------------------------------------------------------------------------------------ backward


@pytest.fixture
def past_the_device_check(monkeypatch):
    """CPU tensors treated as a GPU's: the device check passes, the dispatch family is SM120's and the
    SM count 1. A call that passes every check then goes on to compile, which ``nothing_compiles``
    turns into a test failure (``pytest.fail.Exception``)."""
    import fa4_torch.autograd as ag

    monkeypatch.setattr(validate, "check_devices", lambda q, named: None)
    monkeypatch.setattr(ag, "device_family", lambda device: "sm120")
    monkeypatch.setattr(plan, "num_sms", lambda device: 1)


def _grad(t):
    return t.requires_grad_(True)


def _paged_varlen(d=64, dv=64):
    q = _grad(_t((6, 4, d)))
    kp, vp = _grad(_t((8, 16, 2, d))), _grad(_t((8, 16, 2, dv)))
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    table = torch.arange(6, dtype=torch.int32).view(2, 3)
    used = torch.tensor([20, 33], dtype=torch.int32)
    return dict(q=q, k=kp, v=vp, cu_seqlens_q=cu, seqused_k=used, page_table=table)


def test_supported_gradients_go_on_to_compile(past_the_device_check):
    """The control of the tests below: with the device check passed, a supported call reaches the
    compile step (where the fixture stops it)."""
    with torch.enable_grad(), pytest.raises(pytest.fail.Exception, match="compile_forward"):
        api.flash_attn_func(**{n: _grad(t) for n, t in _qkv().items()})
    cu = torch.tensor([0, 2, 6], dtype=torch.int32)
    q = _grad(_t((6, 4, 64)))
    with torch.enable_grad(), pytest.raises(pytest.fail.Exception, match="compile_forward"):
        api.flash_attn_varlen_func(q, q, q, cu_seqlens_q=cu, cu_seqlens_k=cu)


@pytest.mark.parametrize(
    "make, exc, rx",
    [
        (lambda: _paged_varlen(), NotImplementedError, r"paged K/V \(page_table\)"),
        (lambda: _paged_varlen(192, 128), NotImplementedError, r"paged K/V \(page_table\)"),
        (lambda: {n: _grad(t) for n, t in _qkv(d=64, dv=128).items()}, UnsupportedConfigError,
         re.escape("(head_dim, head_dim_v)=(64, 128)")),
        (lambda: {n: _grad(t) for n, t in _qkv(d=128, dv=64).items()}, UnsupportedConfigError,
         re.escape("(head_dim, head_dim_v)=(128, 64)")),
        (lambda: {**{n: _grad(t) for n, t in _qkv(d=256, dv=128).items()}, "causal": True},
         UnsupportedConfigError, re.escape("(head_dim, head_dim_v)=(256, 128)")),
    ],
    ids=["paged", "paged-d192_128", "d64_128", "d128_64", "d256_128-causal"],
)  # fmt: skip
def test_unsupported_gradients_are_rejected_before_the_forward_compiles(past_the_device_check, make, exc, rx):
    kw = make()
    fn = api.flash_attn_varlen_func if "page_table" in kw else api.flash_attn_func
    with torch.enable_grad(), pytest.raises(exc, match=rx):
        fn(**kw)


@pytest.mark.parametrize("feature", ["window", "softcap", "sink"])
def test_gradients_of_every_feature_go_on_to_compile(past_the_device_check, feature):
    """Local windows, softcap and learnable sinks have gradients: nothing raises before the compile."""
    kw = {n: _grad(t) for n, t in _qkv().items()}
    kw.update(
        {"window": dict(window_size=(16, 0)), "softcap": dict(softcap=5.0),
         "sink": dict(learnable_sink=_grad(torch.zeros(4)))}[feature]
    )  # fmt: skip
    with torch.enable_grad(), pytest.raises(pytest.fail.Exception, match="compile_forward"):
        api.flash_attn_func(**kw)


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", ["paged", "paged-192_128", "d64_128", "d128_64"])
def test_unsupported_gradients_are_rejected_before_the_forward_compiles_on_gpu(case):
    """On a GPU: the forward is neither compiled (``nothing_compiles``) nor launched."""
    dev = "cuda"
    if case.startswith("paged"):
        d, dv = (192, 128) if case == "paged-192_128" else (64, 64)
        kw = dict(
            q=torch.randn(6, 4, d, device=dev, dtype=BF16, requires_grad=True),
            k=torch.randn(8, 16, 2, d, device=dev, dtype=BF16, requires_grad=True),
            v=torch.randn(8, 16, 2, dv, device=dev, dtype=BF16, requires_grad=True),
            cu_seqlens_q=torch.tensor([0, 2, 6], dtype=torch.int32, device=dev),
            seqused_k=torch.tensor([20, 33], dtype=torch.int32, device=dev),
            page_table=torch.arange(6, dtype=torch.int32, device=dev).view(2, 3),
        )
        fn, exc, rx = api.flash_attn_varlen_func, NotImplementedError, "paged K/V"
    else:
        d, dv = (64, 128) if case == "d64_128" else (128, 64)
        kw = {n: t.to(dev, BF16).requires_grad_(True) for n, t in _qkv(d=d, dv=dv).items()}
        fn, exc, rx = (
            api.flash_attn_func,
            UnsupportedConfigError,
            re.escape(f"(head_dim, head_dim_v)=({d}, {dv})"),
        )
    with torch.enable_grad(), pytest.raises(exc, match=rx):
        fn(**kw)
    torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------ KV cache

BF = torch.bfloat16


def _kv(paged=False, s_new=1, d=64, dtype=BF):
    """A valid append-and-attend call on the CPU (random data, so that any write shows): batch 2, 4
    query heads over 2 KV heads, caches of 32 rows (contiguous) or 4 pages of 16 rows per sequence."""
    g = torch.Generator().manual_seed(0)

    def rnd(*shape, dt=dtype):
        return torch.randn(*shape, generator=g).to(dt)

    kw = dict(q=rnd(2, s_new, 4, d), k=rnd(2, s_new, 2, d), v=rnd(2, s_new, 2, d))
    if paged:
        kw.update(k_cache=rnd(10, 16, 2, d), v_cache=rnd(10, 16, 2, d))
        kw["page_table"] = torch.tensor([[3, 0, 7, 1], [2, 9, 4, 5]], dtype=torch.int32)
    else:
        kw.update(k_cache=rnd(2, 32, 2, d), v_cache=rnd(2, 32, 2, d))
    kw["cache_seqlens"] = torch.tensor([3, 17], dtype=torch.int32)
    return kw


def _misaligned_cache(kw):
    """k_cache as a view whose row stride (68) is not a multiple of 8 elements."""
    buf = torch.randn(*kw["k_cache"].shape[:-1], 68).to(BF)
    return _with(kw, k_cache=buf[..., :64])


# (label, paged, change(kw) -> kw, exception, regex): each call differs from a valid one in one argument
_KV_ERRORS = [
    ("scale-nan", lambda kw: _with(kw, softmax_scale=float("nan")), UnsupportedConfigError, "softmax_scale"),
    ("scale-inf", lambda kw: _with(kw, softmax_scale=float("inf")), UnsupportedConfigError, "softmax_scale"),
    ("scale-0", lambda kw: _with(kw, softmax_scale=0.0), UnsupportedConfigError, "softmax_scale"),
    ("scale-neg", lambda kw: _with(kw, softmax_scale=-1.0), UnsupportedConfigError, "softmax_scale"),
    ("new-fp16", lambda kw: _with(kw, k=kw["k"].half(), v=kw["v"].half()), UnsupportedConfigError, r"k\.dtype"),
    ("new-v-fp16", lambda kw: _with(kw, v=kw["v"].half()), UnsupportedConfigError, r"v\.dtype"),
    ("new-meta", lambda kw: _with(kw, k=kw["k"].to("meta"), v=kw["v"].to("meta")), UnsupportedConfigError,
     r"k\.device"),
    ("new-heads", lambda kw: _with(kw, k=kw["k"][:, :, :1], v=kw["v"][:, :, :1]), UnsupportedConfigError,
     re.escape("k/v.shape[2:]")),
    ("new-batch", lambda kw: _with(kw, k=kw["k"][:1], v=kw["v"][:1]), UnsupportedConfigError,
     re.escape("k/v.shape[:2]")),
    ("only-k", lambda kw: _with(kw, v=None), UnsupportedConfigError, re.escape("(k, v)")),
    ("seqlens-int-past-end", lambda kw: _with(kw, cache_seqlens=_capacity(kw)), UnsupportedConfigError,
     r"cache_seqlens=\d+ is not supported"),
    ("seqlens-int-negative", lambda kw: _with(kw, cache_seqlens=-1), UnsupportedConfigError, "cache_seqlens=-1"),
    ("seqlens-tensor-past-end", lambda kw: _with(kw, cache_seqlens=torch.tensor([0, _capacity(kw)],
     dtype=torch.int32)), UnsupportedConfigError, r"cache_seqlens=\[0, \d+\]"),
    ("seqlens-tensor-negative", lambda kw: _with(kw, cache_seqlens=torch.tensor([-1, 0], dtype=torch.int32)),
     UnsupportedConfigError, r"cache_seqlens=\[-1, 0\]"),
    ("seqlens-int64", lambda kw: _with(kw, cache_seqlens=kw["cache_seqlens"].long()), UnsupportedConfigError,
     r"cache_seqlens\.dtype"),
    ("seqlens-shape", lambda kw: _with(kw, cache_seqlens=kw["cache_seqlens"][:1]), UnsupportedConfigError,
     r"cache_seqlens\.shape"),
    ("seqlens-meta", lambda kw: _with(kw, cache_seqlens=kw["cache_seqlens"].to("meta")), UnsupportedConfigError,
     r"cache_seqlens\.device"),
    ("seqlens-float", lambda kw: _with(kw, cache_seqlens=3.0), UnsupportedConfigError, r"cache_seqlens=3\.0"),
    ("seqlens-none", lambda kw: _with(kw, cache_seqlens=None), UnsupportedConfigError, "cache_seqlens=None"),
    ("causal-str", lambda kw: _with(kw, causal="False"), TypeError, "causal"),
    ("lse-str", lambda kw: _with(kw, return_softmax_lse="False"), TypeError, "return_softmax_lse"),
    ("splits-1000", lambda kw: _with(kw, num_splits=1000), UnsupportedConfigError, "num_splits"),
    ("splits-neg", lambda kw: _with(kw, num_splits=-1), UnsupportedConfigError, "num_splits"),
    ("window", lambda kw: _with(kw, window_size=(-2, 0)), UnsupportedConfigError, re.escape("window_size[0]")),
    ("softcap", lambda kw: _with(kw, softcap=-1.0), UnsupportedConfigError, "softcap"),
    ("pack_gqa", lambda kw: _with(kw, pack_gqa="yes"), UnsupportedConfigError, "pack_gqa"),
    ("sink", lambda kw: _with(kw, learnable_sink=torch.zeros(3)), UnsupportedConfigError,
     r"learnable_sink\.shape"),
    ("q-head-dim", lambda kw: _with(kw, q=kw["q"][..., :32]), UnsupportedConfigError,
     re.escape("k_cache.shape[-1] (head_dim)=")),
    ("q-heads", lambda kw: _with(kw, q=kw["q"][:, :, :3]), UnsupportedConfigError, re.escape("nheads % nheads_kv")),
    ("v-cache-dtype", lambda kw: _with(kw, v_cache=kw["v_cache"].half(), v=kw["v"].half()), UnsupportedConfigError,
     re.escape("(q.dtype, k_cache.dtype, v_cache.dtype)=")),
    ("k-cache-stride", _misaligned_cache, UnsupportedConfigError, r"k_cache\.stride\([012]\)="),
    ("q-grad", lambda kw: _with(kw, q=kw["q"].clone().requires_grad_(True)), NotImplementedError, "gradients"),
    ("valid-but-cpu", lambda kw: kw, UnsupportedConfigError, r"q\.device="),
]  # fmt: skip
_KV_ERRORS_PAGED = [
    ("table-int64", lambda kw: _with(kw, page_table=kw["page_table"].long()), UnsupportedConfigError,
     r"page_table\.dtype"),
    ("table-batch", lambda kw: _with(kw, page_table=kw["page_table"][:1]), UnsupportedConfigError,
     r"page_table\.shape\[0\]"),
    ("table-out-of-range", lambda kw: _with(kw, page_table=kw["page_table"] + 1), UnsupportedConfigError,
     r"page_table=.*\[0, 10\)"),
    ("table-and-slots", lambda kw: _with(kw, cache_batch_idx=torch.tensor([0, 1], dtype=torch.int32)),
     UnsupportedConfigError, "cache_batch_idx"),
]  # fmt: skip
_KV_ERRORS_CONTIGUOUS = [
    ("slots-out-of-range", lambda kw: _with(kw, cache_batch_idx=torch.tensor([0, 2], dtype=torch.int32)),
     UnsupportedConfigError, r"cache_batch_idx=.*\[0, 2\)"),
    ("cache-batch", lambda kw: _with(kw, k_cache=kw["k_cache"][:1], v_cache=kw["v_cache"][:1]),
     UnsupportedConfigError, re.escape("k_cache.shape[0] (batch)=1")),
]  # fmt: skip


def _capacity(kw):
    """The rows of one sequence's cache, less the new rows plus one: the first start past the end."""
    rows = (
        kw["page_table"].shape[1] * kw["k_cache"].shape[1] if "page_table" in kw else kw["k_cache"].shape[1]
    )
    return rows - kw["k"].shape[1] + 1


def _kv_params():
    for paged in (False, True):
        extra = _KV_ERRORS_PAGED if paged else _KV_ERRORS_CONTIGUOUS
        for label, change, exc, rx in _KV_ERRORS + extra:
            for s_new in (1, 3):
                yield pytest.param(
                    paged, s_new, change, exc, rx, id=f"{'paged' if paged else 'contig'}-{label}-new{s_new}"
                )


def _bits(t):
    return t.detach().view(torch.int16).clone() if t.dtype in (torch.float16, torch.bfloat16) else t.clone()


@pytest.mark.parametrize("paged, s_new, change, exc, rx", list(_kv_params()))
def test_kvcache_writes_nothing_before_every_check_passed(clean_memos, paged, s_new, change, exc, rx):
    """``flash_attn_with_kvcache(..., k=, v=)`` on CPU tensors: every bad argument raises a typed error
    naming it, and the caches are bit for bit what they were (the append runs only after every check,
    the device check included)."""
    kw = change(_kv(paged, s_new))
    before = {n: _bits(kw[n]) for n in ("k_cache", "v_cache")}
    base = kw["k_cache"]._base
    base_before = _bits(base) if base is not None else None
    q, kc, vc = kw.pop("q"), kw.pop("k_cache"), kw.pop("v_cache")
    with pytest.raises(exc, match=rx):
        api.flash_attn_with_kvcache(q, kc, vc, **kw)
    assert torch.equal(_bits(kc), before["k_cache"]) and torch.equal(_bits(vc), before["v_cache"])
    if base_before is not None:
        assert torch.equal(_bits(base), base_before)


@pytest.mark.parametrize("paged", [False, True])
def test_kvcache_memo_hit_appends_after_the_checks_and_before_the_launch(clean_memos, paged):
    """A KV-cache call that hits the memo (a fake kernel here): the append happens, before the launch;
    a bad call with the same metadata raises and writes nothing; FA4's memo skips none of the checks
    of the new k/v and of an int cache_seqlens."""
    kw = _kv(paged, s_new=2)
    q, kc, vc = kw["q"], kw["k_cache"], kw["v_cache"]
    seen = []
    fn = _FakeKernel(lambda: seen.append((_bits(kc), _bits(vc))))
    base = launch.dense_signature(q, kc, vc, None, False, (None, None), None, 0.0, 0)
    used = kw["cache_seqlens"] + 2
    csig = launch.cache_signature(base, used, kw.get("page_table"), None)
    launch.CACHE_MEMO[csig] = launch.Launch(
        fn, (2, 2, 4, 64), (2, 4, 2), (0.125, 1 << 30, 1 << 30, 0.0, 2, 1)
    )
    k0, v0 = _bits(kc), _bits(vc)
    for bad, exc in (
        (dict(softmax_scale=float("nan")), UnsupportedConfigError),
        (dict(k=kw["k"].half(), v=kw["v"].half()), UnsupportedConfigError),
        (dict(cache_seqlens=_capacity(kw)), UnsupportedConfigError),
        (dict(causal="True"), TypeError),
    ):
        args = _with(kw, **bad)
        with pytest.raises(exc):
            api.flash_attn_with_kvcache(args.pop("q"), args.pop("k_cache"), args.pop("v_cache"), **args)
        assert fn.calls == 0 and torch.equal(_bits(kc), k0) and torch.equal(_bits(vc), v0)
    args = dict(kw)
    api.flash_attn_with_kvcache(args.pop("q"), args.pop("k_cache"), args.pop("v_cache"), **args)
    assert fn.calls == 1
    k_seen, v_seen = seen[0]
    assert torch.equal(k_seen, _bits(kc)) and torch.equal(v_seen, _bits(vc))  # appended before the launch
    k_new = kw["k"]
    for b, start in enumerate(kw["cache_seqlens"].tolist()):
        for j in range(2):
            pos = start + j
            if paged:
                page, row = int(kw["page_table"][b, pos // 16]), pos % 16
                assert torch.equal(kc[page, row], k_new[b, j])
            else:
                assert torch.equal(kc[b, pos], k_new[b, j])
