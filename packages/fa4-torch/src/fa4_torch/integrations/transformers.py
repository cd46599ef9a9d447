"""``attn_implementation="fa4"`` for Hugging Face transformers models.

::

    import fa4_torch.integrations.transformers  # registers "fa4" (or call register() yourself)

    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.bfloat16, attn_implementation="fa4")

Importing this module registers :func:`fa4_attention_forward` under the name ``"fa4"`` with
``transformers.AttentionInterface``, and FlashAttention-2's mask builder
(``masking_utils.flash_attention_mask``: ``None`` for a plain causal/full mask, else the 2-D padding
mask) with ``transformers.masking_utils.AttentionMaskInterface``. Without the mask registration
transformers passes no mask at all to an implementation it does not know, and padded batches would be
silently wrong. transformers is optional for fa4-torch: it is imported only here, and an
``ImportError`` says so when it is missing.

What the attention function does with what transformers passes it (``query (batch, heads, seq_q,
head_dim)``, ``key/value (batch, heads_kv, seq_k, head_dim)``, un-repeated for GQA):

* no mask: one dense call, causal from ``module.is_causal`` (or an ``is_causal`` keyword) when
  ``seq_q > 1`` (fa4 aligns causal masks bottom-right, so a query chunk after a KV cache is right);
* a 2-D padding mask ``(batch, seq_k)``: the tokens are unpadded and run through
  ``flash_attn_varlen_func``; padded query rows of the output are zero (as with FlashAttention-2);
* packed sequences run through the varlen path as well: given as ``cu_seq_lens_q/k`` and
  ``max_length_q/k`` keywords (``DataCollatorWithFlattening(return_flash_attn_kwargs=True)``), or
  found in ``position_ids`` (see below);
* ``sliding_window`` becomes ``window_size = (sliding_window - 1, sliding_window - 1)`` (the
  transformers convention for flash kernels), ``softcap`` is passed on, ``s_aux`` (attention sinks)
  becomes ``learnable_sink``; ``scaling`` is the softmax scale;
* 3-D/4-D masks (a custom mask, or an older transformers that builds 4-D masks for every
  implementation) and attention dropout raise ``NotImplementedError``; use ``"sdpa"`` for those.
  ``output_attentions`` is not supported: the returned attention weights are ``None``.

fp32 inputs (e.g. layer norms upcast by PEFT) are cast to the autocast dtype, or to the dtype of the
module's linear layers, as transformers' FlashAttention-2 integration does. The output is
``(batch, seq_q, heads, head_dim_v)``, as transformers expects.

Packing found in ``position_ids`` (what ``DataCollatorWithFlattening`` gives by default: one row,
positions restarting at each sequence, no mask). The positions are read when there is no mask, no
``cu_seq_lens_q/k``, ``seq_q == seq_k > 1`` (no cached prefix) and ``position_ids`` has the shape
``(batch, seq_q)``. A position that is not its left neighbour + 1 starts a sequence, as does the first
of each row; if some row holds more than one sequence, the call takes the varlen path with those
boundaries, else the dense path. Not read: ``(1, seq)`` positions for a batch of more than one row
(what a model builds for itself when it is given none, ``arange`` from the cache position).

Reading the positions costs one host sync, once per forward: the answer is kept for the last
``position_ids`` tensor read (by identity and version counter, so an in-place change is read again),
and the other layers of the forward reuse it. Inference-mode tensors (no version counter) are read in
every layer, and so is anything during CUDA-graph capture (where the read fails, as any sync does).
Nothing is read, and nothing synced for it, in calls without ``position_ids``, with a mask, with
``cu_seq_lens_q/k``, with ``seq_q == 1`` or with the ``(1, seq)`` default positions of a batch > 1.
The detection itself is :func:`packed_from_positions`; :func:`forget_positions` drops the kept answer.

Under ``torch.compile`` the same detection, and the varlen call when it finds packing, run in a
``torch.compiler.disable``-d helper: a graph break at each attention call that reads the positions
(one sync per forward as above). The boundaries and the longest length stay out of the graph, so a
new packing layout recompiles nothing; unpacked rows come back to the dense path inside the graph.
Under ``fullgraph=True`` that graph break is an error (Dynamo's ``Unsupported``; its message says why
and what to do): pass ``cu_seq_lens_q/k`` and ``max_length_q/k`` (ints) to the model, which are used
as given and read nothing, or compile without ``fullgraph``. Positions that show packing never take
the dense path silently.
"""

