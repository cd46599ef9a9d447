"""Run by ``nox -s build`` only, in a clean venv that holds the wheels built into dist/ (and their deps).

Checks what a release needs: each installed distribution's version is its ``__about__.__version__``, it
was installed from the wheel (not from packages/*/src), and dist/ has its sdist with the files a build
from the sdist needs. pytest's default collection skips this folder (norecursedirs).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DIST_DIR = Path(os.environ.get("FA4_DIST_DIR", ROOT / "dist")).resolve()
PACKAGES = {"fa4-core": "fa4_core", "fa4-sm120": "fa4_sm120", "fa4-torch": "fa4_torch"}


@pytest.mark.parametrize(("dist", "module"), PACKAGES.items())
def test_installed_version_is_about_version(dist: str, module: str) -> None:
    mod = importlib.import_module(module)
    about = importlib.import_module(f"{module}.__about__")
    assert importlib.metadata.version(dist) == about.__version__ == mod.__version__


@pytest.mark.parametrize(("dist", "module"), PACKAGES.items())
def test_imported_from_the_wheel_not_the_source_tree(dist: str, module: str) -> None:
    mod = importlib.import_module(module)
    assert ROOT / "packages" not in Path(mod.__file__).resolve().parents, mod.__file__
    direct_url = json.loads(importlib.metadata.distribution(dist).read_text("direct_url.json") or "{}")
    assert not direct_url.get("dir_info", {}).get("editable", False), f"{dist} is an editable install"


@pytest.mark.parametrize(("dist", "module"), PACKAGES.items())
def test_sdist_and_wheel_were_built(dist: str, module: str) -> None:
    version = importlib.metadata.version(dist)
    stem = f"{dist.replace('-', '_')}-{version}"
    wheels = list(DIST_DIR.glob(f"{stem}-*.whl"))
    assert wheels, f"no wheel {stem}-*.whl in {DIST_DIR}"
    sdist = DIST_DIR / f"{stem}.tar.gz"
    assert sdist.is_file(), f"no sdist {sdist.name} in {DIST_DIR}"
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
    for needed in ("pyproject.toml", "README.md", f"src/{module}/__init__.py", f"src/{module}/__about__.py"):
        assert f"{stem}/{needed}" in names, f"{sdist.name} lacks {needed}"


@pytest.mark.parametrize("dist", PACKAGES)
def test_wheel_holds_the_license(dist: str) -> None:
    """Every wheel carries its LICENSE (``license-files``) under ``*.dist-info/licenses/``."""
    import zipfile

    version = importlib.metadata.version(dist)
    (wheel,) = DIST_DIR.glob(f"{dist.replace('-', '_')}-{version}-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    licenses = [
        n for n in names if ".dist-info/licenses/" in n and n.rsplit("/", 1)[-1].startswith("LICENSE")
    ]
    assert licenses, f"{wheel.name} holds no LICENSE under *.dist-info/licenses/"
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as z:
        text = z.read(metadata).decode()
    assert "License-File: LICENSE" in text and "Classifier: " in text, f"{wheel.name}: METADATA"


def test_torch_has_the_cu13_extra() -> None:
    """``pip install fa4-torch[cu13]`` pairs the DSL's CUDA 13 flavour with a CUDA 13 torch."""
    requires = importlib.metadata.requires("fa4-torch") or []
    marker = lambda r: r.replace("'", '"').replace(" ", "").endswith('extra=="cu13"')  # noqa: E731
    assert any(r.startswith("fa4-core[cu13]") and marker(r) for r in requires), requires
