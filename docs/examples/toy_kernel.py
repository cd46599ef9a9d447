"""A toy kernel on fa4-core: the causal row log-sum-exp of a score matrix, with pack-GQA.

The worked example of ``docs/kernel-authors.md``. It is the softmax half of attention without the
MMAs, so that every fa4-core building block shows up in a page of code:

* :class:`fa4_core.tile_scheduler.SingleTileScheduler`: grid and the ``(m_block, head, batch)`` of a CTA;
* :class:`fa4_core.seqlen_info.SeqlenInfoQK`: the lengths of this batch (fixed length here; varlen with
  ``cu_seqlens`` is the same call);
* :mod:`fa4_core.pack_gqa`: the ``r`` query heads of one KV head share a tile; a packed row is unpacked
  **arithmetically** into ``(query, head)``;
* :class:`fa4_core.block_info.BlockInfo`: which key blocks a query block visits (causal, bottom-right);
* :func:`fa4_core.mask.col_limits`: which columns of a key block one query sees;
* :class:`fa4_core.softmax.OnlineSoftmax`: running max and sum per row, in exp2, the scale folded in;
  the 4 lanes of a quad share a row, as in an ``mma.sync`` accumulator.

Tensors: ``mS (batch, nheads, seqlen_q, seqlen_k)`` fp32 raw scores, ``mLSE (batch, nheads, seqlen_q)``
fp32 out: ``lse[b, h, i] = log sum_{j visible} exp(scale * S[b, h, i, j])`` (``-inf`` for a row that
sees no key). ``nheads`` is ``nheads_kv * QHEAD_PER_KVHEAD``.

Compile it without a GPU (``python docs/examples/toy_kernel.py``) or run it on one (the test in
``tests/sm120/test_docs_example.py`` does both).
"""

from __future__ import annotations

import math

import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32

from fa4_core.block_info import BlockInfo
from fa4_core.mask import col_limits
from fa4_core.pack_gqa import unpack_row
from fa4_core.seqlen_info import SeqlenInfoQK
from fa4_core.softmax import LOG2_E, OnlineSoftmax
from fa4_core.tile_scheduler import SingleTileScheduler, num_m_blocks


