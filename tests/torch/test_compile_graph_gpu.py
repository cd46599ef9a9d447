"""fa4 inside ``torch.compile(fullgraph=True)`` (through ``torch.ops.fa4.fwd``) and inside CUDA
graphs: results must equal the eager call bit for bit (same kernels, same inputs)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]


def _rand(*shape):
    return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)


def test_torch_compile_fullgraph_dense():
    from fa4_torch import flash_attn_func

    def f(q, k, v):
        out, lse = flash_attn_func(q, k, v, causal=True, return_lse=True)
        return out.float() * 2, lse + 1

    q, k, v = _rand(2, 300, 8, 128), _rand(2, 300, 2, 128), _rand(2, 300, 2, 128)
    eager = f(q, k, v)
    compiled = torch.compile(f, fullgraph=True)
    got = compiled(q, k, v)
    assert torch.equal(got[0], eager[0]) and torch.equal(got[1], eager[1])
    q2 = _rand(2, 300, 8, 128)  # a second call reuses the graph
    assert torch.equal(compiled(q2, k, v)[0], f(q2, k, v)[0])


def test_torch_compile_fullgraph_varlen_and_kvcache():
    from fa4_torch import flash_attn_varlen_func, flash_attn_with_kvcache

    lens = [5, 100, 37]
    cu = torch.tensor([0, 5, 105, 142], dtype=torch.int32, device="cuda")
    q, k, v = _rand(142, 4, 64), _rand(142, 4, 64), _rand(142, 4, 64)

    def f(q, k, v, cu):
        return flash_attn_varlen_func(
            q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max(lens), causal=True
        )[0]

    assert torch.equal(torch.compile(f, fullgraph=True)(q, k, v, cu), f(q, k, v, cu))

    kc, vc = _rand(2, 256, 2, 128), _rand(2, 256, 2, 128)
    seqlens = torch.tensor([10, 200], dtype=torch.int32, device="cuda")
    qd = _rand(2, 1, 8, 128)

    def g(qd, kc, vc, seqlens):
        return flash_attn_with_kvcache(qd, kc, vc, cache_seqlens=seqlens, num_splits=3)

    assert torch.equal(torch.compile(g, fullgraph=True)(qd, kc, vc, seqlens), g(qd, kc, vc, seqlens))


@pytest.mark.parametrize("num_splits", [1, 3])
def test_cuda_graph_capture_and_replay(num_splits):
    from fa4_torch import flash_attn_func

    q, k, v = _rand(2, 1, 16, 128), _rand(2, 2048, 4, 128), _rand(2, 2048, 4, 128)
    out_eager, _ = flash_attn_func(q, k, v, num_splits=num_splits)  # compiles outside the capture
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out_graph, lse_graph = flash_attn_func(q, k, v, num_splits=num_splits, return_lse=True)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out_graph, out_eager)
    q.copy_(_rand(2, 1, 16, 128))  # new inputs in the captured buffers
    k.copy_(_rand(2, 2048, 4, 128))
    g.replay()
    torch.cuda.synchronize()
    ref, ref_lse = flash_attn_func(q, k, v, num_splits=num_splits, return_lse=True)
    assert torch.equal(out_graph, ref) and torch.equal(lse_graph, ref_lse)


def test_cuda_graph_kvcache_decode_step():
    from fa4_torch import flash_attn_with_kvcache

    kc, vc = _rand(4, 1024, 2, 128), _rand(4, 1024, 2, 128)
    seqlens = torch.tensor([1, 500, 1000, 7], dtype=torch.int32, device="cuda")
    q, kn, vn = _rand(4, 1, 8, 128), _rand(4, 1, 2, 128), _rand(4, 1, 2, 128)
    kc0, vc0 = kc.clone(), vc.clone()
    flash_attn_with_kvcache(
        q, kc.clone(), vc.clone(), k=kn, v=vn, cache_seqlens=seqlens, causal=True
    )  # compile
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = flash_attn_with_kvcache(q, kc, vc, k=kn, v=vn, cache_seqlens=seqlens, causal=True)
    kc.copy_(kc0)
    vc.copy_(vc0)
    g.replay()
    torch.cuda.synchronize()
    kc2, vc2 = kc0.clone(), vc0.clone()
    ref = flash_attn_with_kvcache(q, kc2, vc2, k=kn, v=vn, cache_seqlens=seqlens, causal=True)
    assert torch.equal(out, ref) and torch.equal(kc, kc2) and torch.equal(vc, vc2)


def test_streams_and_threads_match_serial():
    import threading

    from fa4_torch import flash_attn_func

    inputs = [(_rand(1, 500, 8, 64), _rand(1, 700, 8, 64), _rand(1, 700, 8, 64)) for _ in range(4)]
    serial = [flash_attn_func(*x, causal=True)[0] for x in inputs]
    torch.cuda.synchronize()
    results = [None] * 4

    def work(i):
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            results[i] = flash_attn_func(*inputs[i], causal=True)[0]
        s.synchronize()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a, b in zip(results, serial):
        assert torch.equal(a, b)
