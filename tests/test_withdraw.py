"""Batch withdrawal (SPEC v1.2 §4) on SQLite and PostgreSQL: rows leave the day for the
archive, the identity is released, acceptance re-runs in stored order, the day re-settles."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, select, text

from clearing import tapstore, withdraw
from clearing.batches import (
    Batch,
    BatchStatus,
    QuarantinedRow,
    QuarantineStatus,
    batch_detail,
    list_batches,
    quarantined_rows,
)
from clearing.days import day_revision, days_needing_settlement, is_settled, mark_settled
from clearing.db import make_engine, session_factory, transaction
from clearing.errors import InputError, StateError
from clearing.ingest import ALREADY_INGESTED, ingest_file, remove_orphans
from clearing.service_day import local_ms
from clearing.taps import TapType, taps_table
from clearing.withdraw import withdraw_batch
from tariffs.registry import FLAT, load_registry
from tongka.schema import alembic_config
from tongka.testing.strategies import batches as strategy_batches
from tongka.testing.strategies import days

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


def write(path: Path, rows: list[dict], day: dt.date = DAY) -> Path:
    meta = {b"tongka.service_day": day.isoformat().encode(),
            b"tongka.operator": str(OPERATOR).encode()}
    pq.write_table(taps_table(rows).replace_schema_metadata(meta), path)
    return path


def day_taps(data_dir: Path, engine: Engine, day: dt.date = DAY) -> list[dict]:
    return tapstore.read_day_taps(data_dir, day, engine).to_pylist()


def tap_files(data_dir: Path) -> list[str]:
    root = data_dir / tapstore.TAPS_DIR
    return sorted(p.relative_to(data_dir).as_posix() for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def batch(engine: Engine, batch_id: int) -> Batch:
    with session_factory(engine)() as s:
        b = s.get(Batch, batch_id)
        assert b is not None
        return b


def snapshot(engine: Engine, data_dir: Path) -> tuple:
    """Everything a withdrawal changes: batches, quarantine, days, tap files and the day's taps."""
    with engine.connect() as c:
        batches = c.execute(select(Batch.id, Batch.status, Batch.accepted, Batch.duplicates,
                                   Batch.tap_path, Batch.dup_path).order_by(Batch.id)).all()
        quarantine = c.execute(select(QuarantinedRow.id, QuarantinedRow.status)
                               .order_by(QuarantinedRow.id)).all()
        days = c.execute(text("SELECT day, status, revision FROM service_days ORDER BY day")).all()
    return (batches, quarantine, days, tap_files(data_dir), day_taps(data_dir, engine))


# --------------------------------------------------------------------------- the case


def test_a_wrong_date_batch_is_withdrawn_then_ingested_right(engine: Engine,
                                                             tmp_path: Path) -> None:
    f = write(tmp_path / "b.parquet", [tap(i) for i in range(10)])
    wrong = ingest_file(engine, tmp_path, f, REG, service_day=DAY + dt.timedelta(days=1))
    assert wrong.quarantined == 10 and wrong.accepted == 0
    # today: the right ingest afterwards only answers already_ingested
    assert ingest_file(engine, tmp_path, f, REG).status == ALREADY_INGESTED

    w = withdraw_batch(engine, tmp_path, wrong.batch_id, reason="read with --date one day late")
    assert (w.accepted, w.quarantined, w.archived) == (0, 10, ())
    right = ingest_file(engine, tmp_path, f, REG)
    assert right.status == BatchStatus.ACCEPTED and right.accepted == 10
    assert right.batch_id != wrong.batch_id
    assert [r["device_seq"] for r in day_taps(tmp_path, engine)] == list(range(10))
    # the withdrawn rows are kept, marked withdrawn, out of the open quarantine
    assert quarantined_rows(engine) == []
    kept = quarantined_rows(engine, wrong.batch_id, include_resubmitted=True)
    assert len(kept) == 10 and {q.status for q in kept} == {QuarantineStatus.WITHDRAWN}
    listed = {b.id: b for b in list_batches(engine)}
    assert listed[wrong.batch_id].status == BatchStatus.WITHDRAWN
    assert listed[wrong.batch_id].withdrawn_reason == "read with --date one day late"
    assert listed[wrong.batch_id].withdrawn_at is not None


