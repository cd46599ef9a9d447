"""arch: every accepted spelling parses to the same Arch, bad ones raise UnsupportedArchError with the
value in the message, FA4_ARCH overrides the default, and the SMEM table equals the DSL's numbers."""

from __future__ import annotations

import pytest

from fa4_core.arch import SMEM_CAPACITY, SUPPORTED, Arch, arch_from_env, family, parse_arch, smem_capacity
from fa4_core.errors import UnsupportedArchError


@pytest.mark.parametrize(
    "spelling,want",
    [
        ("sm_120a", Arch(12, 0, "a")),
        ("sm_120", Arch(12, 0)),
        ("SM120A", Arch(12, 0, "a")),
        ("120", Arch(12, 0)),
        ("12.0", Arch(12, 0)),
        (" 12.1 ", Arch(12, 1)),
        (120, Arch(12, 0)),
        ((12, 0), Arch(12, 0)),
        ((12, 0, "a"), Arch(12, 0, "a")),
        ("sm_90a", Arch(9, 0, "a")),
        ("86", Arch(8, 6)),
        ((8, 0), Arch(8, 0)),
        ("sm_100f", Arch(10, 0, "f")),
        (Arch(12, 1, "a"), Arch(12, 1, "a")),
    ],
)
def test_parse(spelling, want):
    assert parse_arch(spelling) == want


@pytest.mark.parametrize(
    "bad",
    [
        "sm_75",
        "75",
        70,
        "sm_120x",
        "sm_80a",
        "hopper",
        "",
        "12",
        12,
        (7, 5),
        (12,),
        True,
        None,
        12.0,
        "sm_12_0",
    ],
)
def test_parse_rejects(bad):
    with pytest.raises(UnsupportedArchError) as e:
        parse_arch(bad)
    assert repr(bad) in str(e.value)


def test_target_and_name():
    assert parse_arch("120").target == "sm_120a"
    assert parse_arch("sm_120f").target == "sm_120f"
    assert parse_arch("90").target == "sm_90a"
    assert parse_arch("86").target == "sm_86"
    assert parse_arch("sm_120").name == "sm_120" and str(parse_arch("sm_121a")) == "sm_121a"


def test_targets_are_dsl_archs():
    """Every target we hand the DSL is a member of its Arch enum."""
    from cutlass.base_dsl import Arch as DslArch

    for (major, minor), suffixes in SUPPORTED.items():
        for suffix in suffixes:
            a = Arch(major, minor, suffix)
            assert DslArch[a.target].value[:2] == (major, minor)
            assert DslArch[a.name]


def test_env_override(monkeypatch):
    monkeypatch.delenv("FA4_ARCH", raising=False)
    assert arch_from_env((9, 0)) == Arch(9, 0)
    assert arch_from_env(None) is None
    monkeypatch.setenv("FA4_ARCH", "sm_120a")
    assert arch_from_env((9, 0)) == Arch(12, 0, "a")
    monkeypatch.setenv("FA4_ARCH", "")
    assert arch_from_env((8, 6)) == Arch(8, 6)
    monkeypatch.setenv("FA4_ARCH", "sm_75")
    with pytest.raises(UnsupportedArchError, match="FA4_ARCH"):
        arch_from_env((9, 0))


def test_smem_capacity():
    assert smem_capacity("sm_120a") == smem_capacity(121) == 101_376
    assert smem_capacity("80") == 166_912
    assert smem_capacity("86") == smem_capacity("89") == 101_376
    assert smem_capacity((9, 0)) == 232_448


def test_smem_table_equals_dsl():
    """Our fallback table is the DSL's SMEM_CAPACITY_MAP wherever the DSL has a number."""
    from cutlass.memory import get_smem_capacity_in_bytes

    checked = 0
    for major, minor in SMEM_CAPACITY:
        try:
            dsl = get_smem_capacity_in_bytes(f"sm_{major}{minor}")
        except ValueError:
            continue
        assert SMEM_CAPACITY[(major, minor)] == dsl, f"sm_{major}{minor}"
        checked += 1
    assert checked >= 8  # the DSL knows the archs we care about (80..121)


def test_family():
    assert family("sm_120a") == family("121") == "sm120"
    assert family("90") == "sm90"
    assert family("80") == family("87") == "sm80"
    assert family("86") == "sm86"
    assert family("89") == "sm89"
    assert family("100") == "sm100"
