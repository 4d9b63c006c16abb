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
    demo_keys: bool = False  # the demo's public reader keys (never for real data)


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
    from typer._click.exceptions import ClickException

    try:
        rv = app(standalone_mode=False)
    except TariffError as exc:
        err_console.print(f"error: invalid tariff set [{exc.code}]", style="red")
        for problem in exc.problems:
            err_console.print(f"  {problem}", markup=False)
        sys.exit(EXIT_TARIFF)
    except TongkaError as exc:
        err_console.print(f"error: {exc}", markup=False, style="red")
        sys.exit(exc.exit_code)
    except ClickException as exc:  # usage errors: bad option, missing argument
        exc.show()
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


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


def _reader_config():  # type: ignore[no-untyped-def]
    """Reader keys from the environment (TONGKA_PII_KEY, ...); the demo uses its public set."""
    from readers.config import ReaderConfig

    return ReaderConfig.demo() if _State.demo_keys else ReaderConfig()


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
    from clearing.fast import match_and_price_fast
    from clearing.generate import generate as generate_taps
    from clearing.generate import write_day

    day = date.date()
    tariffs = _tariffs()
    generated = _timed(
        f"generate {taps:,} taps for {day}",
        lambda: generate_taps(day, taps, seed, tariffs, price=match_and_price_fast),
    )
    table = generated.table
    err_console.print(
        f"  injected: {generated.duplicates:,} resent rows, {sum(generated.invalid.values()):,} "
        f"invalid rows, {generated.missing_exits:,} missing exits, "
        f"{generated.orphan_exits:,} orphan exits, {generated.overtime:,} overtime trips"
    )
    if raw:
        from readers.synth import write_raw

        paths = write_raw(table, raw, out, _reader_config())
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
                        engine,
                        home,
                        path,
                        tariffs.registry,
                        service_day=day,
                        operator=operator,
                        input_dir=_State.settings.input_dir,
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

    from clearing.ingest import ingest_taps, read_input_bytes
    from readers.registry import detect_format, get_adapter

    # The same guards as canonical batches: inside the input directory, a regular file, bounded.
    digest = hashlib.sha256(read_input_bytes(path, input_dir=_State.settings.input_dir)).hexdigest()
    name = fmt or detect_format(path)
    result = get_adapter(name).parse(path, _reader_config())
    day = day or result.service_day
    operator = operator if operator is not None else result.operator
    if day is None or operator is None:
        raise InputError(
            f"{path}: no row could be read, so the batch's service day and operator are unknown: "
            "pass --date and --operator",
            code="INPUT_METADATA",
        )
    return ingest_taps(
        engine,
        home,
        result.taps_with_source_rows(),
        result.errors,
        file_sha256=digest,
        source_format=name,
        source_name=path.name,
        service_day=day,
        operator=operator,
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
    partitions: Annotated[
        int, typer.Option("--partitions", min=0, help="Price N card partitions on dask.")
    ] = 0,
    scheduler: Annotated[
        str | None, typer.Option("--scheduler", help="dask.distributed scheduler address.")
    ] = None,
) -> None:
    """Match and price a service day's accepted taps into legs."""
    from clearing.day import clear_day

    day = date.date()
    engine = _engine()
    tariffs = _tariffs()
    result = _timed(
        f"clear {day}" + (" (reference)" if reference else ""),
        lambda: clear_day(
            _home(),
            day,
            tariffs,
            reference=reference,
            engine=engine,
            partitions=partitions,
            scheduler=scheduler,
        ),
    )
    console.print(f"{result.taps:,} taps → {result.legs:,} legs ({result.path})")


@app.command()
def settle(
    date: DateOpt,
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="Why a settled day is settled again: late_batch, tariff_correction or "
            "manual_correction (default: late_batch when new batches arrived, else initial).",
        ),
    ] = "",
) -> None:
    """Settle a cleared day: obligations, netting, payments, one balanced journal entry."""
    result = _settle(date.date(), reason)
    _print_settlement(result)


