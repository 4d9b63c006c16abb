"""SPEC §4: if the tariff set changes after acceptance, clearing the day reports the affected
taps by batch and row (DAY_UNPRICEABLE, exit 3) and the day stays uncleared: never a pricing
traceback, never a fare of zero; on the fast path, the reference and the partitioned path."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine

from clearing.day import DayUnpriceableError, clear_day
from clearing.ingest import BatchReport, ingest_file
from clearing.legs_store import legs_path
from clearing.service_day import local_ms
from clearing.taps import TapType, taps_table
from tariffs.load import TariffSet, load_tariff_set
from tariffs.registry import load_registry
from tariffs.vocab import Media, Product

REG = load_registry()
TARIFFS = load_tariff_set()
DAY = dt.date(2019, 1, 1)  # Xiaogan's first priced day in the default set
XIAOGAN = 420900
XIAOGAN_BUS, WUHAN_BUS, FERRY = (401, 1), (101, 1), (103, 1)


def tap(line: tuple[int, int], seq: int, **changes: int) -> dict:
    ln = REG.lines[line]
    stop = ln.stops[1]
    row = dict(operator=ln.operator, device_id=line[0] * 100 + line[1], device_seq=seq,
               card_id=line[0] * 10_000 + seq, card_seq=seq, issuer=1,
               product=int(Product.ORDINARY), media=int(Media.CARD),
               ts_ms=local_ms(DAY, 8, seq % 60), city=REG.stops[stop].city, line=ln.line,
               stop=stop, tap_type=int(TapType.FLAT), debited_fen=-1)
    row.update(changes)
    return row


def ingest(engine: Engine, home: Path, name: str, rows: list[dict]) -> BatchReport:
    path = home.parent / name
    operator = str(rows[0]["operator"]).encode()
    pq.write_table(taps_table(rows).replace_schema_metadata(
        {b"tongka.service_day": DAY.isoformat().encode(), b"tongka.operator": operator}), path)
    return ingest_file(engine, home, path, REG)


def xiaogan_later(ts: TariffSet) -> TariffSet:
    """The default set after an edit: Xiaogan's tariff now starts the day after DAY."""
    t = ts.tariffs[XIAOGAN]
    first = t.versions[0].model_copy(update={"valid_from": DAY + dt.timedelta(days=1)})
    changed = t.model_copy(update={"versions": [first]})
    return TariffSet(ts.registry, {**ts.tariffs, XIAOGAN: changed}, ts.contracts)


def no_ferry_fares(ts: TariffSet) -> TariffSet:
    t = ts.tariffs[420100]
    versions = [v.model_copy(update={"line_fares": [lf for lf in v.line_fares
                                                    if lf.operator != FERRY[0]]})
                for v in t.versions]
    changed = t.model_copy(update={"versions": versions})
    return TariffSet(ts.registry, {**ts.tariffs, 420100: changed}, ts.contracts)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.fixture
def stored(engine: Engine, home: Path) -> tuple[BatchReport, BatchReport]:
    """A Wuhan batch, then a Xiaogan one (a rejected row first), accepted under the default set."""
    wuhan = ingest(engine, home, "wuhan.parquet", [tap(WUHAN_BUS, k) for k in range(3)])
    xiaogan = ingest(engine, home, "xiaogan.parquet",
                     [tap(XIAOGAN_BUS, 50, product=9)] + [tap(XIAOGAN_BUS, k) for k in range(3)])
    assert (wuhan.accepted, xiaogan.accepted, xiaogan.quarantined) == (3, 3, 1)
    return wuhan, xiaogan


@pytest.mark.parametrize("how", [{}, {"reference": True}, {"partitions": 2}],
                         ids=["fast", "reference", "partitioned"])
def test_a_tariff_change_after_acceptance_leaves_the_day_uncleared(
        engine: Engine, home: Path, stored: tuple[BatchReport, BatchReport], how: dict) -> None:
    wuhan, xiaogan = stored
    with pytest.raises(DayUnpriceableError) as caught:
        clear_day(home, DAY, xiaogan_later(TARIFFS), engine=engine, **how)
    err = caught.value
    assert (err.code, err.exit_code, err.count) == ("DAY_UNPRICEABLE", 3, 3)
    assert [(t.batch_id, t.batch_file, t.row, t.code) for t in err.taps] == [
        (xiaogan.batch_id, "xiaogan.parquet", k, "NO_TARIFF_VERSION") for k in range(3)]
    text = str(err)
    assert f"batch {xiaogan.batch_id} (xiaogan.parquet) stored tap 0: NO_TARIFF_VERSION" in text
    assert f"`tongka batches withdraw {xiaogan.batch_id}`" in text
    assert "wuhan.parquet" not in text
    assert not legs_path(home, DAY).exists()  # the day stays uncleared
    # the set the taps were accepted under clears the day (dask itself is tested elsewhere)
    if "partitions" not in how:
        assert clear_day(home, DAY, TARIFFS, engine=engine, **how).legs == 6


