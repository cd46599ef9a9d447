"""``--emulate-sm120`` of the benchmarks (benchmarks/_common.py) on the CPU: fa4's configs come back with
the launch shared memory that gives the H100/H200 SM120's CTAs per SM, and an upstream-style kernel
class (shared memory sized by ``SharedStorage.size_in_bytes()``) reports the padded size while its
struct keeps its own layout.

No ``from __future__ import annotations`` here: ``cute.struct`` reads its fields' annotations as
objects."""

import os
import shutil

import cutlass
import cutlass.cute as cute
import pytest

from fa4_sm120 import bwd_tiles, tiles
from fa4_sm120.occupancy import SM90, ctas_per_sm

BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks")


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(BENCH)
    # emulate_sm120 rebinds the table functions: put the originals back after the test
    monkeypatch.setattr(tiles, "fwd_config", tiles.fwd_config)
    monkeypatch.setattr(bwd_tiles, "bwd_config", bwd_tiles.bwd_config)
    import _common

    return _common


class _UpstreamLike:
    """The shape of upstream's SM80-family classes: a struct factory and a thread count."""

    num_threads = 128

    def __init__(self, elems: int):
        self.elems = elems

    def _get_shared_storage_cls(self):
        mem = cute.struct.Align[cute.struct.MemRange[cutlass.BFloat16, self.elems], 1024]

        @cute.struct
        class SharedStorage:
            sQ: mem

        return SharedStorage


@pytest.mark.parametrize("kb, sm120_ctas", [(80, 1), (48, 2)])
def test_upstream_storage_reports_the_sm120_launch_size(common, kb, sm120_ctas):
    cls = type("Kernel", (_UpstreamLike,), {})
    log = {}
    common.pad_upstream_storage(cls, 255, log)
    storage = cls(kb * 512)._get_shared_storage_cls()
    size = kb * 1024
    assert storage.__sizeof__() == size  # what the kernel allocates is unchanged
    launch = storage.size_in_bytes()
    assert launch >= size
    # the host (228 KB per SM) now runs exactly the CTAs per SM that SM120 runs
    assert ctas_per_sm(size, 255, 128) == sm120_ctas
    assert ctas_per_sm(launch, 255, 128, SM90) == sm120_ctas
    (entry,) = log.values()
    assert entry["sm120_ctas_per_sm"] == entry["host_ctas_per_sm"] == sm120_ctas


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="needs ptxas (CUDA 13) for sm_120a registers")
def test_fa4_configs_launch_at_sm120_occupancy(common):
    log = common.emulate_sm120()
    fwd = tiles.fwd_config("sm120", "bfloat16", 128, 128, causal=False)
    bwd = bwd_tiles.bwd_config("sm120", "bfloat16", 128, 128, causal=False)
    for cfg in (fwd, bwd):
        assert cfg.launch_smem >= cfg.smem_bytes
    assert len(log) == 2
    for entry in log.values():
        assert 1 <= entry["host_ctas_per_sm"] == entry["sm120_ctas_per_sm"]
