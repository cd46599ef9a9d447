"""The command line (``python -m fa4_torch``, the ``fa4`` script), run as a user runs it: a subprocess.

CPU tests pass ``--no-gpu`` so that they test the no-GPU paths on any machine: ``info`` names the
dispatch family and the tile row of a shape (``FA4_ARCH`` honoured), ``bench`` says it needs a GPU and
exits 0, bad arguments are argparse errors (exit 2). The ``compile_only`` tests compile kernels for
``sm_120a`` (``check --quick``, ``warmup``) and check that the command says what it could not run. The
``gpu`` test runs the correctness sweep of ``check --quick`` on the GPU.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


def fa4(*argv: str, env: dict | None = None, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "FA4_ARCH"}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fa4_torch", *argv],
        capture_output=True,
        text=True,
        env=e,
        cwd=cwd,
        timeout=timeout,
    )


def _row_line(family: str, dtype: str, d: int, dv: int, causal: bool) -> str:
    from fa4_sm120.tiles import select_fwd_tile

    row = select_fwd_tile(family, dtype, d, dv, causal)
    return (
        f"{row.family} d{row.head_dim}/{row.head_dim_v}: tile_m={row.tile_m} tile_n={row.tile_n} "
        f"threads={row.num_threads}"
    )


def test_help_lists_the_commands():
    r = fa4("--help")
    assert r.returncode == 0, r.stderr
    for command in ("info", "check", "bench", "warmup"):
        assert command in r.stdout


def test_info_without_gpu_names_family_and_tile_row():
    r = fa4("--no-gpu", "info", "--shape", "2,4096,4096,32,8,128", "--causal")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "no CUDA GPU" in out
    assert re.search(r"family\s+sm120 \(no GPU: the default target sm_120a\)", out), out
    assert _row_line("sm120", "bfloat16", 128, 128, True) in out
    assert "pack_gqa=True, qhead_per_kvhead=4" in out  # GQA 32/8, as the API packs it by default
    assert "fits" in out and "101,376 B" in out
    for name in ("torch", "nvidia-cutlass-dsl", "fa4-core", "fa4-sm120", "fa4-torch"):
        assert name in out


def test_info_decode_shape_names_the_small_m_row():
    # one query x 4 heads per KV head = 4 rows per tile: the API's 64-row decode row
    r = fa4("--no-gpu", "info", "--shape", "8,1,32768,32,8,128")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"tile_m=64 tile_n=64 threads=128", r.stdout), r.stdout
    assert "small-m row" in r.stdout
    assert "grid         1 m-blocks x 8 KV heads x 8 batch = 64 CTAs" in r.stdout, r.stdout
    r = fa4("--no-gpu", "info", "--shape", "8,17,32768,32,8,128")  # 68 rows: the 128-row row
    assert r.returncode == 0 and "small-m" not in r.stdout, r.stdout
    assert "tile_m=128" in r.stdout, r.stdout


def test_info_versions_without_shape():
    r = fa4("--no-gpu", "info")
    assert r.returncode == 0, r.stderr
    assert "fa4-torch" in r.stdout and "--shape" in r.stdout


def test_info_honours_fa4_arch():
    r = fa4(
        "--no-gpu", "info", "--shape", "1,128,128,8,8,256,256", "--dtype", "fp16", env={"FA4_ARCH": "8.0"}
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"family\s+sm80 \(FA4_ARCH=8.0\)", r.stdout), r.stdout
    assert _row_line("sm80", "float16", 256, 256, False) in r.stdout
    assert "166,912 B" in r.stdout  # the SM80 cap
    assert "backward     tile_m=32 tile_n=32 threads=128 (2x2 warps)" in r.stdout  # the d256 row


def test_info_backward_row_and_the_calls_it_leaves():
    """d128: the row with S/dP along the keys and V in registers, and the row the excluded calls take."""
    r = fa4("--no-gpu", "info", "--shape", "1,4096,4096,16,16,128", "--causal")
    assert r.returncode == 0, r.stdout + r.stderr
    line = "backward     tile_m=32 tile_n=128 threads=256 (2x4 warps); S/dP along the keys; V in registers"
    assert line in r.stdout, r.stdout
    flags = "deterministic or dsink or seqused_k or seqused_q or softcap or varlen_k or varlen_q"
    assert f"(calls with {flags}: tile_m=32 tile_n=128 threads=256, V from shared memory)" in r.stdout


def test_info_backward_unsupported_pair():
    r = fa4("--no-gpu", "info", "--shape", "1,128,128,8,8,256,128")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "backward     unsupported" in r.stdout and "(256, 128)" in r.stdout  # no 256/128 backward row


def test_info_bad_fa4_arch_is_reported():
    r = fa4("--no-gpu", "info", env={"FA4_ARCH": "sm_42"})
    assert r.returncode == 1
    assert "FA4_ARCH='sm_42'" in r.stdout and "supported" in r.stdout


def test_info_unsupported_head_dim():
    r = fa4("--no-gpu", "info", "--shape", "1,128,128,8,8,48")
    assert r.returncode == 1
    assert "unsupported: (head_dim, head_dim_v)=(48, 48) is not supported" in r.stdout


def test_bench_without_gpu_exits_0_with_a_clear_message(tmp_path):
    r = fa4("--no-gpu", "bench", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "needs a CUDA GPU" in r.stdout and "nothing was measured" in r.stdout
    assert not (tmp_path / "out").exists()


BAD_ARGUMENTS = [
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["info", "--shape", "1,2,3"], "expected B,SQ,SK,HQ,HKV,D[,DV] (6 or 7 numbers)"),
    (["info", "--shape", "1,128,128,6,4,64"], "HQ=6 must be a multiple of HKV=4"),
    (["info", "--shape", "1,a,128,6,6,64"], "comma-separated integers"),
    (["info", "--dtype", "fp32"], "invalid choice: 'fp32'"),
    (["warmup"], "the following arguments are required: --shapes"),
    (["warmup", "--shapes", "8,0,64"], "every number must be >= 1"),
    (["check", "--frobnicate"], "unrecognized arguments: --frobnicate"),
]


@pytest.mark.parametrize("argv, message", [BAD_ARGUMENTS[i] for i in (0, 3, 6)])
def test_bad_arguments_exit_2_with_argparse_error(argv, message):
    r = fa4(*argv)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "usage: fa4" in r.stderr
    assert message in r.stderr, r.stderr


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS)
def test_bad_arguments_in_process(argv, message, capsys):
    """The same parser in-process (each subprocess pays torch's and the DSL's import: seconds)."""
    from fa4_torch.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fa4" in err and message in err, err


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "fa4")
    if not os.path.exists(script):
        pytest.skip("no `fa4` script beside this interpreter (fa4-torch is not pip-installed here)")
    r = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "usage: fa4" in r.stdout


@pytest.mark.compile_only
@pytest.mark.timeout(900)
def test_check_quick_compiles_every_head_dim_and_says_what_it_skipped():
    from fa4_sm120.tiles import FWD_TABLE

    rows = {(r.head_dim, r.head_dim_v) for r in FWD_TABLE if r.family == "sm120"}
    r = fa4("--no-gpu", "check", "--quick", timeout=880)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    out = r.stdout
    n = len(rows)
    progress = re.findall(rf"^\[(\d+)/{n}\] compile (\S+) d(\d+)/(\d+) .* \.\.\. ok ", out, re.M)
    assert len(progress) == n, out
    assert {(int(d), int(dv)) for _, _, d, dv in progress} == rows
    assert f"compiled {n}/{n} for sm_120a" in out
    assert "NOT run here: numerics" in out and "needs a CUDA GPU" in out
    assert "FAILED" not in out


@pytest.mark.compile_only
@pytest.mark.timeout(600)
def test_warmup_without_gpu_compiles_for_sm120a():
    r = fa4("--no-gpu", "warmup", "--shapes", "8,2,64", "--causal", "yes", timeout=580)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bf16 h8/2 d64 causal" in r.stdout and "compiled for sm_120a" in r.stdout
    assert "1/1 variant(s) compiled" in r.stdout
    assert "in-process" in r.stdout


@pytest.mark.gpu
@pytest.mark.timeout(900)
def test_check_quick_on_gpu():
    r = fa4("check", "--quick", timeout=880)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-4000:]
    n = int(re.search(r"^(\d+)/\1 passed", r.stdout, re.M).group(1))
    assert n >= 5
    assert len(re.findall(rf"^\[\d+/{n}\] .* \.\.\. ok \(max err", r.stdout, re.M)) == n
    for kind in ("fwd", "varlen", "kvcache", "bwd"):
        assert re.search(rf"^\[\d+/{n}\] {kind}\b", r.stdout, re.M), kind


@pytest.mark.parametrize("heads", ["8,2,64", "16,16,128", "32,1,128", "4,4,256"])
@pytest.mark.parametrize("num_sms", [132, 188, 48])
def test_warmup_calls_take_both_forward_rows(heads, num_sms):
    """The GPU warmup's two calls: one query (the small-m row) and enough query rows for at least one
    128-row tile per SM (the row of long calls), by the API's own rule."""
    from fa4_sm120.tiles import wants_small_m
    from fa4_torch.cli.common import parse_heads
    from fa4_torch.cli.warmup import warm_seqlens

    spec = parse_heads(heads)
    ratio = spec.nheads // spec.nheads_kv
    pack = ratio > 1
    tile_heads = spec.nheads_kv if pack else spec.nheads
    short, long = warm_seqlens(spec, num_sms)
    r = ratio if pack else 1
    assert wants_small_m(short * r, tile_heads, 1, num_sms)
    assert not wants_small_m(long * r, tile_heads, 1, num_sms)
    assert long * r <= 128 * (num_sms + tile_heads)  # no larger than it needs to be
