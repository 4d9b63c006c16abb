"""The ``tongka`` command line: the imperative shell around ingest, clear, settle and report.

Exit codes scripts can rely on: 0 success; 1 any other Tongka error; 2 bad input (file
missing, corrupt, wrong schema, bad option); 3 a state conflict (day not cleared, settlement
already running, database newer than the code); 4 an invalid tariff set. Errors print their
stable code in brackets.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from clearing.errors import InputError, TongkaError
from clearing.settings import Settings
from tariffs.errors import TariffError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Tongka 同卡: fare clearing for the Wuhan metropolitan circle (8+1).",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
batches_app = typer.Typer(no_args_is_help=True, help="Submitted batches, for operators.")
quarantine_app = typer.Typer(no_args_is_help=True, help="Rejected rows: list, export, resubmit.")
ledger_app = typer.Typer(no_args_is_help=True, help="The double-entry ledger.")
app.add_typer(db_app, name="db")
app.add_typer(batches_app, name="batches")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(ledger_app, name="ledger")
try:
    from tariffs.cli import app as tariffs_app

    app.add_typer(tariffs_app, name="tariffs", help="Validate, show and diff tariffs.")
except ImportError:  # pragma: no cover - the tariffs commands are optional at import time
    pass

console = Console(width=100) if not sys.stdout.isatty() else Console()
err_console = Console(stderr=True)
EXIT_TARIFF = 4
T = TypeVar("T")


class _State:
    settings: Settings = Settings()
    url_flag: str | None = None


DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (env TONGKA_HOME).")
]
DbUrl = Annotated[str | None, typer.Option("--db", help="Database URL (env TONGKA_DATABASE_URL).")]
DateOpt = Annotated[dt.datetime, typer.Option("--date", formats=["%Y-%m-%d"], help="Service day.")]


@app.callback()
def main(data_dir: DataDir = None, db: DbUrl = None) -> None:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"home": data_dir})
    if db is not None:
        settings = settings.model_copy(update={"database_url": db})
    _State.settings = settings


def run() -> None:
    """Console entry point: typed errors become a message and a documented exit code."""
    try:
        app(standalone_mode=False)
    except TariffError as exc:
        err_console.print(f"[red]error:[/red] invalid tariff set [{exc.code}]")
        for problem in exc.problems:
            err_console.print(f"  {problem}", markup=False)
        sys.exit(EXIT_TARIFF)
    except TongkaError as exc:
        err_console.print(f"error: {exc}", markup=False, style="red")
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise


# --------------------------------------------------------------------------- plumbing


def _home() -> Path:
    home = _State.settings.home
    home.mkdir(parents=True, exist_ok=True)
    return home


def _engine():  # type: ignore[no-untyped-def]
    """The database, upgraded to the code's schema (refusing one newer than the code)."""
    from clearing.db import make_engine, upgrade

    _home()
    engine = make_engine(_State.settings.resolved_url())
    upgrade(engine)
    return engine


def _tariffs():  # type: ignore[no-untyped-def]
    from tariffs.load import load_tariff_set

    return load_tariff_set()


@contextmanager
def _step(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A rich progress line for a step; it only draws when the step lasts over a second."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}" if total else ""),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        refresh_per_second=4,
    ) as progress:
        task = progress.add_task(label, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance


def _timed(label: str, fn: Callable[[], T]) -> T:
    start = time.perf_counter()
    with _step(label):
        result = fn()
    err_console.print(f"[green]✓[/green] {label} ({time.perf_counter() - start:.1f} s)")
    return result


# --------------------------------------------------------------------------- commands


@app.command()
def generate(
    date: DateOpt,
    taps: Annotated[int, typer.Option("--taps", min=1, help="Number of taps.")] = 200_000,
    seed: Annotated[int, typer.Option("--seed")] = 1,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("batches"),
    raw: Annotated[
        str | None, typer.Option("--raw", help="Write a raw reader format instead.")
    ] = None,
) -> None:
    """Generate a deterministic synthetic service day: one Parquet batch per operator."""
    from clearing.generate import generate_day, write_day

    day = date.date()
    tariffs = _tariffs()
    generated = _timed(
        f"generate {taps:,} taps for {day}", lambda: generate_day(day, taps, seed, tariffs)
    )
    table = getattr(generated, "table", generated)
    if raw:
        from readers.config import ReaderConfig
        from readers.synth import write_raw

        paths = write_raw(table, raw, out, ReaderConfig())
    else:
        paths = write_day(out, table, day)
    for p in paths:
        console.print(str(p))


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="Batch files.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="Reader format; detected if omitted.")
    ] = None,
    date: Annotated[dt.datetime | None, typer.Option("--date", formats=["%Y-%m-%d"])] = None,
    operator: Annotated[int | None, typer.Option("--operator")] = None,
) -> None:
    """Ingest batch files: accepted rows stored, bad rows quarantined, duplicates counted."""
    reports = _ingest_files(files, fmt, date.date() if date else None, operator)
    _print_batch_reports(reports)


