"""The host-side compile paths of fa4-torch (``launch.compile_forward``, ``launch_bwd.backward_kernels``) run end
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
    from fa4_torch import autograd, launch, launch_bwd, plan

    monkeypatch.setenv("CUTE_DSL_ARCH", "sm_120a")
    monkeypatch.setenv("FA4_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (12, 0))
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(plan, "device_family", lambda device: "sm120")
    monkeypatch.setattr(autograd, "device_family", lambda device: "sm120")
    launch.reset_caches()
    launch_bwd.reset_caches()
    yield torch.device("cuda", 0)
    launch.reset_caches()
    launch_bwd.reset_caches()


@pytest.mark.parametrize("dsink", [False, True])
def test_backward_kernels_compile_through_the_api_path(sm120, dsink):
    from fa4_torch import disk_cache, launch_bwd
    from fa4_torch.plan import BwdKey

    key = BwdKey(torch.bfloat16, 256, 256, causal=True, deterministic=True, has_dlse=True, dsink=dsink)
    pre, main, post, tile_m, warps_n, _ = launch_bwd.backward_kernels(key, sm120)
    assert all(callable(f) for f in (pre, main, post))
    assert (tile_m, warps_n) == (32, 2)  # the d256 row: 32-row tiles over 2x2 warps
    assert disk_cache.stats()["written"] >= 3


def test_forward_compiles_and_reloads_through_the_api_path(sm120):
    import tvm_ffi

    from fa4_torch import disk_cache, launch
    from fa4_torch.plan import FwdKey

    # the serving flags split-KV and sink on the 64-row small-m row (decode); the API gives a split
    # call's sink to the combine, the kernel builds either way
    key = FwdKey(torch.bfloat16, 128, 128, causal=True, local=False, pack_gqa=True, qhead_per_kvhead=4,
                 split_kv=True, sink=True, small_m=True, device=sm120)  # fmt: skip
    fn = launch.compile_forward(key, sm120)
    assert callable(fn) and disk_cache.stats()["written"] >= 1
    # a second process's view: the same key now loads from disk as a TVM-FFI function
    launch.reset_caches()
    before = disk_cache.stats()["loaded"]
    assert isinstance(launch.compile_forward(key, sm120), tvm_ffi.Function)
    assert disk_cache.stats()["loaded"] == before + 1


def test_warmup_for_gpu_fills_the_cache_the_gpu_then_loads(sm120, tmp_path):
    """``fa4 warmup --for-gpu 12.0`` on a machine without that GPU (a container build) writes the
    entries that the SM120 process's API and backward then load instead of compiling."""
    import os
    import subprocess
    import sys

    from fa4_torch import disk_cache, launch, launch_bwd, plan
    from fa4_torch.plan import BwdKey

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
        launch.compile_forward(
            plan.dense_key(torch.bfloat16, 64, 64, False, 8, 2, small_m=small_m, device=sm120), sm120
        )
    launch_bwd.backward_kernels(BwdKey(torch.bfloat16, 64, 64, False, False, False), sm120)
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
    """``autograd.assume_constant_result`` sets what ``torch.compiler.assume_constant_result`` sets."""
    from fa4_torch import autograd

    def a():
        return 1

    def b():
        return 1

    torch.compiler.assume_constant_result(a)
    autograd.assume_constant_result(b)
    assert {k for k in vars(a)} == {k for k in vars(b)} == {"_dynamo_marked_constant"}
    assert a._dynamo_marked_constant is b._dynamo_marked_constant is True
