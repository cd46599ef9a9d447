"""``python -m fa4_torch``: the fa4 command line (:mod:`fa4_torch.cli`)."""

from __future__ import annotations

import sys

from fa4_torch.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
