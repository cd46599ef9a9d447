"""Context parallelism: attention over a sequence split across the ranks of a ``torch.distributed``
group, with ring-flash-attention's calls (docs/context-parallel.md).

Modules, one job each: ``merge`` (the fp32 LSE merge and the sink), ``comm`` (the ring's point-to-point
exchanges and the collectives, with host staging for CUDA tensors over ``gloo``), ``kernels`` (the
per-step chunk kernel: the protocol, fa4's and a plain-PyTorch fp32 reference), ``checks`` (the ring's
own argument checks), ``ring`` (contiguous and zigzag ring attention, forward and backward),
``varlen`` (packed documents: the all-gather form).
"""

from fa4_torch.distributed.kernels import ChunkKernel, Fa4Kernel, ReferenceKernel
from fa4_torch.distributed.ring import (
    ring_flash_attn_func,
    zigzag_merge,
    zigzag_ring_flash_attn_func,
    zigzag_split,
)
from fa4_torch.distributed.varlen import llama3_flash_attn_prepare_cu_seqlens, llama3_flash_attn_varlen_func

__all__ = [
    "ChunkKernel",
    "Fa4Kernel",
    "ReferenceKernel",
    "ring_flash_attn_func",
    "zigzag_ring_flash_attn_func",
    "zigzag_split",
    "zigzag_merge",
    "llama3_flash_attn_varlen_func",
    "llama3_flash_attn_prepare_cu_seqlens",
]
