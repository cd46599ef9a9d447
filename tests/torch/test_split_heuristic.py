"""The split-KV heuristic (``num_splits=0``) on the CPU: the splits fill one wave of resident CTAs.

The device is faked (132 SMs, SM120's or SM90's per-SM limits, the SM120 tile table), so the cases
are the H200 decode sweep of 2026-12-02 (tools/decode_splits.py: 32/8 heads, d128, 2 resident
64-row CTAs per SM) and SM120, where the larger small-m rows fit one CTA per SM.
"""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch")

from fa4_sm120.limits import MAX_SPLITS  # noqa: E402
from fa4_sm120.occupancy import SM90, SM120  # noqa: E402
from fa4_torch import plan  # noqa: E402

DEV = torch.device("cuda", 0)


@pytest.fixture(params=[("sm90", SM90), ("sm120", SM120)], ids=["sm90-facts", "sm120-facts"])
def fake_device(request, monkeypatch):
    _, facts = request.param
    monkeypatch.setattr(plan, "num_sms", lambda device: 132)
    monkeypatch.setattr(plan, "sm_facts", lambda device: facts)
    monkeypatch.setattr(plan, "device_family", lambda device: "sm120")
    plan.reset_caches()
    yield facts
    plan.reset_caches()


def splits(batch, seqlen_k, head_dim=128, hq=32, hkv=8, seqlen_q=1, pack=True, head_dim_v=None):
    ratio = hq // hkv
    small_m = seqlen_q * (ratio if pack else 1) <= 64
    dv = head_dim_v or head_dim
    return plan.heuristic_splits(
        DEV, batch, hq, hkv, seqlen_q, seqlen_k, pack, ratio, "bfloat16", head_dim, dv, small_m
    )


@pytest.mark.parametrize(
    "batch, seqlen_k, want",
    [
        (1, 32768, 32),  # the wave's 264 slots over 8 tiles give 33: 16 of the 512 blocks each fill 32
        (2, 32768, 16),
        (4, 32768, 8),
        (8, 32768, 4),
        (8, 8192, 4),
        (16, 32768, 2),
        (32, 32768, 1),
    ],
)
def test_decode_d128_splits_fill_one_wave(fake_device, batch, seqlen_k, want):
    # the d128 small-m row (64x64, 128 threads, 49,152 B) keeps 2 CTAs per SM on both: 264 slots, and
    # the tiles are batch x 8 KV heads (4 packed query heads in one 64-row tile)
    assert splits(batch, seqlen_k) == want


def test_larger_head_dims_follow_their_occupancy(fake_device):
    # d192 small-m (73,728 B): one CTA per SM on SM120 (132 slots), two on SM90 (264)
    got = splits(8, 32768, head_dim=192)
    assert got == (2 if fake_device is SM120 else 4)


def test_short_key_ranges_and_full_waves_do_not_split(fake_device):
    assert splits(1, 255) == 1  # decode: at least 128 keys per split
    assert splits(1, 256) == 2
    assert splits(1, 1023) == 6  # 7 by keys; 3 of the 16 blocks each fill 6
    assert splits(1, 2048) == 16
    assert splits(8, 1024) == 4  # 64 tiles: the wave's 264 slots
    # prefill-size calls: at least 512 keys per split (512 x 512 ran at 74 TFLOP/s unsplit, 54 with 2)
    assert splits(1, 1023, seqlen_q=128, hq=2, hkv=2, pack=False) == 1
    assert splits(1, 1024, seqlen_q=128, hq=2, hkv=2, pack=False) == 2
    assert splits(1, 16384) == 32  # the wave's 264 slots over 8 tiles: 33, of 8 blocks each 32
    assert splits(17, 32768) == 1  # 136 tiles: more than half a wave
    assert splits(1, 4096, seqlen_q=4096, hq=16, hkv=16, pack=False) == 1  # prefill


def test_splits_fill_one_wave_at_most_with_enough_keys_and_none_empty(fake_device):
    grid = itertools.product(
        (1, 3, 8, 40), (1, 4, 64, 200, 1000), (64, 1000, 8192, 100_000), (64, 128, 256), (16, 32), (1, 8)
    )
    for batch, seqlen_q, seqlen_k, head_dim, hq, hkv in grid:
        s = splits(batch, seqlen_k, head_dim=head_dim, hq=hq, hkv=hkv, seqlen_q=seqlen_q)
        small_m = seqlen_q * (hq // hkv) <= 64
        tm, tn, slots = plan.split_wave(DEV, "bfloat16", head_dim, head_dim, small_m)
        tiles = -(-seqlen_q * (hq // hkv) // tm) * hkv * batch
        case = (batch, seqlen_q, seqlen_k, head_dim, hq, hkv, s)
        assert 1 <= s <= MAX_SPLITS, case
        if s > 1:
            assert s * tiles <= slots, case  # one wave
            assert s * (128 if small_m else 512) <= seqlen_k, case  # keys per split
            blocks = -(-seqlen_k // tn)
            assert (s - 1) * -(-blocks // s) < blocks, case  # the last split has a key block
            assert -(-blocks // (s - 1)) > -(-blocks // s), case  # one split fewer would be longer


def test_sm_facts_from_the_cuda_properties(monkeypatch):
    """``plan.sm_facts`` reads the per-SM limits from the CUDA properties (H200's here) and falls back to
    SM120's for each property that a torch build does not expose."""
    import types

    h200 = types.SimpleNamespace(
        multi_processor_count=132,
        shared_memory_per_multiprocessor=233_472,
        shared_memory_per_block_optin=232_448,
        regs_per_multiprocessor=65_536,
        max_threads_per_multi_processor=2048,
    )
    bare = types.SimpleNamespace(multi_processor_count=170)
    for props, want in (
        (h200, (233_472, 232_448, 65_536, 64)),
        (bare, (SM120.smem_per_sm, SM120.smem_per_sm - SM120.reserved_per_cta, SM120.regs_per_sm, 48)),
    ):
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda idx, p=props: p)
        plan.reset_caches()
        f = plan.sm_facts(DEV)
        assert (f.smem_per_sm, f.smem_per_cta_max, f.regs_per_sm, f.max_warps) == want
    plan.reset_caches()
