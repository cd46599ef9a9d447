"""``flash_attn_with_kvcache`` on the GPU: nothing is written into the caches before every argument
has been checked.

Each case is a valid append-and-attend call (``k``/``v`` given) with one argument broken. The call
must raise the typed error naming that argument, and the caches (and, for a view, the buffer under it)
must be bit for bit what they were. Contiguous and paged caches (a permuted page table), 1 and 3 new
rows, with the KV-cache memo cold and warm (a valid call with the same metadata first fills it, so a
broken argument that the memo key does not hold must still be caught). The ``FA4_VALIDATE_DATA=1``
cases hold CUDA index tensors whose values are out of range; without the switch those values are the
caller's guarantee (an out-of-range append index would be a device-side error), so they are not run
without it. The last tests show that the valid call does append, so each case differs from a real
append in its one argument.
"""

from __future__ import annotations

import re

import pytest

torch = pytest.importorskip("torch")

from fa4_core.errors import UnsupportedConfigError  # noqa: E402
from fa4_torch import flash_attn_with_kvcache, launch, validate  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

BF16 = torch.bfloat16
B, HQ, HKV, D = 2, 8, 2, 128
ROWS = 64  # rows per sequence's cache: 64 contiguous, or 4 pages of 16
PAGES, PAGE = 12, 16


