"""The compile-cache key (CPU, fake builders, nothing compiles).

``fa4_torch.cache.CompileCache`` is keyed by the full :class:`fa4_sm120.fwd.FwdConfig` (plus the compile
target and the DSL version, as ``fa4_torch.api`` uses it): every field that changes the generated code
must give its own entry, identical configs must share one, and concurrent first calls must build once.
Runtime values (softmax scale, sequence lengths, batch, head counts) must not be part of the config.
"""

from __future__ import annotations

import dataclasses
import inspect
import threading
import time

import pytest

from fa4_sm120.configs import FwdCodegen
from fa4_sm120.fwd import FwdConfig
from fa4_sm120.tiles import FAMILIES, fwd_config
from fa4_torch.cache import CompileCache

BASE = fwd_config("sm120", "float16", 128, 128, causal=False)
BASE_PACKED = dataclasses.replace(BASE, pack_gqa=True, qhead_per_kvhead=4)

# one field changed at a time; values need not pass can_implement (nothing compiles here)
VARIANTS = {
    "num_stages": (BASE, {"num_stages": BASE.num_stages + 1}),
    "tile_m": (BASE, {"tile_m": BASE.tile_m // 2}),
    "tile_n": (BASE, {"tile_n": BASE.tile_n * 2}),
    "num_threads": (BASE, {"num_threads": BASE.num_threads * 2}),
    "q_in_regs": (BASE, {"q_in_regs": not BASE.q_in_regs}),
    "pack_gqa": (BASE, {"pack_gqa": not BASE.pack_gqa}),
    "qhead_per_kvhead": (BASE_PACKED, {"qhead_per_kvhead": 7}),
    "dtype": (BASE, {"dtype": "bfloat16"}),
    "head_dim": (BASE, {"head_dim": 192}),
    "head_dim_v": (BASE, {"head_dim_v": 64}),
    "is_causal": (BASE, {"is_causal": not BASE.is_causal}),
    "is_local": (BASE, {"is_local": not BASE.is_local}),
    "arch": (BASE, {"arch": "sm_86"}),
    # the serving features: each flag changes the generated code
    "varlen_q": (BASE, {"varlen_q": True}),
    "varlen_k": (BASE, {"varlen_k": True}),
    "has_seqused_q": (BASE, {"has_seqused_q": True}),
    "has_seqused_k": (BASE, {"has_seqused_k": True}),
    "paged_kv": (BASE, {"paged_kv": True}),
    "pages_hold_tiles": (BASE, {"paged_kv": True, "pages_hold_tiles": True}),
    "kv_batch_idx": (BASE, {"kv_batch_idx": True}),
    "split_kv": (BASE, {"split_kv": True}),
    "has_softcap": (BASE, {"has_softcap": True}),
    "has_sink": (BASE, {"has_sink": True}),
    "kv_dtype": (BASE, {"kv_dtype": "float8_e4m3fn"}),  # an FP8 K/V cache
    "warp_split_n": (BASE, {"warp_split_n": True}),  # the decode rows' warps along the keys
    "launch_smem": (BASE, {"launch_smem": 200_000}),
    # the code-generation choices (each field of FwdCodegen changes the generated code)
    "codegen": (BASE, {"codegen": FwdCodegen(rescale_threshold=0.0)}),
}


class FakeBuilder:
    """Counts calls; returns a fresh object per call so that entries can be told apart."""

    def __init__(self, delay: float = 0.0):
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.calls += 1
            n = self.calls
        if self.delay:
            time.sleep(self.delay)
        return ("compiled", n)


def test_every_field_is_covered_by_a_variant():
    assert {f.name for f in dataclasses.fields(FwdConfig)} == set(VARIANTS)


@pytest.mark.parametrize("field", list(VARIANTS))
def test_configs_differing_in_one_field_get_two_entries(field):
    base, change = VARIANTS[field]
    other = dataclasses.replace(base, **change)
    assert other != base
    cache, build = CompileCache(), FakeBuilder()
    fa = cache.get_or_compile(base, build)
    fb = cache.get_or_compile(other, build)
    assert len(cache) == 2 and build.calls == 2
    assert fa != fb
    assert cache.get(base) is fa and cache.get(other) is fb
    # and again through the key shape fa4_torch.api uses: (cfg, target, dsl version)
    cache2 = CompileCache()
    cache2.get_or_compile((base, "sm_120", "4.3.0"), build)
    cache2.get_or_compile((other, "sm_120", "4.3.0"), build)
    assert len(cache2) == 2


@pytest.mark.parametrize("pos, value", [(1, "sm_90"), (2, "4.3.1")], ids=["target", "dsl_version"])
def test_target_and_dsl_version_are_part_of_the_api_key(pos, value):
    cache, build = CompileCache(), FakeBuilder()
    key = (BASE, "sm_120", "4.3.0")
    other = list(key)
    other[pos] = value
    cache.get_or_compile(key, build)
    cache.get_or_compile(tuple(other), build)
    assert len(cache) == 2 and build.calls == 2


def test_identical_configs_share_one_entry_and_build_once():
    a = fwd_config("sm120", "bfloat16", 192, 128, causal=True, pack_gqa=True, qhead_per_kvhead=7)
    b = fwd_config("sm120", "bfloat16", 192, 128, causal=True, pack_gqa=True, qhead_per_kvhead=7)
    assert a is not b and a == b and hash(a) == hash(b)
    cache, build = CompileCache(), FakeBuilder()
    fa = cache.get_or_compile(a, build)
    for _ in range(5):
        assert cache.get_or_compile(b, build) is fa
        assert cache.get_or_compile(a, build) is fa
    assert len(cache) == 1 and build.calls == 1
    assert cache.keys() == [a]


def test_sixteen_threads_same_key_build_exactly_once():
    cache, build = CompileCache(), FakeBuilder(delay=0.05)
    barrier = threading.Barrier(16)
    results, errors = [None] * 16, []

    def worker(i):
        try:
            barrier.wait()
            results[i] = cache.get_or_compile(BASE, build)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert build.calls == 1
    assert len(cache) == 1
    assert all(r is results[0] for r in results) and results[0] is not None


def test_threads_over_several_keys_build_each_key_once():
    keys = [dataclasses.replace(BASE, tile_m=m) for m in (16, 32, 64, 128)]
    builders = {k: FakeBuilder(delay=0.01) for k in keys}
    cache = CompileCache()
    barrier = threading.Barrier(32)
    results: dict[int, object] = {}

    def worker(i):
        key = keys[i % len(keys)]
        barrier.wait()
        results[i] = cache.get_or_compile(key, builders[key])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 32
    assert len(cache) == 4
    assert all(b.calls == 1 for b in builders.values())
    for i, r in results.items():
        assert r is cache.get(keys[i % len(keys)])


def test_a_failing_build_caches_nothing_and_releases_the_lock():
    cache = CompileCache()

    def boom():
        raise RuntimeError("compile failed")

    with pytest.raises(RuntimeError, match="compile failed"):
        cache.get_or_compile(BASE, boom)
    assert len(cache) == 0 and cache.get(BASE) is None
    build = FakeBuilder()
    assert cache.get_or_compile(BASE, build) == ("compiled", 1)  # would deadlock if the lock leaked
    assert len(cache) == 1


def test_clear_forgets_everything():
    cache, build = CompileCache(), FakeBuilder()
    for base, change in VARIANTS.values():
        cache.get_or_compile(dataclasses.replace(base, **change), build)
    assert len(cache) == len(VARIANTS)
    cache.clear()
    assert len(cache) == 0 and cache.keys() == []
    cache.get_or_compile(BASE, build)
    assert build.calls == len(VARIANTS) + 1


# ---------------------------------------------------------------- the slow-path key: FwdConfig itself

_RUNTIME_NAMES = {
    "softmax_scale",
    "scale",
    "seqlen",
    "seqlen_q",
    "seqlen_k",
    "max_seqlen_q",
    "max_seqlen_k",
    "batch",
    "batch_size",
    "nheads",
    "nheads_kv",
    "num_heads",
    "window_size",
    "window_left",
    "window_right",
}


def test_fwd_config_holds_no_runtime_values():
    assert not {f.name for f in dataclasses.fields(FwdConfig)} & _RUNTIME_NAMES
    assert not set(inspect.signature(fwd_config).parameters) & _RUNTIME_NAMES


def test_fwd_config_is_frozen_and_hashable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        BASE.num_stages = 2  # type: ignore[misc]
    assert len({BASE, dataclasses.replace(BASE), BASE_PACKED}) == 2


@pytest.mark.parametrize(
    "change",
    [
        {"dtype": "bfloat16"},
        {"causal": True},
        {"local": True},
        {"pack_gqa": True, "qhead_per_kvhead": 4},
        {"head_dim": 192},
        {"head_dim_v": 64},
    ],
    ids=lambda c: "-".join(c),
)
def test_fwd_config_separates_what_the_api_passes(change):
    """Each argument fa4_torch.api passes to fwd_config reaches the key."""
    args = {"family": "sm120", "dtype": "float16", "head_dim": 128, "head_dim_v": 128, "causal": False}
    base = fwd_config(**args)
    assert fwd_config(**{**args, **change}) != base


def test_pack_gqa_ratio_enters_the_key_only_with_pack_gqa():
    a = fwd_config("sm120", "float16", 128, 128, causal=False, pack_gqa=True, qhead_per_kvhead=4)
    b = fwd_config("sm120", "float16", 128, 128, causal=False, pack_gqa=True, qhead_per_kvhead=7)
    assert a != b
    c = fwd_config("sm120", "float16", 128, 128, causal=False, pack_gqa=False, qhead_per_kvhead=4)
    d = fwd_config("sm120", "float16", 128, 128, causal=False, pack_gqa=False, qhead_per_kvhead=7)
    assert c == d and c.qhead_per_kvhead == 1


def test_families_give_distinct_keys():
    cfgs = {f: fwd_config(f, "float16", 128, 128, causal=False) for f in FAMILIES}
    assert len(set(cfgs.values())) == len(FAMILIES)
    assert len({c.arch for c in cfgs.values()}) == len(FAMILIES)


# ---------------------------------------------------------------- the forward key of fa4_torch.plan
# plan.forward_plan turns a validated call (validate.forward_args) into its FwdKey and split count; the
# key selects the compiled function. It must hold neither the softmax scale nor any sequence length,
# batch or head count beyond what changes the code (pack-GQA's ratio, the small-m row, split or not).
def _plan(monkeypatch, q, k, v, **kw):
    import torch

    from fa4_torch import plan, validate

    monkeypatch.setattr(validate, "check_devices", lambda q, named: None)  # CPU tensors as a GPU's
    monkeypatch.setattr(plan, "num_sms", lambda device: 1)  # no few-tile small-m calls
    args = dict(softmax_scale=None, causal=False, window_size=(None, None), pack_gqa=None, softcap=0.0,
                learnable_sink=None, num_splits=1, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                max_seqlen_k=None, seqused_q=None, seqused_k=None, page_table=None, kv_batch_idx=None)  # fmt: skip
    args.update(kw)
    assert all(isinstance(t, torch.Tensor) for t in (q, k, v))
    return plan.forward_plan(validate.forward_args(q, k, v, **args))


def test_the_forward_key_holds_no_runtime_value(monkeypatch):
    import torch

    def qkv(b, sq, sk, h=8, hkv=2):
        return (torch.zeros(b, sq, h, 64, dtype=torch.bfloat16), torch.zeros(b, sk, hkv, 64, dtype=torch.bfloat16),
                torch.zeros(b, sk, hkv, 64, dtype=torch.bfloat16))  # fmt: skip

    base = _plan(monkeypatch, *qkv(2, 500, 700))
    assert base.splits == 1 and base.key.pack_gqa and base.key.qhead_per_kvhead == 4
    assert not base.key.small_m
    for other in (
        _plan(monkeypatch, *qkv(2, 500, 700), softmax_scale=0.3),
        _plan(monkeypatch, *qkv(3, 900, 100)),
        _plan(monkeypatch, *qkv(2, 500, 700, h=16, hkv=4)),
    ):
        assert other.key == base.key and hash(other.key) == hash(base.key)
    # what changes the code changes the key
    assert _plan(monkeypatch, *qkv(2, 500, 700), causal=True).key.causal
    assert _plan(monkeypatch, *qkv(2, 500, 700), window_size=(64, -1)).key.local
    assert _plan(monkeypatch, *qkv(2, 500, 700), softcap=5.0).key.softcap
    assert _plan(monkeypatch, *qkv(2, 500, 700), pack_gqa=False).key.qhead_per_kvhead == 1
    assert _plan(monkeypatch, *qkv(2, 500, 700, h=8, hkv=1)).key.qhead_per_kvhead == 8
    split = _plan(monkeypatch, *qkv(2, 500, 700), num_splits=3)
    assert split.splits == 3 and split.key.split_kv
    assert _plan(monkeypatch, *qkv(1, 1, 700)).key.small_m  # decode: the 64-row row


def test_fp8_page_sizes_that_hold_whole_key_tiles(monkeypatch):
    """An FP8 cache in pages keys its page size's largest power-of-two divisor (at most 128): pages of
    64, 192 or 256 rows hold whole 64-key tiles, pages of 16 or 7 do not; a 16-bit cache keys none."""
    import torch

    from fa4_torch import plan, validate

    def key(page, dtype=torch.float8_e4m3fn, d=128):
        q = torch.zeros(2, 1, 8, d, dtype=torch.bfloat16)
        k = torch.zeros(4, page, 2, d).to(dtype)
        table = torch.arange(4, dtype=torch.int32).view(2, 2)
        seqlens = torch.tensor([page, 2 * page], dtype=torch.int32)
        descale = torch.ones(()) if dtype == torch.float8_e4m3fn else None
        args = dict(softmax_scale=None, causal=True, window_size=(None, None), pack_gqa=None, softcap=0.0,
                    learnable_sink=None, num_splits=1, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                    max_seqlen_k=None, seqused_q=None, seqused_k=seqlens, page_table=table, kv_batch_idx=None,
                    k_descale=descale, v_descale=descale, kv8=dtype == torch.float8_e4m3fn)  # fmt: skip
        monkeypatch.setattr(validate, "check_devices", lambda q, named: None)
        monkeypatch.setattr(plan, "num_sms", lambda device: 1)
        return plan.forward_plan(validate.forward_args(q, k, k, **args)).key

    aligns = {page: key(page).page_align for page in (7, 16, 64, 192, 256, 512)}
    assert aligns == {7: 1, 16: 16, 64: 64, 192: 64, 256: 128, 512: 128}
    assert key(64, torch.bfloat16).page_align == 0
    for page, whole in ((7, False), (16, False), (32, False), (64, True), (192, True), (256, True)):
        k = key(page)
        cfg = plan.fwd_config(k, "sm120")
        assert cfg.tile_n == 64 and cfg.pages_hold_tiles == whole, (page, cfg)
    assert not plan.fwd_config(key(64, torch.bfloat16), "sm120").pages_hold_tiles


def test_the_forward_key_names_the_config_the_table_builds():
    import torch

    from fa4_torch import plan

    key = plan.dense_key(torch.bfloat16, 128, 128, True, 32, 8, small_m=False)
    table = fwd_config("sm120", "bfloat16", 128, 128, causal=True, pack_gqa=True, qhead_per_kvhead=4)
    assert plan.fwd_config(key, "sm120") == table
    assert plan.fwd_config(key._replace(sink=True), "sm120").has_sink


def test_every_backward_config_field_changes_the_disk_key():
    """The backward's key is ``("bwd", BwdConfig, target, version)``: the on-disk name must tell apart
    configs that differ in any one field (tile, warps, every feature flag, launch shared memory)."""
    from fa4_sm120.bwd import BwdConfig
    from fa4_sm120.bwd_tiles import bwd_config
    from fa4_torch.disk_cache import key_text

    base = bwd_config("sm120", "bfloat16", 128, 128, causal=False)
    texts = {key_text(("bwd", base, "sm_90", "4.8.1"))}
    for f in dataclasses.fields(BwdConfig):
        value = getattr(base, f.name)
        if isinstance(value, bool):
            new = not value
        elif isinstance(value, int):
            new = value + 32
        else:
            new = "float16" if f.name == "dtype" else "sm_86"
        texts.add(key_text(("bwd", dataclasses.replace(base, **{f.name: new}), "sm_90", "4.8.1")))
    assert len(texts) == len(dataclasses.fields(BwdConfig)) + 1


def test_plan_reads_the_table_functions_at_each_use(monkeypatch):
    """The tuners (``benchmarks/tune_tiles.py``, ``tune_bwd.py``) and ``--emulate-sm120`` replace
    ``fa4_sm120.tiles.fwd_config`` / ``bwd_tiles.bwd_config``: fa4_torch.plan must see the replacement."""
    import torch

    from fa4_sm120 import bwd_tiles, tiles
    from fa4_torch import plan

    fwd, bwd = tiles.fwd_config, bwd_tiles.bwd_config
    monkeypatch.setattr(
        tiles, "fwd_config", lambda *a, **kw: dataclasses.replace(fwd(*a, **kw), launch_smem=7)
    )
    monkeypatch.setattr(
        bwd_tiles, "bwd_config", lambda *a, **kw: dataclasses.replace(bwd(*a, **kw), launch_smem=9)
    )
    key = plan.dense_key(torch.bfloat16, 128, 128, True, 8, 2, small_m=False)
    assert plan.fwd_config(key, "sm120").launch_smem == 7
    bkey = plan.BwdKey(torch.bfloat16, 128, 128, True, False, False)
    assert plan.bwd_configs(bkey, "sm120", "sm_90")[0].launch_smem == 9
