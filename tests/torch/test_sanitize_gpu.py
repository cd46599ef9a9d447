"""A small representative set of kernel launches for compute-sanitizer (tools/sanitize.sh, nox -s
sanitize): every kernel family once, on shapes with ragged tiles (tile-crossing lengths, GQA ratios
that do not divide the tile, pages smaller than the tile). Each result is also checked against the
reference, so a run under the sanitizer is a correctness run too."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from fa4_core.testing import attention_ref, check_close  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(900)]


def _rand(*shape, rg=False):
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16, requires_grad=rg)


def test_forward_dense_gqa_causal():
    from fa4_torch import flash_attn_func

    q, k, v = _rand(1, 77, 7, 64), _rand(1, 130, 1, 64), _rand(1, 130, 1, 64)
    out, _ = flash_attn_func(q, k, v, causal=True)
    ref, pt = attention_ref(q, k, v, causal=True)[0], attention_ref(q, k, v, causal=True, upcast=False)[0]
    check_close("out", out, ref, pt)


@pytest.mark.parametrize("d, hkv", [(64, 16), (128, 16), (128, 4)], ids=["d64", "d128", "d128-pack4"])
def test_forward_dense_late_v_wait(d, hkv):
    # the non-causal 128-row rows (d64 128x64, d128 128x32 on 4 warps; enough tiles for 132 SMs that
    # the few-tile rule keeps them) over several key blocks and a partial last one: V waited for just
    # before P·V while K(n-1) is in flight (fa4_sm120.configs.FwdCodegen.late_v_wait)
    from fa4_torch import flash_attn_func

    q, k, v = _rand(4, 300, 16, d), _rand(4, 333, hkv, d), _rand(4, 333, hkv, d)
    out, _ = flash_attn_func(q, k, v)
    ref, pt = attention_ref(q, k, v)[0], attention_ref(q, k, v, upcast=False)[0]
    check_close("out", out, ref, pt)


def test_forward_varlen_paged_split():
    from fa4_torch import flash_attn_varlen_func

    q = _rand(45, 4, 128)
    cu = torch.tensor([0, 1, 45], dtype=torch.int32, device="cuda")
    kp, vp = _rand(40, 16, 2, 128), _rand(40, 16, 2, 128)
    table = torch.randperm(40, device="cuda").to(torch.int32).view(2, 20)
    used = torch.tensor([300, 17], dtype=torch.int32, device="cuda")
    kw = dict(cu_seqlens_q=cu, seqused_k=used, page_table=table, causal=True)
    for splits in (1, 3):
        out, lse = flash_attn_varlen_func(
            q, kp, vp, max_seqlen_q=44, num_splits=splits, return_lse=True, **kw
        )
        ref = attention_ref(q, None, None, k_page=kp, v_page=vp, **kw)
        pt = attention_ref(q, None, None, k_page=kp, v_page=vp, upcast=False, **kw)
        check_close("out", out, ref[0], pt[0])
        check_close("lse", lse, ref[1], pt[1])


# d 64: S/dP on 2x4 warps, dK/dV/dQ on 4x2, V's dP fragments in registers; d 128: S/dP on 1x8 warps
# with V in registers; d 256 deterministic: the 2x2-warp tile (dQ from shared dS, 32-row tiles) and the
# ordered dQ additions (counters in global memory)
@pytest.mark.parametrize("d, det", [(64, False), (128, False), (256, True)], ids=["d64", "d128", "d256-det"])
def test_backward(d, det):
    from fa4_torch import flash_attn_func

    q, k, v = _rand(1, 70, 4, d, rg=True), _rand(1, 90, 2, d, rg=True), _rand(1, 90, 2, d, rg=True)
    out, _ = flash_attn_func(q, k, v, causal=True, deterministic=det)
    g = torch.randn_like(out)
    dq, dk, dv = torch.autograd.grad(out, (q, k, v), g)
    qf, kf, vf = (x.detach().float().requires_grad_() for x in (q, k, v))
    ref = attention_ref(qf, kf, vf, causal=True)[0]
    rq, rk, rv = torch.autograd.grad(ref, (qf, kf, vf), g.float())
    ql, kl, vl = (x.detach().clone().requires_grad_() for x in (q, k, v))
    pt = attention_ref(ql, kl, vl, causal=True, upcast=False)[0]
    pq, pk, pv = torch.autograd.grad(pt, (ql, kl, vl), g)
    for name, x, r, p in (("dq", dq, rq, pq), ("dk", dk, rk, pk), ("dv", dv, rv, pv)):
        check_close(name, x, r, p, grad=True)
