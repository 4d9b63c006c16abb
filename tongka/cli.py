"""The ``tongka`` command line: parses options, calls the use cases, prints their results.

Exit codes scripts can rely on: 0 success; 1 any other Tongka error; 2 bad input (file
missing, corrupt, wrong schema, bad option); 3 a state conflict (day not cleared, settlement
already running, database newer than the code); 4 an invalid tariff set. Errors print their
stable code in brackets.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from clearing.errors import InputError, StateError, TongkaError
from readers.names import BUILTIN_FORMATS
from tariffs.error_codes import ROW_CODES, ErrorCode
from tariffs.errors import TariffError
from tongka.cli_denylist import denylist_app

if TYPE_CHECKING:
    from clearing.settings import Settings
    from tongka.ingest_files import Outcome

# Start-up time: `tongka --help` must answer at once, so the heavy modules (sqlalchemy,
# pydantic-settings, pyarrow through the readers) are imported inside the functions that use
# them (measured: 0.8 s of imports otherwise, for a help text).

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Tongka 同卡: fare clearing for the Wuhan metropolitan circle (8+1).",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
batches_app = typer.Typer(no_args_is_help=True, help="Submitted batches, for operators.")
quarantine_app = typer.Typer(no_args_is_help=True, help="Rejected rows: list, export, resubmit.")
ledger_app = typer.Typer(no_args_is_help=True, help="The double-entry ledger.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys of the service (tongka serve).")
app.add_typer(db_app, name="db")
app.add_typer(batches_app, name="batches")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(ledger_app, name="ledger")
app.add_typer(keys_app, name="keys")
app.add_typer(denylist_app, name="denylist")
try:
    from tariffs.cli import app as tariffs_app

    app.add_typer(
        tariffs_app,
        name="tariffs",
        help="Validate, show and diff tariffs; export and import GTFS-Fares v2.",
    )
except ImportError:  # pragma: no cover - the tariffs commands are optional at import time
    pass

console = Console(width=100) if not sys.stdout.isatty() else Console()
err_console = Console(stderr=True, soft_wrap=True)  # an error stays one line, for logs and grep
FORMAT_NAMES = ", ".join(BUILTIN_FORMATS)  # the raw reader formats named in --help texts
T = TypeVar("T")


class _State:
    settings: Settings | None = None  # from the flags and the environment, on first use
    demo_keys: bool = False  # the demo's public reader keys (never for real data)


def _settings() -> Settings:
    if _State.settings is None:
        from clearing.settings import Settings

        _State.settings = Settings()
    return _State.settings


DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (env TONGKA_HOME).")
]
DbUrl = Annotated[str | None, typer.Option("--db", help="Database URL (env TONGKA_DATABASE_URL).")]
DateOpt = Annotated[dt.datetime, typer.Option("--date", formats=["%Y-%m-%d"], help="Service day.")]


@app.callback()
def main(data_dir: DataDir = None, db: DbUrl = None) -> None:
    from clearing.settings import Settings

    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"home": data_dir})
    if db is not None:
        settings = settings.model_copy(update={"database_url": db})
    _State.settings = settings


def run() -> None:
    """Console entry point: typed errors become a message and a documented exit code.

    No traceback reaches a user: an error the engine did not foresee prints one coded line
    (INTERNAL_ERROR, exit 1) and the traceback only with ``TONGKA_DEBUG=1``.
    """
    try:
        rv = app(standalone_mode=False)
    except TariffError as exc:  # a TongkaError listing its problems, one a line
        err_console.print(f"error: invalid tariff set [{exc.code}]", style="red")
        for problem in exc.problems:
            err_console.print(f"  {problem}", markup=False)
        sys.exit(exc.exit_code)
    except TongkaError as exc:
        err_console.print(f"error: {exc}", markup=False, style="red")
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # usage errors: bad option, missing argument
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"error: {exc}", markup=False, style="red")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # noqa: BLE001 - the last line of defence, see the docstring
        coded = coded_error(exc)
        if coded is not None:
            err_console.print(f"error: {coded}", markup=False, style="red")
            sys.exit(coded.exit_code)
        if os.environ.get("TONGKA_DEBUG"):
            raise
        err_console.print(
            f"error: unexpected {type(exc).__name__}: {_one_line(str(exc))} "
            f"[{ErrorCode.INTERNAL_ERROR}] (set TONGKA_DEBUG=1 for the traceback, and report it)",
            markup=False,
            style="red",
        )
        sys.exit(ErrorCode.INTERNAL_ERROR.exit_code)
    sys.exit(rv if isinstance(rv, int) else 0)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def coded_error(exc: BaseException) -> TongkaError | None:
    """Infrastructure failures a user can act on, as coded errors (SPEC: no traceback)."""
    from sqlalchemy import exc as sa_exc

    from clearing.db import SQLITE_BUSY_TIMEOUT_MS

    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) and _is_connect_failure(
        exc
    ):
        return TongkaError(
            f"the database cannot be reached: {_one_line(str(exc.orig), 200)}",
            code=ErrorCode.DB_UNREACHABLE,
        )
    if isinstance(exc, sa_exc.OperationalError) and "locked" in str(exc):
        return TongkaError(
            "the SQLite database stayed locked by another tongka command for over "
            f"{SQLITE_BUSY_TIMEOUT_MS // 1000} s; try again when it has finished",
            code=ErrorCode.DB_LOCKED,
        )
    return None


def _is_connect_failure(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(
        marker in text
        for marker in (
            "connection refused",
            "could not connect",
            "connection failed",
            "could not translate host",
            "name or service not known",
            "timeout expired",
            "unable to open database",
            "server closed the connection",
            "no such host",
        )
    )


# --------------------------------------------------------------------------- plumbing


def _home() -> Path:
    """The data directory, created on first use by a command that writes."""
    home = _settings().home
    home.mkdir(parents=True, exist_ok=True)
    return home


def _existing_home() -> Path:
    """The data directory for a command that only reads: never created (an empty answer from
    a directory that does not exist would hide a wrong --data-dir)."""
    home = _settings().home
    if not home.is_dir():
        raise StateError(
            f"no Tongka data directory at {home}: nothing has been ingested there; give "
            "--data-dir or TONGKA_HOME",
            code=ErrorCode.NO_DATA_DIR,
        )
    return home


SUPPORTED_DATABASES = ("sqlite", "postgresql")  # URL schemes (a driver may follow a "+")


def _database_url() -> str:
    """The configured database URL, refused with a coded error unless Tongka supports it."""
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import make_url

    url = _settings().resolved_url()
    try:
        backend = make_url(url).get_backend_name()
    except sa_exc.ArgumentError:
        raise InputError(
            f"--db {url!r} is not a database URL (e.g. postgresql+psycopg://user@host/db)",
            code=ErrorCode.DB_URL_INVALID,
        ) from None
    if backend not in SUPPORTED_DATABASES:
        raise InputError(
            f"--db: Tongka runs on SQLite or PostgreSQL, not {backend!r}",
            code=ErrorCode.DB_URL_UNSUPPORTED,
        )
    return url


def _engine(*, read_only: bool = False):  # type: ignore[no-untyped-def]
    """The database, upgraded to the code's schema (refusing one newer than the code).

    ``read_only`` commands neither create the data directory nor a new SQLite file.
    """
    from clearing.db import make_engine
    from tongka.schema import upgrade

    url = _database_url()
    if not read_only:
        _home()
    elif _settings().database_url is None:
        _existing_home()
        from clearing.settings import DB_FILE

        if not (_settings().home / DB_FILE).exists():
            raise StateError(
                f"no Tongka database in {_settings().home}: nothing has been ingested there",
                code=ErrorCode.NO_DATA_DIR,
            )
    engine = make_engine(url)
    upgrade(engine)
    return engine


# Service days Tongka accepts: far beyond any real one, and every day's bounds (04:00 to
# 04:00 China time, in epoch milliseconds) and its neighbours stay representable.
FIRST_DAY = dt.date(1970, 1, 2)
LAST_DAY = dt.date(2199, 12, 31)


def _service_day(value: dt.datetime | dt.date, option: str = "--date") -> dt.date:
    day = value.date() if isinstance(value, dt.datetime) else value
    if not FIRST_DAY <= day <= LAST_DAY:
        raise InputError(
            f"{option} {day.isoformat()} is outside the service days Tongka handles "
            f"({FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()})",
            code=ErrorCode.DATE_OUT_OF_RANGE,
        )
    return day


def _reader_config():  # type: ignore[no-untyped-def]
    """Reader keys from the environment (TONGKA_PII_KEY, ...); the demo uses its public set."""
    from readers.config import ReaderConfig

    return ReaderConfig.demo() if _State.demo_keys else ReaderConfig()


def _seal_key() -> bytes | None:
    """The key quarantine seals raw records with (derived from TONGKA_PII_KEY inside
    ``clearing.sealed``); None without one: then no raw record is kept, never one in clear."""
    from readers.config import ReaderConfigError

    try:
        return bytes(_reader_config().pii_key_bytes())
    except ReaderConfigError:
        return None


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


def _table(title: str) -> Table:
    """A table whose values never wrap mid-value (a split ``15,19``/``2`` misreads as two
    numbers): columns added to it keep their values whole; see ``_print_table``."""
    return Table(title=title)


def _print_table(table: Table, *, to: Console | None = None) -> None:
    """Print with every value whole: no column wraps or truncates; a table wider than the
    terminal is printed wider (a pager or a wide terminal scrolls it) rather than folded."""
    out = to or console
    for column in table.columns:
        column.no_wrap = True
        column.overflow = "ignore"
    needed = out.measure(table, options=out.options.update_width(10_000)).maximum
    if needed <= out.width:
        out.print(table)
        return
    wide = Console(
        file=out.file,
        width=needed,
        color_system=out.color_system,  # type: ignore[arg-type]
        force_terminal=out.is_terminal,
        highlight=False,
    )
    wide.print(table, crop=False)


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
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed: the same seed gives the same day.")
    ] = 1,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")] = Path("batches"),
    raw: Annotated[
        str | None,
        typer.Option("--raw", help=f"Write a raw reader format instead: {FORMAT_NAMES}."),
    ] = None,
) -> None:
    """Generate a deterministic synthetic service day: one Parquet batch per operator."""
    from clearing.fast import match_and_price_fast
    from tongka.testing.generate import generate as generate_taps
    from tongka.testing.generate import write_day

    day = _service_day(date)
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
        from tongka.testing.synth import write_raw

        paths = write_raw(table, raw, out, _reader_config())
    else:
        paths = write_day(out, table, day)
    for p in paths:
        console.print(str(p))


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="Batch files.")],
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help=f"Reader format, detected from the file if omitted: canonical (Parquet) or "
            f"one of the raw formats {FORMAT_NAMES}.",
        ),
    ] = None,
    date: Annotated[
        dt.datetime | None,
        typer.Option(
            "--date",
            formats=["%Y-%m-%d"],
            help="The batch's service day, overriding the file's own (raw formats: inferred "
            "from the taps).",
        ),
    ] = None,
    operator: Annotated[
        int | None,
        typer.Option(
            "--operator",
            help="The batch's operator code, overriding the file's own (raw formats: inferred "
            "from the taps).",
        ),
    ] = None,
) -> None:
    """Ingest batch files: accepted rows stored, bad rows quarantined, duplicates counted.

    Each file stands alone; the exit code is 2 when any file was refused.
    """
    reports = _ingest_files(files, fmt, _service_day(date) if date else None, operator)
    _print_batch_reports(reports)
    from tongka.ingest_files import RefusedFile

    refused = [r for r in reports if isinstance(r, RefusedFile)]
    if len(refused) == len(reports) == 1:
        raise InputError(refused[0].message, code=refused[0].code)
    if refused:
        raise InputError(
            f"{len(refused)} of {len(reports)} files refused (see the table)",
            code=refused[0].code if len(refused) == 1 else ErrorCode.INPUT_FILES_REFUSED,
        )


def _ingest_files(
    files: list[Path], fmt: str | None, day: dt.date | None, operator: int | None
) -> list[Outcome]:
    from tongka.ingest_files import ingest_files

    engine = _engine()
    tariffs = _tariffs()
    with _step("ingest", total=len(files)) as advance:
        return ingest_files(
            engine, _home(), files, tariffs, _reader_config(), fmt=fmt, day=day,
            operator=operator, input_dir=_settings().input_dir, seal_key=_seal_key(),
            on_file=lambda _outcome: advance(1),
        )


def _print_batch_reports(reports: list[Any]) -> None:
    from tongka.ingest_files import RefusedFile

    table = _table("Batches")
    table.add_column("file", overflow="fold")
    table.add_column("op", justify="right")
    for col in ("rows", "accepted", "dup", "quarantined"):
        table.add_column(col, justify="right")
    table.add_column("status")
    for r in reports:
        if isinstance(r, RefusedFile):
            table.add_row(r.source_name, "", "", "", "", "", f"refused [{r.code}]")
            continue
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
    _print_table(table)
    for r in reports:
        if isinstance(r, RefusedFile):
            err_console.print(f"{r.source_name}: {r.message} [{r.code}]", markup=False)


@app.command()
def clear(
    date: DateOpt,
    reference: Annotated[
        bool, typer.Option("--reference", help="Price with the plain reference (audits).")
    ] = False,
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            help="Clear on a dask cluster in N card partitions (1 to 64); the day then "
            "settles from their partial sums (docs/scale-out.md).",
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="With --partitions: the dask.distributed scheduler (tcp://host:8786); "
            "default a local cluster.",
        ),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="With --partitions: where the workers read taps and write legs, a directory "
            "or fsspec URL every worker sees (default: the data directory).",
        ),
    ] = None,
) -> None:
    """Match and price a service day's accepted taps into legs."""
    from clearing.day import clear_day

    day = _service_day(date)
    if partitions is not None:
        _check_partitions(partitions, reference)
        from clearing.partition import require_dask

        require_dask()
        if scheduler:
            _check_scheduler(scheduler)
        _clear_partitioned(day, partitions, scheduler, storage)
        return
    if scheduler is not None or storage is not None:
        raise InputError(
            f"--{'scheduler' if scheduler is not None else 'storage'} only goes with "
            "--partitions N (a partitioned clear)",
            code=ErrorCode.PARTITIONS_INVALID,
        )
    engine = _engine()
    tariffs = _tariffs()
    result = _timed(
        f"clear {day}" + (" (reference)" if reference else ""),
        lambda: clear_day(_home(), day, tariffs, reference=reference, engine=engine),
    )
    console.print(
        f"{result.taps:,} taps → {result.legs:,} legs ({result.path}); "
        f"{result.signals:,} risk signals"
    )