def _ingest_files(
    files: list[Path], fmt: str | None, day: dt.date | None, operator: int | None
) -> list[Any]:
    from clearing.ingest import ingest_file

    engine = _engine()
    tariffs = _tariffs()
    home = _home()
    reports = []
    with _step("ingest", total=len(files)) as advance:
        for path in files:
            if fmt in (None, "canonical", "parquet") and (fmt or path.suffix == ".parquet"):
                reports.append(
                    ingest_file(
                        engine, home, path, tariffs.registry, service_day=day, operator=operator
                    )
                )
            else:
                reports.append(_ingest_raw(engine, home, path, fmt, day, operator, tariffs))
            advance(1)
    return reports


def _ingest_raw(
    engine,
    home: Path,
    path: Path,
    fmt: str | None,
    day: dt.date | None,  # type: ignore[no-untyped-def]
    operator: int | None,
    tariffs,
) -> Any:
    import hashlib

    from clearing.ingest import ingest_taps
    from readers.config import ReaderConfig
    from readers.registry import detect_format, get_adapter

    if not path.exists():
        raise InputError(f"{path}: no such file", code="INPUT_MISSING")
    name = fmt or detect_format(path)
    result = get_adapter(name).parse(path, ReaderConfig())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ingest_taps(
        engine,
        home,
        result.taps,
        result.errors,
        file_sha256=digest,
        source_format=name,
        source_name=path.name,
        service_day=day or result.service_day,
        operator=operator if operator is not None else result.operator,
        registry=tariffs.registry,
    )


def _print_batch_reports(reports: list[Any]) -> None:
    table = Table(title="Batches")
    table.add_column("file", overflow="fold")
    table.add_column("op", justify="right")
    for col in ("rows", "accepted", "dup", "quarantined"):
        table.add_column(col, justify="right")
    table.add_column("status")
    for r in reports:
        status = r.status + (" (late: day re-settles)" if getattr(r, "late", False) else "")
        table.add_row(
            str(getattr(r, "source_name", r.file_sha256[:12])),
            str(r.operator),
            f"{r.received:,}",
            f"{r.accepted:,}",
            f"{r.duplicates:,}",
            f"{r.quarantined:,}",
            status,
        )
    console.print(table)


@app.command()
def clear(
    date: DateOpt,
    reference: Annotated[
        bool, typer.Option("--reference", help="Price with the plain reference (audits).")
    ] = False,
) -> None:
    """Match and price a service day's accepted taps into legs."""
    from clearing.day import clear_day

    day = date.date()
    engine = _engine()
    tariffs = _tariffs()
    result = _timed(
        f"clear {day}" + (" (reference)" if reference else ""),
        lambda: clear_day(_home(), day, tariffs, reference=reference, engine=engine),
    )
    console.print(f"{result.taps:,} taps → {result.legs:,} legs ({result.path})")


@app.command()
def settle(
    date: DateOpt,
    reason: Annotated[str, typer.Option("--reason", help="Reason for an adjustment entry.")] = "",
) -> None:
    """Settle a cleared day: obligations, netting, payments, one balanced journal entry."""
    result = _settle(date.date(), reason)
    _print_settlement(result)


def _settle(day: dt.date, reason: str) -> Any:
    from clearing.day import read_day_legs
    from settlement.settle import settle_day

    engine = _engine()
    legs = read_day_legs(_home(), day)
    kwargs = {"reason": reason} if reason else {}
    result = _timed(f"settle {day}", lambda: settle_day(engine, day, legs, _tariffs(), **kwargs))
    from settlement.payments import write_payments_csv

    out = _home() / "payments" / f"{day.isoformat()}.csv"
    write_payments_csv(out, result.payments)
    return result


