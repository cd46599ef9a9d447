"""``attn_implementation="fa4"`` in a Hugging Face transformers model, on the GPU (no downloads).

A tiny randomly initialised Llama-style model (GQA 8/2 heads, head_dim 32) runs in bf16 with
``"fa4"`` and with ``"sdpa"``, and in fp32 with ``"eager"`` (the reference). The logits follow the
correctness rule (docs/testing.md) through :func:`fa4_core.testing.check_close`: ``max|fa4 - ref| <= 2 * max|sdpa - ref|
+ atol``, ``atol = 2 * max|(ref + 0.3 - 0.3) - ref|`` in bf16 (about 2 bf16 ulp at the logits' size).
Why this is the right bound: both bf16 runs use the same bf16 weights and the same bf16 projections,
norms and MLPs, so their distance to the fp32 model is dominated by the same bf16 rounding of the
whole network; a correct attention kernel (fp32 softmax and accumulation, like SDPA's flash kernel)
adds error of the same order, hence the factor 2. A wrong mask, head mapping or unpadding moves the
logits by far more (O(1) of their spread), which the bound catches.

Cases: dense causal prefill; a left-padded batch (the unpadded varlen path; compared on the real
tokens only, since padded rows are undefined in SDPA and zero in fa4); decoding one token against the
KV cache of a padded prefill; and gradients of a training-mode forward/backward (the autograd path),
compared with the same rule on the gradient of the first layer's query projection.

Packed sequences (tiny Llama and Qwen2 models): three sequences concatenated into one row, their
boundaries marked only by ``position_ids`` restarting at 0 and no mask (what
``DataCollatorWithFlattening`` gives). Run eagerly and under ``torch.compile`` (default mode; a second
layout then runs through the same compiled model), each sequence's slice of the logits follows the
rule against that sequence run alone (the fp32 eager model as the reference, SDPA alone as the peer),
as does the sequence run alone through fa4: attending across a boundary moves the logits by O(1).
Under ``fullgraph=True`` packed ``position_ids`` raise Dynamo's error with fa4's explanation, and the
same batch with ``cu_seq_lens_q/k`` and ``max_length_q/k`` given traces and passes the rule. Training
on the packed row (eager and compiled): the gradient of the first layer's query projection against
the fp32 eager model and SDPA on the same packed row (both mask packed sequences from the positions).
"""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import fa4_torch.integrations.transformers as fa4_hf  # noqa: E402  (registers "fa4")
from fa4_core.testing import check_close  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]

DEV = "cuda"
BATCH, SEQ, VOCAB = 2, 64, 1000


def _config(kind="llama"):
    cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[kind]
    return cls(
        hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, vocab_size=VOCAB,
    )  # fmt: skip


@pytest.fixture(scope="module")
def models():
    fa4_hf.register()
    torch.manual_seed(0)
    ref = transformers.AutoModelForCausalLM.from_config(_config(), attn_implementation="eager")
    state = ref.state_dict()
    ref = ref.to(DEV, torch.float32).eval()
    out = {"ref": ref}
    for impl in ("fa4", "sdpa"):
        m = transformers.AutoModelForCausalLM.from_config(_config(), attn_implementation=impl)
        m.load_state_dict(state)
        out[impl] = m.to(DEV, torch.bfloat16).eval()
    assert out["fa4"].config._attn_implementation == "fa4"
    return out


def _ids(seed=1, shape=(BATCH, SEQ)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, shape, generator=g).to(DEV)


def _logits(model, ids, **kw):
    with torch.no_grad():
        return model(ids, **kw).logits.float()


def test_registered():
    assert transformers.AttentionInterface._global_mapping["fa4"] is fa4_hf.fa4_attention_forward


def test_dense_causal(models):
    ids = _ids()
    ref, pt, out = (_logits(models[m], ids) for m in ("ref", "sdpa", "fa4"))
    assert torch.isfinite(out).all()
    check_close("logits", out.bfloat16(), ref, pt.bfloat16())


def test_left_padded_batch(models):
    ids = _ids(2)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long, device=DEV)
    mask[0, :23] = 0  # left padding, as generation uses
    ref, pt, out = (_logits(models[m], ids, attention_mask=mask) for m in ("ref", "sdpa", "fa4"))
    keep = mask.bool()
    check_close("logits[real tokens]", out[keep].bfloat16(), ref[keep], pt[keep].bfloat16())
    # the unpadded row must not depend on its padding: row 0 alone, without the padded prefix
    alone = _logits(models["fa4"], ids[:1, 23:])
    alone_ref = _logits(models["ref"], ids[:1, 23:])
    alone_pt = _logits(models["sdpa"], ids[:1, 23:])
    check_close("logits[row 0 alone]", alone.bfloat16(), alone_ref, alone_pt.bfloat16())


def test_decode_step_against_cache(models):
    ids = _ids(3)
    nxt = _ids(4, (BATCH, 1))
    mask = torch.ones(BATCH, SEQ, dtype=torch.long, device=DEV)
    mask[1, :9] = 0
    mask2 = torch.cat([mask, torch.ones(BATCH, 1, dtype=torch.long, device=DEV)], 1)
    full = torch.cat([ids, nxt], 1)
    with torch.no_grad():
        cache = models["fa4"](ids, attention_mask=mask, use_cache=True).past_key_values
        step = models["fa4"](nxt, attention_mask=mask2, past_key_values=cache).logits.float()[:, -1]
    ref = _logits(models["ref"], full, attention_mask=mask2)[:, -1]
    pt = _logits(models["sdpa"], full, attention_mask=mask2)[:, -1]
    check_close("logits[decode step]", step.bfloat16(), ref, pt.bfloat16())


