"""fa4-sm120."""

from fa4_sm120.__about__ import __version__

__all__ = ["__version__"]