def _base(paged: bool, s_new: int) -> dict:
    """The valid call's arguments (random data, so that any write shows)."""
    g = torch.Generator(device="cuda").manual_seed(1234 + s_new + 10 * paged)

    def rnd(*shape):
        return torch.randn(*shape, device="cuda", dtype=BF16, generator=g)

    kw = dict(q=rnd(B, s_new, HQ, D), k=rnd(B, s_new, HKV, D), v=rnd(B, s_new, HKV, D))
    if paged:
        kw["k_cache"], kw["v_cache"] = rnd(PAGES, PAGE, HKV, D), rnd(PAGES, PAGE, HKV, D)
        perm = torch.randperm(PAGES, device="cuda", generator=g)[: B * ROWS // PAGE]
        kw["page_table"] = perm.to(torch.int32).view(B, ROWS // PAGE)
    else:
        kw["k_cache"], kw["v_cache"] = rnd(B, ROWS, HKV, D), rnd(B, ROWS, HKV, D)
    kw["cache_seqlens"] = torch.tensor([5, 40], dtype=torch.int32, device="cuda")
    return kw


def _with(kw: dict, **over) -> dict:
    out = dict(kw)
    out.update(over)
    return out


def _i32(*xs):
    return torch.tensor(xs, dtype=torch.int32, device="cuda")


def _past_end(kw) -> int:
    """The first start whose new rows run past the end of the cache."""
    return ROWS - kw["k"].shape[1] + 1


def _misaligned(kw):
    """k_cache 2 bytes past a 16-byte boundary (a view of a larger buffer)."""
    kc = kw["k_cache"]
    buf = torch.zeros(kc.numel() + 8, device="cuda", dtype=BF16)
    view = buf[1 : 1 + kc.numel()].view(kc.shape)
    view.copy_(kc)
    return _with(kw, k_cache=view)


def _row_stride(kw):
    """k_cache as ``wide[..., :D]`` of a ``D + 4`` wide buffer: rows not 16-byte multiples."""
    kc = kw["k_cache"]
    wide = torch.zeros(*kc.shape[:-1], D + 4, device="cuda", dtype=BF16)
    wide[..., :D].copy_(kc)
    return _with(kw, k_cache=wide[..., :D])


# (label, change(kw) -> kw, exception, regex of the message)
CASES = [
    ("scale-nan", lambda kw: _with(kw, softmax_scale=float("nan")), UnsupportedConfigError, "softmax_scale="),
    ("scale-inf", lambda kw: _with(kw, softmax_scale=float("inf")), UnsupportedConfigError, "softmax_scale="),
    ("scale-zero", lambda kw: _with(kw, softmax_scale=0.0), UnsupportedConfigError, "softmax_scale="),
    ("scale-negative", lambda kw: _with(kw, softmax_scale=-0.1), UnsupportedConfigError, "softmax_scale="),
    ("new-fp16-into-bf16", lambda kw: _with(kw, k=kw["k"].half(), v=kw["v"].half()), UnsupportedConfigError,
     r"k\.dtype="),
    ("new-v-fp16", lambda kw: _with(kw, v=kw["v"].half()), UnsupportedConfigError, r"v\.dtype="),
    ("new-on-cpu", lambda kw: _with(kw, k=kw["k"].cpu(), v=kw["v"].cpu()), UnsupportedConfigError,
     r"k\.device="),
    ("new-v-on-cpu", lambda kw: _with(kw, v=kw["v"].cpu()), UnsupportedConfigError, r"v\.device="),
    ("new-heads", lambda kw: _with(kw, k=kw["k"][:, :, :1], v=kw["v"][:, :, :1]), UnsupportedConfigError,
     re.escape("k/v.shape[2:]=")),
    ("only-k", lambda kw: _with(kw, v=None), UnsupportedConfigError, re.escape("(k, v)=")),
    ("seqlens-int-past-end", lambda kw: _with(kw, cache_seqlens=_past_end(kw)), UnsupportedConfigError,
     r"cache_seqlens=\d+ is not supported"),
    ("seqlens-int-at-capacity", lambda kw: _with(kw, cache_seqlens=ROWS), UnsupportedConfigError,
     rf"cache_seqlens={ROWS} is not supported"),
    ("seqlens-int-negative", lambda kw: _with(kw, cache_seqlens=-1), UnsupportedConfigError, "cache_seqlens=-1"),
    ("seqlens-int64", lambda kw: _with(kw, cache_seqlens=kw["cache_seqlens"].long()), UnsupportedConfigError,
     r"cache_seqlens\.dtype="),
    ("seqlens-on-cpu", lambda kw: _with(kw, cache_seqlens=kw["cache_seqlens"].cpu()), UnsupportedConfigError,
     r"cache_seqlens\.device="),
    ("seqlens-shape", lambda kw: _with(kw, cache_seqlens=kw["cache_seqlens"][:1]), UnsupportedConfigError,
     r"cache_seqlens\.shape="),
    ("causal-str", lambda kw: _with(kw, causal="False"), TypeError, "causal="),
    ("lse-str", lambda kw: _with(kw, return_softmax_lse="True"), TypeError, "return_softmax_lse="),
    ("splits-above-max", lambda kw: _with(kw, num_splits=1000), UnsupportedConfigError, "num_splits="),
    ("splits-negative", lambda kw: _with(kw, num_splits=-1), UnsupportedConfigError, "num_splits="),
    ("window", lambda kw: _with(kw, window_size=(-2, 0)), UnsupportedConfigError, re.escape("window_size[0]=")),
    ("softcap", lambda kw: _with(kw, softcap=-1.0), UnsupportedConfigError, "softcap="),
    ("pack_gqa", lambda kw: _with(kw, pack_gqa="yes"), UnsupportedConfigError, "pack_gqa="),
    ("sink-shape", lambda kw: _with(kw, learnable_sink=torch.zeros(3, device="cuda")), UnsupportedConfigError,
     r"learnable_sink\.shape="),
    ("q-head-dim", lambda kw: _with(kw, q=kw["q"][..., :64]), UnsupportedConfigError,
     re.escape("k_cache.shape[-1] (head_dim)=128")),
    ("q-heads", lambda kw: _with(kw, q=kw["q"][:, :, :3]), UnsupportedConfigError, re.escape("nheads % nheads_kv=")),
    ("q-on-cpu", lambda kw: _with(kw, q=kw["q"].cpu()), UnsupportedConfigError, r"k_cache\.device="),
    ("v-cache-dtype", lambda kw: _with(kw, v_cache=kw["v_cache"].half(), v=kw["v"].half()), UnsupportedConfigError,
     re.escape("(q.dtype, k_cache.dtype, v_cache.dtype)=")),
    ("k-cache-misaligned", _misaligned, UnsupportedConfigError, re.escape("k_cache.data_ptr() % 16=")),
    ("k-cache-row-stride", _row_stride, UnsupportedConfigError, r"k_cache\.stride\([012]\)="),
    ("q-requires-grad", lambda kw: _with(kw, q=kw["q"].clone().requires_grad_(True)), NotImplementedError,
     "gradients"),
]  # fmt: skip
PAGED_CASES = [
    ("table-int64", lambda kw: _with(kw, page_table=kw["page_table"].long()), UnsupportedConfigError,
     r"page_table\.dtype="),
    ("table-batch", lambda kw: _with(kw, page_table=kw["page_table"][:1]), UnsupportedConfigError,
     r"page_table\.shape\[0\]="),
    ("table-with-slots", lambda kw: _with(kw, cache_batch_idx=_i32(0, 1)), UnsupportedConfigError,
     "cache_batch_idx="),
]  # fmt: skip
CONTIGUOUS_CASES = [
    ("cache-batch", lambda kw: _with(kw, k_cache=kw["k_cache"][:1], v_cache=kw["v_cache"][:1]),
     UnsupportedConfigError, re.escape("k_cache.shape[0] (batch)=1")),
    ("slots-shape", lambda kw: _with(kw, cache_batch_idx=_i32(0)), UnsupportedConfigError,
     r"cache_batch_idx\.shape="),
]  # fmt: skip
# with FA4_VALIDATE_DATA=1 only: the values of CUDA index tensors
DATA_CASES = [
    ("data-seqlens-past-end", lambda kw: _with(kw, cache_seqlens=_i32(0, _past_end(kw))), r"cache_seqlens=\[0, \d+\]"),
    ("data-seqlens-negative", lambda kw: _with(kw, cache_seqlens=_i32(-1, 3)), r"cache_seqlens=\[-1, 3\]"),
]  # fmt: skip
PAGED_DATA_CASES = [
    ("data-table-past-pages", lambda kw: _with(kw, page_table=torch.full_like(kw["page_table"], PAGES)),
     rf"page_table=.*\[0, {PAGES}\)"),
    ("data-table-negative", lambda kw: _with(kw, page_table=torch.full_like(kw["page_table"], -1)),
     rf"page_table=.*\[0, {PAGES}\)"),
]  # fmt: skip
CONTIGUOUS_DATA_CASES = [
    ("data-slots-out-of-range", lambda kw: _with(kw, cache_batch_idx=_i32(0, B)), rf"cache_batch_idx=.*\[0, {B}\)"),
]  # fmt: skip


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().view(torch.int16).clone()


def _call(kw: dict):
    kw = dict(kw)
    return flash_attn_with_kvcache(kw.pop("q"), kw.pop("k_cache"), kw.pop("v_cache"), **kw)


def _watched(kw: dict) -> list[torch.Tensor]:
    """The tensors that must not change: both caches and the buffers under cache views."""
    out = []
    for name in ("k_cache", "v_cache"):
        t = kw[name]
        out.append(t)
        if t._base is not None:
            out.append(t._base)
    return out


def _expect_untouched(kw: dict, exc, rx: str) -> None:
    watched = _watched(kw)
    before = [_bits(t) for t in watched]
    with pytest.raises(exc, match=rx):
        _call(kw)
    torch.cuda.synchronize()  # an asynchronous write or device-side error would show here
    for t, b in zip(watched, before, strict=True):
        assert torch.equal(_bits(t), b), "a cache changed although the call raised"


@pytest.fixture
def memo(request):
    """``cold``: the KV-cache memo empty; ``warm``: filled by the valid call (on copies of the
    caches) with the metadata of the broken one's base."""
    launch.CACHE_MEMO.clear()
    yield request.param
    launch.CACHE_MEMO.clear()


def _warm_up(paged: bool, s_new: int) -> None:
    kw = _base(paged, s_new)
    _call(_with(kw, k_cache=kw["k_cache"].clone(), v_cache=kw["v_cache"].clone()))
    torch.cuda.synchronize()
    assert len(launch.CACHE_MEMO) == 1


def _params(paged_cases, contiguous_cases):
    for paged in (False, True):
        for case in CASES + (paged_cases if paged else contiguous_cases):
            for s_new in (1, 3):
                yield pytest.param(
                    paged, s_new, *case[1:], id=f"{'paged' if paged else 'contig'}-{case[0]}-new{s_new}"
                )


@pytest.mark.parametrize("memo", ["cold", "warm"], indirect=True)
@pytest.mark.parametrize("paged, s_new, change, exc, rx", list(_params(PAGED_CASES, CONTIGUOUS_CASES)))
def test_caches_unchanged_after_each_error(memo, paged, s_new, change, exc, rx):
    if memo == "warm":
        _warm_up(paged, s_new)
    _expect_untouched(change(_base(paged, s_new)), exc, rx)


def _data_params():
    for paged in (False, True):
        for case in DATA_CASES + (PAGED_DATA_CASES if paged else CONTIGUOUS_DATA_CASES):
            for s_new in (1, 3):
                yield pytest.param(
                    paged, s_new, *case[1:], id=f"{'paged' if paged else 'contig'}-{case[0]}-new{s_new}"
                )


@pytest.mark.parametrize("paged, s_new, change, rx", list(_data_params()))
def test_caches_unchanged_after_each_data_error(monkeypatch, paged, s_new, change, rx):
    """``FA4_VALIDATE_DATA=1``: out-of-range values in CUDA index tensors are caught before the append."""
    monkeypatch.setattr(validate, "VALIDATE_DATA", True)
    _expect_untouched(change(_base(paged, s_new)), UnsupportedConfigError, rx)


@pytest.mark.parametrize("validate_data", [False, True])
@pytest.mark.parametrize("paged", [False, True])
@pytest.mark.parametrize("s_new", [1, 3])
def test_the_valid_call_appends(monkeypatch, validate_data, paged, s_new):
    """The control: the unbroken call writes the new rows at cache_seqlens (and nothing else), with an
    int cache_seqlens too, and twice in a row (the second time through the memo, without the switch)."""
    monkeypatch.setattr(validate, "VALIDATE_DATA", validate_data)
    launch.CACHE_MEMO.clear()
    for int_lens in (False, True):
        kw = _base(paged, s_new)
        if int_lens:
            kw["cache_seqlens"] = 7
        starts = [7] * B if int_lens else kw["cache_seqlens"].tolist()
        expect_k, expect_v = kw["k_cache"].clone(), kw["v_cache"].clone()
        for b, start in enumerate(starts):
            for j in range(s_new):
                pos = start + j
                if paged:
                    page, row = int(kw["page_table"][b, pos // PAGE]), pos % PAGE
                else:
                    page, row = b, pos
                expect_k[page, row], expect_v[page, row] = kw["k"][b, j], kw["v"][b, j]
        for _ in range(2):
            kc, vc = kw["k_cache"].clone(), kw["v_cache"].clone()
            out = _call(_with(kw, k_cache=kc, v_cache=vc))
            torch.cuda.synchronize()
            assert out.shape == (B, s_new, HQ, D)
            assert torch.equal(_bits(kc), _bits(expect_k)) and torch.equal(_bits(vc), _bits(expect_v))
    launch.CACHE_MEMO.clear()
