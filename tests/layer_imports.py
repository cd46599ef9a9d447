"""Import every module of an installed package in this interpreter with some top-level names blocked.

    python tests/layer_imports.py PACKAGE BLOCKED[,BLOCKED...]

Run in a fresh interpreter by the layer tests (tests/core/test_no_torch.py, tests/sm120/test_layers.py).
An import of a blocked name raises ModuleNotFoundError and is recorded, so an unguarded import makes the
module fail to import and a guarded one (``try: import torch / except ImportError``) still shows in
``attempts``. Prints one JSON object: ``modules``, ``failures`` {module: error}, ``attempts``.
Not a test module: pytest does not collect it.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import traceback


def main(package: str, blocked: set[str]) -> dict[str, object]:
    attempts: set[str] = set()

    class Blocker:
        def find_spec(self, name: str, path: object = None, target: object = None) -> None:
            if name.partition(".")[0] in blocked:
                attempts.add(name)
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: {package} must not import it)")
            return None

    for name in list(sys.modules):
        if name.partition(".")[0] in blocked:
            del sys.modules[name]
    sys.meta_path.insert(0, Blocker())

    failures: dict[str, str] = {}

    def record(name: str) -> None:
        failures[name] = traceback.format_exc(limit=-3)

    modules = [package]
    try:
        root = importlib.import_module(package)
    except Exception:
        record(package)
    else:
        modules += [m.name for m in pkgutil.walk_packages(root.__path__, package + ".", onerror=record)]
    for name in modules:
        if name in failures:
            continue
        try:
            importlib.import_module(name)
        except Exception:
            record(name)
    return {"modules": modules, "failures": failures, "attempts": sorted(attempts)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], set(sys.argv[2].split(",")))))
