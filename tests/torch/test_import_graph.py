"""The modules of every package import each other in one direction, through public names only.

Parsed from the sources with ``ast`` (nothing is imported): every ``import`` / ``from ... import``,
at module level or inside a function, class or ``if`` block, that names a module of the same package
is an edge of that package's graph (``from pkg import name`` is an edge to the submodule ``pkg.name``
when there is one, else to the package's ``__init__``). The parent packages that Python runs before a
submodule are not edges. The tests:

* each package's graph is acyclic (a cycle is printed as the path that closes it);
* no module imports another module's private names: ``from pkg.mod import _name``, or ``mod._name``
  where ``mod`` is another module of the package bound by ``import pkg.mod as mod`` / ``from pkg
  import mod`` (a private *module*, ``fa4_core._intmath``, is its package's own: its public names may
  be imported within the package);
* ``fa4_torch.api`` holds only the public functions (``__all__``), and the layers of fa4-torch import
  only downwards (``validate -> plan -> launch, launch_bwd -> ops -> autograd -> api``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[2] / "packages"
SOURCES = {src.name: src for src in sorted(PACKAGES.glob("*/src/*")) if (src / "__init__.py").is_file()}
# fa4-torch's layers, lowest first: a module may import only those before it
TORCH_LAYERS = ("validate", "plan", "launch", "launch_bwd", "ops", "autograd", "api")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass(frozen=True)
class Use:
    module: str  # the importing module
    target: str  # the imported module of the same package
    name: str | None  # the private name it reaches for, if any
    line: int


def _modules(package: str) -> dict[str, Path]:
    root = SOURCES[package]
    mods = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    return mods


def _uses(package: str) -> list[Use]:
    mods = _modules(package)
    uses = []
    for module, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_pkg = path.name == "__init__.py"
        aliases: dict[str, str] = {}  # local name -> module of the package
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods and a.name != module:
                        uses.append(Use(module, a.name, None, node.lineno))
                        if a.asname:
                            aliases[a.asname] = a.name
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.partition(".")[0] != package:
                    continue
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in mods:  # a submodule
                        if sub != module:
                            uses.append(Use(module, sub, None, node.lineno))
                            aliases[a.asname or a.name] = sub
                    elif base in mods and base != module:
                        uses.append(Use(module, base, a.name if _private(a.name) else None, node.lineno))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
            ):
                uses.append(Use(module, aliases[node.value.id], node.attr, node.lineno))
    return uses


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m) :] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_packages_are_found():
    assert set(SOURCES) == {"fa4_core", "fa4_sm120", "fa4_torch"}
    assert "fa4_torch.launch" in _modules("fa4_torch")


@pytest.mark.parametrize("package", sorted(SOURCES))
def test_import_graph_is_acyclic(package):
    edges: dict[str, set[str]] = {}
    for u in _uses(package):
        edges.setdefault(u.module, set()).add(u.target)
    cycle = _cycle(edges)
    assert cycle is None, f"{package} imports in a cycle: {' -> '.join(cycle)}"


@pytest.mark.parametrize("package", sorted(SOURCES))
def test_no_module_reaches_for_another_modules_private_names(package):
    bad = [f"{u.module}:{u.line} uses {u.target}.{u.name}" for u in _uses(package) if u.name]
    assert not bad, "\n".join(bad)


def test_the_checks_see_a_cycle_and_a_private_name(tmp_path, monkeypatch):
    """The control: a package with ``a -> b -> a`` (b's import inside a function) and a private name."""
    pkg = tmp_path / "p" / "src" / "pkgx"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkgx.b import g\n\n_x = 1\n")
    (pkg / "b.py").write_text("def g():\n    from pkgx import a\n    return a._x\n")
    monkeypatch.setitem(SOURCES, "pkgx", pkg)
    uses = _uses("pkgx")
    edges: dict[str, set[str]] = {}
    for u in uses:
        edges.setdefault(u.module, set()).add(u.target)
    assert _cycle(edges) in (["pkgx.a", "pkgx.b", "pkgx.a"], ["pkgx.b", "pkgx.a", "pkgx.b"])
    assert [(u.module, u.target, u.name) for u in uses if u.name] == [("pkgx.b", "pkgx.a", "_x")]


def test_torch_layers_import_downwards():
    rank = {f"fa4_torch.{name}": i for i, name in enumerate(TORCH_LAYERS)}
    bad = [
        f"{u.module}:{u.line} imports {u.target}"
        for u in _uses("fa4_torch")
        if u.module in rank and u.target in rank and rank[u.target] >= rank[u.module]
    ]
    assert not bad, "\n".join(bad)


def test_api_holds_only_the_public_functions():
    tree = ast.parse((SOURCES["fa4_torch"] / "api.py").read_text())
    exported = None
    functions = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == [
            "__all__"
        ]:
            exported = ast.literal_eval(node.value)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            functions.append(node.name)
        else:
            assert isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr)), ast.dump(node)[:200]
    public = [
        "flash_attn_func",
        "flash_attn_varlen_func",
        "flash_attn_with_kvcache",
        "attention_backward",
        "quantized_attn_func",
        "quantized_attn_varlen_func",
        "scaled_dot_product_attention",
    ]
    assert exported == functions == public
