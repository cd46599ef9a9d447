"""The command line (``python -m fa4_torch``, the ``fa4`` script), run as a user runs it: a subprocess.

CPU tests pass ``--no-gpu`` so that they test the no-GPU paths on any machine: ``info`` names the
dispatch family and the tile row of a shape (``FA4_ARCH`` honoured), ``bench`` says it needs a GPU and
exits 2 (nothing measured), bad arguments are argparse errors (exit 2). The ``compile_only`` tests compile kernels for
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


def test_bench_without_gpu_exits_2_with_a_clear_message(tmp_path):
    r = fa4("--no-gpu", "bench", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "needs a CUDA GPU" in r.stdout and "nothing was measured" in r.stdout
    assert not (tmp_path / "out").exists()


BAD_ARGUMENTS = [
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["info", "--shape", "1,2,3"], "expected B,SQ,SK,HQ,HKV,D[,DV] (6 or 7 numbers)"),
    (["info", "--shape", "1,128,128,6,4,64"], "HQ=6 must be a multiple of HKV=4"),
    (["info", "--shape", "1,a,128,6,6,64"], "comma-separated integers"),
    (["info", "--dtype", "fp32"], "invalid choice: 'fp32'"),
    (["warmup"], "one of the arguments --shapes --config is required"),
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
    assert "[1/1] bf16 h8/2 d64 causal" in r.stdout and "compiled for sm_120a" in r.stdout
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


def test_version_prints_the_packages(capsys):
    from fa4_torch.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("fa4-torch", "fa4-sm120", "fa4-core", "nvidia-cutlass-dsl", "torch"):
        assert re.search(rf"^{name} \S", out, re.M), out


def test_version_subprocess():
    r = fa4("--version")
    assert r.returncode == 0, r.stderr
    assert "fa4-torch" in r.stdout and "fa4-core" in r.stdout


# transformers config.json files, cut to what the warmup reads
LLAMA = dict(
    model_type="llama",
    num_attention_heads=32,
    num_key_value_heads=8,
    hidden_size=4096,
    torch_dtype="bfloat16",
)
GEMMA2 = dict(
    model_type="gemma2",
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
    hidden_size=2304,
    sliding_window=4096,
    attn_logit_softcapping=50.0,
    torch_dtype="float16",
)
GPT_OSS = dict(
    model_type="gpt_oss",
    num_attention_heads=64,
    num_key_value_heads=8,
    head_dim=64,
    hidden_size=2880,
    sliding_window=128,
    layer_types=["sliding_attention", "full_attention"] * 12,
    torch_dtype="bfloat16",
)
QWEN2_NO_WINDOW = dict(
    model_type="qwen2",
    num_attention_heads=28,
    num_key_value_heads=4,
    hidden_size=3584,
    sliding_window=131072,
    use_sliding_window=False,
)


def _names(config, **kw):
    from fa4_torch.cli.warmup import config_variants

    return {str(v) for v in config_variants(config, **kw)}


def _expected(prefix, flag_sets):
    return {
        " ".join([prefix, *c, *flags, *vl])
        for c in ([], ["causal"])
        for flags in flag_sets
        for vl in ([], ["varlen"])
    }


def test_config_variants_llama():
    # head_dim from hidden_size // heads; no window, softcap or sink; dense and varlen, causal both
    assert _names(LLAMA) == _expected("bf16 h32/8 d128", [[]])
    assert len(_names(LLAMA)) == 4


def test_config_variants_gemma2_softcap_and_window():
    assert _names(GEMMA2) == _expected("fp16 h8/4 d256", [["softcap"], ["window", "softcap"]])


def test_config_variants_gpt_oss_sinks_and_window():
    assert _names(GPT_OSS) == _expected("bf16 h64/8 d64", [["sink"], ["window", "sink"]])
    only_full = dict(GPT_OSS, layer_types=["full_attention"] * 4)
    assert _names(only_full) == _expected("bf16 h64/8 d64", [["sink"]])


def test_config_variants_window_switched_off_and_text_config():
    assert _names(QWEN2_NO_WINDOW) == _expected("bf16 h28/4 d128", [[]])
    gemma3 = dict(model_type="gemma3", text_config=dict(GEMMA2, model_type="gemma3_text"))
    assert _names(gemma3, dtypes=["bf16"], causal=(True,)) == {
        f"bf16 h8/4 d256 causal {w}softcap{vl}" for w in ("", "window ") for vl in ("", " varlen")
    }


def test_config_variants_map_to_the_api_keys():
    """What the CPU / --for-gpu warmup compiles: the keys the API makes for those calls."""
    from fa4_torch.cli.warmup import _bwd_key, _fwd_keys, config_variants

    for v in config_variants(GPT_OSS) + config_variants(GEMMA2):
        for key in _fwd_keys(v):
            assert (key.local, key.softcap, key.sink) == (v.window, v.softcap, v.sink)
            assert key.varlen_q == key.varlen_k == v.varlen and key.causal == v.causal
        b = _bwd_key(v)
        assert (b.local, b.softcap, b.dsink, b.varlen_q) == (v.window, v.softcap, v.sink, v.varlen)


def test_warmup_config_dry_run(tmp_path, capsys):
    import json

    from fa4_torch.cli import main

    path = tmp_path / "config.json"
    path.write_text(json.dumps(GEMMA2))
    assert main(["--no-gpu", "warmup", "--config", str(tmp_path), "--dry-run", "--causal", "yes"]) == 0
    out = capsys.readouterr().out
    lines = re.findall(r"^\[(\d+)/4\] (.*)$", out, re.M)
    assert [int(i) for i, _ in lines] == [1, 2, 3, 4], out
    assert {name for _, name in lines} == {
        f"fp16 h8/4 d256 causal {w}softcap{vl}" for w in ("", "window ") for vl in ("", " varlen")
    }


def test_warmup_bad_config_exits_2(tmp_path, capsys):
    from fa4_torch.cli import main

    path = tmp_path / "config.json"
    path.write_text("{}")
    assert main(["--no-gpu", "warmup", "--config", str(path), "--dry-run"]) == 2
    assert "cannot read the model config" in capsys.readouterr().out
    assert main(["--no-gpu", "warmup", "--config", str(tmp_path / "missing.json")]) == 2


def test_warmup_shapes_dry_run_lists_the_product(capsys):
    from fa4_torch.cli import main

    assert main(["warmup", "--shapes", "8,2,64", "16,16,128", "--dtype", "bf16", "fp16", "--dry-run"]) == 0
    assert len(re.findall(r"^\[\d+/8\] ", capsys.readouterr().out, re.M)) == 8


def test_fa4_log_level_env_prints_records():
    code = "import logging, fa4_torch; logging.getLogger('fa4.compile').info('compiled x in 1.00 s')"
    env = {k: v for k, v in os.environ.items() if k != "FA4_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240)
    assert r.returncode == 0 and r.stderr == "", r.stderr  # a library: silent by default
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=dict(env, FA4_LOG_LEVEL="info"),
        timeout=240,
    )
    assert r.returncode == 0, r.stderr
    assert "[fa4.compile] INFO: compiled x in 1.00 s" in r.stderr


def test_compile_is_logged_once_at_info(monkeypatch, caplog):
    """The compile closure of forward_kernel logs one INFO record with its seconds (a cache miss only)."""
    import logging
    import sys as _sys
    import types

    import torch

    from fa4_torch import launch, plan
    from fa4_torch.cache import CompileCache

    fake = types.ModuleType("fa4_sm120.compile")
    fake.compile_fwd = lambda cfg, tvm_ffi=True: "kernel"
    monkeypatch.setitem(_sys.modules, "fa4_sm120.compile", fake)
    monkeypatch.setattr(launch, "FWD_CACHE", CompileCache(persistent=False))
    key = plan.dense_key(torch.bfloat16, 64, 64, True, 8, 2, small_m=False)
    with caplog.at_level(logging.DEBUG, logger="fa4"):
        assert launch.forward_kernel(key, "sm120", "sm_120") == "kernel"
        assert launch.forward_kernel(key, "sm120", "sm_120") == "kernel"  # memory hit: no record
    records = [r for r in caplog.records if r.name == "fa4.compile"]
    assert len(records) == 1, records
    msg = records[0].getMessage()
    assert records[0].levelno == logging.INFO
    assert re.search(
        r"compiled forward bfloat16 d64/64 causal=True pack_gqa for sm_120 in \d+\.\d\d s", msg
    ), msg
