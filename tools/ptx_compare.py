"""Compare two trees of PTX files pairwise, ignoring what does not change the generated code.

A refactor of a kernel class that must not change its code is checked by building the same variants
before and after (for instance the compile tests, each keeping its PTX in its own tmp dir)::

    CUTE_DSL_ARCH=sm_120a pytest tests/sm120 -m compile_only -q -p no:cacheprovider \\
        --basetemp=/tmp/ptx_before
    # ... change the code ...
    CUTE_DSL_ARCH=sm_120a pytest tests/sm120 -m compile_only -q -p no:cacheprovider \\
        --basetemp=/tmp/ptx_after
    python tools/ptx_compare.py /tmp/ptx_before /tmp/ptx_after

Files are paired by their directory relative to each root (symlinks such as pytest's ``*current``
are skipped) and, within a directory, in sorted order of their names; a directory with a different
number of ``.ptx`` files on each side is a mismatch. Before comparing, each file is normalised:

1. ``//`` comments (the compiler banner, build id) and trailing blanks are removed, blank lines
   dropped;
2. every symbol a ``.entry`` or ``.func`` declares (kernel names mangle the class, module and
   argument types) is renamed ``__sym<i>`` in order of first declaration, inside longer names too
   (``<kernel>_param_0`` becomes ``__sym0_param_0``);
3. any token matching a ``--rename`` regex (repeatable; for example ``0x[0-9a-f]+`` for addresses or
   ``_[0-9a-f]{16,}`` for hashes) is renamed ``__id<i>`` in order of first appearance.

Exit status 0 when every pair is identical, 1 otherwise; the differing pairs are listed with the
first lines of a unified diff of the normalised text (``--context`` lines, ``--max-diff`` shown).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

_DECL = re.compile(
    r"^\s*(?:\.visible\s+|\.extern\s+|\.weak\s+)*\.(?:entry|func)\s+(?:\([^)]*\)\s*)?([\w$.]+)"
)


def _strip(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        line = line.split("//", 1)[0].rstrip()
        if line.strip():
            lines.append(line)
    return lines


def normalise(text: str, rename: list[re.Pattern[str]] | None = None) -> list[str]:
    """The lines of ``text`` after the three steps of the module docstring."""
    lines = _strip(text)
    symbols: dict[str, str] = {}
    for line in lines:
        m = _DECL.match(line)
        if m and m.group(1) not in symbols:
            symbols[m.group(1)] = f"__sym{len(symbols)}"
    if symbols:
        # longest first, so that a name containing another is replaced whole
        pattern = re.compile("|".join(re.escape(s) for s in sorted(symbols, key=len, reverse=True)))
        lines = [pattern.sub(lambda m: symbols[m.group(0)], line) for line in lines]
    ids: dict[str, str] = {}
    for rx in rename or ():
        lines = [rx.sub(lambda m: ids.setdefault(m.group(0), f"__id{len(ids)}"), line) for line in lines]
    return lines


def ptx_files(root: Path) -> dict[str, list[Path]]:
    """``.ptx`` files under ``root`` by directory relative to it (symlinked entries skipped)."""
    found: dict[str, list[Path]] = {}
    stack = [root]
    while stack:
        d = stack.pop()
        for p in sorted(d.iterdir()):
            if p.is_symlink():
                continue
            if p.is_dir():
                stack.append(p)
            elif p.suffix == ".ptx":
                found.setdefault(str(p.parent.relative_to(root)), []).append(p)
    return {k: sorted(v) for k, v in found.items()}


def compare(before: Path, after: Path, rename=None, context: int = 3, max_diff: int = 40):
    """``(pairs compared, differing, unpaired)`` of the two trees: ``differing`` lists ``(file, first
    lines of the diff)`` of each pair that differs, ``unpaired`` ``(directory, why)`` of each directory
    whose ``.ptx`` counts differ."""
    a, b = ptx_files(before), ptx_files(after)
    differing: list[tuple[str, list[str]]] = []
    unpaired: list[tuple[str, str]] = []
    compared = 0
    for rel in sorted(set(a) | set(b)):
        fa, fb = a.get(rel, []), b.get(rel, [])
        if len(fa) != len(fb):
            unpaired.append((rel, f"{len(fa)} .ptx file(s) before, {len(fb)} after"))
            continue
        for pa, pb in zip(fa, fb, strict=True):
            compared += 1
            la = normalise(pa.read_text(), rename)
            lb = normalise(pb.read_text(), rename)
            if la != lb:
                diff = difflib.unified_diff(la, lb, str(pa), str(pb), n=context, lineterm="")
                differing.append((f"{rel}/{pa.name}", list(diff)[:max_diff]))
    return compared, differing, unpaired


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path, help="root of the PTX tree built before the change")
    ap.add_argument("after", type=Path, help="root of the PTX tree built after it")
    ap.add_argument("--rename", action="append", default=[], help="regex of tokens to rename (repeatable)")
    ap.add_argument("--context", type=int, default=3, help="diff context lines (default 3)")
    ap.add_argument("--max-diff", type=int, default=40, help="diff lines shown per differing pair")
    args = ap.parse_args(argv)
    rename = [re.compile(r) for r in args.rename]
    compared, differing, unpaired = compare(args.before, args.after, rename, args.context, args.max_diff)
    for where, why in unpaired:
        print(f"UNPAIRED {where}: {why}")
    for where, lines in differing:
        print(f"DIFFERS {where}")
        for line in lines:
            print(f"    {line}")
    identical = compared - len(differing)
    print(
        f"{compared} PTX pairs compared: {identical} identical, {len(differing)} differ; {len(unpaired)} unpaired"
    )
    return 1 if differing or unpaired or compared == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
