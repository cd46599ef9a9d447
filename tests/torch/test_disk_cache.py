"""The persistent compile cache (``fa4_torch.disk_cache`` under ``fa4_torch.cache.CompileCache``), on the CPU.

What is checked: the key's text and file name are the same in every process (subprocesses with other
hash seeds) and drop only the device index; the sources of ``fa4_core``/``fa4_sm120``, the DSL version
and the target each change the entry; ``FA4_CACHE_DIR`` is honoured, ``off``/``0``/``FA4_DISK_CACHE=0``
switch the layer off, the default is ``$XDG_CACHE_HOME/fa4`` or ``~/.cache/fa4``; a real kernel
written by one process is loaded by the next (``load_module`` needs no GPU; calling it does, so the
numerics are ``test_disk_cache_gpu.py``); several processes starting cold on one variant compile it
once and leave one valid file; a corrupt file is removed and rebuilt; an unusable directory, a
held lock and a non-exportable result fall back to an in-memory compile with a warning, never an
error. The kernel compiled here is the backward preprocess (the smallest, ~0.3 s), for ``sm_120a``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

from fa4_torch import disk_cache
from fa4_torch.cache import CompileCache, dsl_version

# a key of the shape fa4_torch.autograd makes: (role, config, target, DSL version); the fwd keys of
# fa4_torch.api add the device index at the end
PRE_KEY_SRC = (
    "from fa4_sm120.bwd_pre_post import PrePostConfig; from fa4_torch.cache import dsl_version; "
    "key = ('pre', PrePostConfig('bfloat16', 64, False), 'sm_120', dsl_version())"
)


def _pre_key():
    from fa4_sm120.bwd_pre_post import PrePostConfig

    return ("pre", PrePostConfig("bfloat16", 64, False), "sm_120", dsl_version())


def _build_pre():
    from fa4_sm120.bwd_pre_post import PrePostConfig, compile_preprocess

    return compile_preprocess(PrePostConfig("bfloat16", 64, False), tvm_ffi=True)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    """Every test gets its own FA4_CACHE_DIR (nothing reaches ~/.cache) and fresh warn-once state."""
    root = tmp_path / "fa4-cache"
    monkeypatch.setenv(disk_cache.CACHE_DIR_ENV, str(root))
    monkeypatch.delenv(disk_cache.SWITCH_ENV, raising=False)
    disk_cache.reset_warnings()
    yield root
    disk_cache.reset_warnings()


def _run(code: str, env: dict | None = None, timeout: float = 240) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON line last, returned parsed."""
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=e, timeout=timeout
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def _assert_same_rejection(compiled, loaded) -> None:
    """The same signature: both preprocess functions reject CPU tensors with the same message (a
    call needs a GPU)."""
    torch = pytest.importorskip("torch")
    x = torch.zeros(2, 16, 4, 64, dtype=torch.bfloat16)
    f32 = torch.zeros(2, 4, 16)
    errors = []
    for f in (compiled, loaded):
        with pytest.raises(Exception) as e:
            f(x, x, f32, None, f32, f32)
        errors.append(str(e.value))
    assert errors[0] == errors[1]


# ---------------------------------------------------------------------------------- the key
def test_key_text_names_every_field_and_drops_only_the_device_index():
    from fa4_sm120.tiles import fwd_config

    cfg = fwd_config("sm120", "bfloat16", 128, 128, causal=True)
    text = disk_cache.key_text((cfg, "sm_120", "4.8.1", 0))
    assert text.startswith("(fa4_sm120.configs.FwdConfig(dtype='bfloat16', head_dim=128")
    assert "is_causal=True" in text and "'sm_120', '4.8.1'" in text
    assert (
        text
        == disk_cache.key_text((cfg, "sm_120", "4.8.1", 1))
        == disk_cache.key_text((cfg, "sm_120", "4.8.1"))
    )
    other = fwd_config("sm120", "bfloat16", 128, 128, causal=False)
    assert disk_cache.key_text((other, "sm_120", "4.8.1", 0)) != text
    # a bool is a field value, not a device index
    assert disk_cache.key_text(("x", True)) != disk_cache.key_text(("x",))


@pytest.mark.parametrize("bad", [object(), lambda: 0, [1, 2]], ids=["object", "function", "list"])
def test_key_without_a_stable_text_stays_in_memory(bad, cache_dir):
    with pytest.raises(disk_cache.NotPersistable):
        disk_cache.key_text(("cfg", bad))
    built = []
    fn = disk_cache.load_or_build(("cfg", bad, dsl_version()), lambda: built.append(1) or "fn")
    assert fn == "fn" and built == [1]
    assert not cache_dir.exists()


