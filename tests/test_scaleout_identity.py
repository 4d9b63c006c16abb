"""ARCHITECTURE "Scale": a partitioned clear and settlement give exactly what one process gives.

Generated days with every rule kind (the QA strategies: flat and entry-exit legs, transfers,
caps, penalties, mixed debits, varied tariff sets), stored as several batches, then a late
batch, on SQLite and PostgreSQL: clearing on a dask cluster with any number of partitions and
settling as finance does (``tongka.settling.settle``: from the stored partial sums, or from
the legs read back when the clear stored none; a day changed since is cleared again on its
partitions) gives the same legs (as a set, and in canonical order when read back),
obligations, positions, payments, payment files and ledger as the single-process clear and
settlement of the same batches. The command line (``tongka clear --partitions``, ``tongka
settle``, ``tongka report``) is held to the same on a generated day of the whole circle.

One cluster serves the module: 2 worker threads in this process, its scheduler on a TCP port
so the command line can reach it with ``--scheduler`` (a cluster of processes is what
tests/test_partition.py and the bench start; here start-up would be most of the time).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from clearing.day import clear_day, read_day_legs
from clearing.db import make_engine
from clearing.ingest import ingest_taps
from clearing.legs import sort_legs
from clearing.legs_store import legs_revision
from clearing.partition import local_client
from settlement.ledger import account_balances, entry_sums
from settlement.partials import SETTLEMENT_SUMS, day_partials, read_day_partials
from settlement.settle import SettlementResult
from tariffs.load import TariffSet, load_tariff_set
from tongka.schema import upgrade
from tongka.settling import partitioned_as
from tongka.settling import settle as settle_as_finance
from tongka.testing.strategies import batches, days, service_days, tariff_sets

TARIFFS = load_tariff_set()
OPERATOR = 101  # the batches' declared operator (any registry operator: taps may be others')
_fresh = itertools.count()


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """One local cluster for the module: 2 worker threads, its scheduler on a local port."""
    with local_client(2, processes=False, protocol="tcp://", host="127.0.0.1") as c:
        yield c


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite database at the code's schema, migrated once: each example copies it."""
    path = tmp_path_factory.mktemp("migrated") / "empty.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


