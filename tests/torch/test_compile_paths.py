"""The host-side compile paths of fa4-torch (``api._compile_for``, ``autograd._bwd_kernels``) run end
to end on the CPU: the GPU queries are pinned to an SM120 (capability 12.0)
and every kernel compiles for ``sm_120a`` through the same builders a GPU call uses, so a broken
import or key in those paths fails here and not only on the GPU machine. Nothing launches."""

from __future__ import annotations

import contextlib

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.compile_only, pytest.mark.timeout(600)]


@pytest.fixture
def sm120(monkeypatch, tmp_path):
    from fa4_torch import api, autograd

    monkeypatch.setenv("CUTE_DSL_ARCH", "sm_120a")
    monkeypatch.setenv("FA4_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (12, 0))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(api, "device_family", lambda device: "sm120")
    monkeypatch.setattr(autograd, "device_family", lambda device: "sm120")
    api._reset_caches()
    autograd._reset_caches()
    yield torch.device("cuda", 0)
    api._reset_caches()
    autograd._reset_caches()


@pytest.mark.parametrize("dsink", [False, True])
def test_backward_kernels_compile_through_the_api_path(sm120, dsink):
    from fa4_torch import autograd, disk_cache

    flags = (False, False, False, False, False, False, dsink)
    pre, main, post, tile_m, warps_n, _ = autograd._bwd_kernels(
        torch.bfloat16, 256, 256, True, True, True, sm120, flags
    )
    assert all(callable(f) for f in (pre, main, post))
    assert (tile_m, warps_n) == (32, 2)  # the d256 row: 32-row tiles over 2x2 warps
    assert disk_cache.stats()["written"] >= 3


def test_forward_compiles_and_reloads_through_the_api_path(sm120):
    import tvm_ffi

    from fa4_torch import api, disk_cache

    # (dtype, d, dv, causal, local, pack_gqa, ratio, flags, device index); flags: varlen_q, varlen_k,
    # seqused_q, seqused_k, paged, kv_batch_idx, split, softcap, sink, small_m (decode: the 64-row row)
    key = (torch.bfloat16, 128, 128, True, False, True, 4, (False,) * 6 + (True, False, True, True), 0)
    fn = api._compile_for(key, sm120)
    assert callable(fn) and disk_cache.stats()["written"] >= 1
    # a second process's view: the same key now loads from disk as a TVM-FFI function
    api._reset_caches()
    before = disk_cache.stats()["loaded"]
    assert isinstance(api._compile_for(key, sm120), tvm_ffi.Function)
    assert disk_cache.stats()["loaded"] == before + 1


def test_warmup_for_gpu_fills_the_cache_the_gpu_then_loads(sm120, tmp_path):
    """``fa4 warmup --for-gpu 12.0`` on a machine without that GPU (a container build) writes the
    entries that the SM120 process's API and backward then load instead of compiling."""
    import os
    import subprocess
    import sys

    from fa4_torch import api, autograd, disk_cache

    env = dict(os.environ, FA4_CACHE_DIR=os.environ["FA4_CACHE_DIR"])
    env.pop("CUTE_DSL_ARCH", None)  # the command sets the target itself
    r = subprocess.run(
        [sys.executable, "-m", "fa4_torch", "--no-gpu", "warmup", "--shapes", "8,2,64", "--dtype", "bf16",
         "--causal", "no", "--backward", "--for-gpu", "12.0"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    # the forward's two rows (long calls; decode and few-tile calls) and the three backward kernels
    assert "compiled: 5 written" in r.stdout, r.stdout
    before = disk_cache.stats()
    for small_m in (False, True):
        key = (torch.bfloat16, 64, 64, False, False, True, 4, (False,) * 9 + (small_m,), sm120)
        api._compile_for(key, sm120)
    autograd._bwd_kernels(torch.bfloat16, 64, 64, False, False, False, sm120)
    after = disk_cache.stats()
    assert (after["loaded"] - before["loaded"], after["compiled"] - before["compiled"]) == (5, 0)


def test_gradient_path_imports_neither_dynamo_nor_the_dsl():
    """A warm first call that needs gradients loads fa4_torch.autograd: in a fresh interpreter that
    must not import ``torch._dynamo`` (seconds) nor the DSL (the disk cache's ``.so`` needs neither)."""
    import subprocess
    import sys

    code = (
        "import sys, fa4_torch, fa4_torch.autograd, fa4_torch.disk_cache;"
        "print(sorted(m for m in ('torch._dynamo', 'cutlass') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[]", r.stdout


def test_constant_marker_is_torch_compilers():
    """``autograd._assume_constant_result`` sets what ``torch.compiler.assume_constant_result`` sets."""
    from fa4_torch import autograd

    def a():
        return 1

    def b():
        return 1

    torch.compiler.assume_constant_result(a)
    autograd._assume_constant_result(b)
    assert {k for k in vars(a)} == {k for k in vars(b)} == {"_dynamo_marked_constant"}
    assert a._dynamo_marked_constant is b._dynamo_marked_constant is True
