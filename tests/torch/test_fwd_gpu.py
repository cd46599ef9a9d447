"""Forward numerics on the GPU against the fp32 reference, with the correctness rule (docs/testing.md) (element-wise).

The grids: the seed grid (the 240 shapes upstream's SM120 path got
wrong or crashed on), the other head dims and 192/128, awkward sequence-length pairs (1 key, 1 query,
tiles that do not divide, seqlen_q > seqlen_k so causal rows see nothing), GQA ratios that do not
divide the tile (7-way 28/4, 5-way 40/8), pack_gqa True/False/None, non-contiguous inputs, windows.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")

from fa4_core.testing import attention_ref, check_close  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Case:
    dtype: str
    batch: int
    seqlen_q: int
    seqlen_k: int
    nheads: int
    nheads_kv: int
    head_dim: int
    head_dim_v: int | None = None
    causal: bool = False
    window: tuple = (None, None)
    pack_gqa: bool | None = None

    def __str__(self):
        dv = self.head_dim_v or self.head_dim
        w = "" if self.window == (None, None) else f"-w{self.window[0]}_{self.window[1]}"
        return (
            f"{self.dtype}-b{self.batch}-q{self.seqlen_q}-k{self.seqlen_k}-h{self.nheads}_{self.nheads_kv}"
            f"-d{self.head_dim}_{dv}{'-causal' if self.causal else ''}{w}-pack{self.pack_gqa}"
        )


# The fp32 reference of the largest shapes holds several GB (scores, probabilities, the low-precision
# copy); on the GPU machine the suite runs under pytest-xdist, and 14 workers doing that at once ran
# out of memory (2026-11-25). Those cases share one xdist group (run them with --dist loadgroup) so
# they run one at a time in a single worker.
_LARGE = 2**27  # batch * nheads * seqlen_q * seqlen_k above which a case is "large"


def _param(c: Case):
    if c.batch * c.nheads * c.seqlen_q * c.seqlen_k >= _LARGE:
        return pytest.param(c, marks=pytest.mark.xdist_group("large-reference"))
    return c


def run_case(c: Case, layout: str = "contiguous"):
    from fa4_torch import flash_attn_func

    torch.manual_seed(zlib.crc32(str(c).encode()))
    dt = DTYPES[c.dtype]
    dv = c.head_dim_v or c.head_dim
    dev = "cuda"
    if layout == "contiguous":
        q = torch.randn(c.batch, c.seqlen_q, c.nheads, c.head_dim, device=dev, dtype=dt)
        k = torch.randn(c.batch, c.seqlen_k, c.nheads_kv, c.head_dim, device=dev, dtype=dt)
        v = torch.randn(c.batch, c.seqlen_k, c.nheads_kv, dv, device=dev, dtype=dt)
    else:  # slices of packed / padded buffers: last dim contiguous, other strides not compact
        assert c.head_dim == dv and c.nheads == c.nheads_kv and c.seqlen_q == c.seqlen_k
        qkv = torch.randn(c.batch, c.seqlen_q, 3, c.nheads, c.head_dim + 8, device=dev, dtype=dt)
        q, k, v = (qkv[:, :, i, :, : c.head_dim] for i in range(3))
        assert not q.is_contiguous()
    out, lse = flash_attn_func(
        q, k, v, causal=c.causal, window_size=c.window, pack_gqa=c.pack_gqa, return_lse=True
    )
    out_ref, lse_ref = attention_ref(q, k, v, causal=c.causal, window_size=c.window)
    out_pt, lse_pt = attention_ref(q, k, v, causal=c.causal, window_size=c.window, upcast=False)
    assert out.shape == out_ref.shape and lse.shape == lse_ref.shape
    check_close("out", out, out_ref, out_pt)
    check_close("lse", lse, lse_ref, lse_pt)
    del out_ref, out_pt, lse_ref, lse_pt
    torch.cuda.empty_cache()


# the seed grid: fp16/bf16 x causal x batch {1,2} x seqlen {128..4096} x heads {16/16,16/8,16/1} x d {64,128}
SEED = [
    Case(dt, b, s, s, 16, hkv, d, causal=causal)
    for dt, causal, b, s, hkv, d in itertools.product(
        DTYPES, (False, True), (1, 2), (128, 512, 1024, 2048, 4096), (16, 8, 1), (64, 128)
    )
]


@pytest.mark.parametrize("case", [_param(c) for c in SEED], ids=str)
def test_seed_grid(case):
    run_case(case)


HEADDIMS = [
    Case(dt, 2, sq, sk, 8, 2, d, dv, causal=causal)
    for dt, (d, dv), causal, (sq, sk) in itertools.product(
        DTYPES,
        ((32, 32), (96, 96), (160, 160), (192, 192), (224, 224), (256, 256), (192, 128)),
        (False, True),
        ((257, 257), (200, 333)),
    )
]


@pytest.mark.parametrize("case", HEADDIMS, ids=str)
def test_head_dims(case):
    run_case(case)


SEQLENS = [
    Case("bf16", 2, sq, sk, 8, hkv, d, causal=causal)
    for (sq, sk), causal, hkv, d in itertools.product(
        ((1, 1), (3, 3), (64, 1), (113, 203), (799, 3), (1, 4096), (4224, 4224), (203, 113), (1000, 64)),
        (False, True),
        (8, 2),
        (64, 128),
    )
]


@pytest.mark.parametrize("case", [_param(c) for c in SEQLENS], ids=str)
def test_seqlen_pairs(case):
    run_case(case)


GQA = [
    Case(dt, 2, sq, sk, hq, hkv, d, causal=causal, pack_gqa=pack)
    for dt, (hq, hkv), pack, causal, (sq, sk), d in itertools.product(
        ("bf16",),
        ((28, 4), (40, 8), (12, 4), (32, 1), (16, 16)),
        (True, False, None),
        (False, True),
        ((333, 333), (77, 500)),
        (128,),
    )
] + [Case("fp16", 1, 1000, 1000, 28, 4, 64, causal=True, pack_gqa=True)]


@pytest.mark.parametrize("case", GQA, ids=str)
def test_gqa_pack(case):
    run_case(case)


WINDOWS = [
    Case("bf16", 2, sq, sk, 8, 2, 128, causal=causal, window=w)
    for w, causal, (sq, sk) in itertools.product(
        ((64, 0), (100, 50), (None, 30), (17, None), (0, 0)),
        (False, True),
        ((512, 512), (300, 700), (700, 300)),
    )
]


@pytest.mark.parametrize("case", WINDOWS, ids=str)
def test_windows(case):
    run_case(case)


# Decode-sized calls (seqlen_q, times the GQA ratio when packed, at most 64) take the 64-row small-m
# rows of the SM120 table (tiles.SMALL_M_ROWS), one per head dim: every such row, at 1 query, at the
# 64-row boundary, packed GQA filling it exactly (8 x 8), causal and not, keys that do not divide.
SMALL_M = [
    Case(dt, b, sq, sk, hq, hkv, d, dv, causal=causal, pack_gqa=pack)
    for (d, dv), dt in zip(
        ((32, 32), (64, 64), (96, 96), (128, 128), (160, 160), (192, 128), (192, 192)),
        itertools.cycle(DTYPES),
    )
    for b, sq, sk, hq, hkv, pack in (
        (3, 1, 1000, 8, 2, None),
        (2, 64, 333, 4, 4, None),
        (2, 8, 700, 16, 2, True),
    )
    for causal in (False, True)
]


@pytest.mark.parametrize("case", SMALL_M, ids=str)
def test_small_m_rows(case):
    run_case(case)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("d", [64, 128])
def test_noncontiguous_inputs(causal, d):
    run_case(Case("bf16", 2, 300, 300, 4, 4, d, causal=causal), layout="strided")


def test_no_visible_key_rows_are_zero_with_neg_inf_lse():
    """seqlen_q > seqlen_k with causal: the first seqlen_q - seqlen_k queries see no key."""
    from fa4_torch import flash_attn_func

    q = torch.randn(1, 300, 4, 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 100, 4, 64, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(1, 100, 4, 64, device="cuda", dtype=torch.bfloat16)
    out, lse = flash_attn_func(q, k, v, causal=True, return_lse=True)
    assert torch.all(out[:, :200] == 0)
    assert torch.all(torch.isneginf(lse[:, :, :200]))
    assert torch.isfinite(out).all() and torch.isfinite(lse[:, :, 200:]).all()


# The online softmax keeps a warp's row offsets until some row's max grows by more than its threshold
# (fa4_sm120.configs.fwd_codegen's rescale_threshold, 2^0.5 for dv >= 128 or 96+ O accumulators a
# thread; the other builds rescale on every new max): with randn inputs large growths are rare after
# the first key blocks, so these cases force them. Keys are scaled up segment by segment towards the start of the sequence (the kernel visits
# key blocks last to first), so each new segment raises the row max by more than 8 in log2 units (the
# rescale path) and the blocks inside a segment do not (the path that skips it); ``rows`` scales only
# some query rows, so one warp mixes rows that grow with rows that do not. Both directions, causal and
# not, each d128 row family (4-warp 32-row, 64-row, decode split), the larger head dims, and d64/d96
# on the exact path.
RESCALE_CASES = [
    Case(dt, 1, sq, sk, 4, hkv, d, dv, causal=causal)
    for dt, (sq, sk), hkv, (d, dv), causal in (
        ("bf16", (1024, 1024), 4, (128, 128), False),
        ("fp16", (1024, 1024), 4, (128, 128), True),
        ("bf16", (1, 3000), 1, (128, 128), False),
        ("bf16", (700, 900), 2, (192, 128), False),
        ("fp16", (600, 600), 4, (256, 256), True),
        ("bf16", (777, 1500), 2, (64, 64), False),
        ("fp16", (1500, 1500), 4, (64, 64), True),
        ("bf16", (300, 1300), 4, (96, 96), False),
    )
]


@pytest.mark.parametrize("growing", ["keys-up", "keys-down", "rows"])
@pytest.mark.parametrize("case", RESCALE_CASES, ids=str)
def test_online_softmax_rescale_paths(case, growing):
    from fa4_torch import flash_attn_func

    c = case
    torch.manual_seed(zlib.crc32(f"{c}-{growing}".encode()))
    dt = DTYPES[c.dtype]
    q = torch.randn(c.batch, c.seqlen_q, c.nheads, c.head_dim, device="cuda", dtype=torch.float32)
    k = torch.randn(c.batch, c.seqlen_k, c.nheads_kv, c.head_dim, device="cuda", dtype=torch.float32)
    v = torch.randn(c.batch, c.seqlen_k, c.nheads_kv, c.head_dim_v, device="cuda", dtype=dt)
    # segment i (of 200 keys, counted from the end) scales the keys by 1 + 2.5 i: the row max of a
    # standard-normal score grows by about 2.5 * 2.5 * log2(e) ~ 9 per segment
    seg = (c.seqlen_k - 1 - torch.arange(c.seqlen_k, device="cuda")) // 200
    if growing == "keys-down":
        seg = seg.max() - seg
    k = k * (1 + 2.5 * seg.float())[None, :, None, None]
    if growing == "rows":  # every other query row sees the growth, the rest see plain keys
        q[:, 1::2] /= 1 + 2.5 * seg.float().max()
    q, k = q.to(dt), k.to(dt)
    out, lse = flash_attn_func(q, k, v, causal=c.causal, return_lse=True)
    out_ref, lse_ref = attention_ref(q, k, v, causal=c.causal)
    out_pt, lse_pt = attention_ref(q, k, v, causal=c.causal, upcast=False)
    check_close("out", out, out_ref, out_pt)
    check_close("lse", lse, lse_ref, lse_pt)


def test_scale_is_runtime_and_honoured():
    from fa4_torch import flash_attn_func
    from fa4_torch.launch import FWD_CACHE

    q, k, v = (torch.randn(1, 200, 4, 64, device="cuda", dtype=torch.float16) for _ in range(3))
    out1, _ = flash_attn_func(q, k, v, softmax_scale=0.3)
    n = len(FWD_CACHE)
    out2, _ = flash_attn_func(q, k, v, softmax_scale=0.05)
    assert len(FWD_CACHE) == n  # the scale never recompiles
    for scale, out in ((0.3, out1), (0.05, out2)):
        ref, _ = attention_ref(q, k, v, softmax_scale=scale)
        pt, _ = attention_ref(q, k, v, softmax_scale=scale, upcast=False)
        check_close("out", out, ref, pt)


# Candidate forward rows of benchmarks/tune_tiles.py that are not table rows, checked here so that a
# table change after a sweep rests on a GPU run of exactly those rows: (d, dv, tile_m, tile_n,
# threads) replacing every SM120 row of (d, dv). d64 on 128x64 over 8 warps is spill-free on sm_120a
# in the feature variants (windows, softcap, causal varlen) where the 4-warp row spills 8-44 B.
# Also: the 64-row small-m tiles for every call of d64 (64x128), d96 and d128 (64x64): spill-free
# in every feature variant (156-255 registers), 2 CTAs per SM on SM120.
# And d128 on the 4-warp 128x32 tile for every call (causal, windows, split-KV and softcap
# too): with the rescale threshold its sm_120a builds stopped spilling (248-254 registers); d96 on 4
# warps of 32 rows (128x64, spill-free plain build at 255 registers), the form that made d128 +7%.
FWD_ALT_ROWS = (
    (128, 128, 128, 32, 128),
    (96, 96, 128, 64, 128),
    (64, 64, 128, 64, 256),
    (64, 64, 64, 128, 128),
    (96, 96, 64, 64, 128),
    (128, 128, 64, 64, 128),
)
FWD_ALT_CASES = [
    (row, Case(dt, b, sq, sk, hq, hkv, row[0], row[1], causal=causal, window=w, pack_gqa=pack))
    for row in FWD_ALT_ROWS
    for dt, b, (sq, sk), (hq, hkv), causal, w, pack in (
        ("bf16", 2, (1000, 1000), (8, 8), False, (None, None), None),
        ("fp16", 1, (777, 1333), (8, 2), True, (None, None), None),
        ("bf16", 2, (333, 77), (28, 4), True, (None, None), True),
        ("bf16", 2, (300, 700), (8, 2), False, (100, 50), None),
        ("bf16", 1, (700, 300), (8, 2), True, (17, None), False),
        ("bf16", 1, (1, 513), (16, 16), False, (None, None), None),
    )
]


@pytest.mark.parametrize(
    "row, c", FWD_ALT_CASES, ids=[f"{'x'.join(map(str, r[2:]))}-{c}" for r, c in FWD_ALT_CASES]
)
def test_fwd_alt_rows(row, c, monkeypatch):
    import dataclasses

    from fa4_sm120 import tiles
    from fa4_torch import launch

    d, dv, tm, tn, th = row
    table = tuple(
        dataclasses.replace(r, tile_m=tm, tile_n=tn, num_threads=th, plain_only=False, decode=False)
        if (r.family, r.head_dim, r.head_dim_v) == ("sm120", d, dv)
        else r
        for r in tiles.FWD_TABLE
    )
    monkeypatch.setattr(tiles, "FWD_TABLE", table)
    launch.reset_caches()
    try:
        picked = tiles.select_fwd_tile("sm120", "bfloat16", d, dv, c.causal, local=c.window != (None, None))
        assert (picked.tile_m, picked.tile_n, picked.num_threads) == (tm, tn, th)
        run_case(c)
    finally:
        monkeypatch.undo()
        launch.reset_caches()
