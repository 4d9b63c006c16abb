"""Write docs/error-codes.md from the one error-code table (``tariffs.error_codes``).

The page's hand-written introduction (everything above the ``MARKER`` line) is kept as it is;
everything below it is generated, one section per ``Group`` in table order, so the page can
never list a code the engine does not have, nor miss one it has. tests/test_error_codes.py
fails when the page differs from what this writes.

    python tools/gen_error_codes.py           # rewrite docs/error-codes.md
    python tools/gen_error_codes.py --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere, not only with the package installed
    sys.path.insert(0, str(ROOT))

from clearing.accept import CHECKS  # noqa: E402 - after the path set-up above
from tariffs.error_codes import Group, Kind, codes_of  # noqa: E402

DOC = ROOT / "docs" / "error-codes.md"
MARKER = ("<!-- Generated from tariffs/error_codes.py by tools/gen_error_codes.py: edit the "
          "table there, not the page below this line. -->")
WIDTH = 92  # the prose width of the hand-written docs
NONE = "—"  # an empty cell: no exit code (a row or problem code), no HTTP status of its own


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}",
            *(f"| {' | '.join(_cell(c) for c in row)} |" for row in rows)]


def _acceptance_rows() -> list[tuple[str, ...]]:
    """The acceptance codes in the order clearing.accept applies them, with their fields."""
    order = [c.code for c in CHECKS]
    missing = [c for c in codes_of(Group.ACCEPTANCE) if c not in order]
    if missing:
        raise SystemExit(f"acceptance codes without a check in clearing.accept: {missing}")
    return [(str(i), f"`{check.code}`", check.field or "the first empty field",
             check.code.meaning) for i, check in enumerate(CHECKS)]


def _section(group: Group) -> list[str]:
    codes = codes_of(group)
    note = textwrap.fill(group.note, WIDTH, break_long_words=False, break_on_hyphens=False)
    out = [f"## {group.title}", "", note, ""]
    if group is Group.ACCEPTANCE:
        out += _table(("#", "code", "field", "the row is rejected when"), _acceptance_rows())
    elif group.kind is Kind.ROW:
        out += _table(("code", "the row is rejected when"),
                      [(f"`{c}`", c.meaning) for c in codes])
    elif group.kind is Kind.TARIFF:
        out += _table(("code", "the problem"), [(f"`{c}`", c.meaning) for c in codes])
    else:
        out += _table(("code", "exit", "HTTP", "meaning"),
                      [(f"`{c}`", str(c.exit_code) if c.exit_code is not None else NONE,
                        str(c.http_status) if c.http_status is not None else NONE, c.meaning)
                       for c in codes])
    return out


def generated() -> str:
    """The page below the marker: every group of the table, in order."""
    lines: list[str] = []
    for group in Group:
        if codes_of(group):
            lines += ["", *_section(group)]
    return "\n".join(lines) + "\n"


def render(current: str) -> str:
    """The whole page: ``current``'s introduction (above the marker), then the tables."""
    if MARKER not in current:
        raise SystemExit(f"{DOC.relative_to(ROOT)} has no marker line; put it under the "
                         f"introduction:\n{MARKER}")
    intro = current.split(MARKER, 1)[0].rstrip("\n")
    return f"{intro}\n\n{MARKER}\n{generated()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    current = DOC.read_text(encoding="utf-8")
    page = render(current)
    if args.check:
        if page != current:
            print(f"{DOC.relative_to(ROOT)} is out of date: run python tools/gen_error_codes.py")
            return 1
        return 0
    if page != current:
        DOC.write_text(page, encoding="utf-8")
        print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
