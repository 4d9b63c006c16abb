"""The ``tongka tariffs`` commands: validate, show, diff, and GTFS-Fares v2 export and import.

Mounted by ``tongka.cli`` as ``tongka tariffs``. Exit codes: 0 success; 2 a bad argument
(unknown city, no version in force, missing path) or a GTFS feed that cannot be imported, with
every problem printed as ``file: row N: field: what is wrong [CODE]``; 4 an invalid tariff set,
with every problem printed as ``file: version V: field: what is wrong [CODE]``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tariffs.error_codes import ErrorCode
from tariffs.errors import TariffError

if TYPE_CHECKING:
    from tariffs.load import TariffSet
    from tariffs.model import ContractBook, Tariff

# The tariff modules (pydantic models, numpy) are imported inside the commands: `tongka --help`
# builds this sub-app too, and must not pay for them (measured: about 0.2 s).

EXIT_BAD_ARGUMENT = 2
EXIT_INVALID = 4  # TARIFF_INVALID's exit code in tariffs.error_codes (a test checks they agree)

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Validate, show and diff tariffs.")

RegistryOpt = Annotated[Path | None, typer.Option(
    "--registry", help="Registry directory (default: the built-in registry).")]
TariffsOpt = Annotated[Path | None, typer.Option(
    "--tariffs", help="Tariff directory (default: the built-in tariffs).")]


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=160)


def _fail(code: int, message: str) -> SystemExit:
    _console(stderr=True).print(f"error: {message}", markup=False, style="red")
    return _exit(code)


def _exit(code: int) -> SystemExit:
    # SystemExit, not typer.Exit: a caller running the app with standalone_mode=False gets
    # typer.Exit's code as a return value it may drop, while SystemExit always ends the process
    # with the code (and typer's CliRunner records it).
    return SystemExit(code)


def _invalid(exc: TariffError) -> SystemExit:
    err = _console(stderr=True)
    err.print(f"error: invalid tariffs, {len(exc.problems)} problem(s) [{exc.code}]",
              style="red")
    for problem in exc.problems:
        err.print(f"  {problem}", markup=False, soft_wrap=True)
    return _exit(exc.exit_code)


def _load(path: Path, registry: Path | None) -> tuple[dict[int, Tariff], ContractBook | None,
                                                      TariffSet | None]:
    """A directory as a whole tariff set, or one tariff file; TariffError lists the problems."""
    from tariffs.load import load_tariff_file, load_tariff_set
    from tariffs.registry import load_registry

    reg = load_registry(registry)
    if path.is_dir():
        tariffs = load_tariff_set(path, reg)
        return dict(tariffs.tariffs), tariffs.contracts, tariffs
    if path.is_file():
        tariff = load_tariff_file(path, reg)
        return {tariff.area: tariff}, None, None
    raise _fail(EXIT_BAD_ARGUMENT, f"{path} is neither a tariff directory nor a tariff file")


@app.command()
def validate(
    path: Annotated[Path | None, typer.Argument(
        help="A tariff directory or one tariff file (default: the built-in tariffs).")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Check tariffs against the registry and SPEC §6; print every problem found."""
    from tariffs.load import DEFAULT_TARIFF_DIR

    target = path or DEFAULT_TARIFF_DIR
    try:
        tariffs, contracts, _ = _load(target, registry)
    except TariffError as exc:
        raise _invalid(exc) from None
    versions = sum(len(t.versions) for t in tariffs.values())
    extra = f", {len(contracts.contracts)} fee contract(s)" if contracts is not None else ""
    _console().print(f"ok: {target}: {len(tariffs)} tariff area(s), {versions} version(s){extra}",
                     markup=False, soft_wrap=True)


