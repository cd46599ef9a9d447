"""Every module of the installed fa4_sm120 imports with torch, quack, triton and fa4_torch unimportable,
and never tries to import them (not even behind try/except).

The source-side scan of packages/fa4-sm120/src is in tests/core/test_no_torch.py; this is the
installed-package side (tests/layer_imports.py), run in the tests(sm120) venv, which has no torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

LAYER_IMPORTS = Path(__file__).resolve().parents[1] / "layer_imports.py"
BLOCKED = {"torch", "quack", "triton", "fa4_torch"}


def test_every_fa4_sm120_module_imports_without_torch(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(LAYER_IMPORTS), "fa4_sm120", ",".join(sorted(BLOCKED))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not result["failures"], "\n\n".join(f"{m}:\n{e}" for m, e in result["failures"].items())
    # the DSL itself never tries torch, so any attempt, guarded or not, is fa4_sm120's own
    assert not result["attempts"], f"fa4_sm120 tried to import {result['attempts']}"
