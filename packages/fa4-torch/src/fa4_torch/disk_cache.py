"""Persistent compile cache: compiled kernels kept on disk as object files, shared by processes.

A kernel variant compiles once per machine instead of once per process. :class:`fa4_torch.cache.
CompileCache` calls :func:`load_or_build` on an in-memory miss; this module turns the key into a file
name, loads the file when it is there, and otherwise compiles and writes it.

Layout: ``<root>/<dsl-version>/<target>/<sha>.o`` (plus ``<sha>.so`` where it could be linked,
``<sha>.json``, what the entry is, for people, and ``<sha>.lock``), where

* ``root`` is ``$FA4_CACHE_DIR``, else ``$XDG_CACHE_HOME/fa4``, else ``~/.cache/fa4``;
  ``FA4_CACHE_DIR=off`` (or ``0``, ``none``, ``false``) or ``FA4_DISK_CACHE=0`` turns the disk layer off;
* ``dsl-version`` is ``nvidia-cutlass-dsl``'s version, ``target`` what the DSL compiles for
  (``CUTE_DSL_ARCH``, else the current GPU's ``sm_XY``), both named without importing the DSL;
* ``sha`` is the SHA-256 of the key's canonical text (every field of the frozen config dataclasses,
  the strings of the key; the device index is dropped: the object file does not depend on it), the
  target, the DSL and TVM-FFI versions, the machine (``x86_64``/``aarch64``) and a fingerprint of the
  ``.py`` sources of ``fa4_core`` and ``fa4_sm120`` (computed once per process), so that editing the
  kernels or upgrading the DSL gives new entries and never loads a stale one.

The object file is what ``compiled.export_to_c`` writes and ``cutlass.cute.runtime.load_module(...,
enable_tvm_ffi=True)`` loads: a TVM-FFI function that takes the same torch tensors as the in-process
one (the protocol of ``quack.cache.jit``). Where a C compiler is on the machine (``$CC``, ``cc``,
``gcc``, ``clang``), the writer also links it into ``<sha>.so`` against the DSL's runtime library and
TVM-FFI (``-z defs``: every symbol resolved at link time, absolute rpaths); a later process loads
that with ``tvm_ffi.load_module`` alone: the same ``__tvm_ffi_func`` symbol and calling convention,
without importing the DSL, whose import (0.3-2.5 s measured) is most of a warm first call. Without a
compiler, or if the ``.so`` will not load, the ``.o`` is loaded through the DSL as before
(``FA4_CACHE_SO=0`` forces that).

Concurrency: one advisory ``flock`` per entry. A hit loads under a shared lock (many readers at once);
a miss takes the exclusive lock, looks again (another process may have just written it), compiles,
writes ``<sha>.o.tmp.<pid>`` and renames it into place (``os.replace``): a reader never sees a partial
file, and a process killed mid-write leaves only a temporary file. N processes starting cold on one
variant compile it once; the others wait for the lock and load.

Failure policy: the disk layer never makes a call fail. A directory that cannot be created or
locked, a file that will not load, an export that raises: each warns once per process
(``RuntimeWarning``) and the variant is compiled in memory as without the disk layer. A file that does
not load is removed (under the exclusive lock) and rebuilt. Errors of the compile itself propagate.

The lock is written here rather than taken from ``quack.cache.FileLock`` (same fcntl protocol, same
shared/exclusive use): importing any ``quack`` submodule runs ``quack/__init__``, which imports
triton (``quack.rmsnorm`` -> ``quack.autotuner``), so it fails on CPU installs and would add quack's
import time to the warm first call this cache exists to make fast.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("fa4.disk_cache")  # DEBUG: a kernel loaded from disk; INFO: written

__all__ = [
    "CACHE_DIR_ENV",
    "SWITCH_ENV",
    "Entry",
    "FileLock",
    "c_compiler",
    "cache_root",
    "compile_target",
    "dsl_version",
    "entry_for",
    "key_text",
    "load_entry",
    "load_or_build",
    "reset_warnings",
    "source_fingerprint",
    "stats",
]

CACHE_DIR_ENV = "FA4_CACHE_DIR"
SWITCH_ENV = "FA4_DISK_CACHE"
SO_ENV = "FA4_CACHE_SO"  # "0": load the object files through the DSL, ignoring the linked .so
FUNC_NAME = "func"  # the exported TVM-FFI symbol: __tvm_ffi_func
LOCK_TIMEOUT_S = 300.0  # waiting for another process's compile of the same variant (seconds each)
_OFF = {"0", "off", "no", "none", "false", "disable", "disabled"}


class NotPersistable(TypeError):
    """A key holding something without a stable text (an object, a function, a device)."""


# ---------------------------------------------------------------------------------- where
def cache_root() -> Path | None:
    """The cache's root directory, or ``None`` when the disk layer is off (read per call)."""
    if os.environ.get(SWITCH_ENV, "").strip().lower() in _OFF:
        return None
    value = os.environ.get(CACHE_DIR_ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"  # XDG: relative is invalid
    return base / "fa4"


def compile_target() -> str:
    """What the DSL compiles for without ``--gpu-arch``, named without importing the DSL:
    ``CUTE_DSL_ARCH`` when set (the DSL's override), else the current GPU's ``sm_XY`` (the DSL reads
    the resident GPU), else ``unknown``. The arch-specific suffix is dropped (``sm_120a`` ->
    ``sm_120``): the DSL builds a GPU's own ``a`` target for it, so an entry built without that GPU
    under ``CUTE_DSL_ARCH=sm_120a`` (``fa4 warmup --for-gpu 12.0``) is the one the GPU looks up."""
    env = os.environ.get("CUTE_DSL_ARCH", "").strip()
    if env:
        return env[:-1] if env[-1:] in ("a", "f") and env[:-1].startswith("sm_") else env
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            return f"sm_{major}{minor}"
    except Exception:
        pass
    return "unknown"


_DSL_VERSION: list[str] = []


def dsl_version() -> str:
    """``nvidia-cutlass-dsl``'s version, from the installed distribution's metadata: a key lookup
    must not import the DSL (a warm process loads its kernels from disk without it)."""
    if not _DSL_VERSION:
        from importlib import metadata

        try:
            version = metadata.version("nvidia-cutlass-dsl")
        except metadata.PackageNotFoundError:  # e.g. a source checkout on the path
            import cutlass

            version = getattr(cutlass, "__version__", "unknown")
        _DSL_VERSION.append(version)
    return _DSL_VERSION[0]


# ---------------------------------------------------------------------------------- what
def _text(obj: Any) -> str:
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        return repr(obj)
    if isinstance(obj, enum.Enum):
        return f"{type(obj).__module__}.{type(obj).__qualname__}.{obj.name}"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        cls = type(obj)
        fields = ", ".join(f"{f.name}={_text(getattr(obj, f.name))}" for f in dataclasses.fields(obj))
        return f"{cls.__module__}.{cls.__qualname__}({fields})"
    if isinstance(obj, tuple):
        return "(" + ", ".join(_text(x) for x in obj) + ",)"
    if isinstance(obj, frozenset):
        return "frozenset(" + ", ".join(sorted(_text(x) for x in obj)) + ")"
    raise NotPersistable(f"{type(obj).__qualname__} has no stable text")


def key_text(key: Any) -> str:
    """The canonical text of a compile-cache key, the same in every process.

    Frozen dataclasses are written with their module, class and every field; top-level ``int`` and
    ``None`` items are dropped (the API's keys end with the device index, on which the object file
    does not depend). Raises :class:`NotPersistable` for anything else without a stable text."""
    parts = key if isinstance(key, tuple) else (key,)
    kept = tuple(p for p in parts if not (p is None or (isinstance(p, int) and not isinstance(p, bool))))
    return _text(kept)


def _hash_tree(h, root: Path) -> None:
    for src in sorted(root.rglob("*.py")):
        if "__pycache__" in src.parts or not src.is_file():
            continue
        data = src.read_bytes()
        h.update(src.relative_to(root).as_posix().encode() + b"\0")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)