def test_the_identity_is_released_and_a_prefix_means_the_live_batch(engine: Engine,
                                                                   tmp_path: Path) -> None:
    f = write(tmp_path / "b.parquet", [tap(i) for i in range(5)])
    first = ingest_file(engine, tmp_path, f, REG)
    withdraw_batch(engine, tmp_path, first.file_sha256[:12], reason="wrong operator")
    assert day_taps(tmp_path, engine) == []
    again = ingest_file(engine, tmp_path, f, REG)
    assert again.status == BatchStatus.ACCEPTED and again.batch_id != first.batch_id
    assert ingest_file(engine, tmp_path, f, REG).status == ALREADY_INGESTED  # still one live
    assert batch_detail(engine, first.file_sha256[:12]).batch.id == again.batch_id
    assert len(day_taps(tmp_path, engine)) == 5
    # and it can be withdrawn again: the archive keeps both, named by batch id
    w = withdraw_batch(engine, tmp_path, again.batch_id, reason="still wrong")
    assert w.archived[0] != batch(engine, first.batch_id).tap_path
    assert all((tmp_path / a).is_file() for a in w.archived)


def test_the_withdrawn_rows_are_in_the_archive(engine: Engine, tmp_path: Path) -> None:
    write(tmp_path / "a.parquet", [tap(i) for i in range(3)])
    a = ingest_file(engine, tmp_path, tmp_path / "a.parquet", REG)
    rows = [tap(0), tap(5), tap(6, stop=999_999), tap(7)]  # a duplicate, a rejected row
    b = ingest_file(engine, tmp_path, write(tmp_path / "b.parquet", rows), REG)
    assert (b.accepted, b.duplicates, b.quarantined) == (2, 1, 1)
    original = batch(engine, b.batch_id)
    w = withdraw_batch(engine, tmp_path, b.batch_id, reason="operator resent the file")
    assert (w.accepted, w.duplicates, w.quarantined) == (2, 1, 1)
    archived = batch(engine, b.batch_id)
    assert archived.tap_path in w.archived and archived.dup_path in w.archived
    assert all(p.startswith(f"{tapstore.ARCHIVE_DIR}/") for p in w.archived)
    taps_, mask = tapstore.batch_candidates(tmp_path, archived.tap_path, archived.dup_path)
    assert [r["device_seq"] for r in taps_.to_pylist()] == [0, 5, 7]  # file order
    assert mask.tolist() == [False, True, True]
    # the originals left the tap store; the day keeps batch a only
    assert original.tap_path not in tap_files(tmp_path)
    assert original.dup_path not in tap_files(tmp_path)
    assert [r["device_seq"] for r in day_taps(tmp_path, engine)] == [0, 1, 2]
    with session_factory(engine)() as s:
        q = s.scalars(select(QuarantinedRow).where(QuarantinedRow.batch_id == b.batch_id)).one()
    assert q.status == QuarantineStatus.WITHDRAWN and q.code == "UNKNOWN_STOP"
    assert batch(engine, a.batch_id).status == BatchStatus.ACCEPTED


# --------------------------------------------------------------------------- re-acceptance


