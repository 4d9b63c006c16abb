"""Risk signals through the real pipeline (SPEC v1.2 §3, §10): balance_fen stored and read
back (old files as -1), planted days ingested and cleared with their signals beside the legs,
the deny list, ``tongka risk``'s summary, the statements, and settlement left untouched."""

from __future__ import annotations

import csv
import datetime as dt
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from clearing.day import clear_day, read_day_legs
from clearing.fast import match_and_price_fast
from clearing.ingest import ingest_file, parse_canonical
from clearing.risk import DENY_KINDS, REPLAY_REACH_DAYS, RiskKind, day_signals, replay_days
from clearing.risk_store import (
    _read_ahead,
    deny_list,
    denylist_path,
    earlier_keys,
    read_day_signals,
    risk_summary,
    signals_path,
    write_day_signals,
)
from clearing.taps import FULL_TAP_SCHEMA, TAP_COLUMNS, TAP_SCHEMA
from clearing.tapstore import read_day_taps
from settlement.ledger import target_balances
from settlement.parties import Party
from settlement.settle import compute_day, settle_day
from settlement.statements import write_statements
from tariffs.load import load_tariff_set
from tariffs.vocab import PartyRole
from tongka.testing.generate import OPERATOR_KEY, SERVICE_DAY_KEY, generate
from tongka.testing.generate_risk import PlantedDay, plant, truth_of

T = load_tariff_set()
REG = T.registry
DAY = dt.date(2026, 11, 24)


def write_batches(out: Path, table: pa.Table, day: dt.date, *, balance: bool = True
                  ) -> list[Path]:
    """One canonical batch per operator, with or without the optional balance_fen column."""
    out.mkdir(parents=True, exist_ok=True)
    table = table.select(list(FULL_TAP_SCHEMA.names if balance else TAP_COLUMNS))
    ops = table.column("operator").to_numpy()
    paths = []
    for op in np.unique(ops):
        part = table.filter(pa.array(ops == op)).replace_schema_metadata(
            {SERVICE_DAY_KEY: day.isoformat().encode(), OPERATOR_KEY: str(int(op)).encode()})
        path = out / f"{day.isoformat()}-op{int(op)}{'' if balance else '-nobal'}.parquet"
        pq.write_table(part, path)
        paths.append(path)
    return paths


def ingest_all(engine: Engine, data_dir: Path, paths: list[Path]) -> None:
    for p in paths:
        report = ingest_file(engine, data_dir, p, REG, tariffs=T)
        assert report.quarantined == 0, report


def planted(seed: int = 7, n: int = 8000) -> PlantedDay:
    g = generate(DAY, n, seed, T, price=match_and_price_fast)
    return plant(DAY, g.table.filter(g.accepted_mask), seed)


# ---------------------------------------------------------------------------------------------
# balance_fen in the canonical batch and the tap store


def test_a_batch_without_balance_reads_as_minus_one(tmp_path: Path) -> None:
    p = planted(n=2000)
    [path, *_] = write_batches(tmp_path / "in", p.taps, DAY, balance=False)
    table, _ = parse_canonical(path.read_bytes(), path.name)
    assert "balance_fen" not in table.column_names
    [with_bal, *_] = write_batches(tmp_path / "in2", p.taps, DAY)
    table, _ = parse_canonical(with_bal.read_bytes(), with_bal.name)
    assert table.column("balance_fen").type == pa.int64()