def _check_partitions(partitions: int, reference: bool) -> None:
    """--partitions N: 1 to BUCKETS (a partition owns whole card buckets), and not --reference
    (the reference prices in one process, for audits)."""
    from clearing.partition import BUCKETS

    if not 1 <= partitions <= BUCKETS:
        raise InputError(
            f"--partitions {partitions}: a day has {BUCKETS} card buckets, so give 1 to "
            f"{BUCKETS} partitions",
            code=ErrorCode.PARTITIONS_INVALID,
        )
    if reference:
        raise InputError(
            "--reference prices in one process (for audits): drop --partitions",
            code=ErrorCode.PARTITIONS_INVALID,
        )


def _clear_partitioned(
    day: dt.date, partitions: int, scheduler: str | None, storage: str | None
) -> None:
    from clearing.day import clear_day
    from settlement.partials import SETTLEMENT_SUMS

    engine = _engine()
    tariffs = _tariffs()
    where = scheduler or "a local cluster"
    result = _timed(
        f"clear {day} on {partitions} partitions ({where})",
        lambda: clear_day(
            _home(), day, tariffs, engine=engine, partitions=partitions, scheduler=scheduler,
            storage=storage, summary=SETTLEMENT_SUMS,
        ),
    )
    from clearing.risk_store import read_day_signals

    stored = read_day_signals(_home(), day) is not None  # whichever way the clear stored them
    for line in partitioned_lines(result, signals_stored=stored):
        console.print(line, markup=False, highlight=False, soft_wrap=True)  # a line a figure