def test_duplicates_of_withdrawn_taps_become_accepted_in_stored_order(engine: Engine,
                                                                      tmp_path: Path) -> None:
    a = ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(i) for i in range(5)]),
                    REG)
    b_rows = [tap(i) for i in range(3, 8)]  # 3 and 4 are duplicates of a's taps
    b = ingest_file(engine, tmp_path, write(tmp_path / "b.parquet", b_rows), REG)
    c_rows = [tap(4, device_id=77, device_seq=4), tap(20)]  # card key of tap 4: dup of a's
    c = ingest_file(engine, tmp_path, write(tmp_path / "c.parquet", c_rows), REG)
    assert (b.accepted, b.duplicates, c.accepted, c.duplicates) == (3, 2, 1, 1)

    w = withdraw_batch(engine, tmp_path, a.batch_id, reason="wrong day")
    # b's rows 3 and 4 are accepted now, in b's file order; c's copy of 4 stays a duplicate
    # because b was stored before c (SPEC §4 order)
    assert (w.reaccepted, w.now_duplicates) == (2, 0)
    got = [(r["device_id"], r["device_seq"]) for r in day_taps(tmp_path, engine)]
    assert got == [(10, 3), (10, 4), (10, 5), (10, 6), (10, 7), (10, 20)]
    nb, nc = batch(engine, b.batch_id), batch(engine, c.batch_id)
    assert (nb.accepted, nb.duplicates, nb.dup_path) == (5, 0, None)
    assert (nc.accepted, nc.duplicates) == (1, 1)
    assert nb.accepted + nb.duplicates + nb.quarantined == nb.received
    assert remove_orphans(engine, tmp_path) == []  # the replaced files are already gone


def test_a_reaccepted_row_can_make_a_later_row_a_duplicate(engine: Engine,
                                                          tmp_path: Path) -> None:
    a = ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(1)]), REG)
    # b's row: a's device key, a new card key X; c's row: a new device key, card key X
    b = ingest_file(engine, tmp_path,
                    write(tmp_path / "b.parquet", [tap(1, card_id=5555, card_seq=9)]), REG)
    c = ingest_file(engine, tmp_path,
                    write(tmp_path / "c.parquet", [tap(2, card_id=5555, card_seq=9)]), REG)
    assert (b.duplicates, c.accepted) == (1, 1)
    w = withdraw_batch(engine, tmp_path, a.batch_id, reason="test")
    assert (w.reaccepted, w.now_duplicates) == (1, 1)
    assert [r["device_seq"] for r in day_taps(tmp_path, engine)] == [1]
    assert (batch(engine, c.batch_id).accepted, batch(engine, c.batch_id).duplicates) == (0, 1)


def test_a_neighbouring_days_tap_still_blocks(engine: Engine, tmp_path: Path) -> None:
    """The reach of SPEC §4: the day on each side's accepted taps count as they stand."""
    nxt = DAY + dt.timedelta(days=1)
    later = tap(9, ts_ms=local_ms(nxt, 6))
    ingest_file(engine, tmp_path, write(tmp_path / "n.parquet", [later], nxt), REG)
    a = ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(8)]), REG)
    b = ingest_file(engine, tmp_path, write(tmp_path / "b.parquet", [tap(8), tap(9)]), REG)
    assert (b.accepted, b.duplicates) == (0, 2)
    withdraw_batch(engine, tmp_path, a.batch_id, reason="test")
    assert [r["device_seq"] for r in day_taps(tmp_path, engine)] == [8]


def test_batches_stored_before_duplicates_were_kept_keep_their_count(engine: Engine,
                                                                     tmp_path: Path) -> None:
    a = ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(1), tap(2)]), REG)
    b = ingest_file(engine, tmp_path, write(tmp_path / "b.parquet", [tap(2), tap(3)]), REG)
    with transaction(engine) as s:  # as a batch stored before migration 0004 looks
        old = s.get(Batch, b.batch_id)
        assert old is not None and old.dup_path is not None
        (tmp_path / old.dup_path).unlink()
        old.dup_path = None
    w = withdraw_batch(engine, tmp_path, a.batch_id, reason="test")
    assert w.reaccepted == 0
    nb = batch(engine, b.batch_id)
    assert (nb.accepted, nb.duplicates) == (1, 1)
    assert [r["device_seq"] for r in day_taps(tmp_path, engine)] == [3]


def test_read_day_taps_without_the_database_skips_kept_duplicates(engine: Engine,
                                                                 tmp_path: Path) -> None:
    ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(1), tap(1), tap(2)]), REG)
    assert any(f.endswith(tapstore.DUP_SUFFIX) for f in tap_files(tmp_path))
    assert tapstore.read_day_taps(tmp_path, DAY).to_pylist() == day_taps(tmp_path, engine)


# --------------------------------------------------------------------------- the day