class CausalRowLse:
    """One CTA: ``tile_m`` packed rows of one KV head; 4 threads per row, ``tile_n / 4`` columns each."""

    def __init__(
        self,
        tile_m: int = 32,
        tile_n: int = 64,
        qhead_per_kvhead: int = 1,
        causal: bool = True,
        rescale_threshold: float = 0.0,
        tree_reduce: bool = False,
    ):
        if tile_n % 4:
            raise ValueError(f"tile_n={tile_n} is not supported; supported: a multiple of 4")
        self.tile_m, self.tile_n = tile_m, tile_n
        self.r = qhead_per_kvhead
        self.causal = causal
        self.rescale_threshold = rescale_threshold  # OnlineSoftmax: keep offsets until a max grows past it
        self.tree_reduce = tree_reduce  # OnlineSoftmax: a row's max and sum as pairwise trees
        self.num_threads = 4 * tile_m  # one quad per row

    @cute.jit
    def __call__(self, mS: cute.Tensor, mLSE: cute.Tensor, softmax_scale: Float32):
        batch, nheads, seqlen_q, _ = mS.shape
        nheads_kv = nheads // self.r
        sched = SingleTileScheduler()
        grid = sched.grid(num_m_blocks(seqlen_q, self.tile_m, self.r), nheads_kv, batch)
        self.kernel(mS, mLSE, softmax_scale * LOG2_E).launch(grid=grid, block=[self.num_threads, 1, 1])

    @cute.kernel
    def kernel(self, mS: cute.Tensor, mLSE: cute.Tensor, scale_log2: Float32):
        tidx, _, _ = cute.arch.thread_idx()
        bx, by, bz = cute.arch.block_idx()
        m_block, head_kv, batch_idx, _ = SingleTileScheduler().tile(bx, by, bz)
        num_batch, _, sq, sk = mS.shape
        seq = SeqlenInfoQK.create(batch_idx, num_batch, seqlen_q_static=sq, seqlen_k_static=sk)
        seqlen_q, seqlen_k = seq.seqlen_q, seq.seqlen_k

        # this thread's row: packed row -> (query, head in the group), by arithmetic only
        row = m_block * self.tile_m + tidx // 4
        lane_col = tidx % 4
        q_idx, h_in_group = unpack_row(row, self.r)
        head = head_kv * self.r + h_in_group
        row_ok = q_idx < seqlen_q
        q_read = cutlass.min(q_idx, seqlen_q - 1)  # rows past the end read a valid row, write nothing

        info = BlockInfo(self.tile_m, self.tile_n, is_causal=self.causal, qhead_per_kvhead=self.r)
        n_block_min, n_block_max = info.n_block_range(m_block, seqlen_q, seqlen_k)

        cols = self.tile_n // 4
        acc_S = cute.make_rmem_tensor((1, cols), Float32)  # (rows, cols) of this thread, like acc_mn_view
        row_scale = cute.make_rmem_tensor(1, Float32)
        lse = cute.make_rmem_tensor(1, Float32)
        softmax = OnlineSoftmax(scale_log2, 1, self.rescale_threshold, self.tree_reduce)
        for i in cutlass.range(n_block_max - n_block_min, unroll=1):  # the last block first
            self.one_block(mS, acc_S, row_scale, softmax, n_block_max - 1 - i, batch_idx, head, q_idx,
                           q_read, lane_col, seqlen_q, seqlen_k)  # fmt: skip
        softmax.finalize(row_scale, lse)
        if row_ok and lane_col == 0:
            mLSE[batch_idx, head, q_idx] = lse[0]

    @cute.jit
    def one_block(self, mS, acc_S, row_scale, softmax: OnlineSoftmax, n_block, batch_idx, head, q_idx,
                  q_read, lane_col, seqlen_q, seqlen_k):  # fmt: skip
        """Load this thread's scores of key block ``n_block`` (masked ones as ``-inf``), then update the
        running max and sum. A ``@cute.jit`` helper, so that the Python ``OnlineSoftmax`` object is not
        a value carried by the dynamic loop (the DSL only carries DSL values through ``cutlass.range``)."""
        lo, hi = col_limits(q_idx, n_block, self.tile_n, seqlen_q, seqlen_k, self.causal, False, None, None)
        for j in cutlass.range_constexpr(self.tile_n // 4):
            c = lane_col + 4 * j  # block-local column
            acc_S[0, j] = -Float32.inf
            if c < hi and c >= lo:
                acc_S[0, j] = mS[batch_idx, head, q_read, n_block * self.tile_n + c]
        softmax.online_softmax(acc_S, row_scale, is_first=False)


def fake_args(kernel: CausalRowLse):
    """Fake (symbolic) tensors for ``cute.compile``: no GPU, no torch."""
    b, h, sq, sk = (cute.sym_int() for _ in range(4))
    s = cute.runtime.make_fake_compact_tensor(Float32, (b, h, sq, sk))
    lse = cute.runtime.make_fake_compact_tensor(Float32, (b, h, sq))
    return s, lse, Float32(1.0)


def compile_for(gpu_arch: str | None = "sm_120a", dump_dir: str | None = None, **kw):
    """Compile for ``gpu_arch`` (``None``: the resident GPU). With ``dump_dir`` the PTX is kept there."""
    kernel = CausalRowLse(**kw)
    opts = []
    if gpu_arch:
        opts.append(f"--gpu-arch {gpu_arch}")
    if dump_dir:
        opts.append(f"--keep-ptx --dump-dir {dump_dir}")
    return cute.compile(kernel, *fake_args(kernel), options=" ".join(opts))


def reference_lse(s, scale: float, causal: bool = True):
    """The same in torch (``s`` a torch tensor ``(b, h, sq, sk)``), bottom-right causal."""
    import torch

    sq, sk = s.shape[-2:]
    x = s.double() * scale
    if causal:
        i = torch.arange(sq, device=s.device)[:, None]
        j = torch.arange(sk, device=s.device)[None, :]
        x = x.masked_fill(j > i + (sk - sq), -math.inf)
    return torch.logsumexp(x, dim=-1).float()


_ = Int32  # the index type of the DSL, named in the guide

if __name__ == "__main__":
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        compile_for("sm_120a", tmp, qhead_per_kvhead=3)
        ptx = [f for f in __import__("os").listdir(tmp) if f.endswith(".ptx")]
        print(f"compiled for sm_120a in {time.perf_counter() - t0:.2f} s: {ptx}")
