"""The fa4_core integer building blocks trace into CuTe DSL kernels, and compute there what they compute on
the host.

One small ``@cute.kernel`` per building block evaluates the fa4_core function on DSL ``Int32`` values read
from an Int32 input tensor (one case per thread) and writes the results to an Int32 output tensor:

* ``block_info``: ``n_block_range`` (whole and split-KV chunk), ``right_mask_start``, ``left_mask_end``
  for causal, local and causal+local BlockInfos with pack-GQA ratios;
* ``pack_gqa``: ``packed_row_offset``, ``unpack_row``, ``query_range_of_rows`` with a ratio that does not
  divide the tile;
* ``seqlen_info``: varlen offset/length from a ``cu_seqlens`` tensor, with ``seqused``, and with batch
  indices past ``num_batch`` (the clamped reads);
* ``tile_scheduler``: the single-tile, longest-first and varlen decodes.

``compile_only`` tests compile each for ``sm_120a`` on the CPU with fake tensors and check that PTX for
``sm_120a`` came out. The ``gpu`` test runs the same kernels on the resident GPU and compares every output
element with the host (Python int) evaluation of the same function: exact equality.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import cutlass
import cutlass.cute as cute
import pytest
from cutlass.cute.runtime import make_fake_compact_tensor

from fa4_core.block_info import BlockInfo
from fa4_core.pack_gqa import packed_row_offset, query_range_of_rows, unpack_row
from fa4_core.seqlen_info import SeqlenInfo
from fa4_core.tile_scheduler import LongestFirstScheduler, SingleTileScheduler, VarlenTileScheduler

THREADS = 128
N_CASES = 256  # two CTAs of 128 threads, one case per thread


def _i32(x):
    return cutlass.Int32(x)


# --------------------------------------------------------------------------------------------------
# per-block evaluators: plain Python, run on Python ints (host) or on DSL Int32 (traced in a kernel);
# ``a`` reads argument k of case i, ``w`` writes output k of case i.
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    name: str
    n_args: int
    n_out: int
    fn: object  # fn(get, put, extra) where get(k) -> value, put(k, value); extra: tensors or lists
    gen: object  # gen(rng) -> list of n_args ints for one case
    extra: object = None  # extra(rng) -> dict of name -> list[int] (e.g. cu_seqlens), or None


def block_info_eval(bi):
    def fn(get, put, extra):
        m_block, sq, sk, left, right, split, nsplit = (get(k) for k in range(7))
        left = left if bi.is_local else None
        right = right if bi.is_local else None
        if bi.is_causal and bi.is_local:
            right = 0
        nmin, nmax = bi.n_block_range(m_block, sq, sk, left, right)
        lo, hi = bi.n_block_range(m_block, sq, sk, left, right, split_idx=split, num_splits=nsplit)
        put(0, nmin)
        put(1, nmax)
        put(2, lo)
        put(3, hi)
        put(4, bi.right_mask_start(m_block, sq, sk, right))
        put(5, bi.left_mask_end(m_block, sq, sk, left))

    def gen(rng):
        sq, sk = rng.randint(1, 3000), rng.randint(1, 3000)
        n_m = -(-sq * bi.qhead_per_kvhead // bi.tile_m)
        nsplit = rng.randint(1, 6)
        return [
            rng.randrange(n_m),
            sq,
            sk,
            rng.randint(0, 1000),
            rng.randint(0, 1000),
            rng.randrange(nsplit),
            nsplit,
        ]

    return fn, gen


def pack_gqa_fn(get, put, extra):
    r, tile_m = 3, 64  # r does not divide tile_m
    row, head_kv, stride_seq, stride_head = (get(k) for k in range(4))
    q, h = unpack_row(row, r)
    put(0, packed_row_offset(row, head_kv, r, stride_seq, stride_head))
    put(1, q)
    put(2, h)
    first, last = query_range_of_rows(row, row + tile_m, r)
    put(3, first)
    put(4, last)


def pack_gqa_gen(rng):
    return [
        rng.randrange(100_000),
        rng.randrange(8),
        rng.choice([1024, 4096, 128]),
        rng.choice([128, 64, 8192]),
    ]


NUM_BATCH = 5


def seqlen_fn(get, put, extra):
    b = get(0)
    cu, used = extra["cu_seqlens"], extra["seqused"]
    v = SeqlenInfo.create(b, NUM_BATCH, cu_seqlens=cu)
    u = SeqlenInfo.create(b, NUM_BATCH, cu_seqlens=cu, seqused=used)
    f = SeqlenInfo.create(b, NUM_BATCH, 777, seqused=None)
    put(0, v.offset)
    put(1, v.seqlen)
    put(2, u.offset)
    put(3, u.seqlen)
    put(4, f.seqlen)


def seqlen_gen(rng):
    return [rng.randrange(NUM_BATCH + 4)]  # indices past num_batch: over-launched CTAs


def seqlen_extra(rng):
    lengths = [rng.randrange(500) for _ in range(NUM_BATCH)]
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return {"cu_seqlens": cu, "seqused": [rng.randint(0, n) for n in lengths]}


def sched_fn(get, put, extra):
    x, y, z, lin, nm, nh, nb, seqlen_q = (get(k) for k in range(8))
    m, h, b, s = SingleTileScheduler(num_splits=3).tile(x, y, z)
    put(0, m)
    put(1, h)
    put(2, b)
    put(3, s)
    m, h, b = LongestFirstScheduler().tile(lin, nm, nh, nb)
    put(4, m)
    put(5, h)
    put(6, b)
    for k, lf in ((7, False), (9, True)):
        m, _, _, valid = VarlenTileScheduler(128, qhead_per_kvhead=4, longest_first=lf).tile(
            x, y, z, seqlen_q
        )
        put(k, m)
        put(k + 1, valid)


def sched_gen(rng):
    nm, nh, nb = rng.randint(1, 40), rng.randint(1, 32), rng.randint(1, 8)
    return [
        rng.randrange(64),
        rng.randrange(96),
        rng.randrange(8),
        rng.randrange(nm * nh * nb),
        nm,
        nh,
        nb,
        rng.randrange(2000),
    ]


def _blocks():
    out = []
    for label, bi in [
        ("block_info_causal_gqa5", BlockInfo(128, 64, is_causal=True, qhead_per_kvhead=5)),
        ("block_info_local", BlockInfo(64, 128, is_local=True)),
        (
            "block_info_causal_local_gqa3",
            BlockInfo(64, 64, is_causal=True, is_local=True, qhead_per_kvhead=3),
        ),
    ]:
        fn, gen = block_info_eval(bi)
        out.append(Block(label, 7, 6, fn, gen))
    out.append(Block("pack_gqa", 4, 5, pack_gqa_fn, pack_gqa_gen))
    out.append(Block("seqlen_info", 1, 5, seqlen_fn, seqlen_gen, seqlen_extra))
    out.append(Block("tile_scheduler", 8, 11, sched_fn, sched_gen))
    return out


BLOCKS = {b.name: b for b in _blocks()}


# --------------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------------
def make_host(block):
    """A @cute.jit host function launching one thread per case of ``block``.

    Tensors: ``args`` (N_CASES * n_args,), ``out`` (N_CASES * n_out,), ``cu`` (NUM_BATCH + 1,),
    ``used`` (NUM_BATCH,), all Int32 (``cu``/``used`` only read by seqlen_info).
    """
    n_args, n_out, fn = block.n_args, block.n_out, block.fn

    def body(args, out, cu, used, i):
        fn(
            lambda k: args[i * n_args + k],
            lambda k, v: out.__setitem__(i * n_out + k, _i32(v)),
            {"cu_seqlens": cu, "seqused": used},
        )

    @cute.kernel
    def kernel(args: cute.Tensor, out: cute.Tensor, cu: cute.Tensor, used: cute.Tensor):
        tid, _, _ = cute.arch.thread_idx()
        bid, _, _ = cute.arch.block_idx()
        body(args, out, cu, used, bid * THREADS + tid)

    @cute.jit
    def host(args: cute.Tensor, out: cute.Tensor, cu: cute.Tensor, used: cute.Tensor):
        kernel(args, out, cu, used).launch(grid=[N_CASES // THREADS, 1, 1], block=[THREADS, 1, 1])

    return host


def host_eval(block, args, extra):
    """The same evaluator on Python ints: the expected output."""
    out = [0] * (N_CASES * block.n_out)
    for i in range(N_CASES):

        def put(k, v, i=i):
            out[i * block.n_out + k] = int(v)

        block.fn(lambda k, i=i: args[i * block.n_args + k], put, extra)
    return out


def make_case(block, seed=0):
    rng = random.Random(seed)
    args = [v for _ in range(N_CASES) for v in block.gen(rng)]
    extra = (
        block.extra(rng) if block.extra else {"cu_seqlens": [0] * (NUM_BATCH + 1), "seqused": [0] * NUM_BATCH}
    )
    return args, extra


# --------------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------------
@pytest.mark.compile_only
@pytest.mark.parametrize("name", list(BLOCKS))
def test_compiles_for_sm120(name, tmp_path):
    block = BLOCKS[name]
    fake = [
        make_fake_compact_tensor(cutlass.Int32, (N_CASES * block.n_args,)),
        make_fake_compact_tensor(cutlass.Int32, (N_CASES * block.n_out,)),
        make_fake_compact_tensor(cutlass.Int32, (NUM_BATCH + 1,)),
        make_fake_compact_tensor(cutlass.Int32, (NUM_BATCH,)),
    ]
    # options rather than CUTE_DSL_ARCH/KEEP/DUMP_DIR: the DSL reads those once, at import
    compiled = cute.compile(
        make_host(block), *fake, options=f"--gpu-arch=sm_120a --keep-ptx --dump-dir={tmp_path}"
    )
    files = list(Path(tmp_path).glob("*.sm_120a.ptx"))
    assert len(files) == 1, f"no sm_120a PTX in {tmp_path}: {list(Path(tmp_path).iterdir())}"
    ptx = files[0].read_text()
    assert compiled.__ptx__ == ptx  # the DSL reads the kept file back (a path only if it is missing)
    assert ".target sm_120a" in ptx and ".entry" in ptx and "st.global" in ptx


def test_host_eval_matches_direct_calls():
    """The evaluator plumbing (flat args/out) computes what direct calls compute (guards the gpu test)."""
    block = BLOCKS["tile_scheduler"]
    args, extra = make_case(block, seed=3)
    out = host_eval(block, args, extra)
    x, y, z, lin, nm, nh, nb, sq = args[:8]
    assert out[:4] == list(SingleTileScheduler(3).tile(x, y, z))
    assert out[4:7] == list(LongestFirstScheduler().tile(lin, nm, nh, nb))
    assert out[8] == int(VarlenTileScheduler(128, 4).is_valid(x, sq))
    block = BLOCKS["seqlen_info"]
    args, extra = make_case(block, seed=3)
    out = host_eval(block, args, extra)
    for i in range(N_CASES):
        b = args[i]
        length = extra["cu_seqlens"][b + 1] - extra["cu_seqlens"][b] if b < NUM_BATCH else 0
        assert out[i * 5 + 1] == length


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(BLOCKS))
def test_gpu_matches_host(name):
    import torch
    from cutlass.cute.runtime import from_dlpack

    block = BLOCKS[name]
    for seed in range(3):
        args, extra = make_case(block, seed)
        want = host_eval(block, args, extra)
        dev = torch.device("cuda")
        t_args = torch.tensor(args, dtype=torch.int32, device=dev)
        t_out = torch.full((N_CASES * block.n_out,), -12345, dtype=torch.int32, device=dev)
        t_cu = torch.tensor(extra["cu_seqlens"], dtype=torch.int32, device=dev)
        t_used = torch.tensor(extra["seqused"], dtype=torch.int32, device=dev)
        make_host(block)(*(from_dlpack(t) for t in (t_args, t_out, t_cu, t_used)))
        torch.cuda.synchronize()
        got = t_out.cpu().tolist()
        bad = [k for k in range(len(want)) if got[k] != want[k]]
        if bad:
            k = bad[0]
            i, j = divmod(k, block.n_out)
            raise AssertionError(
                f"{name} seed {seed}: {len(bad)} mismatches; first case {i} output {j}: gpu {got[k]} != host "
                f"{want[k]} (args {args[i * block.n_args : (i + 1) * block.n_args]})"
            )