def test_a_settled_day_needs_settlement_again(engine: Engine, tmp_path: Path) -> None:
    a = ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(1), tap(2)]), REG)
    ingest_file(engine, tmp_path, write(tmp_path / "b.parquet", [tap(3)]), REG)
    with transaction(engine) as s:
        assert mark_settled(s, DAY)
        rev = day_revision(s, DAY)
    assert is_settled(engine, DAY)
    w = withdraw_batch(engine, tmp_path, a.batch_id, reason="wrong format")
    assert w.was_settled and w.day_revision == rev + 1
    assert not is_settled(engine, DAY)
    assert days_needing_settlement(engine) == [DAY]


def test_withdrawing_a_batch_without_taps_leaves_a_settled_day_settled(engine: Engine,
                                                                       tmp_path: Path) -> None:
    ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(1)]), REG)
    bad = ingest_file(engine, tmp_path,
                      write(tmp_path / "b.parquet", [tap(2, stop=999_999)]), REG)
    with transaction(engine) as s:
        mark_settled(s, DAY)
    w = withdraw_batch(engine, tmp_path, bad.batch_id, reason="all rows bad")
    assert w.was_settled and is_settled(engine, DAY)


# --------------------------------------------------------------------------- errors


def test_unknown_withdrawn_twice_and_no_reason_are_coded(engine: Engine, tmp_path: Path) -> None:
    a = ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(1)]), REG)
    with pytest.raises(StateError) as err:
        withdraw_batch(engine, tmp_path, 999, reason="x")
    assert (err.value.code, err.value.exit_code) == ("BATCH_NOT_FOUND", 3)
    with pytest.raises(InputError) as bad:
        withdraw_batch(engine, tmp_path, a.batch_id, reason="  ")
    assert (bad.value.code, bad.value.exit_code) == ("WITHDRAW_REASON", 2)
    withdraw_batch(engine, tmp_path, a.batch_id, reason="x")
    with pytest.raises(StateError) as twice:
        withdraw_batch(engine, tmp_path, a.batch_id, reason="x")
    assert (twice.value.code, twice.value.exit_code) == ("BATCH_WITHDRAWN", 3)


def test_resubmitted_corrections_withdrawn_reopen_their_rows(engine: Engine,
                                                             tmp_path: Path) -> None:
    from clearing.batches import export_quarantine
    from clearing.ingest import resubmit

    ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(1, stop=999_999)]), REG)
    export_quarantine(engine, tmp_path / "q.jsonl")
    fixed = (tmp_path / "q.jsonl").read_text().replace("999999", str(BUS.stops[1]))
    (tmp_path / "q.jsonl").write_text(fixed)
    res = resubmit(engine, tmp_path, tmp_path / "q.jsonl", REG)
    assert quarantined_rows(engine) == []
    withdraw_batch(engine, tmp_path, res.reports[0].batch_id, reason="the fix was wrong")
    assert [q.code for q in quarantined_rows(engine)] == ["UNKNOWN_STOP"]
    assert day_taps(tmp_path, engine) == []


# --------------------------------------------------------------------------- crash safety


@pytest.mark.parametrize("step", ["archived", "reaccepted", "before_commit"])
def test_a_failure_before_the_commit_leaves_the_old_state(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    a = ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(i) for i in range(4)]),
                    REG)
    ingest_file(engine, tmp_path, write(tmp_path / "b.parquet", [tap(i) for i in range(2, 6)]),
                REG)
    before = snapshot(engine, tmp_path)

    def boom(at: str) -> None:
        if at == step:
            raise KeyboardInterrupt(at)

    monkeypatch.setattr(withdraw, "_checkpoint", boom)
    with pytest.raises(KeyboardInterrupt):
        withdraw_batch(engine, tmp_path, a.batch_id, reason="test")
    assert snapshot(engine, tmp_path) == before
    monkeypatch.setattr(withdraw, "_checkpoint", lambda _at: None)
    w = withdraw_batch(engine, tmp_path, a.batch_id, reason="test")  # the re-run works
    assert w.reaccepted == 2
    assert [r["device_seq"] for r in day_taps(tmp_path, engine)] == [2, 3, 4, 5]