from __future__ import annotations

import warnings
import weakref

import torch

from fa4_core.errors import unsupported
from fa4_torch import api, compat

__all__ = ["NAME", "fa4_attention_forward", "register"]

NAME = "fa4"
_warned: set[str] = set()


def _warn_once(msg: str) -> None:
    if msg not in _warned:
        _warned.add(msg)
        warnings.warn(msg, stacklevel=3)


def _target_dtype(module, dtype):
    """The half dtype fp32 inputs are cast to, or None to leave them alone."""
    if dtype != torch.float32:
        return None
    if torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    config = getattr(module, "config", None)
    pre = getattr(config, "_pre_quantization_dtype", None)
    if pre in (torch.float16, torch.bfloat16):
        return pre
    for layer in module.modules():
        if isinstance(layer, torch.nn.Linear) and layer.weight.dtype in (torch.float16, torch.bfloat16):
            return layer.weight.dtype
    return None  # the api names the unsupported dtype


def _as_int(x):
    return int(x) if isinstance(x, torch.Tensor) else x


def _unpad_rows(mask: torch.Tensor):
    """``mask (batch, seq)`` bool -> (flat indices of the kept tokens, int32 cu_seqlens, max length)."""
    lens = mask.sum(-1, dtype=torch.int32)
    idx = mask.flatten().nonzero().flatten()
    cu = torch.nn.functional.pad(lens.cumsum(0, dtype=torch.int32), (1, 0))
    return idx, cu, int(lens.max()) if lens.numel() else 0


def _readable_positions(position_ids, batch: int, seqlen: int) -> bool:
    """``position_ids`` is a ``(batch, seqlen)`` tensor (shapes only: no sync, no graph break)."""
    return isinstance(position_ids, torch.Tensor) and tuple(position_ids.shape) == (batch, seqlen)