def _settle(day: dt.date, reason: str) -> Any:
    """Settle ``day``; a day settled before and changed since is re-settled as a late batch
    unless the caller names another reason (SPEC §8: adjustments name their reason)."""
    from clearing.day import clear_day, legs_revision, read_day_legs
    from clearing.days import DayStatus, day_revision, day_status
    from clearing.db import session_factory
    from settlement.payments import write_payments_csv
    from settlement.settle import settle_day

    engine = _engine()
    tariffs = _tariffs()
    with session_factory(engine)() as session:
        revision = day_revision(session, day)
        status = day_status(session, day)
    if not reason:
        from settlement.ledger import Scope, has_entries

        with session_factory(engine)() as session:
            settled_before = has_entries(session, day, Scope.DAY)
        changed = status is DayStatus.NEEDS_SETTLEMENT
        reason = "late_batch" if settled_before and changed else "initial"
    cleared = legs_revision(_home(), day)
    if cleared is not None and cleared != revision:
        # Batches arrived since the day was cleared (a late batch): price the day afresh, so
        # settlement never posts legs that miss taps (SPEC §4: never lost).
        err_console.print(f"day {day} changed since it was cleared: clearing it again")
        revision = clear_day(_home(), day, tariffs, engine=engine).revision
    legs = read_day_legs(_home(), day)
    result = _timed(
        f"settle {day}",
        lambda: settle_day(engine, day, legs, tariffs, reason=reason, revision=revision),
    )
    out = _home() / "payments" / f"{day.isoformat()}.csv"
    write_payments_csv(out, result.payments, day=day, registry=tariffs.registry)
    return result


def _print_settlement(result: Any) -> None:
    _print_positions(f"Net positions {result.day} (fen)", result.positions)
    entry = result.entry_id
    console.print(
        f"net positions sum: {sum(result.positions.values())} fen; journal entry: "
        f"{entry if entry is not None else 'nothing to post (day unchanged)'}; "
        f"entry balance: {result.entry_balance} fen"
    )


def _print_positions(title: str, positions: dict) -> None:
    table = Table(title=title)
    table.add_column("party")
    table.add_column("net", justify="right")
    for party, fen in sorted(positions.items(), key=lambda kv: (int(kv[0][0]), kv[0][1])):
        table.add_row(_party_name(party), f"{fen:,}")
    console.print(table)


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
    ledger_verify_cmd()
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


# --------------------------------------------------------------------------- operators


@batches_app.command("list")
def batches_list(
    date: Annotated[dt.datetime | None, typer.Option("--date", formats=["%Y-%m-%d"])] = None,
) -> None:
    """Every stored batch (or one day's): status and counts."""
    from clearing.batches import list_batches

    rows = list_batches(_engine(), day=date.date() if date else None)
    table = Table(title="Batches")
    for col in (
        "id",
        "day",
        "op",
        "file",
        "format",
        "rows",
        "accepted",
        "dup",
        "quarantined",
        "status",
    ):
        table.add_column(col, overflow="fold")
    for b in rows:
        status = b.status + (" late" if b.late else "")
        table.add_row(
            str(b.id),
            str(b.service_day),
            str(b.operator),
            b.source_name,
            b.source_format,
            f"{b.received:,}",
            f"{b.accepted:,}",
            f"{b.duplicates:,}",
            f"{b.quarantined:,}",
            status,
        )
    console.print(table)


@batches_app.command("show")
def batches_show(batch: Annotated[str, typer.Argument(help="Batch id or SHA-256 prefix.")]) -> None:
    """One batch: counts, and its rejected rows grouped by error code with examples."""
    from clearing.batches import batch_detail

    detail = batch_detail(_engine(), int(batch) if batch.isdigit() else batch)
    b = detail.batch
    console.print(f"batch {b.id} {b.source_name} ({b.source_format}) sha256 {b.file_sha256}")
    console.print(
        f"operator {b.operator}, service day {b.service_day}, status {b.status}"
        + (" (late)" if b.late else "")
    )
    console.print(
        f"received {b.received:,}, accepted {b.accepted:,}, duplicates "
        f"{b.duplicates:,}, quarantined {b.quarantined:,}"
    )
    for group in detail.errors:
        console.print(f"[bold]{group.code}[/bold]: {group.count:,} rows")
        for q in group.examples:
            console.print(f"  row {q.row} {q.field}: {q.message}", markup=False)