def test_a_crash_after_the_commit_leaves_strays_that_orphan_removal_takes(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(1), tap(2)]), REG)
    ingest_file(engine, tmp_path, write(tmp_path / "b.parquet", [tap(2), tap(3)]), REG)

    def boom(at: str) -> None:
        if at == "committed":
            raise KeyboardInterrupt(at)

    monkeypatch.setattr(withdraw, "_checkpoint", boom)
    with pytest.raises(KeyboardInterrupt):
        withdraw_batch(engine, tmp_path, a.batch_id, reason="test")
    after = day_taps(tmp_path, engine)
    assert [r["device_seq"] for r in after] == [2, 3]
    removed = remove_orphans(engine, tmp_path)
    assert len(removed) == 3  # a's taps file, b's taps and duplicates files before the rewrite
    assert day_taps(tmp_path, engine) == after
    assert tapstore.read_day_taps(tmp_path, DAY).to_pylist() == after  # no stray left behind


# --------------------------------------------------------------------------- the migration


def test_migration_0004_keeps_stored_batches_and_releases_identity_on_withdrawal(
        db_url: str, tmp_path: Path) -> None:
    from alembic import command

    from tongka.schema import upgrade

    eng = make_engine(db_url)
    try:
        command.upgrade(alembic_config(eng), "0003")
        now = dt.datetime.now(dt.UTC)
        with eng.begin() as c:
            c.execute(text(
                "INSERT INTO batches (file_sha256, service_day, day_seq, operator, "
                "source_format, source_name, status, late, received, accepted, duplicates, "
                "quarantined, tap_path, errors_json, received_at, accepted_at) VALUES "
                "(:sha, :day, 1, :op, 'canonical', 'old.parquet', 'accepted', false, 1, 0, 0, "
                "1, NULL, '{}', :now, :now)"), {"sha": "ab" * 32, "day": DAY, "op": OPERATOR,
                                               "now": now})
            bid = c.execute(text("SELECT id FROM batches")).scalar_one()
            c.execute(text("INSERT INTO quarantine (batch_id, row, code, field, message, record, "
                           "status) VALUES (:b, 0, 'UNKNOWN_STOP', 'stop', 'm', '{}', 'open')"),
                      {"b": bid})
        upgrade(eng)
        with session_factory(eng)() as s:
            old = s.get(Batch, bid)
            assert old is not None and old.dup_path is None and old.withdrawn_at is None
            assert s.scalars(select(QuarantinedRow)).one().raw_sealed is None
        withdraw_batch(eng, tmp_path, bid, reason="stored before 0004")
        with transaction(eng) as s:  # the same bytes again: the identity was released
            s.add(Batch(file_sha256="ab" * 32, service_day=DAY, day_seq=2, operator=OPERATOR,
                        source_format="canonical", source_name="old.parquet",
                        status=BatchStatus.ACCEPTED, late=False, received=0, accepted=0,
                        duplicates=0, quarantined=0, tap_path=None, errors_json="{}",
                        received_at=now, accepted_at=now))
        with pytest.raises(Exception, match="(?i)unique"), transaction(eng) as s:
            s.add(Batch(file_sha256="ab" * 32, service_day=DAY, day_seq=3, operator=OPERATOR,
                        source_format="canonical", source_name="old.parquet",
                        status=BatchStatus.ACCEPTED, late=False, received=0, accepted=0,
                        duplicates=0, quarantined=0, tap_path=None, errors_json="{}",
                        received_at=now, accepted_at=now))
    finally:
        eng.dispose()


def test_archive_tables_read_back(engine: Engine, tmp_path: Path) -> None:
    """An archived taps file is an ordinary tap file: any Parquet tool reads it."""
    a = ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(1), tap(2)]), REG)
    w = withdraw_batch(engine, tmp_path, a.batch_id, reason="test")
    table = pq.read_table(tmp_path / w.archived[0])
    assert table.num_rows == 2 and isinstance(table, pa.Table)
    assert table.schema.metadata[tapstore.META_SHA] == a.file_sha256.encode()


