"""fa4's sessions. ``nox`` runs the CPU ones (lint, tests, compile, build); ``nox -s gpu`` needs a GPU.

Each session gets a fresh venv and installs the packages NON-editable, only the layers it needs: a file
missing from a wheel, or a layer importing one above it (tests(core) and tests(sm120) have no torch),
fails here and not at a user's. torch always comes through ``constraints/ci.txt``: a CPU build that pip
finds on the development and CI machines' disk (any other version downloads gigabytes).
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"  # nox.project.dependency_groups
nox.options.default_venv_backend = "venv"  # not uv: uv does not see the local torch file
nox.options.sessions = ["lint", "tests", "compile", "build"]
nox.options.error_on_external_run = True

ROOT = Path(__file__).resolve().parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
CONSTRAINTS = ("-c", "constraints/ci.txt")
LINT_PATHS = ("packages", "tests", "benchmarks", "tools", "noxfile.py")
NO_TESTS = 5  # pytest's exit code when nothing was collected, or everything was deselected


@dataclass(frozen=True)
class Package:
    dist: str  # distribution name
    path: str  # folder with its pyproject.toml
    deps: tuple[str, ...] = ()  # in-repo dependencies (registry keys), lowest layer first


PACKAGES = {
    "core": Package("fa4-core", "packages/fa4-core"),
    "sm120": Package("fa4-sm120", "packages/fa4-sm120", deps=("core",)),
    "torch": Package("fa4-torch", "packages/fa4-torch", deps=("core", "sm120")),
}


def _group(name: str) -> list[str]:
    return nox.project.dependency_groups(PYPROJECT, name)


def _install(session: nox.Session, *names: str) -> None:
    """Installs the named packages, their in-repo deps and the test group, non-editable, in one resolve."""
    keys = dict.fromkeys(key for name in names for key in (*PACKAGES[name].deps, name))
    group = _group("test-torch" if "torch" in keys else "test")
    session.install(*CONSTRAINTS, *(f"./{PACKAGES[key].path}" for key in keys), *group)


def _test_dirs(*names: str) -> list[str]:
    return [f"tests/{name}" for name in names if (ROOT / "tests" / name).is_dir()]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check (nothing of ours installed)."""
    session.install(*_group("lint"))
    paths = [p for p in LINT_PATHS if (ROOT / p).exists()]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", "--output-format", "concise", *paths)


@nox.session
@nox.parametrize("layer", [nox.param(name, id=name) for name in PACKAGES])
def tests(session: nox.Session, layer: str) -> None:
    """CPU tests of one layer (tests/<layer>), in a venv with only that package and the layers below it."""
    _install(session, layer)
    dirs = _test_dirs(layer)
    if not dirs:
        session.warn(f"tests/{layer} does not exist yet: the install was the only check")
        return
    marks = "not gpu and not compile_only"
    session.run("pytest", *dirs, "-m", marks, *session.posargs, success_codes=[0, NO_TESTS])


@nox.session
def compile(session: nox.Session) -> None:
    """Compiles every kernel variant the tile tables select for sm_120a on the CPU (pytest -m
    "compile_only and not alternative") and summarizes it.

    tests/torch joins (and torch is installed) only if it has compile_only tests.
    """
    _compile(session, "compile_only and not alternative")


@nox.session(name="compile-all")
def compile_all(session: nox.Session) -> None:
    """``compile`` plus the alternatives the tables do not select (the candidates the tuning tools
    time): once per release, not in CI."""
    _compile(session, "compile_only")


@nox.session(name="kv8-sweep")
def kv8_sweep(session: nox.Session) -> None:
    """Every FP8-cache forward variant (each head-dim pair, q dtype, layout, mask and serving flag:
    tools/kv8_spill_sweep.py --all) compiled for sm_120a, failing on any spill: once per release, not
    in CI (about 46,000 builds: some 105 minutes on 16 cores)."""
    _install(session, "torch")
    session.env["CUTE_DSL_ARCH"] = "sm_120a"
    session.run("python", "tools/kv8_spill_sweep.py", "--all", *session.posargs)