def partitioned_lines(result: Any, *, signals_stored: bool) -> list[str]:
    """A partitioned clear's figures in a few lines: the day, each stage's wall time, the
    split pieces (written or reused), the partitions' spread, and the risk signals (stored
    beside the legs, or left to ``tongka risk``)."""
    parts, splits = result.parts, result.splits
    lines = [
        f"{result.taps:,} taps → {result.legs:,} legs in {len(parts)} partitions, revision "
        f"{result.revision}, with their partial sums for `tongka settle` ({result.path})"
    ]
    if result.stages:
        lines.append("stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result.stages))
    if splits:
        written = sum(1 for s in splits if s.written)
        lines.append(
            f"split: {len(splits)} pieces of {len({s.rel for s in splits})} batch files "
            f"({written} written, {len(splits) - written} reused), "
            f"{sum(s.bytes_read for s in splits) / 1e6:.1f} MB read, "
            f"{sum(s.bytes_written for s in splits) / 1e6:.1f} MB written"
        )
    if parts:
        taps = sorted(p.taps for p in parts)
        secs = sorted(p.seconds for p in parts)
        lines.append(
            f"price: {taps[0]:,}-{taps[-1]:,} taps a partition, {secs[0]:.2f}-"
            f"{secs[-1]:.2f} s a task (sum {sum(secs):.1f} s), "
            f"{sum(p.bytes_read for p in parts) / 1e6:.1f} MB read, "
            f"{sum(p.bytes_written for p in parts) / 1e6:.1f} MB written"
        )
    if signals_stored:
        lines.append(f"{result.signals:,} risk signals")
    else:  # a clear that stored none (not expected): `tongka risk` computes them
        lines.append(f"risk signals: none stored by this clear; `tongka risk --date "
                     f"{result.day}` computes them")
    return lines


SCHEDULER_CONNECT_S = 5.0  # a scheduler that does not answer a TCP connect by then is down


def _check_scheduler(address: str) -> None:
    """Refuse an unreachable dask scheduler at once, with a code, instead of dask's own
    OSError after its 30-second connect timeout."""
    target = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(
            f"--scheduler {address!r} is not an address like tcp://host:8786",
            code=ErrorCode.SCHEDULER_ADDRESS,
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), SCHEDULER_CONNECT_S).close()
    except OSError as exc:
        raise TongkaError(
            f"the dask scheduler at {address} cannot be reached: {exc}",
            code=ErrorCode.SCHEDULER_UNREACHABLE,
        ) from None


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
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="A day cleared with --partitions that changed since is cleared again the "
            "same way: on this dask scheduler (default: a local cluster).",
        ),
    ] = None,
) -> None:
    """Settle a cleared day: obligations, netting, payments, one balanced journal entry.

    A day cleared with --partitions settles from its stored partial sums (no leg is read)."""
    day = _service_day(date)
    if scheduler:
        _check_scheduler(scheduler)
    result = _settle(day, reason, scheduler=scheduler)
    _print_settlement(result)


