"""The layer rules of docs/architecture.md for the two kernel layers, checked two ways.

1. Source: an AST scan of packages/fa4-core/src and packages/fa4-sm120/src for imports of torch, of
   quack or triton (both import torch) and of a higher fa4 layer. An import of torch guarded by
   ``try: ... except ImportError`` or under ``if TYPE_CHECKING:`` is allowed (``fa4_core.testing`` uses
   torch when it is there) in fa4_core only; every other listed import is not, at module level or inside a function.
2. Installed: every module of the installed ``fa4_core`` is imported in a fresh interpreter in which
   importing torch, quack, triton, fa4_sm120 or fa4_torch fails (tests/layer_imports.py).
   tests/sm120/test_layers.py does the same for ``fa4_sm120``.

nox installs each layer into its own venv, so tests(core) has no torch to import by accident.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYER_IMPORTS = ROOT / "tests" / "layer_imports.py"

# may be imported where guarded: fa4_core.testing uses torch when it is there; fa4_sm120 never does
OPTIONAL = {"fa4-core": {"torch"}, "fa4-sm120": set()}
FORBIDDEN = {
    "fa4-core": {"torch", "quack", "triton", "fa4_sm120", "fa4_torch"},
    "fa4-sm120": {"torch", "quack", "triton", "fa4_torch"},
}


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Collects (top-level module, line, guarded) for every absolute import in a module."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int, bool]] = []
        self._guarded = 0

    def _add(self, module: str, node: ast.AST) -> None:
        self.found.append((module.partition(".")[0], node.lineno, self._guarded > 0))

    def _visit_guarded(self, body: list[ast.stmt]) -> None:
        self._guarded += 1
        for stmt in body:
            self.visit(stmt)
        self._guarded -= 1

    def visit_Try(self, node: ast.Try) -> None:
        if any(_catches_import_error(h) for h in node.handlers):
            self._visit_guarded(node.body)
        else:
            for stmt in node.body:
                self.visit(stmt)
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    visit_TryStar = visit_Try

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._visit_guarded(node.body)
            for stmt in node.orelse:
                self.visit(stmt)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node.module, node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        first = node.args[0] if node.args else None
        if name in ("import_module", "__import__") and isinstance(first, ast.Constant):
            if isinstance(first.value, str):
                self._add(first.value, node)
        self.generic_visit(node)


def _violations(dist: str) -> tuple[list[Path], list[str]]:
    src = ROOT / "packages" / dist / "src"
    files = sorted(src.rglob("*.py"))
    found = []
    for path in files:
        visitor = _Imports()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for module, line, guarded in visitor.found:
            if module in FORBIDDEN[dist] and not (guarded and module in OPTIONAL[dist]):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return files, found


@pytest.mark.parametrize("dist", sorted(FORBIDDEN))
def test_source_imports_respect_layers(dist: str) -> None:
    files, found = _violations(dist)
    assert files, f"no sources under packages/{dist}/src: has the layout moved?"
    assert not found, (
        f"{dist} must not import {sorted(FORBIDDEN[dist])} (fa4_core: torch only behind try/except ImportError):\n"
        + "\n".join(found)
    )


def test_scanner_sees_guards() -> None:
    code = (
        "import torch.nn\n"
        "try:\n    import torch\nexcept ImportError:\n    torch = None\n"
        "if TYPE_CHECKING:\n    from fa4_torch import api\n"
        "def f():\n    from quack import x\n    return importlib.import_module('triton')\n"
    )
    visitor = _Imports()
    visitor.visit(ast.parse(code))
    assert visitor.found == [
        ("torch", 1, False),
        ("torch", 3, True),
        ("fa4_torch", 7, True),
        ("quack", 9, False),
        ("triton", 10, False),
    ]


def run_layer_imports(package: str, blocked: set[str], cwd: Path) -> dict:
    """Imports every module of ``package`` in a fresh interpreter with ``blocked`` unimportable."""
    proc = subprocess.run(
        [sys.executable, str(LAYER_IMPORTS), package, ",".join(sorted(blocked))],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_fa4_core_module_imports_without_torch_or_higher_layers(tmp_path: Path) -> None:
    blocked = FORBIDDEN["fa4-core"]
    result = run_layer_imports("fa4_core", blocked, tmp_path)
    assert not result["failures"], "\n\n".join(f"{m}:\n{e}" for m, e in result["failures"].items())
    unguarded = [name for name in result["attempts"] if name.partition(".")[0] not in OPTIONAL["fa4-core"]]
    assert not unguarded, f"fa4_core tried to import {unguarded}"
    assert "fa4_core.errors" in result["modules"]