def test_entry_is_the_same_in_every_process():
    code = f"""
        import json
        from fa4_torch import disk_cache
        from fa4_sm120.tiles import fwd_config
        {PRE_KEY_SRC}
        fwd = (fwd_config("sm120", "float16", 64, 64, causal=False, pack_gqa=True, qhead_per_kvhead=4), "sm_120",
               key[-1], 0)
        print(json.dumps([str(disk_cache.entry_for(k).obj) for k in (key, fwd)]))
    """
    a = _run(code, {"PYTHONHASHSEED": "1"})
    b = _run(code, {"PYTHONHASHSEED": "2"})
    assert a == b
    assert a[0] == str(disk_cache.entry_for(_pre_key()).obj)
    assert a[0] != a[1]


def test_sources_dsl_version_and_target_change_the_entry(tmp_path):
    import fa4_core
    import fa4_sm120

    roots = []
    for m in (fa4_core, fa4_sm120):
        dst = tmp_path / "src" / Path(m.__file__).parent.name
        shutil.copytree(Path(m.__file__).parent, dst, ignore=shutil.ignore_patterns("__pycache__"))
        roots.append(dst)
    base = disk_cache.source_fingerprint(roots)
    assert base == disk_cache.source_fingerprint(), "a copy of the same sources is the same fingerprint"
    (roots[1] / "__pycache__").mkdir(exist_ok=True)
    (roots[1] / "__pycache__" / "junk.py").write_text("x = 1\n")
    assert disk_cache.source_fingerprint(roots) == base, "__pycache__ is not source"
    fwd = roots[1] / "fwd.py"
    fwd.write_text(fwd.read_text() + "\n# an edit\n")
    edited = disk_cache.source_fingerprint(roots)
    assert edited != base
    (roots[0] / "new_module.py").write_text("")
    assert disk_cache.source_fingerprint(roots) not in (base, edited)

    key = _pre_key()
    e = disk_cache.entry_for(key, fingerprint=base)
    assert disk_cache.entry_for(key, fingerprint=base) == e
    assert disk_cache.entry_for(key, fingerprint=edited).obj != e.obj
    assert disk_cache.entry_for(key, fingerprint=edited).directory == e.directory
    newer = disk_cache.entry_for(key, fingerprint=base, dsl="9.9.9")
    assert newer.obj != e.obj and newer.directory.parent.name == "9.9.9"
    other = disk_cache.entry_for(key, fingerprint=base, target="sm_121a")
    assert other.obj != e.obj and other.directory.name == "sm_121a"


# ---------------------------------------------------------------------------------- where
def test_fa4_cache_dir_is_honoured(cache_dir):
    e = disk_cache.entry_for(_pre_key())
    assert e.directory == cache_dir / dsl_version() / disk_cache.compile_target()


@pytest.mark.parametrize(
    "env, target", [("sm_120a", "sm_120"), ("sm_121a", "sm_121"), ("sm_86", "sm_86"), ("sm_100f", "sm_100")]
)
def test_target_is_cute_dsl_arch_without_its_suffix(env, target, monkeypatch):
    """A GPU names its entries ``sm_XY`` (its capability); a build for it elsewhere names the DSL's
    ``sm_XYa``: both must be the same directory and key."""
    monkeypatch.setenv("CUTE_DSL_ARCH", env)
    assert disk_cache.compile_target() == target


