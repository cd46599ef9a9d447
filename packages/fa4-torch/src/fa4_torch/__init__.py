"""fa4-torch: FlashAttention for consumer Blackwell GPUs, the PyTorch API.

``from fa4_torch import flash_attn_func`` — a drop-in for ``flash_attn.cute.flash_attn_func``.
"""

from fa4_torch import ops as _ops  # noqa: F401  (registers torch.ops.fa4.*)
from fa4_torch.__about__ import __version__
from fa4_torch.api import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache

__all__ = ["__version__", "flash_attn_func", "flash_attn_varlen_func", "flash_attn_with_kvcache"]