def test_balance_fen_is_stored_and_old_files_read_as_minus_one(engine: Engine,
                                                               tmp_path: Path) -> None:
    p = planted(n=2000)
    ops = np.unique(p.taps.column("operator").to_numpy())
    first = p.taps.filter(pa.array(p.taps.column("operator").to_numpy() == ops[0]))
    rest = p.taps.filter(pa.array(p.taps.column("operator").to_numpy() != ops[0]))
    ingest_all(engine, tmp_path, write_batches(tmp_path / "in", first, DAY, balance=False))
    ingest_all(engine, tmp_path, write_batches(tmp_path / "in", rest, DAY))
    got = read_day_taps(tmp_path, DAY, engine, optional=True)
    assert got.schema == FULL_TAP_SCHEMA
    assert read_day_taps(tmp_path, DAY, engine).schema == TAP_SCHEMA  # pricing's view
    bal = dict(zip(zip(got.column("operator").to_pylist(), got.column("device_id").to_pylist(),
                       got.column("device_seq").to_pylist(), strict=True),
                   got.column("balance_fen").to_pylist(), strict=True))
    want = dict(zip(zip(p.taps.column("operator").to_pylist(),
                        p.taps.column("device_id").to_pylist(),
                        p.taps.column("device_seq").to_pylist(), strict=True),
                    p.taps.column("balance_fen").to_pylist(), strict=True))
    for key, b in bal.items():
        assert b == (-1 if key[0] == ops[0] else want[key])
    assert any(b >= 0 for b in bal.values())


# ---------------------------------------------------------------------------------------------
# clearing a planted day


def test_clearing_stores_signals_deny_list_and_summary(engine: Engine, tmp_path: Path) -> None:
    p = planted()
    ingest_all(engine, tmp_path, write_batches(tmp_path / "early", p.earlier, p.earlier_day))
    ingest_all(engine, tmp_path, write_batches(tmp_path / "in", p.taps, DAY))
    result = clear_day(tmp_path, DAY, T, engine=engine)
    assert signals_path(tmp_path, DAY).is_file()
    signals = read_day_signals(tmp_path, DAY)
    assert signals is not None and result.signals == signals.num_rows
    assert truth_of(signals) == set(p.truth)
    with open(denylist_path(tmp_path, DAY), newline="") as f:
        rows = list(csv.DictReader(f))
    denied = {(int(r["issuer"]), int(r["card_id"])) for r in rows}
    assert denied == {(i, c) for k, i, c in p.truth if RiskKind[k] in DENY_KINDS}
    assert {r["first_signal"] for r in rows} == {DAY.isoformat()}
    by_kind = {r.kind: r.signals for r in risk_summary(tmp_path, DAY, engine) if r.by == "kind"}
    assert by_kind == {k.name: sum(1 for t in p.truth if t[0] == k.name) for k in RiskKind}


def test_risk_computes_missing_signals_and_deny_list_spans_30_days(engine: Engine,
                                                                   tmp_path: Path) -> None:
    p = planted()
    ingest_all(engine, tmp_path, write_batches(tmp_path / "early", p.earlier, p.earlier_day))
    ingest_all(engine, tmp_path, write_batches(tmp_path / "in", p.taps, DAY))
    clear_day(tmp_path, DAY, T, engine=engine)
    signals_path(tmp_path, DAY).unlink()  # as if cleared before v1.2
    rows = risk_summary(tmp_path, DAY, engine)
    assert rows and signals_path(tmp_path, DAY).is_file()
    n = len(deny_list(tmp_path, DAY))
    assert len(deny_list(tmp_path, DAY + dt.timedelta(days=29))) == n  # still in the window
    assert deny_list(tmp_path, DAY + dt.timedelta(days=30)) == []  # 30 days without a signal
    assert deny_list(tmp_path, DAY - dt.timedelta(days=1)) == []


def test_risk_on_a_day_never_cleared_is_a_state_error(tmp_path: Path) -> None:
    from clearing.errors import StateError

    with pytest.raises(StateError) as err:
        risk_summary(tmp_path, DAY)
    assert err.value.code == "DAY_NOT_CLEARED"


