"""fa4-torch: FlashAttention for consumer Blackwell GPUs, the PyTorch API.

``from fa4_torch import flash_attn_func`` — a drop-in for ``flash_attn.cute.flash_attn_func``.

Modules, in import order (each imports only those before it): ``validate`` (the checks), ``plan`` (what
a call runs: typed keys, tile row, pack-GQA, splits, device facts), ``launch`` / ``launch_bwd`` (compile,
allocate, launch, combine), ``ops`` (``torch.library`` ops and the eager/compile routing), ``autograd``,
``api`` (the public functions); beside them ``compat`` (FlashAttention-2's names), ``integrations``,
``dispatch``, ``cache`` / ``disk_cache`` and ``cli`` (``python -m fa4_torch``). docs/architecture.md
has the map.
"""

import logging as _logging
import os as _os

LOG_LEVEL_ENV = "FA4_LOG_LEVEL"


def _configure_logging() -> None:
    """The ``fa4`` logger (``fa4.compile``: one INFO record per compile with its seconds; DEBUG: disk
    cache hits). A library's convention: a ``NullHandler`` only, so nothing prints unless the
    application configures logging, or ``FA4_LOG_LEVEL`` (``INFO``, ``DEBUG``, ...) is set: then that
    level and a handler to stderr, once, at import."""
    logger = _logging.getLogger("fa4")
    logger.addHandler(_logging.NullHandler())
    level = _os.environ.get(LOG_LEVEL_ENV, "").strip().upper()
    if not level:
        return
    value = _logging.getLevelName(level) if not level.isdigit() else int(level)
    if not isinstance(value, int):
        import warnings

        warnings.warn(
            f"{LOG_LEVEL_ENV}={level!r} is not a logging level (DEBUG, INFO, WARNING, ...)", stacklevel=2
        )
        return
    logger.setLevel(value)
    if not any(getattr(h, "_fa4_env", False) for h in logger.handlers):
        handler = _logging.StreamHandler()
        handler.setFormatter(_logging.Formatter("[%(name)s] %(levelname)s: %(message)s"))
        handler._fa4_env = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


_configure_logging()

from fa4_torch import ops as _ops  # noqa: E402, F401  (registers torch.ops.fa4.*)
from fa4_torch.__about__ import __version__  # noqa: E402
from fa4_torch.api import (  # noqa: E402
    attention_backward,
    flash_attn_func,
    flash_attn_varlen_func,
    flash_attn_with_kvcache,
    quantized_attn_func,
    quantized_attn_varlen_func,
    scaled_dot_product_attention,
)

__all__ = [
    "__version__",
    "flash_attn_func",
    "flash_attn_varlen_func",
    "flash_attn_with_kvcache",
    "attention_backward",
    "quantized_attn_func",
    "quantized_attn_varlen_func",
    "scaled_dot_product_attention",
]
