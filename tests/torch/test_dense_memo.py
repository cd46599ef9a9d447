"""The dense-call memo of ``fa4_torch.launch.forward`` (``launch.DENSE_MEMO``): a repeated dense call (no varlen, paged
K/V, seqused, cache slots or sinks) with the same shapes, strides, dtypes, devices and scalar
arguments skips the validation and launches the memoised kernel; anything the validation reads that
differs (a scalar of another type, a stride, a misaligned base) misses and is validated as before.
The KV-cache memo (``launch.CACHE_MEMO``) does the same for calls with seqused_k, a page table or cache slots, and for
split-KV calls (then the combine runs too); ``launch.KV8_MEMO`` for calls over an FP8 cache, the
descales' metadata in the signature.

CPU: a fake memo entry stands in for a compiled kernel. GPU: the memo filled by a real call, every
repeated call checked against the fp32 reference (docs/testing.md)."""

from __future__ import annotations

import pytest
import torch

from fa4_core.errors import UnsupportedConfigError
from fa4_torch import launch, plan, validate


class FakeKernel:
    def __init__(self):
        self.calls = []

    def __call__(self, *args):
        self.calls.append(args)


@pytest.fixture
def memo():
    launch.DENSE_MEMO.clear()
    yield launch.DENSE_MEMO
    launch.DENSE_MEMO.clear()


@pytest.fixture
def cache_memo():
    launch.CACHE_MEMO.clear()
    yield launch.CACHE_MEMO
    launch.CACHE_MEMO.clear()


def _qkv(b=1, s=128, h=4, hkv=2, d=64, dtype=torch.bfloat16):
    return (
        torch.randn(b, s, h, d, dtype=dtype),
        torch.randn(b, s, hkv, d, dtype=dtype),
        torch.randn(b, s, hkv, d, dtype=dtype),
    )


def _enter(memo, q, k, v, scale=None, causal=False, window=(None, None), pack=None, softcap=0.0, splits=1):
    fn = FakeKernel()
    sig = launch.dense_signature(q, k, v, scale, causal, window, pack, softcap, splits)
    scalars = (0.125, 1 << 30, 0, 0.0, q.shape[1], 1)
    memo[sig] = launch.Launch(fn, (*q.shape[:-1], v.shape[-1]), (q.shape[0], q.shape[2], q.shape[1]), scalars)
    return fn, scalars


def test_a_repeated_dense_call_launches_the_memoised_kernel(memo):
    q, k, v = _qkv()
    fn, scalars = _enter(memo, q, k, v, causal=True)
    q2, k2, v2 = _qkv()  # other tensors, same metadata
    out, lse = launch.forward(q2, k2, v2, None, True, (None, None), None)
    assert len(fn.calls) == 1
    args = fn.calls[0]
    assert args[0] is q2 and args[1] is k2 and args[2] is v2
    assert args[3] is out and args[4] is lse
    assert args[5:11] == scalars and args[11:] == (None,) * 9
    assert out.shape == (1, 128, 4, 64) and out.dtype == torch.bfloat16
    assert lse.shape == (1, 4, 128) and lse.dtype == torch.float32


@pytest.mark.parametrize(
    "kw, arg",
    [
        (dict(softmax_scale=True), "softmax_scale"),  # True == 1 == 1.0 and hashes alike
        (dict(window_size=(True, None)), "window_size"),
        (dict(pack_gqa=1), "pack_gqa"),
        (dict(num_splits=True), "num_splits"),
    ],
)
def test_a_scalar_of_another_type_misses_and_is_validated(memo, kw, arg):
    q, k, v = _qkv()
    base = dict(softmax_scale=1.0, causal=False, window_size=(1, None), pack_gqa=True, num_splits=1)
    fn, _ = _enter(memo, q, k, v, base["softmax_scale"], False, base["window_size"], base["pack_gqa"], 0.0, 1)
    args = dict(base, **kw)
    with pytest.raises(UnsupportedConfigError, match=arg):
        launch.forward(
            q, k, v, args["softmax_scale"], False, args["window_size"], args["pack_gqa"],
            num_splits=args["num_splits"],
        )  # fmt: skip
    assert fn.calls == []


def test_a_misaligned_base_misses_and_is_validated(memo):
    q, k, v = _qkv()
    fn, _ = _enter(memo, q, k, v)
    buf = torch.randn(q.numel() + 8, dtype=q.dtype)
    q_off = buf.as_strided(q.shape, q.stride(), storage_offset=1)  # same shape and strides, base + 2 B
    assert launch.dense_signature(q_off, k, v, None, False, (None, None), None, 0.0, 1) in memo
    with pytest.raises(UnsupportedConfigError, match=r"q\.data_ptr\(\) % 16"):
        launch.forward(q_off, k, v, None, False, (None, None), None)
    assert fn.calls == []


