"""ARCHITECTURE "Scale": a partitioned clear and settlement give exactly what one process gives.

Generated days with every rule kind (the QA strategies: flat and entry-exit legs, transfers,
caps, penalties, mixed debits, varied tariff sets), stored as several batches, then a late
batch, on SQLite and PostgreSQL: clearing on a dask cluster with any number of partitions
and settling from the partial sums (or from the legs read back) gives the same legs (as a
set, and in canonical order when read back), obligations, positions, payments, payment files
and ledger as the single-process clear and settlement of the same batches.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from clearing.day import clear_day, legs_revision, read_day_legs
from clearing.db import make_engine, upgrade
from clearing.ingest import ingest_taps
from clearing.legs import sort_legs
from clearing.partition import local_client
from settlement.ledger import Scope, account_balances, entry_sums
from settlement.partials import SETTLEMENT_SUMS, day_partials, read_day_partials
from settlement.payments import write_missing_run_files
from settlement.settle import SettlementResult, settle_day, settle_from_partials
from tariffs.load import TariffSet, load_tariff_set
from tongka.settling import settle as settle_as_finance
from tongka.testing.strategies import batches, days, service_days, tariff_sets

TARIFFS = load_tariff_set()
OPERATOR = 101  # the batches' declared operator (any registry operator: taps may be others')
_fresh = itertools.count()


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    """One local cluster for the module: 2 worker processes of one thread each."""
    with local_client(2) as c:
        yield c


def _database(db_url: str, tmp: Path, name: str) -> tuple[str, Engine]:
    """An empty, migrated database of the fixture's kind: a new SQLite file or PG schema."""
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp / f'{name}.sqlite'}"
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


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_a_partitioned_clear_and_settlement_equal_the_single_process_run(
    db_url: str, tmp_path: Path, client: object, data: st.DataObject
) -> None:
    ts = data.draw(st.one_of(st.just(TARIFFS), tariff_sets()), label="tariffs")
    day = data.draw(service_days(ts), label="day")
    taps = data.draw(days(ts, day=day, straddle=False, max_cards=8, max_events=6), label="taps")
    parts = [p for p in data.draw(batches(taps, max_batches=4), label="batches") if p.num_rows]
    partitions = data.draw(st.sampled_from([1, 2, 3, 7, 64]), label="partitions")
    from_partials = data.draw(st.booleans(), label="settle from the partial sums")
    late = parts.pop() if len(parts) > 1 else None  # arrives after the first settlement

    n = next(_fresh)
    tmp = tmp_path / f"ex{n}"
    homes = {"single": tmp / "single", "scaled": tmp / "scaled"}
    dbs = {k: _database(db_url, tmp_path, f"{k}{n}") for k in homes}
    try:
        engines = {k: e for k, (_, e) in dbs.items()}
        for k, home in homes.items():
            home.mkdir(parents=True)
            for i, part in enumerate(parts):
                _ingest(engines[k], home, part, day, ts, f"batch{i}.parquet")

        def run(reason: str) -> dict[str, SettlementResult]:
            out = {}
            e, home = engines["single"], homes["single"]
            cleared = clear_day(home, day, ts, engine=e)
            out["single"] = settle_day(e, day, read_day_legs(home, day), ts, reason=reason,
                                       revision=cleared.revision)
            write_missing_run_files(e, home, ts.registry, scope=Scope.DAY, period=day)
            e, home = engines["scaled"], homes["scaled"]
            cleared = clear_day(home, day, ts, engine=e, partitions=partitions, client=client,
                                summary=SETTLEMENT_SUMS)
            if from_partials:
                partials = read_day_partials(home, day)
                assert partials is not None
                out["scaled"] = settle_from_partials(e, day, partials, ts, reason=reason,
                                                     revision=cleared.revision)
                write_missing_run_files(e, home, ts.registry, scope=Scope.DAY, period=day)
            else:  # as `tongka settle` does: from the legs, read back from their parts
                out["scaled"] = settle_as_finance(e, home, day, ts, reason=reason).result
            return out

        for reason in ("initial", "late_batch"):
            results = run(reason)
            single, scaled = read_day_legs(homes["single"], day), read_day_legs(homes["scaled"],
                                                                                day)
            assert _as_set(scaled) == _as_set(single)
            assert scaled.equals(single)  # canonical order, read back
            assert scaled.equals(sort_legs(scaled))
            assert legs_revision(homes["scaled"], day) == legs_revision(homes["single"], day)
            stored = read_day_partials(homes["scaled"], day)
            assert stored == day_partials(single, day)
            _same_settlement(results["single"], results["scaled"])
            assert account_balances(engines["scaled"]) == account_balances(engines["single"])
            assert entry_sums(engines["scaled"]) == entry_sums(engines["single"])
            assert _payment_files(homes["scaled"]) == _payment_files(homes["single"])
            if late is None:
                break
            for k, home in homes.items():
                _ingest(engines[k], home, late, day, ts, "late.parquet")
            late = None
    finally:
        for url, engine in dbs.values():
            _drop(url, engine)


def test_a_partitioned_day_read_back_is_a_single_file_day(tmp_path: Path, client: object) -> None:
    """The legs files a partitioned clear writes are the single-process legs, cut by card."""
    day = dt.date(2026, 11, 24)
    from tongka.testing.generate import generate

    g = generate(day, 3000, 11, TARIFFS)
    taps = g.table.filter(g.accepted_mask)
    url, engine = _database("sqlite://", tmp_path, "one")
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
