"""Quarantine keeps every rejected row's raw bytes, sealed (SPEC v1.2 §4, docs/pii.md), on
SQLite and PostgreSQL; export opens them with the key and says "sealed" without it."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from clearing.batches import QuarantinedRow, QuarantineStatus, export_quarantine
from clearing.db import session_factory
from clearing.errors import InputError, RowError
from clearing.ingest import SOURCE_RAW, SOURCE_ROW, ingest_file, ingest_taps
from clearing.sealed import quarantine_context, seal, unseal
from clearing.service_day import local_ms
from clearing.taps import TapType, taps_table
from clearing.withdraw import withdraw_batch
from tariffs.registry import FLAT, load_registry

REG = load_registry()
DAY = dt.date(2026, 11, 24)
BUS = next(ln for ln in REG.lines.values() if ln.network == FLAT)
KEY = b"k" * 32
PAN = b"6212264000001234567"  # a card number as a raw record would carry it
RAW = b"TXN|" + PAN + b"|20261124063000|160|GARBLED"


def tap(i: int, **changes: int) -> dict:
    stop = BUS.stops[i % len(BUS.stops)]
    row = dict(operator=BUS.operator, device_id=10, device_seq=i, card_id=1000 + i,
               card_seq=i, issuer=1, product=0, media=0, ts_ms=local_ms(DAY, 6) + i * 1000,
               city=REG.stops[stop].city, line=BUS.line, stop=stop,
               tap_type=int(TapType.FLAT), debited_fen=160)
    row.update(changes)
    return row


def ingest_raw(engine: Engine, data_dir: Path, *, key: bytes | None = KEY,
               source_raw: list[bytes] | None = None) -> int:
    """A reader-format batch: one row the adapter could not parse (raw kept in the error)
    and three parsed taps, the second with an unknown stop (rejected at acceptance)."""
    taps = taps_table([tap(1), tap(2, stop=999_999), tap(3)])
    taps = taps.append_column(SOURCE_ROW, pa.array([1, 2, 3], pa.int64()))
    if source_raw is not None:
        taps = taps.append_column(SOURCE_RAW, pa.array(source_raw, pa.binary()))
    unparsable = RowError("JSON_INVALID", 0, "", "not a JSON object", {}, RAW)
    report = ingest_taps(engine, data_dir, taps, [unparsable], file_sha256="cd" * 32,
                         source_format="nfc", source_name="nfc.jsonl", service_day=DAY,
                         operator=BUS.operator, registry=REG, seal_key=key)
    assert report.quarantined == 2
    return report.batch_id


def exported(engine: Engine, path: Path, key: bytes | None) -> list[dict]:
    export_quarantine(engine, path, seal_key=key)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_raw_bytes_are_stored_sealed_and_export_opens_them(engine: Engine,
                                                          tmp_path: Path) -> None:
    record_of_row_2 = b"TXN|" + PAN + b"|STOP 999999"
    ingest_raw(engine, tmp_path, source_raw=[b"r1", record_of_row_2, b"r3"])
    with session_factory(engine)() as s:
        rows = list(s.scalars(select(QuarantinedRow).order_by(QuarantinedRow.row)))
    assert [r.row for r in rows] == [0, 2]
    for r in rows:
        assert r.raw_sealed is not None and PAN not in bytes(r.raw_sealed)
        assert PAN.decode() not in r.record + r.message
    if engine.dialect.name == "sqlite":  # nowhere in the database file, WAL included
        engine.dispose()
        for f in tmp_path.glob("tongka.sqlite*"):
            assert PAN not in f.read_bytes()
    lines = exported(engine, tmp_path / "q.jsonl", KEY)
    assert [base64.b64decode(x["raw"]["base64"]) for x in lines] == [RAW, record_of_row_2]
    sealed = exported(engine, tmp_path / "q2.jsonl", None)
    assert [x["raw"] for x in sealed] == [{"sealed": True}, {"sealed": True}]
    assert PAN not in (tmp_path / "q2.jsonl").read_bytes()


def test_a_wrong_key_does_not_open_them(engine: Engine, tmp_path: Path) -> None:
    ingest_raw(engine, tmp_path)
    with pytest.raises(InputError) as err:
        export_quarantine(engine, tmp_path / "q.jsonl", seal_key=b"w" * 32)
    assert (err.value.code, err.value.exit_code) == ("SEAL_KEY_WRONG", 2)


def test_without_a_key_nothing_raw_is_kept(engine: Engine, tmp_path: Path) -> None:
    ingest_raw(engine, tmp_path, key=None)
    assert [x["raw"] for x in exported(engine, tmp_path / "q.jsonl", KEY)] == [None, None]


def test_a_canonical_batch_keeps_the_rows_values(engine: Engine, tmp_path: Path) -> None:
    bad = tap(2, stop=999_999)
    meta = {b"tongka.service_day": DAY.isoformat().encode(),
            b"tongka.operator": str(BUS.operator).encode()}
    pq.write_table(taps_table([tap(1), bad]).replace_schema_metadata(meta), tmp_path / "b.parquet")
    ingest_file(engine, tmp_path, tmp_path / "b.parquet", REG, seal_key=KEY)
    (line,) = exported(engine, tmp_path / "q.jsonl", KEY)
    assert json.loads(base64.b64decode(line["raw"]["base64"])) == bad


def test_a_withdrawn_batch_keeps_its_sealed_rows(engine: Engine, tmp_path: Path) -> None:
    batch_id = ingest_raw(engine, tmp_path)
    withdraw_batch(engine, tmp_path, batch_id, reason="read as the wrong format")
    with session_factory(engine)() as s:
        rows = list(s.scalars(select(QuarantinedRow).where(QuarantinedRow.batch_id == batch_id)
                              .order_by(QuarantinedRow.row)))
    assert [r.status for r in rows] == [QuarantineStatus.WITHDRAWN] * 2
    opened = unseal(KEY, bytes(rows[0].raw_sealed or b""),
                    context=quarantine_context("cd" * 32, 0))
    assert opened == RAW
    assert exported(engine, tmp_path / "q.jsonl", KEY) == []  # no longer open for correction


# --------------------------------------------------------------------------- the seal itself


@given(st.binary(max_size=2_000), st.binary(min_size=16, max_size=64))
def test_seal_round_trips_and_hides_the_plaintext(plain: bytes, key: bytes) -> None:
    sealed = seal(key, plain, context=b"ctx")
    assert unseal(key, sealed, context=b"ctx") == plain
    if len(plain) >= 8:
        assert plain not in sealed


def test_a_seal_is_bound_to_its_row() -> None:
    sealed = seal(KEY, RAW, context=quarantine_context("ab" * 32, 3))
    with pytest.raises(InputError) as err:
        unseal(KEY, sealed, context=quarantine_context("ab" * 32, 4))
    assert err.value.code == "SEAL_KEY_WRONG"
    with pytest.raises(InputError) as short:
        seal(b"short", RAW, context=b"")
    assert short.value.code == "SEAL_KEY_INVALID"
    with pytest.raises(InputError) as corrupt:
        unseal(KEY, b"\x02" + sealed[1:], context=quarantine_context("ab" * 32, 3))
    assert corrupt.value.code == "SEAL_CORRUPT"