def test_other_strides_or_shapes_miss(memo):
    q, k, v = _qkv()
    fn, _ = _enter(memo, q, k, v)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # same shape, other strides: valid, a miss
    for args in ((qt, k, v), (q[:, :64], k, v)):
        with pytest.raises(UnsupportedConfigError, match=r"q\.device"):  # CPU: the device check
            launch.forward(*args, None, False, (None, None), None)
    assert fn.calls == []


def test_non_dense_calls_and_non_tensors_never_use_it(memo):
    q, k, v = _qkv()
    fn, _ = _enter(memo, q, k, v)
    sink = torch.zeros(4, dtype=torch.float32)
    with pytest.raises(UnsupportedConfigError, match=r"q\.device"):
        launch.forward(q, k, v, None, False, (None, None), None, learnable_sink=sink)
    assert fn.calls == []
    assert launch.dense_signature(q.float().numpy(), k, v, None, False, (None, None), None, 0.0, 1) is None
    assert launch.dense_signature(q, k, v, None, False, ({}, None), None, 0.0, 1) is None  # unhashable


def _decode(b=2, cap=256, hq=8, hkv=2, d=128, pages=None):
    """q (b, 1, hq, d), K/V caches (contiguous, or ``pages`` pages of 16 rows), seqused (b,), table."""
    q = torch.randn(b, 1, hq, d, dtype=torch.bfloat16)
    if pages is None:
        k = torch.randn(b, cap, hkv, d, dtype=torch.bfloat16)
        table = None
    else:
        k = torch.randn(pages, 16, hkv, d, dtype=torch.bfloat16)
        table = torch.randint(0, pages, (b, cap // 16), dtype=torch.int32)
    return q, k, torch.randn_like(k), torch.full((b,), cap // 2, dtype=torch.int32), table


def _enter_cache(cache_memo, q, k, v, used, table, splits):
    fn = FakeKernel()
    base = launch.dense_signature(q, k, v, None, False, (None, None), None, 0.0, 0)
    sig = launch.cache_signature(base, used, table, None)
    scalars = (0.088, 1 << 30, 1 << 30, 0.0, 1, splits)
    cache_memo[sig] = launch.Launch(
        fn, (*q.shape[:-1], v.shape[-1]), (q.shape[0], q.shape[2], q.shape[1]), scalars
    )
    return fn, scalars


@pytest.mark.parametrize("paged", [False, True])
def test_a_repeated_kvcache_call_launches_the_memoised_kernel(cache_memo, paged):
    q, k, v, used, table = _decode(pages=40 if paged else None)
    fn, scalars = _enter_cache(cache_memo, q, k, v, used, table, 1)
    q2, k2, v2, used2, table2 = _decode(pages=40 if paged else None)  # other data, same metadata
    out, lse = launch.forward(
        q2, k2, v2, None, False, (None, None), None, num_splits=0, seqused_k=used2, page_table=table2
    )
    (args,) = fn.calls
    assert args[:5] == (q2, k2, v2, out, lse) and args[5:11] == scalars
    assert args[11:] == (None, None, None, used2, table2, None, None, None, None)
    assert out.shape == (2, 1, 8, 128) and lse.shape == (2, 8, 1)


def test_a_memoised_split_call_combines_the_partials(cache_memo, monkeypatch):
    q, k, v, used, table = _decode()
    fn, scalars = _enter_cache(cache_memo, q, k, v, used, table, 3)
    combined = []
    monkeypatch.setattr(launch, "combine", lambda *a: combined.append(a))
    out, lse = launch.forward(q, k, v, None, False, (None, None), None, num_splits=0, seqused_k=used)
    (args,) = fn.calls
    o_part, lse_part = args[3], args[4]
    assert o_part.shape == (3, *out.shape) and o_part.dtype == torch.float32
    assert lse_part.shape == (3, *lse.shape) and lse_part.dtype == torch.float32
    assert args[5:11] == scalars and args[14] is used
    assert len(combined) == 1 and combined[0][:4] == (o_part, lse_part, out, lse)
    assert combined[0][4:] == (None, False)


def test_kvcache_metadata_that_differs_misses_and_is_validated(cache_memo, monkeypatch):
    q, k, v, used, table = _decode(pages=40)
    fn, _ = _enter_cache(cache_memo, q, k, v, used, table, 1)
    with pytest.raises(UnsupportedConfigError, match=r"page_table\.dtype"):  # int64: another dtype
        launch.forward(q, k, v, None, False, (None, None), None, num_splits=0, seqused_k=used,
                            page_table=table.long())  # fmt: skip
    with pytest.raises(UnsupportedConfigError, match=r"seqused_k\.shape"):  # (3,): another shape
        launch.forward(q, k, v, None, False, (None, None), None, num_splits=0,
                            seqused_k=torch.zeros(3, dtype=torch.int32), page_table=table)  # fmt: skip
    with pytest.raises(UnsupportedConfigError, match="page_table"):  # not a tensor: no signature
        launch.forward(q, k, v, None, False, (None, None), None, num_splits=0, seqused_k=used,
                            page_table=table.tolist())  # fmt: skip
    # FA4_VALIDATE_DATA=1 reads the index data on every call: no memo, the data checks run
    monkeypatch.setattr(validate, "VALIDATE_DATA", True)
    bad = torch.full_like(table, 40)
    with pytest.raises(UnsupportedConfigError, match=r"page_table"):
        launch.forward(q, k, v, None, False, (None, None), None, num_splits=0, seqused_k=used,
                            page_table=bad)  # fmt: skip
    assert fn.calls == []


@pytest.fixture
def kv8_memo():
    launch.KV8_MEMO.clear()
    yield launch.KV8_MEMO
    launch.KV8_MEMO.clear()


def _kv8_call(q, k, v, used, table, kd, vd, before_launch=None):
    return launch.forward_kv8(
        q, k, v, None, False, (None, None), None, 0.0, None, 0, None, None, None, None, None, used, table, None,
        before_launch, validate.KVCACHE_NAMES, kd, vd,
    )  # fmt: skip


@pytest.mark.parametrize("per_head", [False, True])
def test_a_repeated_fp8_kvcache_call_launches_the_memoised_kernel_with_its_descales(kv8_memo, per_head):
    """The FP8 cache's memo (``launch.KV8_MEMO``): a hit launches with this call's descales as the
    kernel's (batch, nheads_kv) views and hands them to ``before_launch`` (the append) first."""
    q, k, v, used, table = _decode(pages=40)
    k8, v8 = k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)
    kd = torch.rand(2, 2) + 0.5 if per_head else torch.tensor(0.5)
    vd = torch.rand(2, 2) + 0.5 if per_head else torch.tensor([0.25])
    fn = FakeKernel()
    base = launch.dense_signature(q, k8, v8, None, False, (None, None), None, 0.0, 0)
    sig = launch.cache_signature(base, used, table, None, kd, vd)
    scalars = (0.088, 1 << 30, 1 << 30, 0.0, 1, 1)
    kv8_memo[sig] = launch.Launch(fn, (2, 1, 8, 128), (2, 8, 1), scalars)
    seen = []
    kd2, vd2 = kd * 2, vd * 2  # other values, same metadata
    out, lse = _kv8_call(q, k8, v8, used, table, kd2, vd2, lambda a, b: seen.append((a, b)))
    (args,) = fn.calls
    assert args[:5] == (q, k8, v8, out, lse) and args[5:11] == scalars
    kv, vv = args[-2], args[-1]
    assert (
        kv.shape == vv.shape == (2, 2)
        and torch.equal(kv, kd2.expand(2, 2))
        and torch.equal(vv, vd2.expand(2, 2))
    )
    assert len(seen) == 1 and seen[0][0] is kv and seen[0][1] is vv


def test_fp8_descale_metadata_that_differs_misses_and_is_validated(kv8_memo):
    q, k, v, used, table = _decode(pages=40)
    k8, v8 = k.to(torch.float8_e4m3fn), v.to(torch.float8_e4m3fn)
    kd = torch.tensor(0.5)
    fn = FakeKernel()
    base = launch.dense_signature(q, k8, v8, None, False, (None, None), None, 0.0, 0)
    kv8_memo[launch.cache_signature(base, used, table, None, kd, kd)] = launch.Launch(
        fn, (2, 1, 8, 128), (2, 8, 1), (0.088, 1 << 30, 1 << 30, 0.0, 1, 1)
    )
    with pytest.raises(UnsupportedConfigError, match=r"k_descale\.dtype"):  # float64: another dtype
        _kv8_call(q, k8, v8, used, table, kd.double(), kd)
    with pytest.raises(UnsupportedConfigError, match=r"v_descale\.shape"):  # (3,): another shape
        _kv8_call(q, k8, v8, used, table, kd, torch.ones(3))
    with pytest.raises(UnsupportedConfigError, match="k_descale"):  # not a tensor: no signature
        _kv8_call(q, k8, v8, used, table, 0.5, kd)
    assert fn.calls == []


@pytest.mark.gpu
@pytest.mark.timeout(300)
def test_memoised_calls_match_the_reference_on_gpu():
    """First call fills the memo, the next calls (other data, same metadata) take it: each output
    against the fp32 reference; then a misaligned q of the same metadata is rejected, not launched."""
    from fa4_core.testing import attention_ref, check_close
    from fa4_torch import flash_attn_func

    launch.DENSE_MEMO.clear()
    g = torch.Generator(device="cuda").manual_seed(7)
    shape = dict(b=2, s=333, h=8, hkv=2, d=128)

    def qkv():
        b, s, h, hkv, d = shape.values()
        return tuple(
            torch.randn(b, s, n, d, device="cuda", dtype=torch.bfloat16, generator=g) for n in (h, hkv, hkv)
        )

    for i in range(3):
        q, k, v = qkv()
        out, lse = flash_attn_func(q, k, v, causal=True, return_lse=True)
        assert len(launch.DENSE_MEMO) == 1, i
        ref, lse_ref = attention_ref(q, k, v, causal=True)
        pt, lse_pt = attention_ref(q, k, v, causal=True, upcast=False)
        check_close("out", out, ref, pt)
        check_close("lse", lse, lse_ref, lse_pt)
    buf = torch.empty(q.numel() + 8, device="cuda", dtype=q.dtype)
    q_off = buf.as_strided(q.shape, q.stride(), storage_offset=1)
    with pytest.raises(UnsupportedConfigError, match=r"q\.data_ptr\(\) % 16"):
        flash_attn_func(q_off, k, v, causal=True)


@pytest.mark.gpu
@pytest.mark.timeout(300)
@pytest.mark.parametrize("paged", [False, True])
def test_memoised_kvcache_calls_match_the_reference_on_gpu(paged):
    """Decode steps through flash_attn_with_kvcache (the heuristic's 32 splits: 2 KV heads, 4096-row
    cache), the first filling the KV-cache memo and the next ones (other data and cache lengths, same
    metadata) taking it, with a new key appended each step: every output against the fp32 reference."""
    from fa4_core.testing import attention_ref, check_close
    from fa4_torch import flash_attn_with_kvcache

    launch.CACHE_MEMO.clear()
    g = torch.Generator(device="cuda").manual_seed(11)
    b, cap, hq, hkv, d = 2, 4096, 8, 2, 128

    def rand(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, generator=g)

    k_full, v_full = rand(b, cap, hkv, d), rand(b, cap, hkv, d)
    if paged:
        pages = b * cap // 64
        perm = torch.randperm(pages, device="cuda", generator=g).to(torch.int32)
        table = perm.view(b, cap // 64)
        k_cache = torch.empty(pages, 64, hkv, d, device="cuda", dtype=torch.bfloat16)
        v_cache = torch.empty_like(k_cache)
        k_cache[perm.long()] = k_full.reshape(pages, 64, hkv, d)
        v_cache[perm.long()] = v_full.reshape(pages, 64, hkv, d)
    else:
        k_cache, v_cache, table = k_full, v_full, None
    assert plan.heuristic_splits(torch.device("cuda"), b, hq, hkv, 1, cap, True, hq // hkv, "bfloat16",
                                 d, d, True) == 32  # fmt: skip
    for step, lens in enumerate(([4000, 1234], [4001, 1], [17, 4095])):
        seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
        q, k_new, v_new = rand(b, 1, hq, d), rand(b, 1, hkv, d), rand(b, 1, hkv, d)
        out, lse = flash_attn_with_kvcache(
            q, k_cache, v_cache, k=k_new, v=v_new, cache_seqlens=seqlens, page_table=table,
            return_softmax_lse=True,
        )  # fmt: skip
        assert len(launch.CACHE_MEMO) == 1, step
        for i, c in enumerate(lens):
            k_full[i, c], v_full[i, c] = k_new[i, 0], v_new[i, 0]
        used = seqlens + 1
        ref = attention_ref(q, k_full, v_full, seqused_k=used)
        pt = attention_ref(q, k_full, v_full, seqused_k=used, upcast=False)
        check_close("out", out, ref[0], pt[0])
        check_close("lse", lse, ref[1], pt[1])
