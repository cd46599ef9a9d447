"""Packed sequences in ``attn_implementation="fa4"`` (transformers), on the CPU: the routing only.

The fa4 kernels need a GPU, so :mod:`fa4_torch.api`'s ``flash_attn_func`` and
``flash_attn_varlen_func`` are replaced here by an fp32 torch reference written with tensor ops only
(no ``.tolist()``), which Dynamo traces into the graph. That is enough to test what the integration
decides: a batch of sequences packed into one row, marked only by ``position_ids`` restarting at 0
(what ``DataCollatorWithFlattening`` gives), must take the varlen path with the right boundaries,
eagerly and under ``torch.compile``, so that each sequence's logits equal those of the sequence run
alone (tiny random Llama and Qwen2 models built from configs, fp32, no downloads).

* ``packed_from_positions``: boundaries from positions (restarts, several rows, no packing, shapes
  it does not read);
* one host read per forward (the answer is kept for the ``position_ids`` tensor; an in-place change
  is read again);
* eager and compiled (Dynamo with ``backend="eager"``, ``"aot_eager"`` for training and for
  ``fullgraph`` with ``cu_seq_lens``; the graph break at the detection is expected),
  compared per sequence with the sequence alone, and the varlen path seen; under compile a new
  packing layout recompiles nothing;
* ``fullgraph=True``: packed positions raise Dynamo's error carrying fa4's explanation (never the
  dense path); with ``cu_seq_lens_q/k`` and ``max_length_q/k`` given it traces and is right; a batch of
  two rows with the model's own ``(1, seq)`` positions traces with no graph break.

The GPU counterpart with the real kernels is ``test_transformers_gpu.py``.
"""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import fa4_torch.api as api  # noqa: E402
import fa4_torch.integrations.transformers as fa4_hf  # noqa: E402  (registers "fa4")

VOCAB = 1000
LENS = (5, 9, 4)  # the packed sequences


def _config(kind):
    common = dict(
        hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB,
    )  # fmt: skip
    if kind == "llama":
        return transformers.LlamaConfig(**common)
    return transformers.Qwen2Config(**common)


def _model(kind, impl, state=None):
    torch.manual_seed(0)
    m = transformers.AutoModelForCausalLM.from_config(_config(kind), attn_implementation=impl).eval()
    if state is not None:
        m.load_state_dict(state)
    return m