@quarantine_app.command("list")
def quarantine_list(
    batch: Annotated[str | None, typer.Option("--batch", help="Batch id or SHA prefix.")] = None,
    code: Annotated[str | None, typer.Option("--code", help="Only this error code.")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
) -> None:
    """Rejected rows waiting for a correction."""
    from clearing.batches import quarantined_rows

    ref = int(batch) if batch and batch.isdigit() else batch
    rows = quarantined_rows(_engine(), ref, code=code, limit=limit)
    table = Table(title="Quarantined rows")
    for col in ("id", "batch", "row", "code", "field", "message"):
        table.add_column(col, overflow="fold")
    for q in rows:
        table.add_row(str(q.id), str(q.batch_id), str(q.row), q.code, q.field, q.message)
    console.print(table)


@quarantine_app.command("export")
def quarantine_export(
    out: Annotated[Path, typer.Argument(help="JSON Lines file to write.")],
    batch: Annotated[str | None, typer.Option("--batch")] = None,
    code: Annotated[str | None, typer.Option("--code")] = None,
) -> None:
    """Write rejected rows as JSON Lines, to correct and resubmit."""
    from clearing.batches import export_quarantine

    ref = int(batch) if batch and batch.isdigit() else batch
    n = export_quarantine(_engine(), out, batch_id=ref, code=code)
    console.print(f"{n:,} rows written to {out}")


@quarantine_app.command("resubmit")
def quarantine_resubmit(
    corrected: Annotated[Path, typer.Argument(help="The exported file, corrected.")],
) -> None:
    """Resubmit corrected rows: they go through the same checks as any batch."""
    from clearing.ingest import resubmit

    result = resubmit(_engine(), _home(), corrected, _tariffs().registry)
    _print_batch_reports(list(result.reports))
    if result.skipped:
        console.print(f"{len(result.skipped)} rows were already resubmitted before")


# --------------------------------------------------------------------------- finance


@ledger_app.command("balances")
def ledger_balances_cmd() -> None:
    """Every account's balance (debit positive), and each party's net position."""
    from settlement.ledger import account_balances, positions_from_balances

    balances = account_balances(_engine())
    table = Table(title="Ledger balances (fen)")
    table.add_column("account")
    table.add_column("balance", justify="right")
    for key, fen in sorted(balances.items(), key=lambda kv: kv[0].code):
        table.add_row(key.code, f"{fen:,}")
    console.print(table)
    _print_positions("Net positions, all periods (fen)", positions_from_balances(balances))
    console.print(f"sum of balances: {sum(balances.values())} fen")


@ledger_app.command("verify")
def ledger_verify_cmd() -> None:
    """Every entry balances and the balances equal a fresh recomputation from stored legs."""
    from clearing.day import read_day_legs
    from settlement.ledger import verify_ledger
    from settlement.month_close import month_obligations
    from settlement.settle import day_recomputer

    tariffs = _tariffs()
    home = _home()
    problems = verify_ledger(
        _engine(),
        day_recomputer(lambda d: read_day_legs(home, d), tariffs),
        lambda m: month_obligations(_month_legs(m), tariffs, m),
    )
    for p in problems:
        err_console.print(p, markup=False)
    if problems:
        raise TongkaError(f"{len(problems)} ledger problems", code="LEDGER_MISMATCH")
    console.print("ledger verified: every entry balances; balances equal a fresh recomputation")


def _month_legs(month: dt.date) -> Any:
    """The stored legs of every cleared day of a calendar month (days never cleared are empty)."""
    import pyarrow as pa

    from clearing.day import legs_path, read_day_legs
    from clearing.legs import LEG_SCHEMA
    from settlement.month_close import month_days

    first, last = month_days(month)
    tables = []
    day = first
    while day <= last:
        if legs_path(_home(), day).exists():
            tables.append(read_day_legs(_home(), day))
        day += dt.timedelta(days=1)
    return pa.concat_tables(tables) if tables else LEG_SCHEMA.empty_table()


@app.command("close-month")
def close_month_cmd(
    month: Annotated[str, typer.Argument(help="YYYY-MM")],
    reason: Annotated[str, typer.Option("--reason")] = "initial",
) -> None:
    """Month close: rebates (operator owes issuer), netted and posted; card-load files."""
    from settlement.month_close import close_month, parse_month, write_card_loads
    from settlement.payments import write_payments_csv

    first = parse_month(month)
    tariffs = _tariffs()
    result = _timed(
        f"close {month}",
        lambda: close_month(_engine(), first, _month_legs(first), tariffs, reason=reason),
    )
    out = _home() / "month-close" / f"{first:%Y-%m}"
    write_payments_csv(out / "payments.csv", result.payments, registry=tariffs.registry)
    loads = write_card_loads(out, first, result.rebates)
    console.print(
        f"{len(result.rebates):,} rebates, {sum(r.rebate_fen for r in result.rebates):,}"
        f" fen; card-load files: {len(loads)} in {out}; entry "
        f"{result.entry_id if result.entry_id is not None else 'none (unchanged)'}"
    )
    _print_positions(f"Month-close net positions {first:%Y-%m} (fen)", result.positions)