def test_default_root_is_under_the_user_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(disk_cache.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert disk_cache.cache_root() == tmp_path / "xdg" / "fa4"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert disk_cache.cache_root() == tmp_path / "home" / ".cache" / "fa4"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec: relative paths are ignored
    assert disk_cache.cache_root() == tmp_path / "home" / ".cache" / "fa4"
    monkeypatch.setenv(disk_cache.CACHE_DIR_ENV, "~/elsewhere")
    assert disk_cache.cache_root() == tmp_path / "home" / "elsewhere"


@pytest.mark.parametrize(
    "env",
    [{"FA4_CACHE_DIR": "off"}, {"FA4_CACHE_DIR": "0"}, {"FA4_CACHE_DIR": "None"}, {"FA4_DISK_CACHE": "0"}],
)
def test_disabled_means_no_disk_at_all(env, monkeypatch, cache_dir):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert disk_cache.cache_root() is None and disk_cache.entry_for(_pre_key()) is None
    cache, calls = CompileCache(), []
    assert cache.get_or_compile(_pre_key(), lambda: calls.append(1) or "fn") == "fn"
    assert calls == [1] and not cache_dir.exists()


def test_keys_without_the_dsl_version_stay_in_memory(cache_dir):
    """test_cache_key.py's keys (a bare config, or a made-up DSL version) never touch the disk."""
    from fa4_sm120.tiles import fwd_config

    cfg = fwd_config("sm120", "float16", 128, 128, causal=False)
    cache = CompileCache()
    cache.get_or_compile(cfg, lambda: "a")
    cache.get_or_compile((cfg, "sm_120", "4.3.0"), lambda: "b")
    assert len(cache) == 2 and not cache_dir.exists()
    assert CompileCache(persistent=False)._persists(_pre_key()) is False
    assert CompileCache()._persists(_pre_key()) is True


# ---------------------------------------------------------------------------------- locks
def test_file_lock_shared_and_exclusive(tmp_path):
    path = tmp_path / "x.lock"
    with disk_cache.FileLock(path, exclusive=False), disk_cache.FileLock(path, exclusive=False, timeout=0.5):
        with pytest.raises(TimeoutError):
            with disk_cache.FileLock(path, exclusive=True, timeout=0.2):
                pass
    with disk_cache.FileLock(path, exclusive=True):
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            with disk_cache.FileLock(path, exclusive=False, timeout=0.2):
                pass
        assert time.monotonic() - t0 < 5
    with disk_cache.FileLock(path, exclusive=True, timeout=0.2):  # released: free again
        pass


# ---------------------------------------------------------------------------------- a real kernel
@pytest.mark.compile_only
def test_written_by_one_cache_loaded_by_the_next(cache_dir):
    key = _pre_key()
    before = disk_cache.stats()
    fn = CompileCache().get_or_compile(key, _build_pre)
    entry = disk_cache.entry_for(key)
    assert entry.obj.is_file() and entry.obj.stat().st_size > 1000
    meta = json.loads(entry.meta.read_text())
    assert meta["key"] == entry.text and meta["target"] == entry.target and meta["dsl"] == dsl_version()
    assert not [n for n in _files(cache_dir) if ".tmp." in n]

    calls = []
    loaded = CompileCache().get_or_compile(key, lambda: calls.append(1))
    assert calls == [], "the second cache must load, not compile"
    after = disk_cache.stats()
    assert after["compiled"] - before["compiled"] == 1 and after["written"] - before["written"] == 1
    assert after["loaded"] - before["loaded"] == 1
    import tvm_ffi

    assert isinstance(loaded, tvm_ffi.Function)
    _assert_same_rejection(fn, loaded)


CHILD = f"""
    import json, os, sys, time
    start = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    from fa4_torch import disk_cache
    from fa4_torch.cache import CompileCache
    from fa4_sm120.bwd_pre_post import PrePostConfig, compile_preprocess
    {PRE_KEY_SRC}
    while time.time() < start:  # all children leave the barrier together
        time.sleep(0.001)
    t0 = time.perf_counter()
    fn = CompileCache().get_or_compile(key, lambda: compile_preprocess(key[1], tvm_ffi=True))
    print(json.dumps(dict(seconds=time.perf_counter() - t0, type=type(fn).__name__, **disk_cache.stats())))
"""


@pytest.mark.compile_only
@pytest.mark.timeout(600)
def test_cold_then_warm_process(cache_dir):
    cold = _run(CHILD)
    warm = _run(CHILD)
    assert (cold["compiled"], cold["written"], cold["loaded"]) == (1, 1, 0), cold
    assert (warm["compiled"], warm["written"], warm["loaded"]) == (0, 0, 1), warm
    print(f"\nCPU, bwd preprocess for sm_120a: cold {cold['seconds']:.3f} s, warm {warm['seconds']:.4f} s")
    assert warm["seconds"] < cold["seconds"]


@pytest.mark.compile_only
@pytest.mark.timeout(600)
def test_concurrent_cold_processes_compile_once_and_leave_one_valid_file(cache_dir, tmp_path):
    n = 4
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    start = time.time() + 8.0  # after every child has imported torch and the DSL
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=500)
        assert p.returncode == 0, out[-2000:] + err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(o["compiled"] for o in outs) == 1, outs
    assert sum(o["written"] for o in outs) == 1 and sum(o["loaded"] for o in outs) == n - 1, outs
    entry = disk_cache.entry_for(_pre_key())
    names = _files(cache_dir)
    expected = [entry.obj.name, entry.lock.name, entry.meta.name]
    if disk_cache.c_compiler():
        expected.append(entry.so.name)
    assert names == sorted(expected), names
    assert disk_cache.load_entry(entry) is not None