def test_statements_count_flagged_cards(tmp_path: Path, charts_as_digests: None) -> None:
    p = planted(n=3000)
    _store(tmp_path, p.taps)
    clear_day(tmp_path, DAY, T)
    legs = read_day_legs(tmp_path, DAY)
    result = settle_day(None, DAY, legs, T, dry_run=True)  # type: ignore[arg-type]  # no I/O
    signals = read_day_signals(tmp_path, DAY)
    paths = write_statements(tmp_path / "out", DAY, legs, result, REG, workers=1,
                             signals=signals)
    issuer = next(i for k, i, _ in p.truth if k == "BALANCE_BREAK")
    tag = Party(PartyRole.ISSUER, issuer).tag
    page = next(x for x in paths if x.name == f"statement-{DAY.isoformat()}-{tag}.html"
                ).read_text()
    assert "Risk signals" in page and "BALANCE_BREAK" in page
    overview = next(x for x in paths if x.name == f"overview-{DAY.isoformat()}.html").read_text()
    assert "Risk signals" in overview and "DEBIT_MISMATCH" in overview
    operator = next(x for x in paths if "-OPR-" in x.name and x.suffix == ".html")
    assert "Risk signals" not in operator.read_text()  # only issuers' pages count cards


# ---------------------------------------------------------------------------------------------
# signals never change a fare, an obligation or the ledger


@settings(max_examples=6, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), drop_balance=st.booleans())
def test_balances_and_planted_signals_settle_identically(tmp_path_factory: pytest.TempPathFactory,
                                                         seed: int, drop_balance: bool) -> None:
    p = plant(DAY, _day(seed % 4), seed)
    plain = p.taps.select(list(TAP_COLUMNS))
    # the same taps with balances (planted breaks and all) and without: the same legs, the
    # same obligations, the same ledger targets; the signals are written all the same
    with_bal = tmp_path_factory.mktemp("bal")
    without = tmp_path_factory.mktemp("nobal")
    _store(with_bal, p.taps)
    _store(without, plain if drop_balance else _scrambled(p.taps, seed))
    a = read_day_legs(with_bal, DAY) if clear_day(with_bal, DAY, T) else None
    b = read_day_legs(without, DAY) if clear_day(without, DAY, T) else None
    assert a is not None and b is not None and a.equals(b)
    ca, cb = compute_day(a, T, DAY), compute_day(b, T, DAY)
    assert ca.obligations == cb.obligations
    assert target_balances(ca.obligations) == target_balances(cb.obligations)
    assert ca.positions == cb.positions
    assert a.equals(match_and_price_fast(plain, T))
    assert read_day_signals(with_bal, DAY).num_rows > 0


_DAYS: dict[int, pa.Table] = {}


def _day(k: int) -> pa.Table:
    if k not in _DAYS:
        g = generate(DAY, 3000, 100 + k, T, price=match_and_price_fast)
        _DAYS[k] = g.table.filter(g.accepted_mask)
    return _DAYS[k]


def _scrambled(taps: pa.Table, seed: int) -> pa.Table:
    """The same taps with arbitrary balances: every balance rule broken, fares untouched."""
    rng = np.random.default_rng(seed)
    bal = rng.integers(-1, 10**9, taps.num_rows)
    return taps.set_column(taps.column_names.index("balance_fen"),
                           FULL_TAP_SCHEMA.field("balance_fen"), pa.array(bal, pa.int64()))


def _store(data_dir: Path, taps: pa.Table) -> None:
    """Store the taps as one batch file of the day without a database (read from disk)."""
    from clearing import tapstore

    rel = tapstore.batch_relpath(DAY, 1, "0" * 64)
    tapstore.write_batch_taps(data_dir, rel, taps, {tapstore.META_DAY_SEQ: b"1"})


def test_write_day_signals_is_idempotent(tmp_path: Path) -> None:
    p = planted(n=3000)
    _store(tmp_path, p.taps)
    clear_day(tmp_path, DAY, T)
    first = read_day_signals(tmp_path, DAY)
    taps = read_day_taps(tmp_path, DAY, optional=True)
    write_day_signals(tmp_path, DAY, taps, read_day_legs(tmp_path, DAY))
    assert first is not None and first.equals(read_day_signals(tmp_path, DAY))


