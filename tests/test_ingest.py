"""Batch ingestion on SQLite and PostgreSQL: identity, per-row acceptance, quarantine,
de-duplication in SPEC §4 order, late batches, bad input, orphans, migrations."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, func, select, text

from clearing import tapstore
from clearing.batches import (
    Batch,
    QuarantinedRow,
    batch_detail,
    export_quarantine,
    list_batches,
    quarantined_rows,
)
from clearing.days import days_needing_settlement, is_settled, mark_settled
from clearing.db import DatabaseError, transaction
from clearing.errors import InputError, RowError, StateError
from clearing.ingest import BatchReport, ingest_file, ingest_taps, remove_orphans, resubmit
from clearing.service_day import local_ms
from clearing.taps import TAP_SCHEMA, TapType, taps_table
from tariffs.registry import FLAT, load_registry
from tongka.schema import upgrade

REG = load_registry()
DAY = dt.date(2026, 11, 24)
BUS = next(ln for ln in REG.lines.values() if ln.network == FLAT)
OPERATOR = BUS.operator


def tap(i: int, **changes: int) -> dict:
    """A valid flat tap; ``i`` makes its device key and card key unique."""
    stop = BUS.stops[i % len(BUS.stops)]
    row = dict(operator=OPERATOR, device_id=10, device_seq=i, card_id=1000 + i, card_seq=i,
               issuer=1, product=0, media=0, ts_ms=local_ms(DAY, 6) + i * 1000,
               city=REG.stops[stop].city, line=BUS.line, stop=stop, tap_type=int(TapType.FLAT),
               debited_fen=160)
    row.update(changes)
    return row


def write_batch(path: Path, rows: list[dict] | pa.Table, day: dt.date | None = DAY,
                operator: int | None = OPERATOR) -> Path:
    table = rows if isinstance(rows, pa.Table) else taps_table(rows)
    meta = {}
    if day is not None:
        meta[b"tongka.service_day"] = day.isoformat().encode()
    if operator is not None:
        meta[b"tongka.operator"] = str(operator).encode()
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def stored_rows(data_dir: Path, engine: Engine, day: dt.date = DAY) -> list[dict]:
    return tapstore.read_day_taps(data_dir, day, engine).to_pylist()


def files_under(data_dir: Path) -> list[str]:
    root = data_dir / "taps"
    return sorted(p.relative_to(data_dir).as_posix() for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def count(engine: Engine, model: type) -> int:
    with engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(model)).scalar_one())


# --------------------------------------------------------------------------- the good path


def test_a_good_batch_is_stored_in_file_order(engine: Engine, tmp_path: Path) -> None:
    rows = [tap(i) for i in range(50)][::-1]  # file order is not key order
    report = ingest_file(engine, tmp_path, write_batch(tmp_path / "b.parquet", rows), REG)
    assert (report.status, report.received, report.accepted, report.duplicates,
            report.quarantined, report.late) == ("accepted", 50, 50, 0, 0, False)
    assert report.operator == OPERATOR and report.service_day == DAY
    assert stored_rows(tmp_path, engine) == rows
    assert tapstore.read_day_taps(tmp_path, DAY).to_pylist() == rows  # from the files alone
    assert files_under(tmp_path) == [
        f"taps/day={DAY.isoformat()}/operator={OPERATOR:03d}/{report.file_sha256}.parquet"]
    assert tapstore.read_day_taps(tmp_path, DAY, engine).schema == TAP_SCHEMA
    assert days_needing_settlement(engine) == [DAY]


def test_the_same_bytes_twice_are_one_batch(engine: Engine, tmp_path: Path) -> None:
    path = write_batch(tmp_path / "b.parquet", [tap(i) for i in range(10)] + [tap(3, product=9)])
    first = ingest_file(engine, tmp_path, path, REG)
    copy = tmp_path / "renamed.parquet"
    copy.write_bytes(path.read_bytes())
    again = ingest_file(engine, tmp_path, copy, REG)
    assert again.status == "already_ingested"
    assert again.batch_id == first.batch_id and again.file_sha256 == first.file_sha256
    assert (again.accepted, again.quarantined) == (first.accepted, first.quarantined)
    assert count(engine, Batch) == 1 and count(engine, QuarantinedRow) == 1
    assert len(stored_rows(tmp_path, engine)) == 10


def test_bad_rows_are_quarantined_good_rows_accepted(engine: Engine, tmp_path: Path) -> None:
    rows = [tap(i) for i in range(8)]
    rows[2] = tap(2, operator=999)
    rows[5] = tap(5, debited_fen=-7)
    rows[6] = tap(6, ts_ms=local_ms(DAY, 2))  # 02:00 belongs to the previous service day
    report = ingest_file(engine, tmp_path, write_batch(tmp_path / "b.parquet", rows), REG)
    assert (report.accepted, report.quarantined, report.duplicates) == (5, 3, 0)
    assert report.errors == {"UNKNOWN_OPERATOR": 1, "BAD_DEBIT": 1, "OUTSIDE_SERVICE_DAY": 1}
    assert stored_rows(tmp_path, engine) == [rows[i] for i in (0, 1, 3, 4, 7)]
    q = quarantined_rows(engine, report.batch_id)
    assert [(e.row, e.code, e.field) for e in q] == [
        (2, "UNKNOWN_OPERATOR", "operator"), (5, "BAD_DEBIT", "debited_fen"),
        (6, "OUTSIDE_SERVICE_DAY", "ts_ms")]
    assert [e.record for e in q] == [rows[2], rows[5], rows[6]]


def test_a_batch_of_only_bad_rows_stores_no_file(engine: Engine, tmp_path: Path) -> None:
    report = ingest_file(engine, tmp_path, write_batch(
        tmp_path / "b.parquet", [tap(0, media=9), tap(1, tap_type=1)]), REG)
    assert (report.accepted, report.quarantined) == (0, 2)
    assert files_under(tmp_path) == []
    assert stored_rows(tmp_path, engine) == []


# --------------------------------------------------------------------------- de-duplication


def test_duplicates_across_batches_are_counted_not_stored(engine: Engine, tmp_path: Path) -> None:
    ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet",
                                              [tap(i) for i in range(10)]), REG)
    second = [tap(5), tap(6, card_id=77), tap(7, device_seq=500), tap(20), tap(21)]
    # tap(5): same tap again; 6: same device key; 7: same card key; 20, 21: new
    report = ingest_file(engine, tmp_path, write_batch(tmp_path / "b.parquet", second), REG)
    assert (report.accepted, report.duplicates, report.quarantined) == (2, 3, 0)
    assert stored_rows(tmp_path, engine) == [tap(i) for i in range(10)] + [tap(20), tap(21)]


def test_within_a_batch_only_accepted_taps_block(engine: Engine, tmp_path: Path) -> None:
    a = tap(1)
    b = tap(2, card_id=a["card_id"], card_seq=a["card_seq"])  # card key of a: duplicate
    c = tap(3, device_seq=b["device_seq"])  # device key of b, but b was a duplicate: accepted
    bad = tap(4, product=8)  # rejected: registers nothing
    d = tap(5, card_id=bad["card_id"], card_seq=bad["card_seq"])
    report = ingest_file(engine, tmp_path, write_batch(tmp_path / "b.parquet",
                                                       [a, b, c, bad, d]), REG)
    assert (report.accepted, report.duplicates, report.quarantined) == (3, 1, 1)
    assert stored_rows(tmp_path, engine) == [a, c, d]


def test_duplicates_reach_the_neighbouring_days_only(engine: Engine, tmp_path: Path) -> None:
    base = tap(1)
    ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", [base]), REG)
    for days, expect_dup in ((1, True), (-1, True), (2, False)):
        day = DAY + dt.timedelta(days=days)
        replay = dict(base, ts_ms=base["ts_ms"] + days * 86_400_000)  # same keys, another day
        report = ingest_file(engine, tmp_path, write_batch(
            tmp_path / f"d{days}.parquet", [replay], day=day), REG)
        assert report.duplicates == int(expect_dup), days


def test_a_rejected_row_does_not_block_its_correction(engine: Engine, tmp_path: Path) -> None:
    ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", [tap(1, city=420700)]), REG)
    report = ingest_file(engine, tmp_path, write_batch(tmp_path / "b.parquet", [tap(1)]), REG)
    assert (report.accepted, report.duplicates) == (1, 0)


# --------------------------------------------------------------------------- declared day, operator


def test_metadata_or_overrides_declare_the_batch(engine: Engine, tmp_path: Path) -> None:
    bare = write_batch(tmp_path / "bare.parquet", [tap(1)], day=None, operator=None)
    with pytest.raises(InputError) as err:
        ingest_file(engine, tmp_path, bare, REG)
    assert err.value.code == "INPUT_METADATA" and "--date" in str(err.value)
    with pytest.raises(InputError) as err:
        ingest_file(engine, tmp_path, bare, REG, service_day=DAY)
    assert err.value.code == "INPUT_METADATA" and "--operator" in str(err.value)
    assert count(engine, Batch) == 0
    report = ingest_file(engine, tmp_path, bare, REG, service_day=DAY, operator=OPERATOR)
    assert (report.service_day, report.operator, report.accepted) == (DAY, OPERATOR, 1)
    # the override wins over the file's own metadata
    other = write_batch(tmp_path / "o.parquet", [tap(2, ts_ms=local_ms(DAY, 6) + 86_400_000)])
    report = ingest_file(engine, tmp_path, other, REG, service_day=DAY + dt.timedelta(days=1))
    assert (report.service_day, report.accepted) == (DAY + dt.timedelta(days=1), 1)


@pytest.mark.parametrize("meta, code", [
    ({b"tongka.service_day": b"24/11/2026", b"tongka.operator": b"101"}, "INPUT_METADATA"),
    ({b"tongka.service_day": b"2026-11-24", b"tongka.operator": b"bus"}, "INPUT_METADATA"),
    ({b"tongka.service_day": b"2026-11-24", b"tongka.operator": b"999"}, "INPUT_METADATA"),
])
def test_bad_metadata_is_refused(engine: Engine, tmp_path: Path, meta: dict, code: str) -> None:
    path = tmp_path / "m.parquet"
    pq.write_table(taps_table([tap(1)]).replace_schema_metadata(meta), path)
    with pytest.raises(InputError) as err:
        ingest_file(engine, tmp_path, path, REG)
    assert err.value.code == code
    assert count(engine, Batch) == 0 and files_under(tmp_path) == []


# --------------------------------------------------------------------------- bad input


def assert_nothing_written(engine: Engine, data_dir: Path) -> None:
    assert count(engine, Batch) == 0
    assert count(engine, QuarantinedRow) == 0
    assert files_under(data_dir) == []
    assert days_needing_settlement(engine) == []


def test_a_missing_file(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        ingest_file(engine, tmp_path, tmp_path / "nope.parquet", REG)
    assert err.value.code == "INPUT_MISSING" and err.value.exit_code == 2
    assert_nothing_written(engine, tmp_path)


def test_a_corrupt_file(engine: Engine, tmp_path: Path) -> None:
    good = write_batch(tmp_path / "good.parquet", [tap(i) for i in range(100)])
    data = bytearray(good.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = bytes(64)  # damage a data page, keep the footer
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    text_file = tmp_path / "notes.parquet"
    text_file.write_text("operator,device_id\n101,1\n")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    for path in (bad, text_file, empty):
        with pytest.raises(InputError) as err:
            ingest_file(engine, tmp_path, path, REG)
        assert err.value.code == "INPUT_CORRUPT", path
    assert_nothing_written(engine, tmp_path)


def test_a_truncated_file(engine: Engine, tmp_path: Path) -> None:
    good = write_batch(tmp_path / "good.parquet", [tap(i) for i in range(100)])
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError) as err:
        ingest_file(engine, tmp_path, cut, REG)
    assert err.value.code == "INPUT_CORRUPT"
    assert_nothing_written(engine, tmp_path)


@pytest.mark.parametrize("change", ["missing", "wrong_type", "extra"])
def test_a_file_with_the_wrong_schema(engine: Engine, tmp_path: Path, change: str) -> None:
    table = taps_table([tap(i) for i in range(3)])
    if change == "missing":
        table = table.drop_columns(["card_seq"])
    elif change == "wrong_type":
        table = table.set_column(0, "operator", table.column("operator").cast(pa.int64()))
    else:
        table = table.append_column("card_number", pa.array(["6222..."] * 3))
    path = write_batch(tmp_path / "s.parquet", table)
    with pytest.raises(InputError) as err:
        ingest_file(engine, tmp_path, path, REG)
    assert err.value.code == "INPUT_SCHEMA"
    assert {"missing": "card_seq", "wrong_type": "operator is int64",
            "extra": "card_number"}[change] in str(err.value)
    assert_nothing_written(engine, tmp_path)


def test_nullable_columns_quarantine_their_null_rows(engine: Engine, tmp_path: Path) -> None:
    rows = [tap(i) for i in range(3)]
    schema = pa.schema([f.with_nullable(True) for f in TAP_SCHEMA])
    table = pa.Table.from_pylist([rows[0], dict(rows[1], stop=None), rows[2]], schema=schema)
    report = ingest_file(engine, tmp_path, write_batch(tmp_path / "n.parquet", table), REG)
    assert (report.accepted, report.quarantined, report.errors) == (2, 1, {"MISSING_VALUE": 1})
    assert [(e.row, e.field) for e in quarantined_rows(engine)] == [(1, "stop")]


# --------------------------------------------------------------------------- adapters' entry


def test_ingest_taps_numbers_rows_in_the_raw_file(engine: Engine, tmp_path: Path) -> None:
    taps = taps_table([tap(1), tap(2, media=9), tap(3)]).append_column(
        "source_row", pa.array([0, 2, 3], pa.int64()))
    adapter_errors = [RowError("FIELD_FORMAT", 1, "fare", "fare is not a number", {"fare": "x"})]
    report = ingest_taps(engine, tmp_path, taps, adapter_errors, file_sha256="ab" * 32,
                         source_format="card", source_name="raw.csv", service_day=DAY,
                         operator=OPERATOR, registry=REG)
    assert (report.received, report.accepted, report.quarantined) == (4, 2, 2)
    assert [(e.row, e.code) for e in quarantined_rows(engine)] == [(1, "FIELD_FORMAT"),
                                                                   (2, "BAD_MEDIA")]
    assert stored_rows(tmp_path, engine) == [tap(1), tap(3)]


# --------------------------------------------------------------------------- late batches


def test_a_batch_for_a_settled_day_is_late(engine: Engine, tmp_path: Path) -> None:
    ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", [tap(1)]), REG)
    with transaction(engine) as s:
        assert mark_settled(s, DAY)
    assert is_settled(engine, DAY) and days_needing_settlement(engine) == []
    report = ingest_file(engine, tmp_path, write_batch(tmp_path / "b.parquet", [tap(2)]), REG)
    assert report.late and report.accepted == 1
    assert not is_settled(engine, DAY) and days_needing_settlement(engine) == [DAY]
    assert stored_rows(tmp_path, engine) == [tap(1), tap(2)]
    assert [b.late for b in list_batches(engine)] == [False, True]


def test_a_late_batch_that_adds_no_tap_leaves_the_day_settled(engine: Engine,
                                                              tmp_path: Path) -> None:
    ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", [tap(1)]), REG)
    with transaction(engine) as s:
        mark_settled(s, DAY)
    report = ingest_file(engine, tmp_path, write_batch(tmp_path / "b.parquet",
                                                       [tap(1), tap(2, media=9)]), REG)
    assert report.late and (report.accepted, report.duplicates, report.quarantined) == (0, 1, 1)
    assert is_settled(engine, DAY)


def test_settling_with_a_stale_revision_keeps_the_day_open(engine: Engine, tmp_path: Path) -> None:
    from clearing.days import day_revision

    ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", [tap(1)]), REG)
    with transaction(engine) as s:
        seen = day_revision(s, DAY)
    ingest_file(engine, tmp_path, write_batch(tmp_path / "b.parquet", [tap(2)]), REG)
    with transaction(engine) as s:
        assert not mark_settled(s, DAY, revision=seen)
    assert days_needing_settlement(engine) == [DAY]


# --------------------------------------------------------------------------- orphans


def test_orphans_of_a_crash_are_removed_by_the_next_run(engine: Engine, tmp_path: Path) -> None:
    first = ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", [tap(1)]), REG)
    op_dir = tmp_path / "taps" / f"day={DAY.isoformat()}" / f"operator={OPERATOR:03d}"
    orphan = op_dir / ("f" * 64 + ".parquet")  # renamed, never committed
    pq.write_table(taps_table([tap(2)]).replace_schema_metadata(
        {tapstore.META_DAY_SEQ: b"9"}), orphan)
    tmp = op_dir / f"{'e' * 64}.parquet.1234.tmp"
    tmp.write_bytes(b"half a file")
    assert tap(2) in tapstore.read_day_taps(tmp_path, DAY).to_pylist()  # the files alone lie
    assert stored_rows(tmp_path, engine) == [tap(1)]  # the database does not
    report = ingest_file(engine, tmp_path, write_batch(tmp_path / "b.parquet", [tap(2)]), REG)
    assert report.accepted == 1  # the orphan's tap was not taken for an accepted one
    assert not orphan.exists() and not tmp.exists()
    assert files_under(tmp_path) == sorted(
        f"taps/day={DAY.isoformat()}/operator={OPERATOR:03d}/{r.file_sha256}.parquet"
        for r in (first, report))


def test_remove_orphans_sweeps_every_day(engine: Engine, tmp_path: Path) -> None:
    ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", [tap(1)]), REG)
    stray = tmp_path / "taps" / "day=2026-01-01" / "operator=101" / "x.parquet.1.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"")
    assert remove_orphans(engine, tmp_path) == [stray]
    assert len(files_under(tmp_path)) == 1


def test_a_missing_committed_file_is_an_error_not_an_empty_day(engine: Engine,
                                                                tmp_path: Path) -> None:
    ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", [tap(1)]), REG)
    for f in (tmp_path / "taps").rglob("*.parquet"):
        f.unlink()
    with pytest.raises(StateError) as err:
        tapstore.read_day_taps(tmp_path, DAY, engine)
    assert err.value.code == "TAPSTORE_MISSING"
    with pytest.raises(StateError):  # nor may de-duplication silently forget those keys
        ingest_file(engine, tmp_path, write_batch(tmp_path / "b.parquet", [tap(1), tap(2)]), REG)


# --------------------------------------------------------------------------- operators' views


def test_batches_list_and_show(engine: Engine, tmp_path: Path) -> None:
    rows = [tap(i) for i in range(6)] + [tap(10 + i, product=7) for i in range(5)] + [
        tap(20, city=420700), tap(0)]
    r = ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", rows), REG)
    [summary] = list_batches(engine)
    assert (summary.id, summary.received, summary.accepted, summary.duplicates,
            summary.quarantined, summary.source_name) == (r.batch_id, 13, 6, 1, 6, "a.parquet")
    detail = batch_detail(engine, r.file_sha256[:12], examples=2)
    assert detail.batch == summary
    assert [(g.code, g.count, [e.row for e in g.examples]) for g in detail.errors] == [
        ("BAD_PRODUCT", 5, [6, 7]), ("CITY_MISMATCH", 1, [11])]
    assert batch_detail(engine, r.batch_id).batch.id == r.batch_id
    with pytest.raises(StateError) as err:
        batch_detail(engine, 999)
    assert err.value.code == "BATCH_NOT_FOUND"


def test_quarantine_export_and_resubmit(engine: Engine, tmp_path: Path) -> None:
    rows = [tap(0), tap(1, product=7), tap(2, media=9), tap(3, city=420700)]
    r = ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", rows), REG)
    out = tmp_path / "q.jsonl"
    assert export_quarantine(engine, out) == 3
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["batch_sha256"], x["row"], x["code"]) for x in lines] == [
        (r.file_sha256, 1, "BAD_PRODUCT"), (r.file_sha256, 2, "BAD_MEDIA"),
        (r.file_sha256, 3, "CITY_MISMATCH")]
    lines[0]["record"]["product"] = 1  # fixed
    lines[1]["record"]["media"] = 2  # fixed
    lines[2]["record"]["city"] = 123  # still wrong
    fixed = tmp_path / "fixed.jsonl"
    fixed.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = resubmit(engine, tmp_path, fixed, REG)
    [rep] = result.reports
    assert (rep.accepted, rep.quarantined, rep.service_day, rep.operator) == (2, 1, DAY, OPERATOR)
    assert stored_rows(tmp_path, engine) == [tap(0), tap(1, product=1), tap(2, media=2)]
    still = quarantined_rows(engine)
    assert [(e.batch_id, e.row, e.code) for e in still] == [(rep.batch_id, 2, "UNKNOWN_CITY")]
    # the same corrections again change nothing
    again = resubmit(engine, tmp_path, fixed, REG)
    assert [x.status for x in again.reports] in ([], ["already_ingested"])
    assert len(stored_rows(tmp_path, engine)) == 3 and len(quarantined_rows(engine)) == 1
    # corrections of rows already resubmitted are skipped
    fixed.write_text(json.dumps(lines[0]) + "\n")
    assert resubmit(engine, tmp_path, fixed, REG) == type(result)((), (lines[0]["quarantine_id"],))


def test_resubmitted_records_that_are_not_taps_are_quarantined(engine: Engine,
                                                               tmp_path: Path) -> None:
    ingest_file(engine, tmp_path, write_batch(tmp_path / "a.parquet", [tap(1, media=9)]), REG)
    out = tmp_path / "q.jsonl"
    export_quarantine(engine, out)
    line = json.loads(out.read_text())
    line["record"]["card_id"] = -5
    out.write_text(json.dumps(line) + "\n")
    [rep] = resubmit(engine, tmp_path, out, REG).reports
    assert (rep.accepted, rep.errors) == (0, {"BAD_RECORD": 1})
    [q] = quarantined_rows(engine)
    assert (q.code, q.field) == ("BAD_RECORD", "card_id")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"quarantine_id": 10**9, "record": {}}) + "\n")
    with pytest.raises(InputError) as err:
        resubmit(engine, tmp_path, bad, REG)
    assert err.value.code == "INPUT_RESUBMIT_UNKNOWN"


# --------------------------------------------------------------------------- schema


def test_upgrade_refuses_a_database_newer_than_the_code(engine: Engine) -> None:
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    with pytest.raises(DatabaseError) as err:
        upgrade(engine)
    assert err.value.code == "DB_NEWER_THAN_CODE"
    assert "upgrade tongka" in str(err.value)


def test_upgrade_is_idempotent_and_matches_the_models(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from clearing.db import Base

    upgrade(engine)  # a second time: nothing to do
    mine = {"batches", "quarantine", "service_days"}

    def only_mine(obj, name, type_, reflected, compare_to) -> bool:  # type: ignore[no-untyped-def]
        return type_ != "table" or name in mine

    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": only_mine})
        assert compare_metadata(ctx, Base.metadata) == []


def test_reports_are_values() -> None:
    r = BatchReport(1, "a" * 64, OPERATOR, DAY, 1, 1, 0, 0, "accepted", False)
    with pytest.raises(AttributeError):
        r.accepted = 2  # type: ignore[misc]