def _settle(day: dt.date, reason: str, *, scheduler: str | None = None) -> Any:
    from tongka.settling import partitioned_as
    from tongka.settling import settle as settle_use_case

    engine = _engine()
    tariffs = _tariffs()
    settled = _timed(
        f"settle {day}",
        lambda: settle_use_case(engine, _home(), day, tariffs, reason=reason, scheduler=scheduler),
    )
    if settled.recleared:
        how = partitioned_as(_home(), day)
        again = f" on {how.partitions} partitions" if how is not None else ""
        err_console.print(f"day {day} changed since it was cleared: cleared it again{again} first")
    if settled.from_partials:
        err_console.print("settled from the partitions' stored partial sums (no leg read)")
    for path in settled.payment_files:
        err_console.print(f"payment instructions: {path}", markup=False)
    return settled.result


def _print_settlement(result: Any) -> None:
    _print_positions(f"Net positions {result.day} (fen)", result.positions)
    entry = result.entry_id
    console.print(
        f"net positions sum: {sum(result.positions.values())} fen; journal entry: "
        f"{entry if entry is not None else 'nothing to post (day unchanged)'}; "
        f"entry balance: {result.entry_balance} fen"
    )


def _print_positions(title: str, positions: dict) -> None:
    table = _table(title)
    table.add_column("party")
    table.add_column("net", justify="right")
    for party, fen in sorted(positions.items(), key=lambda kv: (int(kv[0][0]), kv[0][1])):
        table.add_row(_party_name(party), f"{fen:,}")
    _print_table(table)


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
    settle_first: Annotated[
        bool,
        typer.Option(
            "--settle",
            help="Settle the day first when its taps changed since its settlement (a late "
            "batch), so the report is current.",
        ),
    ] = False,
) -> None:
    """Write the day's statements: per party CSV and HTML with charts, and the overview.

    A day changed since its settlement is reported with a warning, or settled first (--settle).
    """
    from tongka.reporting import write_report
    from tongka.settling import staleness

    day = _service_day(date)
    engine = _engine(read_only=not settle_first)
    stale = staleness(engine, _settings().home, day)
    if stale and settle_first:
        _settle(day, "")
        stale = None
    if stale:
        err_console.print(f"warning: {stale}", markup=False, style="yellow")
    tariffs = _tariffs()
    home = _existing_home()
    paths = _timed(
        f"report {day}", lambda: write_report(engine, home, day, out, tariffs, stale=stale)
    )
    console.print(f"{len(paths)} files in {out}")