def test_gradients(models):
    ids = _ids(5)
    grads = {}
    for name in ("ref", "sdpa", "fa4"):
        m = models[name]
        m.zero_grad(set_to_none=True)
        m.train()
        try:
            logits = m(ids).logits.float()
            # a fixed random projection of the logits: every position and vocab entry contributes
            w = torch.randn(logits.shape, generator=torch.Generator(DEV).manual_seed(6), device=DEV)
            (logits * w).sum().backward()
        finally:
            m.eval()
        grads[name] = m.model.layers[0].self_attn.q_proj.weight.grad.float()
    assert torch.isfinite(grads["fa4"]).all()
    check_close("dW_q[layer 0]", grads["fa4"].bfloat16(), grads["ref"], grads["sdpa"].bfloat16(), grad=True)


# ------------------------------------------------------------------------------ packed sequences
PACKED = (37, 64, 27)  # sequence lengths, one row of 128 tokens
_by_kind: dict = {}


def _models_of(kind):
    """ref (fp32 eager), sdpa and fa4 (bf16) with the same random weights, built once per kind."""
    if kind not in _by_kind:
        fa4_hf.register()
        torch.manual_seed(0)
        ref = transformers.AutoModelForCausalLM.from_config(_config(kind), attn_implementation="eager")
        state = ref.state_dict()
        out = {"ref": ref.to(DEV, torch.float32).eval()}
        for impl in ("fa4", "sdpa"):
            m = transformers.AutoModelForCausalLM.from_config(_config(kind), attn_implementation=impl)
            m.load_state_dict(state)
            out[impl] = m.to(DEV, torch.bfloat16).eval()
        _by_kind[kind] = out
    return _by_kind[kind]


def _packed(lens, seed=7):
    """One row of sequences of the given lengths: (the sequences, ids (1, total), position_ids)."""
    seqs = [_ids(seed + i, (n,)) for i, n in enumerate(lens)]
    pos = torch.cat([torch.arange(n, device=DEV) for n in lens])[None]
    return seqs, torch.cat(seqs)[None], pos


def _check_each_alone(name, packed_logits, seqs, ms):
    """Each sequence's slice of the packed logits, and the sequence alone through fa4, against the
    sequence alone through the fp32 reference (SDPA alone the peer)."""
    start = 0
    for i, s in enumerate(seqs):
        ref, pt, alone = (_logits(ms[m], s[None], use_cache=False)[0] for m in ("ref", "sdpa", "fa4"))
        got = packed_logits[0, start : start + len(s)]
        check_close(f"{name}: sequence {i} alone", alone.bfloat16(), ref, pt.bfloat16())
        check_close(f"{name}: sequence {i} in the packed row", got.bfloat16(), ref, pt.bfloat16())
        start += len(s)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_packed_position_ids(kind, compiled):
    ms = _models_of(kind)
    torch._dynamo.reset()
    run = torch.compile(ms["fa4"]) if compiled else ms["fa4"]
    for lens in (PACKED, (80, 48)):  # a second layout through the same (compiled) model
        seqs, ids, pos = _packed(lens)
        out = _logits(run, ids, position_ids=pos, use_cache=False)
        assert torch.isfinite(out).all()
        _check_each_alone(f"{kind} {'compiled' if compiled else 'eager'} {lens}", out, seqs, ms)


def test_packed_fullgraph():
    ms = _models_of("llama")
    torch._dynamo.reset()
    run = torch.compile(ms["fa4"], fullgraph=True)
    seqs, ids, pos = _packed(PACKED)
    with pytest.raises(torch._dynamo.exc.Unsupported, match="fa4 reads position_ids"):
        _logits(run, ids, position_ids=pos, use_cache=False)
    cu = torch.tensor([0, 37, 101, 128], dtype=torch.int32, device=DEV)
    kw = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=64, max_length_k=64)
    torch._dynamo.reset()
    out = _logits(torch.compile(ms["fa4"], fullgraph=True), ids, position_ids=pos, use_cache=False, **kw)
    _check_each_alone("llama fullgraph with cu_seq_lens", out, seqs, ms)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_packed_gradients(compiled):
    ms = _models_of("llama")
    torch._dynamo.reset()
    _, ids, pos = _packed(PACKED, seed=11)
    grads = {}
    for name in ("ref", "sdpa", "fa4"):
        m = ms[name]
        run = torch.compile(m) if compiled and name == "fa4" else m
        m.zero_grad(set_to_none=True)
        m.train()
        try:
            logits = run(ids, position_ids=pos, use_cache=False).logits.float()
            w = torch.randn(logits.shape, generator=torch.Generator(DEV).manual_seed(12), device=DEV)
            (logits * w).sum().backward()
        finally:
            m.eval()
        grads[name] = m.model.layers[0].self_attn.q_proj.weight.grad.float()
    assert torch.isfinite(grads["fa4"]).all()
    check_close(
        f"dW_q[layer 0] packed {'compiled' if compiled else 'eager'}",
        grads["fa4"].bfloat16(), grads["ref"], grads["sdpa"].bfloat16(), grad=True,
    )  # fmt: skip
