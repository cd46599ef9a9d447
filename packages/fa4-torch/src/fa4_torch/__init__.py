"""fa4-torch."""

from fa4_torch.__about__ import __version__

__all__ = ["__version__"]