def source_fingerprint(roots: Iterable[Path | str] | None = None) -> str:
    """SHA-256 over the ``.py`` files under ``roots`` (default: the ``fa4_core`` and ``fa4_sm120``
    packages, the code that generates the kernels), by relative path and content."""
    if roots is None:
        return _default_fingerprint()
    h = hashlib.sha256()
    for root in roots:
        root = Path(root)
        h.update(root.name.encode() + b"\0")
        _hash_tree(h, root)
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _default_fingerprint() -> str:
    import fa4_core
    import fa4_sm120

    return source_fingerprint(Path(m.__file__).resolve().parent for m in (fa4_core, fa4_sm120))


@functools.lru_cache(maxsize=1)
def _runtime_stamp() -> str:
    try:
        import tvm_ffi

        tvm = getattr(tvm_ffi, "__version__", "unknown")
    except ImportError:
        tvm = "none"
    return f"tvm_ffi={tvm};machine={platform.machine()}"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One variant's files: ``obj`` (the object file), ``lock``, ``meta`` (JSON, informational)."""

    directory: Path
    sha: str
    text: str
    target: str
    dsl: str

    @property
    def obj(self) -> Path:
        return self.directory / f"{self.sha}.o"

    @property
    def so(self) -> Path:
        return self.directory / f"{self.sha}.so"

    @property
    def lock(self) -> Path:
        return self.directory / f"{self.sha}.lock"

    @property
    def meta(self) -> Path:
        return self.directory / f"{self.sha}.json"