# ---------------------------------------------------------------------------------------------
# how far back a replay reaches (SPEC §4: two days apart or more; REPLAY_REACH_DAYS at most)


def moved_back(earlier: pa.Table, days: int) -> pa.Table:
    """The planted earlier taps accepted ``days`` before DAY instead (same card keys)."""
    ts = np.asarray(earlier.column("ts_ms").to_numpy()) - (days - 3) * 86_400_000
    return earlier.set_column(earlier.column_names.index("ts_ms"), "ts_ms",
                              pa.array(ts, pa.int64()))


@pytest.mark.parametrize("back", [2, REPLAY_REACH_DAYS, REPLAY_REACH_DAYS + 1])
def test_replays_reach_back_to_the_reach_and_no_further(engine: Engine, tmp_path: Path,
                                                         back: int) -> None:
    p = planted(n=3000)
    assert p.earlier_day == DAY - dt.timedelta(days=3)  # what moved_back moves from
    when = DAY - dt.timedelta(days=back)
    ingest_all(engine, tmp_path, write_batches(tmp_path / "early", moved_back(p.earlier, back),
                                               when))
    ingest_all(engine, tmp_path, write_batches(tmp_path / "in", p.taps, DAY))
    taps = read_day_taps(tmp_path, DAY, engine, optional=True)
    for db in (engine, None):  # the committed batches, and the files on disk
        chunks = list(earlier_keys(tmp_path, DAY, db))
        assert {c.day for c in chunks} == ({when} if back <= REPLAY_REACH_DAYS else set())
        got = day_signals(DAY, taps, None, earlier=chunks)
        replays = {(i, c) for k, i, c in truth_of(got) if k == "CARD_SEQ_REPLAY"}
        planted_replays = {(i, c) for k, i, c in p.truth if k == "CARD_SEQ_REPLAY"}
        assert replays == (planted_replays if back <= REPLAY_REACH_DAYS else set())
    assert replay_days(DAY) == (DAY - dt.timedelta(days=REPLAY_REACH_DAYS),
                                DAY - dt.timedelta(days=2))


def test_read_ahead_keeps_order_raises_errors_and_stops_with_its_caller() -> None:
    assert list(_read_ahead(iter(range(50)))) == list(range(50))  # type: ignore[arg-type]

    def failing():  # type: ignore[no-untyped-def]
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for x in _read_ahead(failing()):
            got.append(x)
    assert got == [1]

    produced = []

    def endless():  # type: ignore[no-untyped-def]
        k = 0
        while True:
            produced.append(k)
            yield k
            k += 1

    reader = _read_ahead(endless())
    assert next(reader) == 0
    reader.close()  # the caller stops: the reading thread ends instead of reading on
    assert "risk-replay-keys" not in {t.name for t in threading.enumerate()}
    assert len(produced) <= 4  # one taken, READ_AHEAD waiting, one in hand


def test_clearing_a_day_again_rewrites_the_later_deny_lists_that_hold_it(tmp_path: Path) -> None:
    """SPEC §10: day D+1's list holds D's signals. When D is cleared again without them (its
    batch withdrawn), D+1's stored list must drop them too, not keep what D said before."""
    p = planted(n=3000)
    _store(tmp_path, p.taps)
    clear_day(tmp_path, DAY, T)
    later = DAY + dt.timedelta(days=1)
    clear_day(tmp_path, later, T)  # a day with no taps: its list is D's cards alone
    listed = denylist_path(tmp_path, later).read_text().splitlines()
    assert len(listed) > 1  # the header and D's cards
    for f in (tmp_path / "taps").rglob(f"day={DAY.isoformat()}/**/*.parquet"):
        f.unlink()  # as a withdrawal leaves the day: no batch file
    clear_day(tmp_path, DAY, T)
    assert denylist_path(tmp_path, DAY).read_text().splitlines() == listed[:1]
    assert denylist_path(tmp_path, later).read_text().splitlines() == listed[:1]