def packed_from_positions(position_ids, batch: int, seqlen: int):
    """int32 cu_seqlens and max length of the sequences packed into the rows (a position that does not
    follow its left neighbour starts a sequence; every row starts one), or None if each row is one (or
    ``position_ids`` is not a ``(batch, seqlen)`` tensor). One host sync."""
    if not _readable_positions(position_ids, batch, seqlen):
        return None
    pos = position_ids
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    first = starts.flatten().nonzero().flatten().tolist()  # the host sync
    if len(first) == batch:
        return None
    bounds = [*first, batch * seqlen]
    max_len = max(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    return torch.tensor(bounds, dtype=torch.int32, device=pos.device), max_len


# (weakref to the position_ids last read, its version counter, batch, seqlen, the answer)
_last_positions: tuple | None = None


def forget_positions() -> None:
    """Forget the ``position_ids`` last read (the next call reads its positions again)."""
    global _last_positions
    _last_positions = None


def _packed_once(position_ids, batch: int, seqlen: int):
    """:func:`packed_from_positions`, read once per ``position_ids`` tensor: the layers of one forward
    get the same tensor, so only the first pays the host sync. An in-place change bumps the version
    counter and is read again; inference tensors (no version counter) are read every time, and so is
    anything during CUDA-graph capture (a captured answer would outlive later changes of the data)."""
    global _last_positions
    if not _readable_positions(position_ids, batch, seqlen):
        return None
    keyed = not position_ids.is_inference() and not (
        position_ids.is_cuda and torch.cuda.is_current_stream_capturing()
    )
    if keyed:
        last = _last_positions
        version = position_ids._version
        if last is not None and last[0]() is position_ids and last[1:4] == (version, batch, seqlen):
            return last[4]
    found = packed_from_positions(position_ids, batch, seqlen)
    if keyed:
        _last_positions = (weakref.ref(position_ids), version, batch, seqlen, found)
    return found


def _packed_attention(q, k, v, position_ids, common: dict):
    """Attention of ``q, k, v (batch, seq, heads, dim)`` over the sequences packed into the rows as
    ``position_ids`` shows them (varlen), or None when each row is one sequence (the caller then takes
    the dense path). Under ``torch.compile`` this runs as :data:`_packed_attention_compiled`, outside
    the graph, so neither the boundaries nor the longest length enter it: a new packing layout
    recompiles nothing."""
    batch, seqlen = q.shape[:2]
    found = _packed_once(position_ids, batch, seqlen)
    if found is None:
        return None
    cu, max_len = found
    out, _ = api.flash_attn_varlen_func(
        q.reshape(-1, *q.shape[2:]), k.reshape(-1, *k.shape[2:]), v.reshape(-1, *v.shape[2:]),
        cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max_len, max_seqlen_k=max_len, **common,
    )  # fmt: skip
    return out.reshape(batch, seqlen, *out.shape[1:])


_COMPILE_REASON = (
    "fa4 reads position_ids on the host to find sequences packed into a row (positions that restart), "
    "so that they do not attend to each other; that is a graph break at each attention call. Under "
    "torch.compile(fullgraph=True) pass cu_seq_lens_q/cu_seq_lens_k and max_length_q/max_length_k "
    "(ints) to the model instead (DataCollatorWithFlattening(return_flash_attn_kwargs=True)), which "
    "fa4 uses as given, or compile without fullgraph"
)
try:
    _packed_attention_compiled = torch.compiler.disable(_packed_attention, reason=_COMPILE_REASON)
except TypeError:  # a torch without disable(reason=)
    _packed_attention_compiled = torch.compiler.disable(_packed_attention)


def fa4_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The attention function transformers calls for ``attn_implementation="fa4"``; returns
    ``(attn_output (batch, seq_q, heads, head_dim_v), None)``. See the module docstring."""
    if kwargs.get("output_attentions", False) or kwargs.get("head_mask") is not None:
        _warn_once(
            "fa4 does not support output_attentions=True or head_mask (the attention weights are not "
            "materialised); use attn_implementation='eager' for them"
        )
    if dropout:
        compat.reject_dropout_alibi(dropout_p=dropout)
    is_causal = kwargs.pop("is_causal", None)
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    batch, _, q_len, _ = query.shape
    kv_len = key.shape[2]
    causal = bool(is_causal) and q_len > 1
    window = (-1, -1)
    if sliding_window is not None and kv_len > sliding_window:
        window = (sliding_window - 1, sliding_window - 1)

    target = _target_dtype(module, query.dtype)
    if target is not None:
        query, key, value = query.to(target), key.to(target), value.to(target)
    q, k, v = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)  # (b, s, h, d) views
    sink = kwargs.get("s_aux")
    if isinstance(sink, torch.Tensor) and sink.dtype != torch.float32:
        sink = sink.float()
    deterministic = kwargs.get("deterministic")
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    common = dict(
        softmax_scale=scaling,
        causal=causal,
        window_size=window,
        learnable_sink=sink,
        softcap=0.0 if softcap is None else softcap,
        deterministic=bool(deterministic),
    )

    def varlen(qf, kf, vf, cu_q, cu_k, max_q, max_k):
        out, _ = api.flash_attn_varlen_func(
            qf, kf, vf, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k, max_seqlen_q=max_q, max_seqlen_k=max_k,
            **common,
        )  # fmt: skip
        return out

    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
            shape = tuple(attention_mask.shape) if hasattr(attention_mask, "shape") else None
            raise NotImplementedError(
                f"fa4 takes no mask or a 2-D padding mask (batch, seq_k); got {type(attention_mask).__name__} "
                f"of shape {shape}. Custom 3-D/4-D masks are not supported (and transformers older than "
                "masking_utils' AttentionMaskInterface builds 4-D masks for every implementation): use "
                "attn_implementation='sdpa' for them"
            )
        if attention_mask.shape[0] != batch or attention_mask.shape[1] < kv_len:
            raise unsupported(
                "attention_mask.shape", tuple(attention_mask.shape), f"(batch={batch}, >= seq_k={kv_len})"
            )
        mask = attention_mask[:, -kv_len:].bool()
        idx_k, cu_k, max_k = _unpad_rows(mask)
        if q_len == kv_len:
            idx_q, cu_q, max_q = idx_k, cu_k, max_k
        elif q_len == 1:  # decoding: one query per row, each a sequence of its own
            idx_q = torch.arange(batch, device=q.device)
            cu_q, max_q = torch.arange(batch + 1, dtype=torch.int32, device=q.device), 1
        else:  # a query chunk after a cache: the last q_len positions (left padding)
            idx_q, cu_q, max_q = _unpad_rows(mask[:, -q_len:])
        kf = k.reshape(batch * kv_len, *k.shape[2:]).index_select(0, idx_k)
        vf = v.reshape(batch * kv_len, *v.shape[2:]).index_select(0, idx_k)
        qf = q.reshape(batch * q_len, *q.shape[2:]).index_select(0, idx_q)
        out = varlen(qf, kf, vf, cu_q, cu_k, max_q, max_k)
        full = out.new_zeros((batch * q_len, *out.shape[1:])).index_copy(0, idx_q, out)
        return full.reshape(batch, q_len, *out.shape[1:]), None

    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    max_q, max_k = kwargs.get("max_length_q"), kwargs.get("max_length_k")
    if cu_q is not None and cu_k is not None:
        qf = q.reshape(-1, *q.shape[2:])
        kf, vf = k.reshape(-1, *k.shape[2:]), v.reshape(-1, *v.shape[2:])
        out = varlen(qf, kf, vf, cu_q.to(torch.int32), cu_k.to(torch.int32), _as_int(max_q), _as_int(max_k))
        return out.reshape(batch, q_len, *out.shape[1:]), None
    if q_len == kv_len and q_len > 1 and _readable_positions(kwargs.get("position_ids"), batch, q_len):
        # under torch.compile: a graph break (under fullgraph=True an error that says why)
        packed = _packed_attention_compiled if torch.compiler.is_compiling() else _packed_attention
        out = packed(q, k, v, kwargs["position_ids"], common)
        if out is not None:
            return out, None

    out, _ = api.flash_attn_func(q, k, v, **common)
    return out, None


def register(name: str = NAME) -> None:
    """Register :func:`fa4_attention_forward` (and the FlashAttention-2 mask builder) under ``name``
    with transformers, so that ``attn_implementation=name`` selects fa4. Idempotent."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError(
            "fa4_torch.integrations.transformers needs Hugging Face transformers, which is not installed "
            "(pip install transformers); fa4-torch itself does not depend on it"
        ) from e
    interface = getattr(transformers, "AttentionInterface", None)
    if interface is None:
        raise ImportError(
            f"fa4_torch.integrations.transformers needs a transformers with AttentionInterface "
            f"(4.48 or later); found {getattr(transformers, '__version__', 'unknown')}"
        )
    interface.register(name, fa4_attention_forward)
    try:
        from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask
    except ImportError:  # an older transformers: the models build their masks themselves (4-D: rejected)
        return
    AttentionMaskInterface.register(name, flash_attention_mask)


register()