def _compile(session: nox.Session, marks: str) -> None:
    layers = ["core", "sm120"]
    torch_dir = ROOT / "tests" / "torch"
    if torch_dir.is_dir() and any("compile_only" in p.read_text() for p in torch_dir.rglob("*.py")):
        layers.append("torch")
    _install(session, *layers)
    session.env["CUTE_DSL_ARCH"] = "sm_120a"
    junit = Path(session.create_tmp()) / "compile.xml"
    junit.unlink(missing_ok=True)
    try:
        session.run(
            "pytest",
            *_test_dirs(*layers),
            "-m",
            marks,
            f"--junitxml={junit}",
            *session.posargs,
            success_codes=[0, NO_TESTS],
        )
    finally:
        _compile_summary(session, junit)


def _compile_summary(session: nox.Session, junit: Path) -> None:
    """Prints one line per compile_only test from pytest's JUnit XML: compiled, skipped (why) or failed."""
    if not junit.is_file():
        return
    rows = {"compiled": [], "skipped": [], "failed": []}
    for case in ET.parse(junit).iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        skipped = case.find("skipped")
        if skipped is not None:
            rows["skipped"].append(f"{test}  ({skipped.get('message', '')})")
        elif case.find("failure") is not None or case.find("error") is not None:
            rows["failed"].append(test)
        else:
            rows["compiled"].append(test)
    lines = ["compile summary (CUTE_DSL_ARCH=sm_120a, CPU only, nothing launched):"]
    for what, tests_ in rows.items():
        lines.append(f"  {what}: {len(tests_)}")
        lines += [f"    {t}" for t in tests_]
    if not any(rows.values()):
        lines.append("  no compile_only tests were collected")
    lines.append("  not run here: tests marked gpu (nox -s gpu, or pytest -m gpu on the GPU machine)")
    print("\n".join(lines), flush=True)


def _cuda_gpu() -> str | None:
    """The first GPU nvidia-smi lists, or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    gpus = [line for line in proc.stdout.splitlines() if line.startswith("GPU ")]
    return gpus[0] if proc.returncode == 0 and gpus else None


@nox.session
def gpu(session: nox.Session) -> None:
    """Tests marked gpu, with all three packages; skipped on a machine without a CUDA GPU.

    The lent GPU machine has no nox and no network: there, run pytest directly (README, GPU machine).
    """
    device = _cuda_gpu()
    if device is None:
        session.skip("no CUDA GPU here (nvidia-smi lists none); run on a GPU machine: see README.md")
    session.log(f"device: {device}")
    _install(session, "torch")
    session.run("pytest", "tests", "-m", "gpu", *session.posargs, success_codes=[0, NO_TESTS])


@nox.session
def sanitize(session: nox.Session) -> None:
    """compute-sanitizer memcheck, racecheck and synccheck over a representative set of kernels
    (tools/sanitize.sh over tests/torch/test_sanitize_gpu.py); skipped without a CUDA GPU."""
    device = _cuda_gpu()
    if device is None:
        session.skip("no CUDA GPU here; compute-sanitizer needs one (run tools/sanitize.sh on a GPU machine)")
    _install(session, "torch")
    session.run("bash", "tools/sanitize.sh", *session.posargs, external=True)


@nox.session
def build(session: nox.Session) -> None:
    """Builds sdist and wheel of each package into dist/, installs the wheels into a clean venv, checks them.

    ``twine check --strict`` checks the metadata of every sdist and wheel; the check (tests/build)
    compares each installed version with its __about__.__version__, looks into the sdists and checks
    that each wheel holds its LICENSE. docs/development.md has the release path (tags, upload).
    """
    session.install("build", "twine")
    dist = ROOT / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    for pkg in PACKAGES.values():
        session.run("python", "-m", "build", "--quiet", "--outdir", str(dist), pkg.path)
    # what PyPI will check on upload: metadata, the README's rendering
    session.run("python", "-m", "twine", "check", "--strict", *sorted(str(p) for p in dist.iterdir()))
    # a venv of its own, so nothing of the build tooling is there
    clean = Path(session.create_tmp()) / "clean-venv"
    session.run("python", "-m", "venv", "--clear", str(clean))
    python = str(clean / "bin" / "python")
    wheels = sorted(str(p) for p in dist.glob("*.whl"))
    session.run(
        python,
        "-m",
        "pip",
        "install",
        *CONSTRAINTS,
        "--find-links",
        str(dist),
        *wheels,
        *_group("test"),
        external=True,
    )
    for pkg in PACKAGES.values():
        module = pkg.dist.replace("-", "_")
        session.run(
            python, "-c", f"import {module}; print({module}.__name__, {module}.__version__)", external=True
        )
    session.run(python, "-m", "pytest", "tests/build", env={"FA4_DIST_DIR": str(dist)}, external=True)
