"""fa4-sm120: FlashAttention kernels of the mma.sync family for SM120/SM121 (compat: SM80-SM90).

Modules: ``fwd`` (the forward kernel class and its config), ``tiles`` (tile tables), ``smem``
(shared-memory arithmetic), ``compile`` (fake-tensor compile for any target, no GPU needed).
"""

from fa4_sm120.__about__ import __version__

__all__ = ["__version__"]