@app.command()
def risk(date: DateOpt) -> None:
    """Risk signals of a cleared day (SPEC §10) by kind, issuer and operator; computes and
    stores them (and the day's deny list) for a day cleared before they existed."""
    from clearing.risk_store import format_summary, risk_summary

    day = _service_day(date)
    summary = risk_summary(_existing_home(), day, _engine())
    console.print(format_summary(day, summary), markup=False, highlight=False)


@db_app.command("upgrade")
def db_upgrade(
    owner_url: Annotated[
        str | None,
        typer.Option(
            "--owner-url",
            help="PostgreSQL: migrate as this owner role, then grant the engine's role (--db) "
            "only what it needs: SELECT and INSERT on the ledger (README: PostgreSQL roles).",
        ),
    ] = None,
) -> None:
    """Create or upgrade the schema to this version of tongka."""
    from clearing.db import make_engine
    from tongka.schema import current_revision, upgrade_as_owner

    if owner_url:
        engine = make_engine(_database_url())
        upgrade_as_owner(engine, owner_url)
    else:
        engine = _engine()
    console.print(f"schema at revision {current_revision(engine)}")


@app.command()
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8080,
    demo_keys: Annotated[
        bool, typer.Option("--demo-keys", help="The demo's public reader keys (demo data only).")
    ] = False,
) -> None:
    """Run the clearing centre over HTTP (FastAPI under uvicorn); docs at /docs."""
    import uvicorn

    from tongka.service.app import create_app
    from tongka.service.centre import open_centre

    _database_url()
    centre = open_centre(_settings(), demo_keys=demo_keys)
    err_console.print(
        f"Tongka clearing centre on http://{host}:{port} (API docs at /docs), data in "
        f"{centre.home}", markup=False,
    )
    uvicorn.run(create_app(centre), host=host, port=port, log_level="info", access_log=True)