def test_migration_0004_downgrades_and_upgrades_with_rows(engine: Engine, tmp_path: Path) -> None:
    from alembic import command

    from tongka.schema import current_revision, upgrade

    ingest_file(engine, tmp_path, write(tmp_path / "a.parquet", [tap(1), tap(1, stop=999_999)]),
                REG)
    command.downgrade(alembic_config(engine), "0003")
    assert current_revision(engine) == "0003"
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM quarantine")).scalar_one() == 1
    upgrade(engine)
    assert [q.code for q in quarantined_rows(engine)] == ["UNKNOWN_STOP"]


# --------------------------------------------------------------------------- the general rule


@st.composite
def day_in_batches(draw: st.DrawFn) -> list[pa.Table]:
    """A day's taps with resent copies and key-sharing rows mixed in, split into batches."""
    clean = draw(days(day=DAY, straddle=False, max_cards=4, max_events=5))
    rows = clean.to_pylist()
    noisy = list(rows)
    for i in draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=6)):
        noisy.append(dict(rows[i]))  # the same tap sent again
    for i, j in draw(st.lists(st.tuples(st.integers(0, len(rows) - 1),
                                        st.integers(0, len(rows) - 1)), min_size=1,
                                 max_size=6)):
        # one tap's device key with another's card key: a withdrawal can knock on through it
        noisy.append(dict(rows[i], issuer=rows[j]["issuer"], card_id=rows[j]["card_id"],
                          card_seq=rows[j]["card_seq"]))
    order = draw(st.permutations(range(len(noisy))))
    table = pa.Table.from_pylist([noisy[i] for i in order], schema=clean.schema)
    return draw(strategy_batches(table, max_batches=4))


def ingest_parts(engine: Engine, data_dir: Path, parts: list[tuple[int, pa.Table]],
                 files_dir: Path) -> dict[int, int]:
    """Ingest numbered parts in order; returns part number -> batch id."""
    ids = {}
    for n, part in parts:
        meta = {b"tongka.service_day": DAY.isoformat().encode(),
                b"tongka.operator": str(OPERATOR).encode(), b"part": str(n).encode()}
        path = files_dir / f"part{n}.parquet"
        pq.write_table(part.replace_schema_metadata(meta), path)
        ids[n] = ingest_file(engine, data_dir, path, REG).batch_id
    return ids


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_withdrawing_a_batch_is_as_if_it_never_came(engine: Engine, tmp_path: Path,
                                                    data: st.DataObject) -> None:
    """SPEC v1.2 §4: after a withdrawal the day holds what acceptance of the remaining
    batches in stored order gives, batch by batch, exactly as if the batch never came."""
    parts = list(enumerate(data.draw(day_in_batches())))
    gone = data.draw(st.integers(0, len(parts) - 1))
    run = tmp_path / f"run{uuid.uuid4().hex[:8]}"
    subject, reference = run / "subject", run / "reference"
    for d in (subject, reference):
        d.mkdir(parents=True)
    ids = ingest_parts(engine, subject, parts, run)
    w = withdraw_batch(engine, subject, ids[gone], reason="property")
    event(f"reaccepted {min(w.reaccepted, 1)}, now duplicates {min(w.now_duplicates, 1)}")
    ref_engine = make_engine(f"sqlite:///{reference / 'ref.sqlite'}")
    try:
        from tongka.schema import upgrade

        upgrade(ref_engine)
        ref_ids = ingest_parts(ref_engine, reference, [p for p in parts if p[0] != gone], run)
        assert day_taps(subject, engine) == day_taps(reference, ref_engine)
        for n, ref_id in ref_ids.items():
            got, want = batch(engine, ids[n]), batch(ref_engine, ref_id)
            assert (got.accepted, got.duplicates) == (want.accepted, want.duplicates)
    finally:
        ref_engine.dispose()
        with transaction(engine) as s:  # the next example starts from an empty database
            s.execute(delete(QuarantinedRow))
            s.execute(delete(Batch))
            s.execute(text("DELETE FROM service_days"))
