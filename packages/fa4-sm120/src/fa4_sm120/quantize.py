"""The 8-bit forward's quantizer (bandwidth-bound, no MMA): one kernel per tensor, each reading its
16-bit input once and writing what :mod:`fa4_sm120.fwd_q8` reads. The recipe is
``fa4_torch.quant``'s (whose PyTorch ``quantize`` is the reference these kernels reproduce bit for
bit, given the statistics kernel's K mean and up to the order of the LSE shift's sum); its
per-sequence statistics come first, from one more kernel that reads K and V once.

* Statistics (:class:`QuantizeStatsSm120`, ``role`` ``"stats"``), grid (blocks of ``block`` keys,
  heads_kv, batch), ``mK``, ``mV (batch, seqlen, heads_kv, d)``:

  1. each thread owns one 16-byte chunk (8 channels) of every ``num_threads / (d / 8)``-th key of
     the block, loading ``unroll`` keys' K and V vectors before it adds K's values to fp32 sums and
     takes the maximum of V's ``|v|`` (exact in fp32);
  2. the threads of a chunk combine in a fixed order through shared memory and the CTA writes its
     partials to ``mPart (batch, heads_kv, nblocks, 2 d)`` (sums, then maxima);
  3. after a gpu-scope fence the CTA increments ``mCount[batch, head_kv]`` (zero-initialised); the
     CTA that sees ``nblocks - 1`` (the last) combines the partials in block order and writes ``mMean
     (batch, heads_kv, d) = sum / seqlen`` (IEEE division; 0 for an empty sequence) and ``mVScale =
     vmax * v_inv`` (``v_inv`` the fp32 reciprocal of ``v_max``, as PyTorch's ``vmax / v_max`` on
     the GPU computes it; 1 for an all-zero channel).

  The order of every sum is fixed (the result is deterministic); it differs from ``torch.mean``'s
  only by that order. The maxima are order-independent: the scales are bit for bit
  ``fa4_torch.quant.v_channel_scales``'.

* Q and K (``role`` ``"q"``/``"k"``), grid (blocks of ``block`` rows, heads, batch): each thread
  holds ``block * head_dim / 8 / 128`` 16-byte row vectors in registers; the block's ``amax`` of
  ``|x|`` (K: of ``x - mean``) is reduced over the CTA; ``scale = amax * (1 / max8)`` (1 for an
  all-zero block) is written to ``mScale (batch, heads, nblocks)`` and every value as ``x * (1 /
  scale)`` (the reciprocal IEEE-rounded, as PyTorch's) rounded to nearest even: INT8 through the bits
  of ``y + 1.5 * 2^23`` (clamped to ±127), e4m3 by ``cvt.rn.satfinite``. ``mX8`` is the 8-bit output
  viewed as int32 ``(batch, seqlen, heads, head_dim / 4)``. With ``smooth``, Q also writes ``mShift
  (batch, heads, seqlen) = softmax_scale * q·mean`` (the mean of its KV head) and K subtracts ``mMean
  (batch, heads_kv, head_dim)``.
* V (``role`` ``"v"``), grid (blocks of ``block`` keys of the padded length, heads_kv, batch): V's
  values times the reciprocal of their channel's scale (``mScale (batch, heads_kv, head_dim)``, an
  input here) in e4m3, written transposed into ``mX8`` = ``vt8`` viewed as int32 ``(batch, heads_kv,
  head_dim, seqlen_padded / 4)`` with the keys of every 32-key group in
  ``fa4_torch.quant.pv_key_order``. That order puts keys ``2t, 2t+1, 2t+8, 2t+9`` (+16 for the
  group's second half) in the four bytes ``4t..4t+3`` of a half's 16 output bytes, so a thread that
  loads a half's 16 key rows (16 bytes of 8 channels each) writes 16 bytes per channel: the
  transposition happens in registers. Keys at or past ``seqlen`` are written as zeros (the padding the
  forward reads whole). With ``dtype`` ``"float8_e4m3fn"`` (FlashAttention-3's FP8 inputs) the input
  is e4m3 already: its bytes are moved into that layout as they are (8-byte loads; ``mScale`` unused).

Rows past the sequence are neither read nor written (Q, K, the statistics); a block's scale covers its
rows only. With
``seqused``, sequence ``b`` is the first ``mSeqUsed[b]`` rows of ``mX`` (padded batches: the 8-bit
forward's varlen form), else all of them.
"""

