"""Each package declares what its code imports, and imports what it declares.

Parsed from the sources (``ast``) and ``packages/*/pyproject.toml``: every import of a module outside the
standard library and the package itself, at module level or inside a function, must be a declared
dependency, or one of an in-repo dependency's (``nvidia-cutlass-dsl`` is pinned in fa4-core only), or an
optional import (a feature that says so when its library is missing); every declared dependency must be
imported, or be a runtime dependency of one that is (listed below with the reason).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

PACKAGES = Path(__file__).resolve().parents[2] / "packages"
DISTS = {"fa4-core": "fa4_core", "fa4-sm120": "fa4_sm120", "fa4-torch": "fa4_torch"}
# the import name of each distribution the packages declare (or must not)
IMPORT_NAME = {
    "nvidia-cutlass-dsl": "cutlass",
    "apache-tvm-ffi": "tvm_ffi",
    "torch-c-dlpack-ext": "torch_c_dlpack_ext",
    "torch": "torch",
    "quack-kernels": "quack",
    **{dist: module for dist, module in DISTS.items()},
}
# imported only where present, each behind a check that says what is missing
OPTIONAL = {
    "fa4_core": {"torch", "numpy"},  # fa4_core.testing: torch tensors or numpy arrays, whichever it gets
    "fa4_sm120": set(),
    "fa4_torch": {
        "transformers",  # fa4_torch.integrations.transformers
        "triton",  # fa4 bench: triton.testing.do_bench
        "matplotlib",  # fa4 bench: the plot
    },
}
# declared but imported by another dependency on fa4's behalf
RUNTIME_ONLY = {
    "fa4-torch": {"torch-c-dlpack-ext"},  # TVM-FFI's DLPack exchange with torch < 2.10 (it imports it)
}


def _declared(dist: str) -> list[str]:
    meta = tomllib.loads((PACKAGES / dist / "pyproject.toml").read_text())
    return [re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0] for req in meta["project"].get("dependencies", [])]


def _closure(dist: str) -> set[str]:
    """The declared dependencies of ``dist`` and of its in-repo dependencies, transitively."""
    out: set[str] = set()
    for dep in _declared(dist):
        out.add(dep)
        if dep in DISTS:
            out |= _closure(dep)
    return out


def _imports(module: str) -> set[str]:
    """Top-level names of every absolute import in the package's sources."""
    names = set()
    for path in (PACKAGES.glob(f"*/src/{module}")).__next__().rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.partition(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.partition(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", module}


@pytest.mark.parametrize("dist", DISTS)
def test_every_import_is_declared(dist):
    module = DISTS[dist]
    provided = {IMPORT_NAME.get(d, d.replace("-", "_")) for d in _closure(dist)}
    missing = _imports(module) - provided - OPTIONAL[module]
    assert not missing, f"{dist} imports {sorted(missing)} without declaring them"


@pytest.mark.parametrize("dist", DISTS)
def test_every_dependency_is_imported(dist):
    imported = _imports(DISTS[dist])
    unused = [
        d
        for d in _declared(dist)
        if IMPORT_NAME.get(d, d.replace("-", "_")) not in imported and d not in RUNTIME_ONLY.get(dist, set())
    ]
    assert not unused, f"{dist} declares {unused} and never imports them"


def test_fa4_torch_declares_tvm_ffi_and_not_quack():
    """fa4-torch imports TVM-FFI itself (the disk cache) and quack nowhere: quack's import runs triton's
    and the DSL's, which a CPU install has not (the former) and a warm call must not pay (the latter)."""
    deps = _declared("fa4-torch")
    assert "apache-tvm-ffi" in deps and "quack-kernels" not in deps
    assert "quack" not in _imports("fa4_torch")
