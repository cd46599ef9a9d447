"""fa4-torch: FlashAttention for consumer Blackwell GPUs, the PyTorch API.

``from fa4_torch import flash_attn_func`` — a drop-in for ``flash_attn.cute.flash_attn_func``.

Modules, in import order (each imports only those before it): ``validate`` (the checks), ``plan`` (what
a call runs: typed keys, tile row, pack-GQA, splits, device facts), ``launch`` / ``launch_bwd`` (compile,
allocate, launch, combine), ``ops`` (``torch.library`` ops and the eager/compile routing), ``autograd``,
``api`` (the public functions); beside them ``compat`` (FlashAttention-2's names), ``integrations``,
``dispatch``, ``cache`` / ``disk_cache`` and ``cli`` (``python -m fa4_torch``). docs/architecture.md
has the map.
"""

from fa4_torch import ops as _ops  # noqa: F401  (registers torch.ops.fa4.*)
from fa4_torch.__about__ import __version__
from fa4_torch.api import flash_attn_func, flash_attn_varlen_func, flash_attn_with_kvcache

__all__ = ["__version__", "flash_attn_func", "flash_attn_varlen_func", "flash_attn_with_kvcache"]