Role = Annotated[
    str,
    typer.Option("--role", help="operator, issuer, finance, auditor or admin."),
]


@keys_app.command("create")
def keys_create(
    role: Role,
    operator: Annotated[
        int | None, typer.Option("--operator", help="The operator code of an operator key.")
    ] = None,
    issuer: Annotated[
        int | None, typer.Option("--issuer", help="The issuer code of an issuer key.")
    ] = None,
    label: Annotated[str, typer.Option("--label", help="Whose key this is, for people.")] = "",
) -> None:
    """Create an API key; it is printed once and never stored (only a scrypt hash is)."""
    from tongka.access import Role as Roles
    from tongka.access import create_key

    if operator is not None and issuer is not None:
        raise InputError("give --operator or --issuer, not both",
                         code=ErrorCode.ROLE_PARTY_MISMATCH)
    party = operator if operator is not None else issuer
    wanted = {Roles.OPERATOR: operator, Roles.ISSUER: issuer}
    if role in wanted and party is not None and wanted[Roles(role)] is None:
        raise InputError(f"a {role} key takes --{role} N", code=ErrorCode.ROLE_PARTY_MISMATCH)
    created = create_key(_engine(), role, party=party, label=label)
    err_console.print(
        f"key {created.info.key_id} for {role}{f':{party}' if party is not None else ''}: "
        "shown this once, store it now", markup=False,
    )
    print(created.key)


