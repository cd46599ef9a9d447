"""The attention reference and the tolerance rule of docs/testing.md (torch-optional).

Importing this module imports neither torch nor numpy. :func:`attention_ref` and :func:`check_close`
accept **torch tensors** (any device, any dtype incl. bf16) or **numpy arrays** (fp16/fp32/fp64; numpy
has no bf16); torch is imported lazily, only when a torch tensor is passed in, so the core tests run
with numpy alone.

Reference semantics (FlashAttention convention)
-----------------------------------------------
Shapes (docs/api.md): ``q (b, sq, hq, d)``, ``k (b, sk, hkv, d)``, ``v (b, sk, hkv, dv)``, out
``(b, sq, hq, dv)``, lse fp32 ``(b, hq, sq)``. Varlen: ``q (total_q, hq, d)`` with ``cu_seqlens_q``
(``b + 1`` prefix sums), out ``(total_q, hq, dv)``, lse ``(hq, total_q)``; likewise K/V with
``cu_seqlens_k``. Paged K/V: ``k_page/v_page (num_pages, page_size, hkv, d)`` and an int
``page_table (b, max_pages)``; sequence ``b``'s key ``j`` lives in page ``page_table[b, j //
page_size]`` at row ``j % page_size``. ``seqused_q/seqused_k (b,)`` cap the used length of each
sequence (for paged K/V, the key length is ``seqused_k[b]`` or else ``max_pages * page_size``).
GQA: query head ``h`` reads KV head ``h // (hq // hkv)``.

For each sequence with ``sq`` and ``sk`` used rows and ``d = sk - sq`` (bottom-right alignment):

1. ``s[i, j] = (q[i] * softmax_scale) . k[j]`` (``softmax_scale`` defaults to ``1/sqrt(headdim)``);
2. ``softcap > 0``: ``s = softcap * tanh(s / softcap)``;
3. query ``i`` sees key ``j`` iff ``i + d - left <= j <= i + d + right`` with ``window_size = (left,
   right)``, ``None`` (or a negative value) meaning unbounded; ``causal`` forces ``right = 0``;
   invisible scores are ``-inf``;
4. ``learnable_sink`` (one fp32 logit per query head): an extra term in the normaliser only,
   ``denominator = sum_j exp(s_j - m) + exp(sink - m)`` with ``m = max(max_j s_j, sink)``;
5. ``p = exp(s - m) / denominator``, ``out = p @ v``, ``lse = m + log(denominator)`` (natural log,
   fp32).

Rows with no visible key (and no sink): ``out = 0``, ``lse = -inf``. With a sink such a row has
``out = 0`` and ``lse = sink`` (the normaliser is ``exp(sink)`` alone). Query rows past
``seqused_q[b]`` are not computed by the kernels: the reference returns 0 / ``-inf`` there and tests
must compare only used rows.

``upcast=True`` (``X_ref``): inputs cast to fp32, everything in fp32, out returned in fp32.
``upcast=False`` (``X_pt``): ``q * scale``, the matmuls, the softcap and the softmax run in the input
dtype (as FlashAttention's ``attention_ref(..., upcast=False)``, whose sink normaliser is fp32 in both
modes), out returned in the input dtype. lse is always reduced in fp32, from the scores of the mode
(so ``lse_pt`` carries the input-dtype rounding of the scores, not a bf16 rounding of lse itself).
"""

from __future__ import annotations

import math

__all__ = ["attention_ref", "check_close", "tolerance"]


