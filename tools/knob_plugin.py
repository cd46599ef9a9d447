"""pytest plugin for GPU tests of a forward code-generation knob before it is adopted: sets the
``fa4_sm120.fwd`` module constants named in ``FA4_FWD_KNOBS`` (``NAME=int[,NAME=int...]``) in every
process, pytest-xdist workers included (they load ``-p`` plugins too). Use a fresh ``FA4_CACHE_DIR``:
the knobs are not part of the disk cache's key.

    FA4_FWD_KNOBS=TREE_REDUCE=1 FA4_CACHE_DIR=/tmp/c PYTHONPATH=tools:$PYTHONPATH pytest -p knob_plugin -m gpu ...
"""

from __future__ import annotations

import os


def pytest_configure(config):
    spec = os.environ.get("FA4_FWD_KNOBS", "")
    if not spec:
        return
    import fa4_sm120.fwd as fwd

    for item in spec.split(","):
        name, value = item.split("=")
        current = getattr(fwd, name)  # AttributeError names a knob that does not exist
        setattr(fwd, name, type(current)(int(value)) if current is not None else int(value))
    print(f"knob_plugin: fa4_sm120.fwd {spec}")
