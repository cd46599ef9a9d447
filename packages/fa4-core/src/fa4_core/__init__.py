"""fa4-core: arch-agnostic CuTe DSL building blocks for FlashAttention kernels.

Nothing here imports torch. Modules: ``errors``, ``arch``, ``seqlen_info``, ``pack_gqa``,
``block_info``, ``mask``, ``softmax``, ``tile_scheduler``, ``testing``.
"""

from fa4_core.__about__ import __version__
from fa4_core.errors import Fa4Error, UnsupportedArchError, UnsupportedConfigError

__all__ = ["__version__", "Fa4Error", "UnsupportedArchError", "UnsupportedConfigError"]