@app.command()
def show(
    city: Annotated[str, typer.Argument(help="City code (420100) or name (Wuhan, 武汉).")],
    date: Annotated[dt.datetime | None, typer.Option(
        "--date", formats=["%Y-%m-%d"], help="Service day (default: today).")] = None,
    tariffs_dir: TariffsOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """The version in force: lines, fares by product and medium, transfer rule, caps."""
    from tariffs.load import DEFAULT_TARIFF_DIR
    from tariffs.show import find_area, render_version

    try:
        _, _, tariffs = _load(tariffs_dir or DEFAULT_TARIFF_DIR, registry)
    except TariffError as exc:
        raise _invalid(exc) from None
    if tariffs is None:
        raise _fail(EXIT_BAD_ARGUMENT, "--tariffs must be a directory of tariff files")
    day = date.date() if date is not None else dt.date.today()
    try:
        area = find_area(tariffs, city)
        view = render_version(tariffs, area, day)
    except (ValueError, LookupError) as exc:
        raise _fail(EXIT_BAD_ARGUMENT, str(exc).strip("'\"")) from None
    _console().print(view)


@app.command()
def diff(
    old: Annotated[Path, typer.Argument(help="The tariffs in force: a directory or one file.")],
    new: Annotated[Path, typer.Argument(help="The proposed tariffs: a directory or one file.")],
    registry: RegistryOpt = None,
) -> None:
    """What changed per area, version and field (and fee contract), for sign-off."""
    from tariffs.diff import Change, diff_contracts, diff_tariffs

    try:
        old_tariffs, old_contracts, _ = _load(old, registry)
        new_tariffs, new_contracts, _ = _load(new, registry)
    except TariffError as exc:
        raise _invalid(exc) from None
    changes: list[Change] = diff_tariffs(old_tariffs, new_tariffs)
    if old_contracts is not None and new_contracts is not None:
        changes += diff_contracts(old_contracts, new_contracts)
    out = _console()
    if not changes:
        out.print(f"no differences between {old} and {new}", markup=False)
        return
    table = Table(title=f"{len(changes)} change(s): {old} → {new}", title_justify="left")
    for col in ("area", "version", "field", "old", "new"):
        table.add_column(col, overflow="fold")
    for c in changes:
        table.add_row(*(Text(x) for x in (c.area, c.version, c.field, c.old, c.new)))
    out.print(table)


@app.command("export-gtfs")
def export_gtfs(
    date: Annotated[dt.datetime, typer.Option(
        "--date", formats=["%Y-%m-%d"],
        help="Service day whose tariff versions are exported (YYYY-MM-DD).")],
    out: Annotated[Path, typer.Option(
        "--out", help="Directory to write the GTFS files into (created if missing).")],
    tariffs_dir: TariffsOpt = None,
    registry: RegistryOpt = None,
) -> None:
    """Write the fares in force on a day as a GTFS-Fares v2 feed for trip planners.

    What Fares v2 cannot express is printed and written to export-notes.txt.
    """
    from tariffs.gtfs import export
    from tariffs.load import DEFAULT_TARIFF_DIR

    try:
        _, _, tariffs = _load(tariffs_dir or DEFAULT_TARIFF_DIR, registry)
    except TariffError as exc:
        raise _invalid(exc) from None
    if tariffs is None:
        raise _fail(EXIT_BAD_ARGUMENT, "--tariffs must be a directory of tariff files")
    result = export(tariffs, date.date(), out)
    console = _console()
    console.print(f"wrote {len(result.files)} file(s) to {out}:", markup=False)
    for path in result.files:
        console.print(f"  {path.name}", markup=False)
    console.print(f"not expressible in GTFS-Fares v2 ({len(result.not_expressible)}):",
                  markup=False)
    for note in result.not_expressible:
        console.print(f"  - {note}", markup=False, soft_wrap=True)


@app.command("import-gtfs")
def import_gtfs(
    feed_dir: Annotated[Path, typer.Argument(
        help="Directory of a GTFS feed with Fares v2 files (routes.txt, fare_products.txt, "
             "fare_leg_rules.txt, ...); route and stop ids are registry ids.")],
    out: Annotated[Path, typer.Option(
        "--out", help="Directory to write one tariff file per area into (created if missing).")],
    valid_from: Annotated[dt.datetime | None, typer.Option(
        "--valid-from", formats=["%Y-%m-%d"],
        help="First service day of the imported versions (default: feed_info's "
             "feed_start_date).")] = None,
    registry: RegistryOpt = None,
) -> None:
    """Read a GTFS-Fares v2 feed into Tongka tariff files; refuse what the model cannot hold."""
    from tariffs.gtfs import GtfsError, import_feed
    from tariffs.registry import load_registry

    if not feed_dir.is_dir():
        raise _fail(EXIT_BAD_ARGUMENT,
                    f"{feed_dir} is not a feed directory [{ErrorCode.GTFS_MISSING_FILE}]")
    try:
        result = import_feed(feed_dir, out, registry=load_registry(registry),
                             valid_from=valid_from.date() if valid_from else None)
    except GtfsError as exc:
        err = _console(stderr=True)
        err.print(f"error: cannot import {feed_dir}, {len(exc.problems)} problem(s) "
                  f"[{exc.code}]", markup=False, style="red")
        for problem in exc.problems:
            err.print(f"  {problem}", markup=False, soft_wrap=True)
        raise _exit(EXIT_BAD_ARGUMENT) from None
    console = _console()
    console.print(f"wrote {len(result.files)} tariff file(s) to {out}:", markup=False)
    for path in result.files:
        console.print(f"  {path.name}", markup=False)
    for note in result.notes:
        console.print(f"  note: {note}", markup=False, soft_wrap=True)