# ------------------------------------------------------------------ a tensor-only reference backend
def _attend(q, k, v, scale, allowed):
    """q (n, h, d), k/v (m, hk, d), allowed (n, m) bool -> (n, h, d); fp32 softmax, GQA by repeat."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = torch.einsum("nhd,mhd->hnm", q.float(), k.float()) * scale
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.einsum("hnm,mhd->nhd", s.softmax(-1), v.float()).to(q.dtype)


def _segments(cu, total):
    """Sequence index, position inside it and its length, per token of a varlen layout."""
    tok = torch.arange(total, device=cu.device)
    seg = torch.searchsorted(cu[1:].long(), tok, right=True)
    start = cu.long()[seg]
    return seg, tok - start, (cu.long()[seg + 1] - start)


def _plain(window_size, learnable_sink, softcap):
    assert tuple(window_size) == (-1, -1) and learnable_sink is None and not softcap


def _install_reference(monkeypatch, seen):
    """Replace the api by the reference; ``seen`` records each path taken (at trace time when compiled)."""

    def dense(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), learnable_sink=None,
              softcap=0.0, deterministic=False, **kw):  # fmt: skip
        _plain(window_size, learnable_sink, softcap)
        seen.append("dense")
        sq, sk = q.shape[1], k.shape[1]
        allowed = torch.ones(sq, sk, dtype=torch.bool)
        if causal:  # bottom-right aligned
            allowed = torch.arange(sk)[None, :] <= torch.arange(sq)[:, None] + (sk - sq)
        scale = softmax_scale or q.shape[-1] ** -0.5
        return torch.stack([_attend(q[b], k[b], v[b], scale, allowed) for b in range(q.shape[0])]), None

    def varlen(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None,
               softmax_scale=None, causal=False, window_size=(-1, -1), learnable_sink=None, softcap=0.0,
               deterministic=False, **kw):  # fmt: skip
        _plain(window_size, learnable_sink, softcap)
        seen.append("varlen")
        assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
        seg_q, pos_q, len_q = _segments(cu_seqlens_q, q.shape[0])
        seg_k, pos_k, len_k = _segments(cu_seqlens_k, k.shape[0])
        allowed = seg_q[:, None] == seg_k[None, :]
        if causal:
            shift = (cu_seqlens_k.diff() - cu_seqlens_q.diff()).long()[seg_q]
            allowed = allowed & (pos_k[None, :] <= (pos_q + shift)[:, None])
        return _attend(q, k, v, softmax_scale or q.shape[-1] ** -0.5, allowed), None

    monkeypatch.setattr(api, "flash_attn_func", dense)
    monkeypatch.setattr(api, "flash_attn_varlen_func", varlen)


@pytest.fixture
def reference(monkeypatch):
    fa4_hf.register()
    fa4_hf.forget_positions()
    torch._dynamo.reset()
    seen = []
    _install_reference(monkeypatch, seen)
    yield seen
    torch._dynamo.reset()
    fa4_hf.forget_positions()


def _packed_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(0, VOCAB, (n,), generator=g) for n in LENS]
    ids = torch.cat(seqs)[None]
    pos = torch.cat([torch.arange(n) for n in LENS])[None]  # DataCollatorWithFlattening's position_ids
    return seqs, ids, pos


def _check_per_sequence(packed_logits, seqs, alone_model):
    start = 0
    for i, s in enumerate(seqs):
        with torch.no_grad():
            alone = alone_model(s[None], use_cache=False).logits[0]
        got = packed_logits[0, start : start + len(s)]
        torch.testing.assert_close(got, alone, rtol=1e-4, atol=1e-4, msg=lambda m, i=i: f"sequence {i}: {m}")
        start += len(s)


# ------------------------------------------------------------------------------ the detection itself
def test_boundaries_from_positions():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    cu, max_len = fa4_hf.packed_from_positions(pos, 1, 9)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 3, 5, 9] and max_len == 4
    # rows of a batch: each row starts a sequence; a restart inside a row starts another
    pos2 = torch.tensor([[0, 1, 2, 3], [0, 1, 0, 1]])
    cu, max_len = fa4_hf.packed_from_positions(pos2, 2, 4)
    assert cu.tolist() == [0, 4, 6, 8] and max_len == 4
    # a jump (not only a restart at 0) starts a sequence too
    cu, _ = fa4_hf.packed_from_positions(torch.tensor([[3, 4, 5, 9, 10]]), 1, 5)
    assert cu.tolist() == [0, 3, 5]
    # one sequence a row (a monotone run, whatever its first position): not packed
    assert fa4_hf.packed_from_positions(torch.tensor([[7, 8, 9, 10]]), 1, 4) is None
    assert fa4_hf.packed_from_positions(torch.arange(8).view(2, 4) % 4, 2, 4) is None
    # what is not a (batch, seq) tensor is not read
    assert fa4_hf.packed_from_positions(None, 1, 4) is None
    assert fa4_hf.packed_from_positions(torch.tensor([[0, 1, 0, 1]]), 2, 4) is None  # (1, seq), batch 2


def test_one_read_per_forward(reference, monkeypatch):
    reads = []
    real = fa4_hf.packed_from_positions

    def counting(*a):
        reads.append(1)
        return real(*a)

    monkeypatch.setattr(fa4_hf, "packed_from_positions", counting)
    fa4 = _model("llama", "fa4")
    seqs, ids, pos = _packed_batch()
    with torch.no_grad():
        first = fa4(ids, position_ids=pos, use_cache=False).logits
        assert len(reads) == 1 and reference.count("varlen") == 2  # two layers, one read
        fa4(ids, position_ids=pos, use_cache=False)
        assert len(reads) == 1  # the same tensor, unchanged: not read again
        pos[0, len(seqs[0])] = len(seqs[0])  # in place: sequences 0 and 1 are now one
        merged = fa4(ids, position_ids=pos, use_cache=False).logits
        assert len(reads) == 2
        # the first sequence now sees no change; the tokens that joined it do
        torch.testing.assert_close(merged[0, : len(seqs[0])], first[0, : len(seqs[0])])
        assert not torch.allclose(merged[0, len(seqs[0]) + 1], first[0, len(seqs[0]) + 1], atol=1e-3)
        # no position_ids of the row's shape (the model's own (1, seq) for a batch of 2): never read
        fa4(torch.cat([ids, ids]), use_cache=False)
        assert len(reads) == 2


# ------------------------------------------------------------------ tiny Llama / Qwen2, eager and compiled
@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_packed_sequences_match_each_alone(reference, kind, compiled):
    ref = _model(kind, "eager")
    fa4 = _model(kind, "fa4", ref.state_dict())
    seqs, ids, pos = _packed_batch()
    run = torch.compile(fa4, backend="eager") if compiled else fa4
    with torch.no_grad():
        packed = run(ids, position_ids=pos, use_cache=False).logits
    assert "varlen" in reference and "dense" not in reference, reference
    _check_per_sequence(packed, seqs, ref)
    # a row that is one sequence still takes the dense path, compiled too
    reference.clear()
    with torch.no_grad():
        single = run(seqs[1][None], position_ids=torch.arange(LENS[1])[None], use_cache=False).logits
    assert reference and set(reference) == {"dense"}, reference
    with torch.no_grad():
        torch.testing.assert_close(single, ref(seqs[1][None], use_cache=False).logits, rtol=1e-4, atol=1e-4)


def test_fullgraph_packed_positions_raise_clearly(reference):
    fa4 = _model("llama", "fa4")
    _, ids, pos = _packed_batch()
    run = torch.compile(fa4, backend="eager", fullgraph=True)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="fa4 reads position_ids") as info:
        with torch.no_grad():
            run(ids, position_ids=pos, use_cache=False)
    assert "cu_seq_lens_q" in str(info.value)
    assert "dense" not in reference  # nothing was traced towards the dense path before the error


def test_fullgraph_with_cu_seq_lens(reference):
    ref = _model("llama", "eager")
    fa4 = _model("llama", "fa4", ref.state_dict())
    seqs, ids, pos = _packed_batch()
    cu = torch.tensor([0, *torch.tensor(LENS).cumsum(0).tolist()], dtype=torch.int32)
    kw = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(LENS), max_length_k=max(LENS))
    run = torch.compile(fa4, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        packed = run(ids, position_ids=pos, use_cache=False, **kw).logits
    assert set(reference) == {"varlen"}
    _check_per_sequence(packed, seqs, ref)


def test_fullgraph_batch_with_default_positions(reference):
    """A batch of two rows with the model's own (1, seq) positions: nothing is read, no graph break."""
    ref = _model("qwen2", "eager")
    fa4 = _model("qwen2", "fa4", ref.state_dict())
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = torch.compile(fa4, backend="eager", fullgraph=True)(ids, use_cache=False).logits
        torch.testing.assert_close(out, ref(ids, use_cache=False).logits, rtol=1e-4, atol=1e-4)
    assert set(reference) == {"dense"}