def entry_for(
    key: Any,
    *,
    root: Path | str | None = None,
    target: str | None = None,
    dsl: str | None = None,
    fingerprint: str | None = None,
) -> Entry | None:
    """Where ``key`` lives on disk; ``None`` when the disk layer is off. Unspecified parts come from
    this process (:func:`cache_root`, :func:`compile_target`, the DSL version, the sources)."""
    if root is None:
        root = cache_root()
        if root is None:
            return None
    if dsl is None:
        dsl = dsl_version()
    text = key_text(key)
    target = target or compile_target()
    fingerprint = fingerprint or source_fingerprint()
    ident = "\n".join(("fa4-disk-cache-v1", text, target, f"cutlass={dsl}", _runtime_stamp(), fingerprint))
    sha = hashlib.sha256(ident.encode()).hexdigest()
    return Entry(Path(root) / _safe(dsl) / _safe(target), sha, text, target, dsl)


def _safe(part: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in part) or "_"


# ---------------------------------------------------------------------------------- locks
class FileLock:
    """An advisory ``fcntl.flock`` on ``path`` (created if missing), shared or exclusive, polled up to
    ``timeout`` seconds (default :data:`LOCK_TIMEOUT_S`; then ``TimeoutError``); the protocol of
    ``quack.cache.FileLock``. Released when the process dies, so a killed compile never wedges it."""

    def __init__(self, path: Path | str, exclusive: bool, timeout: float | None = None):
        self.path = str(path)
        self.exclusive = exclusive
        self.timeout = LOCK_TIMEOUT_S if timeout is None else timeout
        self._fd = -1

    def __enter__(self) -> FileLock:
        import fcntl

        flags = (os.O_WRONLY if self.exclusive else os.O_RDONLY) | os.O_CREAT
        self._fd = os.open(self.path, flags, 0o666)
        op = (fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        deadline = time.monotonic() + self.timeout
        pause = 0.005
        while True:
            try:
                fcntl.flock(self._fd, op)
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self._fd)
                    self._fd = -1
                    raise TimeoutError(
                        f"timed out after {self.timeout:.0f} s waiting for {self.path}"
                    ) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def __exit__(self, *exc) -> None:
        if self._fd >= 0:
            import fcntl

            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


