"""The fa4 command line: ``python -m fa4_torch <command>`` (also installed as the ``fa4`` script).

One module per command, each with its ``add_parser`` and ``run`` (each says what it could not do on
this machine instead of failing):

* :mod:`~fa4_torch.cli.info`: versions, the GPU, the dispatch family; for a shape, what the API would
  run (the :mod:`fa4_torch.plan` of a dense call: tile row, config, shared memory, grid, backward row);
* :mod:`~fa4_torch.cli.check`: with a GPU, a correctness sweep against the fp32 reference; without
  one, compiles the forward rows for ``sm_120a`` and checks their PTX (:mod:`fa4_sm120.variants`);
* :mod:`~fa4_torch.cli.bench`: with a GPU, a quick forward benchmark beside PyTorch SDPA flash;
* :mod:`~fa4_torch.cli.warmup`: compiles the variants a model needs into the compile cache (with a
  GPU, or ``--for-gpu`` for another machine's), or checks their builds for ``sm_120a``.

:mod:`~fa4_torch.cli.common` holds what they share; :func:`fa4_torch.cli.warmup.warmup` is the warmup
as a Python function (a model's own start-up script can call it). Exit codes: 0 success, 1 a check failed or the
configuration is unsupported, 2 bad arguments or nothing useful done (no GPU and nothing compiled or
measured). ``fa4 --version`` prints the versions. Imports are lazy: ``--help`` and argument errors need
neither a GPU nor the DSL.
"""

from __future__ import annotations

import argparse
import sys

from fa4_torch.cli import bench, check, info, warmup

__all__ = ["main", "build_parser", "version_text", "COMMANDS"]

COMMANDS = (info, check, bench, warmup)  # in the order --help lists them


class _Version(argparse.Action):
    """``fa4 --version``: the three packages', the DSL's and torch's versions, then exit 0."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(version_text())
        parser.exit(0)


def version_text() -> str:
    """One line per distribution: fa4-torch, fa4-sm120, fa4-core, nvidia-cutlass-dsl, torch."""
    from fa4_torch.cli.common import dist_version

    names = (
        ("fa4-torch", "fa4_torch"),
        ("fa4-sm120", "fa4_sm120"),
        ("fa4-core", "fa4_core"),
        ("nvidia-cutlass-dsl", None),
        ("torch", None),
    )
    return "\n".join(f"{dist} {dist_version(dist, module)}" for dist, module in names)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fa4",
        description="fa4: FlashAttention for consumer Blackwell GPUs (SM120). "
        "Also runs as `python -m fa4_torch`.",
    )
    p.add_argument(
        "--no-gpu", action="store_true", help="behave as if no CUDA GPU were present (the compile-only paths)"
    )
    p.add_argument(
        "--version", action=_Version, help="print the versions of fa4's packages, the DSL and torch"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from fa4_core.errors import UnsupportedArchError

    try:
        return args.func(args)
    except UnsupportedArchError as e:  # a GPU or FA4_ARCH without a tile table
        print(f"fa4 {args.command}: unsupported architecture: {e}", file=sys.stderr)
        return 1