# --------------------------------------------------------------------------------------------------
# array backends: the same code for torch tensors and numpy arrays
# --------------------------------------------------------------------------------------------------
def _is_torch(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


class _Torch:
    def __init__(self, like):
        try:  # only reached with a torch tensor in hand; guarded for the layer-import rule
            import torch
        except ImportError as e:  # pragma: no cover
            raise RuntimeError("fa4_core.testing: got a torch tensor but cannot import torch") from e
        self.t = torch
        self.device = like.device
        self.f32 = torch.float32

    def asarray(self, x, dtype=None):
        if _is_torch(x):
            return x.to(device=self.device, dtype=dtype) if dtype is not None else x.to(self.device)
        return self.t.as_tensor(x, device=self.device, dtype=dtype)

    def cast(self, x, dtype):
        return x.to(dtype)

    def einsum(self, eq, *xs):
        return self.t.einsum(eq, *xs)

    def repeat_heads(self, x, g):  # (s, h, d) -> (s, h * g, d), head h -> h // g
        return x.repeat_interleave(g, dim=1)

    def amax(self, x, axis):
        return x.amax(dim=axis, keepdim=True)

    def sum(self, x, axis):
        return x.sum(dim=axis, keepdim=True)

    def where(self, c, a, b):
        if not _is_torch(a):
            a = self.t.as_tensor(a, dtype=b.dtype, device=b.device)
        if not _is_torch(b):
            b = self.t.as_tensor(b, dtype=a.dtype, device=a.device)
        return self.t.where(c, a, b)

    def arange(self, n):
        return self.t.arange(n, device=self.device)

    def zeros(self, shape, dtype):
        return self.t.zeros(shape, dtype=dtype, device=self.device)

    def full(self, shape, value, dtype):
        return self.t.full(shape, value, dtype=dtype, device=self.device)

    def concat(self, xs, axis):
        return self.t.cat(xs, dim=axis)

    def stack(self, xs, axis):
        return self.t.stack(xs, dim=axis)

    def to_int_list(self, x):
        return [int(v) for v in x.detach().cpu().reshape(-1).tolist()]

    def softmax(self, x):
        return self.t.softmax(x, dim=-1)

    def maximum(self, a, b):
        return self.t.maximum(a, b)

    exp = staticmethod(lambda x: x.exp())
    log = staticmethod(lambda x: x.log())
    tanh = staticmethod(lambda x: x.tanh())
    isneginf = staticmethod(lambda x: x.isneginf())


class _Numpy:
    def __init__(self, like):
        import numpy as np

        self.np = np
        self.f32 = np.float32

    def asarray(self, x, dtype=None):
        if _is_torch(x):
            x = x.detach().cpu().numpy()
        return self.np.asarray(x, dtype=dtype)

    def cast(self, x, dtype):
        return x.astype(dtype)

    def einsum(self, eq, *xs):
        return self.np.einsum(eq, *xs).astype(self.np.result_type(*xs))

    def repeat_heads(self, x, g):
        return self.np.repeat(x, g, axis=1)

    def amax(self, x, axis):
        return x.max(axis=axis, keepdims=True)

    def sum(self, x, axis):
        return x.sum(axis=axis, keepdims=True, dtype=x.dtype)

    def where(self, c, a, b):
        dt = b.dtype if hasattr(b, "dtype") else a.dtype
        return self.np.where(c, a, b).astype(dt)

    def arange(self, n):
        return self.np.arange(n)

    def zeros(self, shape, dtype):
        return self.np.zeros(shape, dtype=dtype)

    def full(self, shape, value, dtype):
        return self.np.full(shape, value, dtype=dtype)

    def concat(self, xs, axis):
        return self.np.concatenate(xs, axis=axis)

    def stack(self, xs, axis):
        return self.np.stack(xs, axis=axis)

    def to_int_list(self, x):
        return [int(v) for v in self.np.asarray(x).reshape(-1).tolist()]

    def softmax(self, x):  # in x's dtype
        m = x.max(axis=-1, keepdims=True)
        m = self.np.where(self.np.isneginf(m), self.np.zeros((), x.dtype), m).astype(x.dtype)
        e = self.exp(x - m)
        z = e.sum(axis=-1, keepdims=True, dtype=x.dtype)
        z = self.np.where(z == 0, self.np.ones((), x.dtype), z).astype(x.dtype)  # empty rows: 0 / 1
        return (e / z).astype(x.dtype)

    def maximum(self, a, b):
        return self.np.maximum(a, b)

    def exp(self, x):
        with self.np.errstate(over="ignore", under="ignore"):
            return self.np.exp(x)

    def log(self, x):
        with self.np.errstate(divide="ignore"):
            return self.np.log(x)

    tanh = staticmethod(lambda x: __import__("numpy").tanh(x))
    isneginf = staticmethod(lambda x: __import__("numpy").isneginf(x))


def _backend(x):
    return _Torch(x) if _is_torch(x) else _Numpy(x)


# --------------------------------------------------------------------------------------------------
# reference
# --------------------------------------------------------------------------------------------------
def _bound(w):
    return None if w is None or w < 0 else int(w)


def _attend_one(xp, q, k, v, scale, left, right, softcap, sink):
    """One sequence: q (sq, hq, d), k (sk, hkv, d), v (sk, hkv, dv), all in the compute dtype.

    Returns out (sq, hq, dv) in the compute dtype and lse (hq, sq) in fp32.
    """
    sq, hq = q.shape[0], q.shape[1]
    sk, hkv = k.shape[0], k.shape[1]
    dv = v.shape[2]
    if sq == 0:
        return xp.zeros((0, hq, dv), q.dtype), xp.zeros((hq, 0), xp.f32)
    if sk == 0:
        # nothing to attend to: out 0; lse -inf, or the sink when there is one
        if sink is None:
            lse = xp.full((hq, sq), -math.inf, xp.f32)
        else:
            lse = xp.zeros((hq, sq), xp.f32) + xp.cast(sink, xp.f32)[:, None]
        return xp.zeros((sq, hq, dv), q.dtype), lse
    g = hq // hkv
    k = xp.repeat_heads(k, g)
    v = xp.repeat_heads(v, g)
    s = xp.einsum("ihd,jhd->hij", q * scale, k)  # (hq, sq, sk)
    if softcap:
        s = xp.tanh(s / softcap) * softcap
    i = xp.arange(sq)[:, None]
    j = xp.arange(sk)[None, :]
    diag = sk - sq
    visible = j < sk
    if right is not None:
        visible = visible & (j <= i + diag + right)
    if left is not None:
        visible = visible & (j >= i + diag - left)
    neg_inf = xp.full(s.shape, -math.inf, s.dtype)
    s = xp.where(visible[None], s, neg_inf)
    # lse and the sink normaliser in fp32 from the (compute-dtype) scores
    s32 = xp.cast(s, xp.f32)
    m = xp.amax(s32, 2)  # (hq, sq, 1), -inf on rows with no visible key
    if sink is None:
        m_safe = xp.where(xp.isneginf(m), xp.zeros(m.shape, m.dtype), m)
        denom = xp.sum(xp.exp(s32 - m_safe), 2)
        lse = m_safe + xp.log(denom)  # log(0) = -inf on empty rows
        # softmax in the compute dtype (torch.softmax for torch, as FlashAttention's reference)
        p = xp.softmax(s)
        p = xp.where(xp.isneginf(m), xp.zeros(p.shape, p.dtype), p)  # empty rows: 0, not NaN
    else:
        # FlashAttention's reference does the sink normaliser in fp32 whatever the input dtype
        sink32 = xp.cast(sink, xp.f32)[:, None, None]
        m = xp.maximum(m, sink32)
        e = xp.exp(s32 - m)
        denom = xp.sum(e, 2) + xp.exp(sink32 - m)
        p = e / denom
        lse = m + xp.log(denom)
    out = xp.einsum("hij,jhd->ihd", xp.cast(p, v.dtype), v)
    return out, lse[:, :, 0]


def attention_ref(
    q,
    k,
    v,
    *,
    causal=False,
    window_size=(None, None),
    softcap=0.0,
    learnable_sink=None,
    softmax_scale=None,
    upcast=True,
    cu_seqlens_q=None,
    cu_seqlens_k=None,
    seqused_q=None,
    seqused_k=None,
    k_page=None,
    v_page=None,
    page_table=None,
):
    """Attention reference ``-> (out, lse)``; see the module docstring for shapes and semantics.

    ``k``/``v`` may be None when ``k_page``/``v_page``/``page_table`` are given.
    """
    xp = _backend(q)
    in_dtype = q.dtype
    cdtype = xp.f32 if upcast else in_dtype
    q = xp.cast(xp.asarray(q), cdtype)
    paged = page_table is not None
    if paged:
        if k_page is None or v_page is None:
            raise ValueError("attention_ref: page_table needs k_page and v_page")
        k_all = xp.cast(xp.asarray(k_page), cdtype)
        v_all = xp.cast(xp.asarray(v_page), cdtype)
        pages = xp.asarray(page_table)
    else:
        k_all = xp.cast(xp.asarray(k), cdtype)
        v_all = xp.cast(xp.asarray(v), cdtype)
    d = q.shape[-1]
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    left, right = (_bound(w) for w in window_size)
    if causal:
        right = 0
    sink = None if learnable_sink is None else xp.cast(xp.asarray(learnable_sink), xp.f32)

    varlen_q = cu_seqlens_q is not None
    cu_q = xp.to_int_list(cu_seqlens_q) if varlen_q else None
    cu_k = xp.to_int_list(cu_seqlens_k) if cu_seqlens_k is not None else None
    used_q = xp.to_int_list(seqused_q) if seqused_q is not None else None
    used_k = xp.to_int_list(seqused_k) if seqused_k is not None else None
    if varlen_q:
        batch = len(cu_q) - 1
    elif cu_k is not None:
        batch = len(cu_k) - 1
    else:
        batch = q.shape[0]
    hq = q.shape[-2]
    dv = v_all.shape[-1]

    outs, lses = [], []
    for b in range(batch):
        # queries of sequence b
        qb = q[cu_q[b] : cu_q[b + 1]] if varlen_q else q[b]
        n_rows = qb.shape[0]
        sq = used_q[b] if used_q is not None else n_rows
        # keys of sequence b
        if paged:
            row = pages[b]
            kb = k_all[row].reshape(-1, *k_all.shape[2:])
            vb = v_all[row].reshape(-1, *v_all.shape[2:])
        elif cu_k is not None:
            kb = k_all[cu_k[b] : cu_k[b + 1]]
            vb = v_all[cu_k[b] : cu_k[b + 1]]
        else:
            kb, vb = k_all[b], v_all[b]
        sk = used_k[b] if used_k is not None else kb.shape[0]
        out_b, lse_b = _attend_one(xp, qb[:sq], kb[:sk], vb[:sk], scale, left, right, softcap, sink)
        if sq < n_rows:  # rows past seqused_q: 0 / -inf
            out_b = xp.concat([out_b, xp.zeros((n_rows - sq, hq, dv), out_b.dtype)], 0)
            lse_b = xp.concat([lse_b, xp.full((hq, n_rows - sq), -math.inf, xp.f32)], 1)
        outs.append(out_b)
        lses.append(lse_b)

    if varlen_q:
        out = xp.concat(outs, 0) if outs else xp.zeros((0, hq, dv), cdtype)
        lse = xp.concat(lses, 1) if lses else xp.zeros((hq, 0), xp.f32)
    else:
        out = xp.stack(outs, 0)
        lse = xp.stack(lses, 0)
    return out, lse


# --------------------------------------------------------------------------------------------------
# tolerance rule
# --------------------------------------------------------------------------------------------------
def _rounding_noise(x_ref, dtype):
    """``max|(r + 0.3 - 0.3) - r|`` with ``r = x_ref`` rounded to ``dtype``, evaluated in ``dtype``."""
    if _is_torch(x_ref):
        r = x_ref.detach().to(dtype)
        fin = r.isfinite()
        r = r.masked_fill(~fin, 0)
        noise = ((r + 0.3) - 0.3 - r).abs()
        return float(noise.max().item()) if noise.numel() else 0.0
    import numpy as np

    r = np.asarray(x_ref).astype(dtype)
    r = np.where(np.isfinite(r), r, np.zeros((), dtype)).astype(dtype)
    # numpy >= 2 keeps python scalars in the array's dtype (NEP 50); be explicit anyway
    c = np.asarray(0.3, dtype=dtype)
    noise = np.abs(((r + c) - c) - r)
    return float(noise.max()) if noise.size else 0.0


def _to_f64(x):
    import numpy as np

    if _is_torch(x):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def tolerance(x_ref, x_pt, *, dtype, softcap=False, grad=False) -> float:
    """The bound of docs/testing.md: ``rtol * max|X_pt - X_ref| + atol``.

    ``rtol = 2`` (3 with ``softcap``); ``atol = 2 * max|(X_ref + 0.3 - 0.3) - X_ref|`` plus ``3e-4``
    for gradients with softcap. ``dtype`` is the dtype of the output under test ``X``: the ``+ 0.3 -
    0.3`` round trip is evaluated in that dtype (``X_ref`` first rounded to it), which measures the
    rounding noise of a number of ``X``'s size and precision near 0.3 — about 2 ulp of bf16 at 0.5 —
    exactly as FlashAttention's tests do with their bf16 ``out_ref``. Evaluated in fp32 it would be
    ~1e-8 and the tolerance would be all ``rtol`` term. Positions where ``X_ref`` is infinite are
    left out of both terms.
    """
    import numpy as np

    rtol = 3.0 if softcap else 2.0
    atol = 2.0 * _rounding_noise(x_ref, dtype)
    if grad and softcap:
        atol += 3e-4
    ref = _to_f64(x_ref)
    pt = _to_f64(x_pt)
    fin = np.isfinite(ref)
    with np.errstate(invalid="ignore"):
        diff = np.abs(pt - ref)[fin]
    diff = np.where(np.isnan(diff), np.inf, diff)
    pt_err = float(diff.max()) if diff.size else 0.0
    return rtol * pt_err + atol


def check_close(name, x, x_ref, x_pt, *, softcap=False, grad=False) -> None:
    """Assert ``max|X - X_ref| <= rtol * max|X_pt - X_ref| + atol`` (docs/testing.md, see :func:`tolerance`).

    ``-inf`` (e.g. the lse of a row with no visible key): wherever ``X_ref`` is infinite, ``X`` must
    be the same infinity; the rest is compared numerically. NaN in ``X`` always fails. Raises
    ``AssertionError`` naming the max error, the bound (and its parts) and the worst element's index.
    """
    import numpy as np

    xs, rs = tuple(x.shape), tuple(x_ref.shape)
    if xs != rs or tuple(x_pt.shape) != rs:
        raise AssertionError(f"{name}: shape {xs} vs reference {rs} (pt {tuple(x_pt.shape)})")
    bound = tolerance(x_ref, x_pt, dtype=x.dtype, softcap=softcap, grad=grad)
    a = _to_f64(x)
    ref = _to_f64(x_ref)
    inf = np.isinf(ref)
    bad_inf = inf & (a != ref)
    if bad_inf.any():
        idx = tuple(int(i) for i in np.argwhere(bad_inf)[0])
        raise AssertionError(
            f"{name}: {int(bad_inf.sum())} element(s) where the reference is infinite differ, "
            f"first at index {idx}: X={a[idx]!r}, X_ref={ref[idx]!r}"
        )
    with np.errstate(invalid="ignore"):
        err = np.where(inf, 0.0, np.abs(a - ref))
    err = np.where(np.isnan(err), np.inf, err)
    if err.size == 0:
        return
    flat = int(np.argmax(err))
    idx = tuple(int(i) for i in np.unravel_index(flat, err.shape))
    max_err = float(err[idx])
    if not max_err <= bound:
        ptv = _to_f64(x_pt)
        fin = ~inf
        with np.errstate(invalid="ignore"):
            pt_err = float(np.abs(ptv - ref)[fin].max()) if fin.any() else 0.0
        rtol = 3.0 if softcap else 2.0
        raise AssertionError(
            f"{name}: max|X - X_ref| = {max_err:.6g} at index {idx} (X={a[idx]:.6g}, "
            f"X_ref={ref[idx]:.6g}) exceeds the bound {bound:.6g} = {rtol:g} * max|X_pt - X_ref| "
            f"({pt_err:.6g}) + atol ({bound - rtol * pt_err:.6g})"
        )