def test_a_line_the_new_set_no_longer_prices(engine: Engine, home: Path) -> None:
    ferry = ingest(engine, home, "ferry.parquet", [tap(FERRY, k) for k in range(2)])
    with pytest.raises(DayUnpriceableError) as caught:
        clear_day(home, DAY, no_ferry_fares(TARIFFS), engine=engine, reference=True)
    assert [(t.batch_id, t.row, t.code) for t in caught.value.taps] == [
        (ferry.batch_id, 0, "UNPRICEABLE_LINE"), (ferry.batch_id, 1, "UNPRICEABLE_LINE")]


def test_many_taps_are_listed_up_to_twenty_then_counted(engine: Engine, home: Path) -> None:
    ingest(engine, home, "xiaogan.parquet", [tap(XIAOGAN_BUS, k) for k in range(25)])
    with pytest.raises(DayUnpriceableError) as caught:
        clear_day(home, DAY, xiaogan_later(TARIFFS), engine=engine)
    err = caught.value
    assert (len(err.taps), err.count) == (20, 25)
    assert [t.row for t in err.taps] == list(range(20))
    assert "... and 5 more" in str(err)


def test_without_a_database_the_batch_file_is_named(
        engine: Engine, home: Path, stored: tuple[BatchReport, BatchReport]) -> None:
    _, xiaogan = stored
    with pytest.raises(DayUnpriceableError) as caught:
        clear_day(home, DAY, xiaogan_later(TARIFFS), engine=None)
    assert {t.batch_file for t in caught.value.taps} == {
        f"taps/day={DAY}/operator=401/{xiaogan.file_sha256}.parquet"}
    assert [t.row for t in caught.value.taps] == [0, 1, 2]


@pytest.mark.parametrize("extra", [[], ["--reference"]], ids=["fast", "reference"])
def test_tongka_clear_exits_3_with_the_code_not_a_traceback(
        db_url: str, engine: Engine, home: Path, stored: tuple[BatchReport, BatchReport],
        extra: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import tongka.cli as cli

    _, xiaogan = stored
    changed = xiaogan_later(TARIFFS)  # the lead's --tariffs option is not there yet
    monkeypatch.setattr(cli, "_tariffs", lambda: changed)
    monkeypatch.setattr(sys, "argv", ["tongka", "--data-dir", str(home), "--db", db_url,
                                      "clear", "--date", DAY.isoformat(), *extra])
    with pytest.raises(SystemExit) as exited:
        cli.run()
    err = capsys.readouterr().err
    assert exited.value.code == 3, err
    assert "[DAY_UNPRICEABLE]" in err and f"batch {xiaogan.batch_id}" in err
    assert "Traceback" not in err and "LookupError" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["clear", "--date", DAY.isoformat()], (3, "DAY_UNPRICEABLE")),
        (["clear", "--date", DAY.isoformat(), "--reference"], (3, "DAY_UNPRICEABLE")),
        (["clear", "--date", DAY.isoformat(), "--partitions", "2"], (3, "DAY_UNPRICEABLE")),
        (["settle", "--date", DAY.isoformat()], (3, "DAY_NOT_CLEARED")),
        (["report", "--date", DAY.isoformat()], (3, "DAY_NOT_CLEARED")),
        (["close-month", f"{DAY:%Y-%m}"], (3, "MONTH_NOT_SETTLED")),
        (["ledger", "verify"], (0, None)),
        (["ledger", "balances"], (0, None)),
        (["batches", "list"], (0, None)),
        (["quarantine", "list"], (0, None)),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, list) else None,
)
def test_every_command_on_an_unpriceable_day_answers_with_a_code(
        db_url: str, engine: Engine, home: Path, stored: tuple[BatchReport, BatchReport],
        args: list[str], expected: tuple[int, str | None],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SPEC v1.2 §4: the day stays uncleared until the tariff set is fixed; every command
    says so with a coded line (or works, for those that only read), never a traceback."""
    import tongka.cli as cli

    changed = xiaogan_later(TARIFFS)
    monkeypatch.setattr(cli, "_tariffs", lambda: changed)
    monkeypatch.setattr(sys, "argv", ["tongka", "--data-dir", str(home), "--db", db_url, *args])
    with pytest.raises(SystemExit) as exited:
        cli.run()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "LookupError" not in err, err
    code, name = expected
    assert exited.value.code == code, err
    if name is not None:
        assert f"[{name}]" in err, err
