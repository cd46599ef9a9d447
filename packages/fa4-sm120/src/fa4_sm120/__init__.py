"""fa4-sm120: FlashAttention kernels of the mma.sync family for SM120/SM121 (compat: SM80-SM90).

Modules: ``configs`` (the kernels' compile-time configs, importable without the DSL), ``limits``
(what the kernels support, as plain data), ``mma_sync`` (``MmaSyncKernel``, the base of the kernel
classes: capability checks, shared-memory layouts, global copies, fake-tensor compile for any target,
no GPU needed), ``fwd`` / ``bwd`` / ``bwd_pre_post`` / ``combine`` (the kernel classes), ``tiles`` /
``bwd_tiles`` (tile tables), ``smem`` (shared-memory arithmetic), ``compile`` (``compile_fwd`` and
ptxas resources).
"""

from fa4_sm120.__about__ import __version__

__all__ = ["__version__"]