# ---------------------------------------------------------------------------------- load / build
_stats = {"loaded": 0, "loaded_so": 0, "compiled": 0, "written": 0, "corrupt": 0, "fallbacks": 0}
_stats_lock = threading.Lock()
_warned: set[str] = set()


def reset_warnings() -> None:
    """Warn again what this process has warned once (tests)."""
    _warned.clear()


def stats() -> dict[str, int]:
    """This process's counts: ``loaded`` from disk (``loaded_so`` of them from the ``.so``, without the
    DSL), ``compiled`` on a disk miss, ``written``,
    ``corrupt`` files removed, ``fallbacks`` to a memory-only compile because the disk layer failed."""
    with _stats_lock:
        return dict(_stats)


def _count(name: str) -> None:
    with _stats_lock:
        _stats[name] += 1


def _warn_once(kind: str, message: str) -> None:
    if kind in _warned:
        return
    _warned.add(kind)
    warnings.warn(f"fa4 compile cache: {message}", RuntimeWarning, stacklevel=4)


_modules: list[Any] = []  # loaded shared libraries stay loaded for the life of the process


def load_entry(entry: Entry):
    """The entry's function: from ``<sha>.so`` through TVM-FFI alone when it is there and loads,
    else from ``<sha>.o`` through the DSL."""
    if entry.so.exists() and os.environ.get(SO_ENV, "").strip().lower() not in _OFF:
        try:
            import tvm_ffi

            module = tvm_ffi.load_module(str(entry.so))
            fn = module[FUNC_NAME]
            _modules.append(module)
            _count("loaded_so")
            return fn
        except Exception as e:
            _warn_once(
                f"so:{entry.directory}",
                f"{entry.so} did not load ({type(e).__name__}: {str(e).strip()[:200]}); using {entry.obj.name}",
            )
    from cutlass.cute.runtime import load_module

    module = load_module(str(entry.obj), enable_tvm_ffi=True)
    return module[FUNC_NAME]