def _print_settlement(result: Any) -> None:
    positions = Table(title=f"Net positions {result.day} (fen)")
    positions.add_column("party")
    positions.add_column("net", justify="right")
    for party, fen in sorted(result.positions.items(), key=lambda kv: (int(kv[0][0]), kv[0][1])):
        positions.add_row(_party_name(party), f"{fen:,}")
    console.print(positions)
    total = sum(result.positions.values())
    entry = result.entry_id
    console.print(
        f"net positions sum: {total} fen; journal entry: "
        f"{entry if entry is not None else 'nothing to post (day unchanged)'}; "
        f"entry balance: {getattr(result, 'entry_balance', 0)} fen"
    )


def _party_name(party: Any) -> str:
    from tariffs.registry import load_registry
    from tariffs.vocab import PartyRole

    role, code = PartyRole(int(party[0])), int(party[1])
    reg = load_registry()
    name = {
        PartyRole.ISSUER: lambda: reg.issuers[code].name,
        PartyRole.OPERATOR: lambda: reg.operators[code].name,
        PartyRole.GOVERNMENT: lambda: f"Government of {reg.cities[code].name}",
        PartyRole.CENTRE: lambda: "Clearing centre",
    }[role]
    try:
        return f"{role.name.lower()} {code} {name()}"
    except KeyError:
        return f"{role.name.lower()} {code}"


@app.command()
def report(
    date: DateOpt,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("reports"),
) -> None:
    """Write the day's statements: per party CSV and HTML with charts, and the overview."""
    from clearing.day import read_day_legs
    from settlement.settle import settle_day
    from settlement.statements import write_statements

    day = date.date()
    engine = _engine()
    legs = read_day_legs(_home(), day)
    tariffs = _tariffs()
    result = settle_day(engine, day, legs, tariffs, dry_run=True)
    paths = _timed(
        f"report {day}", lambda: write_statements(out, day, legs, result, tariffs.registry)
    )
    console.print(f"{len(paths)} files in {out}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema to this version of tongka."""
    from clearing.db import current_revision

    engine = _engine()
    console.print(f"schema at revision {current_revision(engine)}")


@app.command()
def demo(
    taps: Annotated[int, typer.Option("--taps", min=1000)] = 200_000,
    date: Annotated[dt.datetime, typer.Option("--date", formats=["%Y-%m-%d"])] = dt.datetime(
        2026, 11, 24
    ),
    seed: Annotated[int, typer.Option("--seed")] = 1,
    keep: Annotated[
        Path | None, typer.Option("--keep", help="Keep the data directory here.")
    ] = None,
) -> None:
    """A full day of the nine cities in a fresh data directory: generate → … → report."""
    day = date.date()
    home = Path(tempfile.mkdtemp(prefix="tongka-demo-")) if keep is None else keep
    if keep is not None and home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    _State.settings = Settings(home=home, database_url=None)
    console.rule(f"Tongka demo: {day}, {taps:,} taps, data in {home}")
    batch_dir = home / "incoming"
    generate(date=date, taps=taps, seed=seed, out=batch_dir, raw=None)
    reports = _ingest_files(sorted(batch_dir.glob("*.parquet")), None, day, None)
    _print_batch_reports(reports)
    clear(date=date, reference=False)
    result = _settle(day, "")
    report(date=date, out=home / "reports")
    _print_city_summary(result)
    _print_settlement(result)
    if keep is None:
        console.print(f"(data directory {home} kept for inspection; delete it when done)")


def _print_city_summary(result: Any) -> None:
    table = Table(title=f"Per city {result.day} (fen)")
    for col in ("city", "legs", "base", "charged", "discount"):
        table.add_column(col, justify="left" if col == "city" else "right")
    from tariffs.registry import load_registry

    reg = load_registry()
    for row in result.city_summary:
        table.add_row(
            f"{row.city} {reg.cities[row.city].name}",
            f"{row.legs:,}",
            f"{row.base_fen:,}",
            f"{row.charged_fen:,}",
            f"{row.discount_fen:,}",
        )
    console.print(table)