def test_compiled_new_layout_recompiles_nothing(reference):
    ref = _model("llama", "eager")
    fa4 = _model("llama", "fa4", ref.state_dict())
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    run = torch.compile(fa4, backend=backend)
    seqs, ids, pos = _packed_batch()
    with torch.no_grad():
        run(ids, position_ids=pos, use_cache=False)
        compiled = len(graphs)
        # the same total length, other boundaries (two sequences instead of three)
        lens = (11, sum(LENS) - 11)
        pos2 = torch.cat([torch.arange(n) for n in lens])[None]
        packed = run(ids, position_ids=pos2, use_cache=False).logits
    assert len(graphs) == compiled
    _check_per_sequence(packed, [ids[0, : lens[0]], ids[0, lens[0] :]], ref)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_packed_training_gradients(reference, compiled):
    """The backward goes through the varlen path too (outside the graph when compiled): the gradient
    matches transformers' own "eager" attention, which masks packed sequences from the positions."""
    ref = _model("qwen2", "eager")
    fa4 = _model("qwen2", "fa4", ref.state_dict())
    _, ids, pos = _packed_batch()
    w = torch.randn(1, ids.shape[1], VOCAB, generator=torch.Generator().manual_seed(4))
    grads = []
    for m, run in ((ref, ref), (fa4, torch.compile(fa4, backend="aot_eager") if compiled else fa4)):
        m.train()
        (run(ids, position_ids=pos, use_cache=False).logits * w).sum().backward()
        grads.append(m.model.layers[0].self_attn.q_proj.weight.grad)
    assert "varlen" in reference and "dense" not in reference
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4)