def c_compiler() -> str | None:
    """The C compiler that links ``<sha>.so`` (``$CC``, ``cc``, ``gcc``, ``clang``), or None."""
    for name in (os.environ.get("CC", "").strip(), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _link_shared(obj: Path, out: Path) -> bool:
    """Link ``obj`` into the shared library ``out`` against the DSL runtime and TVM-FFI; ``False``
    (nothing written) without a C compiler or when the link fails."""
    cc = c_compiler()
    if cc is None:
        return False
    from cutlass.cute.runtime import find_runtime_libraries

    libs = [str(Path(p).resolve()) for p in find_runtime_libraries(enable_tvm_ffi=True) if Path(p).exists()]
    rpaths = [f"-Wl,-rpath,{d}" for d in dict.fromkeys(str(Path(p).parent) for p in libs)]
    cmd = [cc, "-shared", "-o", str(out), str(obj), *libs, *rpaths, "-Wl,-z,defs"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and out.exists()


def _try_load(entry: Entry, *, remove: bool):
    """The loaded function, or ``None`` when the file is missing or will not load (then removed when
    ``remove``: the caller holds the exclusive lock)."""
    if not entry.obj.exists():
        return None
    try:
        fn = load_entry(entry)
    except Exception as e:
        if not remove:
            return None
        _count("corrupt")
        _warn_once(
            f"corrupt:{entry.directory}",
            f"{entry.obj} did not load ({type(e).__name__}: {str(e).strip()[:200]}); removed, recompiling",
        )
        for p in (entry.obj, entry.so, entry.meta):
            try:
                p.unlink()
            except OSError:
                pass
        return None
    _count("loaded")
    log.debug("loaded %s from the disk cache", entry.obj)
    return fn


def _write(fn, entry: Entry, seconds: float) -> None:
    """Export ``fn`` to ``entry.obj`` atomically (caller holds the exclusive lock); warns on failure."""
    export = getattr(fn, "export_to_c", None)
    if export is None:
        _warn_once(
            f"export:{type(fn).__qualname__}",
            f"a {type(fn).__qualname__} cannot be exported (no export_to_c): kept in memory only",
        )
        return
    tmp = entry.obj.with_name(f"{entry.obj.name}.tmp.{os.getpid()}.{threading.get_ident()}")
    so_tmp = entry.so.with_name(f"{entry.so.name}.tmp.{os.getpid()}.{threading.get_ident()}")
    try:
        export(object_file_path=str(tmp), function_name=FUNC_NAME)
        if _link_shared(tmp, so_tmp):
            os.replace(so_tmp, entry.so)
        meta = dict(key=entry.text, target=entry.target, dsl=entry.dsl, compile_s=round(seconds, 3))
        meta.update(created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), pid=os.getpid())
        meta_tmp = entry.meta.with_name(f"{entry.meta.name}.tmp.{os.getpid()}")
        meta_tmp.write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(meta_tmp, entry.meta)
        os.replace(tmp, entry.obj)
    except Exception as e:
        _warn_once(
            f"write:{entry.directory}",
            f"could not write {entry.obj} ({type(e).__name__}: {str(e).strip()[:200]}); "
            "this variant will compile again in the next process",
        )
        for p in (tmp, so_tmp, entry.meta.with_name(f"{entry.meta.name}.tmp.{os.getpid()}")):
            try:
                p.unlink()
            except OSError:
                pass
        return
    _count("written")


def _compile(build: Callable[[], Any]):
    t0 = time.perf_counter()
    fn = build()
    _count("compiled")
    return fn, time.perf_counter() - t0


def load_or_build(key: Any, build: Callable[[], Any]):
    """The compiled function of ``key``: loaded from disk, or ``build()`` then written to disk.

    Exceptions of ``build()`` propagate; nothing the disk does raises (see the module docstring)."""
    try:
        entry = entry_for(key)
    except NotPersistable:
        return build()
    except Exception as e:
        _count("fallbacks")
        _warn_once("entry", f"no entry for this variant ({type(e).__name__}: {e}); compiling in memory")
        return build()
    if entry is None:
        return build()

    # hit: a shared lock, so that no writer replaces or removes the file mid-load
    fn = None
    try:
        if entry.obj.exists():
            try:
                with FileLock(entry.lock, exclusive=False):
                    fn = _try_load(entry, remove=False)
            except TimeoutError:  # a writer holds it: decide under the exclusive lock below
                pass
            except Exception:  # e.g. no lock file in a read-only directory: os.replace keeps this safe
                fn = _try_load(entry, remove=False)
    except Exception:  # an unreadable directory: the exclusive path below warns
        fn = None
    if fn is not None:
        return fn

    # miss (or a file that did not load): compile under the exclusive lock, so N processes compile once
    try:
        entry.directory.mkdir(parents=True, exist_ok=True)
        lock = FileLock(entry.lock, exclusive=True)
        lock.__enter__()
    except Exception as e:  # read-only, not a directory, no fcntl, a lock held too long
        _count("fallbacks")
        _warn_once(
            f"lock:{entry.directory}",
            f"{entry.directory} is not usable ({type(e).__name__}: {e}); compiling in memory",
        )
        return build()
    try:
        fn = _try_load(entry, remove=True)  # written by another process while this one waited?
        if fn is not None:
            return fn
        fn, seconds = _compile(build)
        _write(fn, entry, seconds)
        log.debug("compiled in %.2f s and wrote %s", seconds, entry.obj)
        return fn
    finally:
        lock.__exit__(None, None, None)
