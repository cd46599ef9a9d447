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
    "kv_batch_idx": (BASE, {"kv_batch_idx": True}),
    "split_kv": (BASE, {"split_kv": True}),
    "has_softcap": (BASE, {"has_softcap": True}),
    "has_sink": (BASE, {"has_sink": True}),
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


# ---------------------------------------------------------------- the fast-path key of fa4_torch.api
# api._flash_attn_fwd builds its `_fast` key inline, after the CUDA device check, as
#   (q.dtype, head_dim, head_dim_v, bool(causal), is_local, pack, ratio if pack else 1, flags, q.device)
# with `flags` the nine serving booleans. By reading, it holds neither the softmax scale nor any sequence
# length (nor num_splits beyond `num_splits > 1`). It is not a separate function and it is only reached
# with a CUDA tensor, so it cannot be exercised here without a GPU; a test belongs here once it is
# factored out (e.g. `_fast_key(q, k, v, causal, is_local, pack, flags) -> tuple`). The GPU-free part
# that is testable is what `_compile_for` turns that key into, a FwdConfig, covered above.


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