def _database(db_url: str, tmp: Path, name: str, template: Path | None = None
              ) -> tuple[str, Engine]:
    """An empty, migrated database of the fixture's kind: a new SQLite file (a copy of
    ``template`` when given) or PG schema."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp / f'{name}.sqlite'}"
        if template is not None:
            shutil.copyfile(template, tmp / f"{name}.sqlite")
            return url, make_engine(url)
    else:
        base, _, options = db_url.partition("?")
        schema = f"{options.split('%3D', 1)[1]}_{name}"
        admin = make_engine(base)
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        admin.dispose()
        url = f"{base}?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    upgrade(engine)
    return url, engine


def _drop(url: str, engine: Engine) -> None:
    engine.dispose()
    if url.startswith("sqlite"):
        return
    base, _, options = url.partition("?")
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{options.split("%3D", 1)[1]}" CASCADE')
    admin.dispose()


def _ingest(engine: Engine, home: Path, taps: pa.Table, day: dt.date, ts: TariffSet,
            name: str) -> None:
    sha = hashlib.sha256(name.encode() + str(taps.to_pylist()).encode()).hexdigest()
    ingest_taps(engine, home, taps, [], file_sha256=sha, source_format="canonical",
                source_name=name, service_day=day, operator=OPERATOR, registry=ts.registry,
                tariffs=ts)


def _same_settlement(a: SettlementResult, b: SettlementResult) -> None:
    assert b.obligations == a.obligations
    assert b.positions == a.positions
    assert b.payments == a.payments
    assert b.instructions == a.instructions
    assert b.posted == a.posted
    assert (b.entry_kind, b.reason, b.run, b.settled) == (a.entry_kind, a.reason, a.run,
                                                         a.settled)
    assert b.city_summary == a.city_summary
    assert b.discounts == a.discounts


def _payment_files(home: Path) -> dict[str, bytes]:
    return {p.relative_to(home).as_posix(): p.read_bytes()
            for p in sorted((home / "payments").rglob("*.csv"))}


def _as_set(legs: pa.Table) -> list[tuple]:  # type: ignore[type-arg]
    return sorted(tuple(r.values()) for r in legs.to_pylist())


# The cluster's worker threads run in this process and use the random module (dask's ids and
# jitter) while hypothesis draws in the test's thread: hypothesis then warns that a strategy
# used it. No strategy here does; the draws do not depend on it.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning",
                            "ignore::hypothesis.errors.HypothesisWarning")
@settings(max_examples=3, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_a_partitioned_clear_and_settlement_equal_the_single_process_run(
    db_url: str, tmp_path: Path, client: object, migrated: Path, data: st.DataObject
) -> None:
    ts = data.draw(st.one_of(st.just(TARIFFS), tariff_sets()), label="tariffs")
    day = data.draw(service_days(ts), label="day")
    taps = data.draw(days(ts, day=day, straddle=False, max_cards=8, max_events=6), label="taps")
    parts = [p for p in data.draw(batches(taps, max_batches=4), label="batches") if p.num_rows]
    partitions = data.draw(st.sampled_from([1, 2, 3, 7, 64]), label="partitions")
    # without the sums, settle reads the legs back from the parts
    with_sums = data.draw(st.booleans(), label="the clear stores the partial sums")
    late = parts.pop() if len(parts) > 1 else None  # arrives after the first settlement

    n = next(_fresh)
    tmp = tmp_path / f"ex{n}"
    homes = {"single": tmp / "single", "scaled": tmp / "scaled"}
    dbs = {k: _database(db_url, tmp_path, f"{k}{n}", migrated) for k in homes}
    try:
        engines = {k: e for k, (_, e) in dbs.items()}
        for k, home in homes.items():
            home.mkdir(parents=True)
            for i, part in enumerate(parts):
                _ingest(engines[k], home, part, day, ts, f"batch{i}.parquet")
        clear_day(homes["single"], day, ts, engine=engines["single"])
        clear_day(homes["scaled"], day, ts, engine=engines["scaled"], partitions=partitions,
                  client=client, summary=SETTLEMENT_SUMS if with_sums else None)
        from_sums = with_sums
        for reason in ("initial", "late_batch"):
            # a late batch: settle clears the day again, each the way it was cleared
            results = {k: settle_as_finance(engines[k], homes[k], day, ts, reason=reason,
                                            client=client) for k in homes}
            assert results["single"].recleared == results["scaled"].recleared == (
                reason == "late_batch")
            assert not results["single"].from_partials
            assert results["scaled"].from_partials == from_sums
            assert partitioned_as(homes["single"], day) is None
            how = partitioned_as(homes["scaled"], day)
            assert how is not None and how.partitions == partitions
            single, scaled = read_day_legs(homes["single"], day), read_day_legs(homes["scaled"],
                                                                                day)
            assert _as_set(scaled) == _as_set(single)
            assert scaled.equals(single)  # canonical order, read back
            assert scaled.equals(sort_legs(scaled))
            assert legs_revision(homes["scaled"], day) == legs_revision(homes["single"], day)
            stored = read_day_partials(homes["scaled"], day)
            assert stored == (day_partials(single, day) if from_sums else None)
            _same_settlement(results["single"].result, results["scaled"].result)
            assert account_balances(engines["scaled"]) == account_balances(engines["single"])
            assert entry_sums(engines["scaled"]) == entry_sums(engines["single"])
            assert _payment_files(homes["scaled"]) == _payment_files(homes["single"])
            assert [p.name for p in results["scaled"].payment_files] == [
                p.name for p in results["single"].payment_files]
            if late is None:
                break
            for k, home in homes.items():
                _ingest(engines[k], home, late, day, ts, "late.parquet")
            late = None
            from_sums = True  # the clear again stores them
    finally:
        for url, engine in dbs.values():
            _drop(url, engine)


def test_a_partitioned_day_read_back_is_a_single_file_day(tmp_path: Path, client: object,
                                                          migrated: Path) -> None:
    """The legs files a partitioned clear writes are the single-process legs, cut by card."""
    day = dt.date(2026, 11, 24)
    from tongka.testing.generate import generate

    g = generate(day, 2000, 11, TARIFFS)
    taps = g.table.filter(g.accepted_mask)
    url, engine = _database("sqlite://", tmp_path, "one", migrated)
    try:
        home = tmp_path / "home"
        home.mkdir()
        for i, op in enumerate(sorted(set(taps.column("operator").to_pylist()))):
            _ingest(engine, home, taps.filter(pa.compute.equal(taps.column("operator"), op)),
                    day, TARIFFS, f"op{op}-{i}.parquet")
        scaled = clear_day(home, day, TARIFFS, engine=engine, partitions=4, client=client,
                           summary=SETTLEMENT_SUMS)
        files = [home / p.path for p in scaled.parts]
        assert len(files) == 4 and all(f.is_file() for f in files)
        cards = [set(zip(*(pq.read_table(f, columns=["issuer", "card_id"]).to_pydict().values()),
                         strict=True)) for f in files]
        assert all(not (a & b) for a, b in itertools.combinations(cards, 2))  # whole cards
        whole = read_day_legs(home, day)
        single = clear_day(home, day, TARIFFS, engine=engine)  # replaces the manifest
        assert single.legs == scaled.legs == whole.num_rows
        assert read_day_legs(home, day).equals(whole)
        assert not any(f.exists() for f in files)  # the superseded parts are gone
    finally:
        _drop(url, engine)


def _scheduler(client: object) -> str:
    address = str(client.scheduler.address)  # type: ignore[attr-defined]
    assert address.startswith("tcp://"), address
    return address


def test_the_command_line_clears_settles_and_reports_a_partitioned_day_as_one_process(
    tmp_path: Path, client: object, migrated: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], charts_as_digests: None,
) -> None:
    """`tongka clear --partitions`, `tongka settle` (from the partial sums; after a late batch
    it clears the day again on its partitions) and `tongka report` print and store what the
    single-process commands do, on a generated day of the whole circle. On SQLite only: the
    command line adds no SQL of its own, and the use cases it calls are held to the same on
    both databases above."""
    from cli_run import ok, tongka

    from tongka.testing.generate import generate

    day = dt.date(2026, 11, 24)
    g = generate(day, 1500, 5, TARIFFS)
    taps = g.table.filter(g.accepted_mask)
    ops = sorted(set(taps.column("operator").to_pylist()))
    late_ops = pa.array(ops[-1:], pa.uint16())
    early = taps.filter(pa.compute.invert(pa.compute.is_in(taps.column("operator"), late_ops)))
    late = taps.filter(pa.compute.is_in(taps.column("operator"), late_ops))
    scheduler = _scheduler(client)
    homes = {"single": tmp_path / "single", "scaled": tmp_path / "scaled"}
    dbs = {k: _database("sqlite://", tmp_path, f"cli-{k}", migrated) for k in homes}
    try:
        def cli(k: str, *args: str) -> str:
            return ok(tongka(monkeypatch, capsys, homes[k], *args, db=dbs[k][0]))

        for k, home in homes.items():
            home.mkdir()
            _ingest(dbs[k][1], home, early, day, TARIFFS, "early.parquet")
        date = ("--date", day.isoformat())
        cli("single", "clear", *date)
        said = cli("scaled", "clear", *date, "--partitions", "3", "--scheduler", scheduler)
        assert "legs in 3 partitions" in said and "partial sums for `tongka settle`" in said
        assert "stages (s): list" in said and "price: " in said and "split: " in said
        assert read_day_partials(homes["scaled"], day) is not None
        printed: dict[str, list[str]] = {}
        for reason in ("initial", "late_batch"):
            for k in homes:
                said = cli(k, "settle", *date, *(("--scheduler", scheduler) if k == "scaled"
                                                 else ()))
                # stdout: the positions table and the entry line; the timings go to stderr
                printed[k] = _result_lines(said)
                assert ("partial sums" in said) == (k == "scaled")
                assert ("cleared it again" in said) == (reason == "late_batch")
            assert printed["scaled"] == printed["single"]
            assert read_day_legs(homes["scaled"], day).equals(read_day_legs(homes["single"],
                                                                            day))
            assert account_balances(dbs["scaled"][1]) == account_balances(dbs["single"][1])
            assert entry_sums(dbs["scaled"][1]) == entry_sums(dbs["single"][1])
            assert _payment_files(homes["scaled"]) == _payment_files(homes["single"])
            if reason == "late_batch":
                break
            for k, home in homes.items():
                _ingest(dbs[k][1], home, late, day, TARIFFS, "late.parquet")
        assert "on 3 partitions" in said  # the day was cleared again as it had been
        how = partitioned_as(homes["scaled"], day)
        assert how is not None and how.partitions == 3
        # the statements count an issuer's flagged cards: a partitioned clear leaves the SPEC
        # §10 signals to `tongka risk`, which computes them from the legs read back
        cli("scaled", "risk", *date)
        reports = {}
        for k in homes:
            out = tmp_path / f"report-{k}"
            cli(k, "report", *date, "--out", str(out))
            reports[k] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
            assert sum(name.endswith(".html") for name in reports[k]) >= 2
        assert reports["scaled"] == reports["single"] and reports["single"]
    finally:
        for url, engine in dbs.values():
            _drop(url, engine)


def _result_lines(said: str) -> list[str]:
    """The lines of a command's output that are its result, not its timing."""
    return [line for line in said.splitlines()
            if not line.startswith(("✓", "settled from", "day ", "payment instructions"))]