from __future__ import annotations

import cutlass
import cutlass.cute as cute
from cutlass import Float32, Int32

from fa4_core.errors import unsupported
from fa4_sm120.configs import FP8_V_INPUT, QuantizeConfig
from fa4_sm120.convert8 import pack_e4m3x4, pack_s8x4
from fa4_sm120.mma_sync import DTYPES, MmaSyncKernel, fake_stream, fake_tensor

__all__ = ["QuantizeConfig", "Quantize8Sm120", "QuantizeStatsSm120"]

_MAX8 = {"int8": 127.0, "fp8": 448.0}
_VEC = 8  # input elements per vector (16 bytes of 16-bit values, 8 of e4m3)
_INPUT_DTYPES = {**DTYPES, FP8_V_INPUT: cutlass.Float8E4M3FN}


@cute.jit
def _load_vec(mX: cute.Tensor, batch, row, head, chunk, dst: cute.Tensor):
    """The vector ``chunk`` (``_VEC`` elements) of row ``row`` of ``mX (batch, seqlen, heads, d)`` into
    ``dst``."""
    g = cute.local_tile(mX[batch, None, head, None], (1, _VEC), (row, chunk))
    cute.autovec_copy(g, dst)


class Quantize8Sm120(MmaSyncKernel):
    """The quantizer of one tensor: ``Quantize8Sm120.compile(cfg, ...)`` (the module docstring)."""

    def __init__(self, cfg: QuantizeConfig):
        self.can_implement(cfg)
        self.cfg = cfg
        self.dtype = _INPUT_DTYPES[cfg.dtype]  # 16-bit, or e4m3 for V (FlashAttention-3's FP8 inputs)
        self.num_threads = cfg.num_threads
        self.chunks = cfg.head_dim // _VEC  # 16-byte vectors per row

    @staticmethod
    def can_implement(cfg: QuantizeConfig) -> None:
        cfg.check()
        if cfg.role == "stats":
            raise unsupported("role", cfg.role, "'q', 'k' or 'v' (the statistics: QuantizeStatsSm120)")

    @classmethod
    def compile(cls, cfg: QuantizeConfig, **kwargs):
        """The quantizer of ``cfg.role`` compiled (``MmaSyncKernel.compile``'s arguments); the
        statistics (``role="stats"``) are :class:`QuantizeStatsSm120`'s."""
        if cfg.role == "stats":
            return QuantizeStatsSm120.compile(cfg, **kwargs)
        return super().compile(cfg, **kwargs)

    # ------------------------------------------------------------------ host-side setup (traced)
    @cute.jit
    def __call__(
        self,
        mX: cute.Tensor,
        mX8: cute.Tensor,
        mScale: cute.Tensor,
        mMean,
        mShift,
        mSeqUsed,
        softmax_scale: Float32,
        stream,
    ):
        cfg = self.cfg
        if cutlass.const_expr(cfg.role == "v"):
            grid = (mX8.shape[3] * 4 // cfg.block, mX.shape[2], mX.shape[0])
            self.kernel_v(mX, mX8, mScale, mSeqUsed).launch(
                grid=grid, block=[self.num_threads, 1, 1], stream=stream
            )
        else:
            grid = (cute.ceil_div(mX.shape[1], cfg.block), mX.shape[2], mX.shape[0])
            self.kernel_rows(mX, mX8, mScale, mMean, mShift, mSeqUsed, softmax_scale).launch(
                grid=grid, block=[self.num_threads, 1, 1], stream=stream
            )

    @cute.jit
    def seqlen(self, mX: cute.Tensor, mSeqUsed, batch):
        """The rows of sequence ``batch``: ``mSeqUsed[batch]`` with ``seqused``, else all of ``mX``'s."""
        if cutlass.const_expr(self.cfg.seqused):
            return mSeqUsed[batch]
        return mX.shape[1]

    # ------------------------------------------------------------------ Q and K

    @cute.kernel
    def kernel_rows(
        self,
        mX: cute.Tensor,
        mX8: cute.Tensor,
        mScale: cute.Tensor,
        mMean,
        mShift,
        mSeqUsed,
        softmax_scale: Float32,
    ):
        cfg = self.cfg
        tidx, _, _ = cute.arch.thread_idx()
        m_block, head, batch = cute.arch.block_idx()
        seqlen = self.seqlen(mX, mSeqUsed, batch)
        chunk = tidx % self.chunks
        rows_per_pass = self.num_threads // self.chunks
        passes = cfg.block // rows_per_pass
        row0 = m_block * cfg.block + tidx // self.chunks
        smooth = cutlass.const_expr(cfg.smooth)
        mean = cute.make_rmem_tensor(_VEC, Float32)
        mean.fill(0.0)
        if cutlass.const_expr(smooth):
            head_kv = head // (mX.shape[2] // mMean.shape[1]) if cutlass.const_expr(cfg.role == "q") else head
            for j in cutlass.range_constexpr(_VEC):
                mean[j] = mMean[batch, head_kv, chunk * _VEC + j]
        raw = cute.make_rmem_tensor((1, _VEC, passes), self.dtype)
        raw.fill(0.0)
        amax = Float32(0.0)
        for p in cutlass.range_constexpr(passes):
            row = row0 + p * rows_per_pass
            if row < seqlen:
                _load_vec(mX, batch, row, head, chunk, raw[None, None, p])
                for j in cutlass.range_constexpr(_VEC):
                    x = raw[0, j, p].to(Float32)
                    if cutlass.const_expr(smooth and cfg.role == "k"):
                        x = x - mean[j]
                    amax = cute.arch.fmax(amax, cute.arch.fmax(x, -x))
        # the block's amax over the CTA: warps, then their maxima through shared memory
        for i in cutlass.range_constexpr(5):
            amax = cute.arch.fmax(amax, cute.arch.shuffle_sync_bfly(amax, offset=1 << (4 - i)))
        smem = cutlass.memory.SmemAllocator()
        red = smem.allocate_tensor(Float32, cute.make_layout(self.num_threads // 32), byte_alignment=16)
        if tidx % 32 == 0:
            red[tidx // 32] = amax
        cute.arch.barrier()
        for w in cutlass.range_constexpr(self.num_threads // 32):
            amax = cute.arch.fmax(amax, red[w])
        scale = Float32(1.0)
        if amax > Float32(0.0):
            scale = amax * Float32(1.0 / _MAX8[cfg.fmt])  # fp32 reciprocal, as the reference's
        if tidx == 0:
            mScale[batch, head, m_block] = scale
        inv = Float32(1.0) / scale  # IEEE division once; the values are x * inv, as the reference's
        out = cute.make_rmem_tensor((1, 2), Int32)
        for p in cutlass.range_constexpr(passes):
            row = row0 + p * rows_per_pass
            dot = Float32(0.0)
            if row < seqlen:
                y = cute.make_rmem_tensor(_VEC, Float32)
                for j in cutlass.range_constexpr(_VEC):
                    x = raw[0, j, p].to(Float32)
                    if cutlass.const_expr(smooth and cfg.role == "k"):
                        x = x - mean[j]
                    if cutlass.const_expr(smooth and cfg.role == "q"):
                        dot += x * mean[j]
                    y[j] = x * inv
                for h in cutlass.range_constexpr(2):
                    if cutlass.const_expr(cfg.fmt == "int8"):
                        out[0, h] = pack_s8x4(y[4 * h], y[4 * h + 1], y[4 * h + 2], y[4 * h + 3])
                    else:
                        out[0, h] = pack_e4m3x4(y[4 * h], y[4 * h + 1], y[4 * h + 2], y[4 * h + 3])
                g8 = cute.local_tile(mX8[batch, None, head, None], (1, 2), (row, chunk))
                cute.autovec_copy(out, g8)
            if cutlass.const_expr(smooth and cfg.role == "q"):
                # the row's dot product over its chunks' lanes (consecutive lanes of one warp)
                for i in cutlass.range_constexpr(self.chunks.bit_length() - 1):
                    dot = dot + cute.arch.shuffle_sync_bfly(dot, offset=self.chunks >> (i + 1))
                if chunk == 0 and row < seqlen:
                    mShift[batch, head, row] = dot * softmax_scale

    # ------------------------------------------------------------------ V
    @cute.kernel
    def kernel_v(self, mX: cute.Tensor, mX8: cute.Tensor, mScale: cute.Tensor, mSeqUsed):
        cfg = self.cfg
        tidx, _, _ = cute.arch.thread_idx()
        n_block, head_kv, batch = cute.arch.block_idx()
        seqlen = self.seqlen(mX, mSeqUsed, batch)
        units = cfg.block // 16 * self.chunks  # (16-key half of a 32-key group, chunk of 8 channels)
        for i in cutlass.range_constexpr(-(-units // self.num_threads)):
            u = tidx + i * self.num_threads
            if u < units:
                chunk = u % self.chunks
                key0 = n_block * cfg.block + (u // self.chunks) * 16  # the half's first key and position
                inv = cute.make_rmem_tensor(_VEC, Float32)  # 1 / channel scale, as the reference's
                cute.autovec_copy(cute.local_tile(mScale[batch, head_kv, None], (_VEC,), (chunk,)), inv)
                for j in cutlass.range_constexpr(_VEC):
                    inv[j] = Float32(1.0) / inv[j]
                raw = cute.make_rmem_tensor((1, _VEC, 16), self.dtype)
                raw.fill(0.0)
                for r in cutlass.range_constexpr(16):
                    if key0 + r < seqlen:
                        _load_vec(mX, batch, key0 + r, head_kv, chunk, raw[None, None, r])
                out = cute.make_rmem_tensor(4, Int32)
                fp8_in = cutlass.const_expr(cfg.dtype == FP8_V_INPUT)
                raw_b = cute.recast_tensor(raw, cutlass.Uint8) if fp8_in else None
                for j in cutlass.range_constexpr(_VEC):
                    for t in cutlass.range_constexpr(4):  # bytes 4t..4t+3: keys 2t, 2t+1, 2t+8, 2t+9
                        if cutlass.const_expr(fp8_in):  # e4m3 as given: the bytes moved, not converted
                            w = Int32(0)
                            for i, e in enumerate((0, 1, 8, 9)):
                                w = w | (raw_b[0, j, 2 * t + e].to(Int32) << (8 * i))
                            out[t] = w
                        else:
                            y = [raw[0, j, 2 * t + e].to(Float32) * inv[j] for e in (0, 1, 8, 9)]
                            out[t] = pack_e4m3x4(y[0], y[1], y[2], y[3])
                    row = mX8[batch, head_kv, chunk * _VEC + j, None]
                    cute.autovec_copy(out, cute.local_tile(row, (4,), (key0 // 16,)))

    # ------------------------------------------------------------------ compile without tensors
    @staticmethod
    def fake_args(cfg: QuantizeConfig) -> tuple:
        """``(mX, mX8, mScale, mMean, mShift, mSeqUsed, softmax_scale, stream)`` placeholders (``mMean``
        with ``smooth``, ``mShift`` with ``smooth`` for Q, ``mSeqUsed`` with ``seqused``; else None)."""
        dt = _INPUT_DTYPES[cfg.dtype]
        sym = cute.sym_int
        b, s, h, hkv, nb = sym(), sym(), sym(), sym(), sym()
        d = cfg.head_dim
        x = fake_tensor(dt, (b, s, h, d))
        used = fake_tensor(Int32, (b,), divisibility=1) if cfg.seqused else None
        if cfg.role == "v":
            x8 = fake_tensor(Int32, (b, h, d, sym()), divisibility=4)
            scale = fake_tensor(Float32, (b, h, d), divisibility=4)
            return x, x8, scale, None, None, used, Float32(1.0), fake_stream()
        x8 = fake_tensor(Int32, (b, s, h, d // 4), divisibility=2)
        scale = fake_tensor(Float32, (b, h, nb), divisibility=1)
        mean = (
            fake_tensor(Float32, (b, hkv if cfg.role == "q" else h, d), divisibility=4)
            if cfg.smooth
            else None
        )
        shift = fake_tensor(Float32, (b, h, s), divisibility=1) if cfg.smooth and cfg.role == "q" else None
        return x, x8, scale, mean, shift, used, Float32(1.0), fake_stream()


class QuantizeStatsSm120(MmaSyncKernel):
    """K's smoothing mean and V's channel scales in one pass over K and V (``role="stats"``; the
    module docstring)."""

    def __init__(self, cfg: QuantizeConfig):
        super().__init__(cfg)
        self.num_threads = cfg.num_threads
        self.chunks = cfg.head_dim // _VEC  # 16-byte vectors per row

    @staticmethod
    def can_implement(cfg: QuantizeConfig) -> None:
        cfg.check()
        if cfg.role != "stats":
            raise unsupported("role", cfg.role, "'stats' (Q, K, V: Quantize8Sm120)")

    # ------------------------------------------------------------------ host-side setup (traced)
    @cute.jit
    def __call__(
        self,
        mK: cute.Tensor,
        mV: cute.Tensor,
        mPart: cute.Tensor,
        mCount: cute.Tensor,
        mMean: cute.Tensor,
        mVScale: cute.Tensor,
        mSeqUsed,
        v_inv: Float32,
        stream,
    ):
        grid = (mPart.shape[2], mK.shape[2], mK.shape[0])
        self.kernel(mK, mV, mPart, mCount, mMean, mVScale, mSeqUsed, v_inv).launch(
            grid=grid, block=[self.num_threads, 1, 1], stream=stream
        )

    @cute.kernel
    def kernel(
        self,
        mK: cute.Tensor,
        mV: cute.Tensor,
        mPart: cute.Tensor,
        mCount: cute.Tensor,
        mMean: cute.Tensor,
        mVScale: cute.Tensor,
        mSeqUsed,
        v_inv: Float32,
    ):
        cfg = self.cfg
        d = cfg.head_dim
        tidx, _, _ = cute.arch.thread_idx()
        n_block, head_kv, batch = cute.arch.block_idx()
        seqlen = mK.shape[1]
        if cutlass.const_expr(cfg.seqused):
            seqlen = mSeqUsed[batch]
        chunk = tidx % self.chunks
        rows_per_pass = self.num_threads // self.chunks
        group = tidx // self.chunks  # the thread's row within a pass
        ksum = cute.make_rmem_tensor(_VEC, Float32)
        ksum.fill(0.0)
        vmax = cute.make_rmem_tensor(_VEC, Float32)
        vmax.fill(0.0)
        rk = cute.make_rmem_tensor((1, _VEC, cfg.unroll), self.dtype)
        rv = cute.make_rmem_tensor((1, _VEC, cfg.unroll), self.dtype)
        # 1. the CTA's rows: each thread adds up (K) and takes the maximum magnitude of (V) one 8-channel
        # chunk of every rows_per_pass-th row, `unroll` rows' vectors loaded before they are used
        if n_block * cfg.block < seqlen:
            for it in cutlass.range(cfg.block // (rows_per_pass * cfg.unroll), unroll=1):
                rk.fill(0.0)
                rv.fill(0.0)
                for u in cutlass.range_constexpr(cfg.unroll):
                    row = n_block * cfg.block + (it * cfg.unroll + u) * rows_per_pass + group
                    if row < seqlen:
                        _load_vec(mK, batch, row, head_kv, chunk, rk[None, None, u])
                        _load_vec(mV, batch, row, head_kv, chunk, rv[None, None, u])
                for u in cutlass.range_constexpr(cfg.unroll):
                    for j in cutlass.range_constexpr(_VEC):
                        ksum[j] = ksum[j] + rk[0, j, u].to(Float32)
                        x = rv[0, j, u].to(Float32)
                        vmax[j] = cute.arch.fmax(vmax[j], cute.arch.fmax(x, -x))
        # 2. the CTA's partials (batch, head_kv, n_block, [sums | maxima]): the threads of a chunk in a
        # fixed order through shared memory
        smem = cutlass.memory.SmemAllocator()
        red = smem.allocate_tensor(Float32, cute.make_layout((rows_per_pass, 2 * d), stride=(2 * d, 1)), 16)
        last = smem.allocate_tensor(Int32, cute.make_layout(1), 4)
        for j in cutlass.range_constexpr(_VEC):
            red[group, chunk * _VEC + j] = ksum[j]
            red[group, d + chunk * _VEC + j] = vmax[j]
        cute.arch.barrier()
        for i in cutlass.range_constexpr(-(-2 * d // self.num_threads)):
            t = tidx + i * self.num_threads
            if t < 2 * d:
                acc = red[0, t]
                for g in cutlass.range_constexpr(1, rows_per_pass):
                    if t < d:
                        acc = acc + red[g, t]
                    else:
                        acc = cute.arch.fmax(acc, red[g, t])
                mPart[batch, head_kv, n_block, t] = acc
        # 3. the last CTA of the (batch, head_kv) to finish (a counter, made visible by gpu-scope fences)
        # adds the partials up in block order (the result is deterministic) and writes the statistics
        cute.arch.fence_acq_rel_gpu()
        cute.arch.barrier()
        if tidx == 0:
            ptr = mCount.iterator + cute.crd2idx((batch, head_kv), mCount.layout)
            last[0] = cute.arch.atomic_add(ptr, Int32(1), sem="acq_rel", scope="gpu")
        cute.arch.barrier()
        n_blocks = mPart.shape[2]
        if last[0] == n_blocks - 1:
            cute.arch.fence_acq_rel_gpu()
            for i in cutlass.range_constexpr(-(-2 * d // self.num_threads)):
                t = tidx + i * self.num_threads
                if t < 2 * d:
                    base = mPart.iterator + cute.crd2idx((batch, head_kv, 0, t), mPart.layout)
                    step = mPart.layout.stride[2]
                    acc = Float32(0.0)
                    for n in cutlass.range(n_blocks, unroll=4):
                        x = cute.arch.load(base + n * step, Float32, sem="relaxed", scope="gpu")
                        if t < d:
                            acc = acc + x
                        else:
                            acc = cute.arch.fmax(acc, x)
                    if t < d:
                        mean = Float32(0.0)
                        if seqlen > 0:
                            mean = acc / Float32(seqlen)  # IEEE division
                        mMean[batch, head_kv, t] = mean
                    else:
                        scale = Float32(1.0)
                        if acc > Float32(0.0):
                            scale = acc * v_inv  # as PyTorch's vmax / v_max on the GPU
                        mVScale[batch, head_kv, t - d] = scale

    # ------------------------------------------------------------------ compile without tensors
    @staticmethod
    def fake_args(cfg: QuantizeConfig) -> tuple:
        """``(mK, mV, mPart, mCount, mMean, mVScale, mSeqUsed, v_inv, stream)`` placeholders
        (``mSeqUsed`` with ``seqused``, else None)."""
        dt = DTYPES[cfg.dtype]
        sym = cute.sym_int
        b, s, h, nb = sym(), sym(), sym(), sym()
        d = cfg.head_dim
        k = fake_tensor(dt, (b, s, h, d))
        v = fake_tensor(dt, (b, s, h, d))
        part = fake_tensor(Float32, (b, h, nb, 2 * d), divisibility=4)
        count = fake_tensor(Int32, (b, h), divisibility=1)
        mean = fake_tensor(Float32, (b, h, d), divisibility=4)
        vscale = fake_tensor(Float32, (b, h, d), divisibility=4)
        used = fake_tensor(Int32, (b,), divisibility=1) if cfg.seqused else None
        return k, v, part, count, mean, vscale, used, Float32(1.0), fake_stream()
