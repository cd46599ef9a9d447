"""``fa4_sm120.compile.ptxas``/``ptxas_resources``: a ptxas older than the DSL's PTX ISA is given a copy
with the ``.version`` it names (the GPU machine's CUDA 13.0 ptxas stops at 9.0), its registers and
spills are parsed, and a missing ptxas is None. A stand-in ptxas on PATH plays the old toolkit."""

from __future__ import annotations

import os
import stat

from fa4_sm120.compile import ptxas, ptxas_resources

OLD_PTXAS = """#!/bin/sh
# the PTX file is the argument after -arch=... and any flags: the one ending in .ptx
for a in "$@"; do case "$a" in *.ptx) f="$a";; esac; done
if grep -q '^\\.version 9\\.4' "$f"; then
  echo "ptxas $f, line 9; fatal   : Unsupported .version 9.4; current version is '9.0'" >&2
  exit 255
fi
echo "ptxas info    : Used 168 registers, used 1 barriers" >&2
echo "ptxas info    : 24 bytes stack frame, 16 bytes spill stores, 16 bytes spill loads" >&2
echo "ptxas info    : Used 40 registers" >&2
"""


def _install(tmp_path, monkeypatch, body: str) -> None:
    exe = tmp_path / "bin" / "ptxas"
    exe.parent.mkdir()
    exe.write_text(body)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")


def _ptx(tmp_path, version: str) -> str:
    p = tmp_path / "k.ptx"
    p.write_text(f"//\n// Generated\n//\n\n.version {version}\n.target sm_120a\n.address_size 64\n")
    return str(p)


def test_an_older_ptxas_gets_the_version_it_supports(tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch, OLD_PTXAS)
    path = _ptx(tmp_path, "9.4")
    r = ptxas(path, "sm_120a", "-v")
    assert r is not None and r.returncode == 0
    assert "Used 168 registers" in r.stderr
    lowered = tmp_path / "k.v9.0.ptx"
    assert ".version 9.0\n" in lowered.read_text()
    assert ".version 9.4\n" in (tmp_path / "k.ptx").read_text()  # the kept PTX is left as it was
    assert ptxas_resources(path) == (168, 16, None)


def test_a_ptx_it_accepts_is_assembled_as_is(tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch, OLD_PTXAS)
    assert ptxas_resources(_ptx(tmp_path, "9.0")) == (168, 16, None)
    assert not (tmp_path / "k.v9.0.ptx").exists()


def test_a_failure_reports_ptxas_last_line(tmp_path, monkeypatch):
    _install(tmp_path, monkeypatch, "#!/bin/sh\necho 'ptxas fatal   : Unknown option' >&2\nexit 1\n")
    assert ptxas_resources(_ptx(tmp_path, "9.0")) == (None, None, "ptxas fatal   : Unknown option")


def test_no_ptxas_on_path_is_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert ptxas(_ptx(tmp_path, "9.0"), "sm_120a") is None
    assert ptxas_resources(_ptx(tmp_path, "9.0")) is None