@pytest.mark.compile_only
@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_file_is_removed_and_rebuilt(damage, cache_dir):
    key = _pre_key()
    CompileCache().get_or_compile(key, _build_pre)
    entry = disk_cache.entry_for(key)
    good = entry.obj.read_bytes()
    bad = {"garbage": b"not an object file" * 64, "truncated": good[: len(good) // 2], "empty": b""}[damage]
    entry.obj.write_bytes(bad)
    if entry.so.exists():  # the shared library alone would still serve (its own test below)
        entry.so.write_bytes(bad)
    before = disk_cache.stats()
    with pytest.warns(RuntimeWarning, match="did not load"):
        fn = CompileCache().get_or_compile(key, _build_pre)
    assert fn is not None
    after = disk_cache.stats()
    assert after["corrupt"] - before["corrupt"] == 1 and after["compiled"] - before["compiled"] == 1
    assert entry.obj.stat().st_size > 1000 and disk_cache.load_entry(entry) is not None
    calls = []
    CompileCache().get_or_compile(key, lambda: calls.append(1))
    assert calls == []


# ---------------------------------------------------------------------------------- never an error
def test_unusable_directory_falls_back_to_memory_with_one_warning(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(disk_cache.CACHE_DIR_ENV, str(blocker / "cache"))  # mkdir fails (even as root)
    cache = CompileCache(persistent=True)
    with pytest.warns(RuntimeWarning, match="not usable"):
        assert cache.get_or_compile(("a", dsl_version()), lambda: "fa") == "fa"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: the second miss is silent
        assert cache.get_or_compile(("b", dsl_version()), lambda: "fb") == "fb"


def test_held_lock_times_out_into_an_in_memory_compile(monkeypatch, cache_dir):
    key = ("held", dsl_version())
    entry = disk_cache.entry_for(key)
    entry.directory.mkdir(parents=True)
    monkeypatch.setattr(disk_cache, "LOCK_TIMEOUT_S", 0.3)
    with disk_cache.FileLock(entry.lock, exclusive=True):
        with pytest.warns(RuntimeWarning, match="TimeoutError"):
            assert CompileCache().get_or_compile(key, lambda: "fn") == "fn"


def test_result_without_export_is_kept_in_memory(cache_dir):
    key = ("not-exportable", dsl_version())
    with pytest.warns(RuntimeWarning, match="cannot be exported"):
        assert CompileCache().get_or_compile(key, lambda: "fn") == "fn"
    assert not disk_cache.entry_for(key).obj.exists()


def test_failing_export_leaves_no_file(cache_dir):
    class Broken:
        def export_to_c(self, object_file_path, function_name):
            Path(object_file_path).write_bytes(b"partial")
            raise RuntimeError("disk full")

    key = ("broken-export", dsl_version())
    with pytest.warns(RuntimeWarning, match="disk full"):
        fn = CompileCache().get_or_compile(key, Broken)
    assert isinstance(fn, Broken)
    assert not disk_cache.entry_for(key).obj.exists()
    assert not [n for n in _files(cache_dir) if ".tmp." in n or n.endswith(".o")]


def test_a_failing_compile_raises_and_releases_the_lock(cache_dir):
    key = ("fails", dsl_version())

    def boom():
        raise ValueError("compile failed")

    with pytest.raises(ValueError, match="compile failed"):
        CompileCache().get_or_compile(key, boom)
    with disk_cache.FileLock(disk_cache.entry_for(key).lock, exclusive=True, timeout=0.2):
        pass


@pytest.mark.compile_only
def test_read_only_cache_still_loads(monkeypatch, cache_dir):
    """A shared, read-only cache (no lock file can be created): entries that are there still load."""
    key = _pre_key()
    CompileCache().get_or_compile(key, _build_pre)
    entry = disk_cache.entry_for(key)
    entry.lock.unlink()

    def refuse(self):
        raise PermissionError(13, "Permission denied", self.path)

    monkeypatch.setattr(disk_cache.FileLock, "__enter__", refuse)
    calls = []
    assert CompileCache().get_or_compile(key, lambda: calls.append(1)) is not None
    assert calls == []


# a process that finds its kernels on disk must not import the DSL (the bulk of a warm first call):
# the config and key come from fa4_sm120.configs / tiles, the version from package metadata, the
# kernel from the linked <sha>.so through TVM-FFI alone; the DSL is imported only to compile
LAZY_CHILD = f"""
    import json, sys, time
    import torch  # a model process has it already: time what fa4 adds
    t0 = time.perf_counter()
    from fa4_torch import disk_cache
    from fa4_torch.cache import CompileCache
    {PRE_KEY_SRC.replace("fa4_sm120.bwd_pre_post", "fa4_sm120.configs")}

    def build():
        from fa4_sm120.bwd_pre_post import compile_preprocess

        return compile_preprocess(key[1], tvm_ffi=True)

    fn = CompileCache().get_or_compile(key, build)
    seconds = time.perf_counter() - t0
    x = torch.zeros(2, 16, 4, 64, dtype=torch.bfloat16)
    f32 = torch.zeros(2, 4, 16)
    try:
        fn(x, x, f32, None, f32, f32)
        error = None
    except Exception as e:
        error = str(e)
    print(json.dumps(dict(seconds=seconds, dsl_imported="cutlass" in sys.modules, type=type(fn).__name__,
                          error=error, **disk_cache.stats())))
"""


@pytest.mark.compile_only
@pytest.mark.timeout(600)
def test_warm_process_loads_without_importing_the_dsl(cache_dir):
    if disk_cache.c_compiler() is None:
        pytest.skip("no C compiler here: the cache keeps object files only, which load through the DSL")
    cold = _run(LAZY_CHILD)
    entry = disk_cache.entry_for(_pre_key())
    assert entry.so.is_file() and entry.obj.is_file()
    warm = _run(LAZY_CHILD)
    assert (cold["compiled"], cold["written"], cold["dsl_imported"]) == (1, 1, True), cold
    assert (warm["compiled"], warm["loaded"], warm["dsl_imported"]) == (0, 1, False), warm
    assert warm["type"] == "Function"
    # the same function: both reject CPU tensors with the same message (a call needs a GPU)
    assert warm["error"] and warm["error"] == cold["error"]
    print(
        f"\nCPU, import fa4_torch + warm first lookup (no DSL): {warm['seconds']:.3f} s (cold {cold['seconds']:.2f} s)"
    )


@pytest.mark.compile_only
@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_object_file_serves_when_the_shared_library_does_not(damage, cache_dir):
    """No ``.so`` (written without a compiler) or one that will not load: the ``.o`` loads through
    the DSL, the same function; a damaged ``.so`` warns once."""
    key = _pre_key()
    fn = CompileCache().get_or_compile(key, _build_pre)
    entry = disk_cache.entry_for(key)
    if damage == "missing":
        entry.so.unlink(missing_ok=True)
    else:
        entry.so.write_bytes(b"not a shared library")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = CompileCache().get_or_compile(key, lambda: pytest.fail("must load the .o, not compile"))
    assert (damage == "garbage") == any("did not load" in str(w.message) for w in caught)
    _assert_same_rejection(fn, loaded)


def test_key_lookup_imports_no_dsl():
    """Choosing a variant and naming its file (tables, configs, DSL version, target, entry) stays
    free of the DSL in a fresh process."""
    out = _run(
        """
        import json, sys
        from fa4_sm120.tiles import fwd_config
        from fa4_sm120.bwd_tiles import bwd_config
        from fa4_sm120.configs import CombineConfig, PrePostConfig
        from fa4_torch import disk_cache
        from fa4_torch.cache import dsl_version
        cfgs = [fwd_config("sm120", "bfloat16", 128, 128, causal=True, pack_gqa=True, qhead_per_kvhead=4),
                bwd_config("sm120", "bfloat16", 256, 256, causal=True, dsink=True),
                PrePostConfig("bfloat16", 64, True), CombineConfig("bfloat16", 128)]
        names = [str(disk_cache.entry_for((c, "sm_120", dsl_version(), 0)).obj) for c in cfgs]
        print(json.dumps(dict(dsl_imported="cutlass" in sys.modules, n=len(set(names)))))
        """
    )
    assert out == {"dsl_imported": False, "n": 4}