@keys_app.command("list")
def keys_list() -> None:
    """API keys: id, role, party, label, created, revoked (never the secret)."""
    from tongka.access import list_keys

    table = _table("API keys")
    for col in ("key id", "role", "party", "label", "created", "revoked"):
        table.add_column(col)
    for k in list_keys(_engine(read_only=True)):
        table.add_row(k.key_id, k.role.value, "" if k.party is None else str(k.party), k.label,
                      f"{k.created_at:%Y-%m-%d %H:%M}",
                      "" if k.revoked_at is None else f"{k.revoked_at:%Y-%m-%d %H:%M}")
    _print_table(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (keys list).")]) -> None:
    """Revoke an API key for good."""
    from tongka.access import revoke_key

    info = revoke_key(_engine(), key_id)
    console.print(f"key {info.key_id} revoked")


DEMO_DAY = dt.date(2026, 11, 24)
_DEMO_DATETIME = dt.datetime.combine(DEMO_DAY, dt.time())  # typer passes dates as datetimes


@app.command()
def demo(
    taps: Annotated[int, typer.Option("--taps", min=1000, help="Taps in the day.")] = 200_000,
    date: Annotated[
        dt.datetime,
        typer.Option(
            "--date",
            formats=["%Y-%m-%d"],
            help="Service day.",
            show_default=DEMO_DAY.isoformat(),
        ),
    ] = _DEMO_DATETIME,
    seed: Annotated[
        int, typer.Option("--seed", help="Random seed: the same seed gives the same day.")
    ] = 1,
    keep: Annotated[
        Path | None,
        typer.Option(
            "--keep",
            help="Keep the data directory here: a new or empty directory (a non-empty one is "
            "refused, never emptied).",
        ),
    ] = None,
) -> None:
    """A full day of the nine cities in a fresh data directory: generate → … → report."""
    day = _service_day(date)
    if keep is not None:
        _refuse_non_empty(keep)
    home = Path(tempfile.mkdtemp(prefix="tongka-demo-")) if keep is None else keep
    home.mkdir(parents=True, exist_ok=True)
    from clearing.settings import Settings

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


def _refuse_non_empty(path: Path) -> None:
    """The engine never removes a directory it did not create: a user's folder given as
    ``--keep`` must be new or empty."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InputError(
            f"--keep {path}: exists and is not an empty directory; give a new or empty one "
            "(Tongka never deletes a directory it did not create)",
            code=ErrorCode.DIR_NOT_EMPTY,
        )


def _print_city_summary(result: Any) -> None:
    table = _table(f"Per city {result.day} (fen)")
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
    _print_table(table)


# --------------------------------------------------------------------------- operators


@batches_app.command("list")
def batches_list(
    date: Annotated[
        dt.datetime | None,
        typer.Option("--date", formats=["%Y-%m-%d"], help="Only this service day's batches."),
    ] = None,
) -> None:
    """Every stored batch (or one day's): status and counts."""
    from clearing.batches import list_batches

    day = _service_day(date) if date else None
    rows = list_batches(_engine(read_only=True), day=day)
    table = _table("Batches")
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
        table.add_column(col, justify="right" if col in NUMERIC_COLUMNS else "left")
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
    _print_table(table)


@batches_app.command("show")
def batches_show(batch: Annotated[str, typer.Argument(help="Batch id or SHA-256 prefix.")]) -> None:
    """One batch: counts, and its rejected rows grouped by error code with examples."""
    from clearing.batches import batch_detail

    detail = batch_detail(_engine(read_only=True), int(batch) if batch.isdigit() else batch)
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


NUMERIC_COLUMNS = frozenset({"id", "op", "rows", "accepted", "dup", "quarantined", "batch", "row"})


def known_row_codes() -> frozenset[str]:
    """Every code a quarantined row can carry: the acceptance checks, the readers' codes and
    the corrections check (the row codes of the error-code table)."""
    return frozenset(ROW_CODES)


def _check_row_code(code: str | None) -> None:
    if code is not None and code not in known_row_codes():
        raise InputError(
            f"--code {code!r} is not a row error code (they are listed in "
            "docs/error-codes.md and docs/formats/README.md)",
            code=ErrorCode.ROW_CODE_UNKNOWN,
        )


@batches_app.command("withdraw")
def batches_withdraw(
    batch: Annotated[str, typer.Argument(help="Batch id or SHA-256 prefix.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (kept with the archive), e.g. 'wrong --date'.")
    ],
) -> None:
    """Withdraw a batch read wrong: its rows leave the day into the archive, the same file
    can be ingested again, and a settled day is settled again (SPEC v1.2 §4)."""
    from tongka.withdrawal import withdraw

    ref: int | str = int(batch) if batch.isdigit() else batch
    done = withdraw(_engine(), _home(), ref, _tariffs(), reason=reason)
    w = done.withdrawal
    console.print(
        f"batch {w.batch_id} withdrawn from {w.service_day} (operator {w.operator}): "
        f"{w.accepted:,} taps, {w.duplicates:,} duplicates and {w.quarantined:,} quarantined "
        f"rows archived ({', '.join(w.archived) or 'no files'}); {w.reaccepted:,} rows of "
        f"other batches now accepted, {w.now_duplicates:,} now duplicates"
    )
    if done.resettled is not None:
        console.print(f"{w.service_day} was settled: settled it again")
        for path in done.resettled.payment_files:
            err_console.print(f"payment instructions: {path}", markup=False)
        _print_settlement(done.resettled.result)


@quarantine_app.command("list")
def quarantine_list(
    batch: Annotated[str | None, typer.Option("--batch", help="Batch id or SHA prefix.")] = None,
    code: Annotated[str | None, typer.Option("--code", help="Only this row error code.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many rows.")] = 50,
) -> None:
    """Rejected rows waiting for a correction."""
    from clearing.batches import quarantined_rows

    _check_row_code(code)
    ref = int(batch) if batch and batch.isdigit() else batch
    rows = quarantined_rows(_engine(read_only=True), ref, code=code, limit=limit)
    table = _table("Quarantined rows")
    for col in ("id", "batch", "row", "code", "field", "message"):
        table.add_column(col, justify="right" if col in NUMERIC_COLUMNS else "left")
    for q in rows:
        table.add_row(str(q.id), str(q.batch_id), str(q.row), q.code, q.field, q.message)
    _print_table(table)


@quarantine_app.command("export")
def quarantine_export(
    out: Annotated[Path, typer.Argument(help="JSON Lines file to write.")],
    batch: Annotated[
        str | None, typer.Option("--batch", help="Only this batch (id or SHA-256 prefix).")
    ] = None,
    code: Annotated[str | None, typer.Option("--code", help="Only this row error code.")] = None,
    with_raw: Annotated[
        bool,
        typer.Option(
            "--with-raw",
            help="Include each row's raw record (unsealed with TONGKA_PII_KEY): it may hold "
            "card numbers, so protect and delete the file when done.",
        ),
    ] = False,
) -> None:
    """Write rejected rows as JSON Lines, to correct and resubmit."""
    from clearing.batches import export_quarantine

    _check_row_code(code)
    ref = int(batch) if batch and batch.isdigit() else batch
    key = _seal_key() if with_raw else None
    if with_raw and key is None:
        raise InputError(
            "--with-raw needs the key the raw records were sealed with: set TONGKA_PII_KEY",
            code=ErrorCode.SEAL_KEY_MISSING,
        )
    n = export_quarantine(_engine(read_only=True), out, batch_id=ref, code=code, seal_key=key)
    console.print(f"{n:,} rows written to {out}")


@quarantine_app.command("resubmit")
def quarantine_resubmit(
    corrected: Annotated[Path, typer.Argument(help="The exported file, corrected.")],
) -> None:
    """Resubmit corrected rows: they go through the same checks as any batch."""
    from clearing.ingest import resubmit

    tariffs = _tariffs()
    result = resubmit(
        _engine(), _home(), corrected, tariffs.registry, tariffs=tariffs, seal_key=_seal_key()
    )
    _print_batch_reports(list(result.reports))
    if result.skipped:
        console.print(f"{len(result.skipped)} rows were already resubmitted before")


# --------------------------------------------------------------------------- finance


@ledger_app.command("balances")
def ledger_balances_cmd() -> None:
    """Every account's balance (debit positive), and each party's net position."""
    from settlement.ledger import account_balances, positions_from_balances

    balances = account_balances(_engine(read_only=True))
    table = _table("Ledger balances (fen)")
    table.add_column("account")
    table.add_column("balance", justify="right")
    for key, fen in sorted(balances.items(), key=lambda kv: kv[0].code):
        table.add_row(key.code, f"{fen:,}")
    _print_table(table)
    _print_positions("Net positions, all periods (fen)", positions_from_balances(balances))
    console.print(f"sum of balances: {sum(balances.values())} fen")


@ledger_app.command("verify")
def ledger_verify_cmd() -> None:
    """Every entry balances and the balances equal a fresh recomputation from stored legs."""
    from tongka.ledger_check import verify

    tariffs = _tariffs()
    problems = verify(_engine(read_only=True), _existing_home(), tariffs)
    for p in problems:
        err_console.print(p, markup=False)
    if problems:
        raise TongkaError(f"{len(problems)} ledger problems", code=ErrorCode.LEDGER_MISMATCH)
    console.print("ledger verified: every entry balances; balances equal a fresh recomputation")


@app.command("close-month")
def close_month_cmd(
    month: Annotated[str, typer.Argument(help="The calendar month, YYYY-MM.")],
    reason: Annotated[
        str,
        typer.Option(
            "--reason",
            help="initial for the first close; late_batch, tariff_correction or "
            "manual_correction when a closed month is closed again.",
        ),
    ] = "initial",
) -> None:
    """Month close: rebates (operator owes issuer), netted and posted; card-load files."""
    from settlement.month_close import parse_month
    from tongka.months import close

    try:
        first = parse_month(month)
    except ValueError as exc:
        raise InputError(str(exc), code=ErrorCode.MONTH_INVALID) from None
    _service_day(first, "month")
    tariffs = _tariffs()
    engine = _engine()
    closed = _timed(
        f"close {month}", lambda: close(engine, _home(), first, tariffs, reason=reason)
    )
    result = closed.result
    for path in closed.payment_files:
        err_console.print(f"payment instructions: {path}", markup=False)
    console.print(
        f"{len(result.rebates):,} rebates, {sum(r.rebate_fen for r in result.rebates):,}"
        f" fen; card-load files: {len(closed.card_load_files)} in {closed.card_load_dir}; entry "
        f"{result.entry_id if result.entry_id is not None else 'none (unchanged)'}"
    )
    _print_positions(f"Month-close net positions {first:%Y-%m} (fen)", result.positions)


@app.command()
def whatif(
    tariffs_dir: Annotated[
        Path, typer.Option("--tariffs", help="Directory of proposed tariff files (replace or add).")
    ],
    date: Annotated[
        dt.datetime | None, typer.Option("--date", formats=["%Y-%m-%d"], help="One service day.")
    ] = None,
    first: Annotated[
        dt.datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], help="First service day.")
    ] = None,
    last: Annotated[
        dt.datetime | None, typer.Option("--to", formats=["%Y-%m-%d"], help="Last service day.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the HTML and CSV report here.")
    ] = None,
) -> None:
    """Price stored days under proposed tariffs and compare (SPEC §11); changes nothing."""
    from settlement.whatif import run_whatif, summary_lines

    if date is not None and (first is not None or last is not None):
        raise InputError("give --date, or --from and --to, not both", code=ErrorCode.WHATIF_RANGE)
    if date is None and (first is None or last is None):
        raise InputError("give --date D, or --from D1 --to D2", code=ErrorCode.WHATIF_RANGE)
    start = _service_day(date if date is not None else first, "--from")  # type: ignore[arg-type]
    end = _service_day(date if date is not None else last, "--to")  # type: ignore[arg-type]
    engine = _engine(read_only=True)
    tariffs = _tariffs()
    n_days = max(0, (end - start).days + 1)
    with _step("what-if", total=n_days) as advance:
        result = run_whatif(engine, _existing_home(), tariffs_dir, start, end, out,
                            progress=lambda _day: advance(1), current=tariffs)
    for line in summary_lines(result, tariffs.registry):
        console.print(line, markup=False)
    if out is not None:
        console.print(f"report: {out / 'whatif.html'} (and CSV files beside it)", markup=False)
