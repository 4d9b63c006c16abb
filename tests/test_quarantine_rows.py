"""Quarantine's rows as the ingestion stores them (``clearing.ingest._quarantine``): the record
JSON and every column equal what SQLAlchemy's Core insert of the former dicts stored, on
SQLite and PostgreSQL; the record text equals the JSON encoder's for any record."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine, Table, insert, select

from clearing import ingest
from clearing.batches import Batch, QuarantinedRow, QuarantineStatus
from clearing.db import transaction
from clearing.errors import RowError
from clearing.sealed import Sealer, quarantine_context, unseal
from clearing.taps import TAP_COLUMNS


class Small(enum.IntEnum):
    ONE = 1


values = st.one_of(
    st.integers(-(2**70), 2**70), st.none(), st.booleans(), st.just(Small.ONE),
    st.floats(allow_nan=False), st.text(max_size=5), st.dates(),
)
tap_records = st.fixed_dictionaries({c: st.integers(-(2**64), 2**65) for c in TAP_COLUMNS})
any_records = st.one_of(
    tap_records,
    st.fixed_dictionaries({c: values for c in TAP_COLUMNS}),
    st.permutations(list(TAP_COLUMNS)).map(lambda cols: {c: 7 for c in cols}),
    st.dictionaries(st.sampled_from([*TAP_COLUMNS, "source_row", "x"]), values, max_size=16),
)


@given(record=any_records)
def test_the_record_text_is_the_encoders(record: dict[str, Any]) -> None:
    assert ingest._record_json(record) == ingest._RECORD_JSON.encode(record)


def _batch(engine: Engine, sha: str) -> int:
    now = dt.datetime.now(dt.UTC)
    with transaction(engine) as s:
        b = Batch(file_sha256=sha, service_day=dt.date(2026, 11, 24), day_seq=int(sha[-2:], 16),
                  operator=101, source_format="canonical", source_name="q.parquet",
                  status="accepted", late=False, received=9, accepted=0, duplicates=0,
                  quarantined=9, tap_path=None, dup_path=None, errors_json="{}",
                  received_at=now, accepted_at=now)
        s.add(b)
        s.flush()
        return int(b.id)


def _former(s: Any, batch_id: int, errors: list[RowError], sha: str, key: bytes | None) -> None:
    """The Core insert of one dict per row, as ingestion did before (issue 13)."""
    sealer = Sealer(key) if key is not None else None
    s.execute(insert(cast(Table, QuarantinedRow.__table__)), [
        {"batch_id": batch_id, "row": e.row, "code": e.code, "field": e.field,
         "message": e.message, "record": ingest._RECORD_JSON.encode(e.record),
         "status": QuarantineStatus.OPEN, "resubmitted_batch_id": None,
         "raw_sealed": None if sealer is None else sealer.seal(
             ingest._raw_bytes(e), context=quarantine_context(sha, e.row))}
        for e in errors])


ERRORS = [
    RowError("BAD_PRODUCT", 3, "product", "product 9 is not one of 0-4",
             dict.fromkeys(TAP_COLUMNS, 9) | {"card_id": 2**64 - 1, "ts_ms": -5}),
    RowError("MISSING_VALUE", 0, "stop", "stop is empty",
             dict.fromkeys(TAP_COLUMNS, 1) | {"stop": None}),
    RowError("BAD_RECORD", 17, "line", "line: l'arrêt «9»", {"line": "x", "note": "ü"},
             raw=b"raw,line\n"),
    RowError("PLUGIN_CODE", 2**40, "", "", {}),
]


@pytest.mark.parametrize("key", [None, bytes(range(32))])
def test_the_rows_are_the_former_inserts(engine: Engine, key: bytes | None) -> None:
    """Sealed raw records are random (nonces): with a key, the rest of each row is compared."""
    sha = "ab" * 31
    stored = {}
    for name, fn in (("former", _former), ("now", ingest._quarantine)):
        batch_id = _batch(engine, sha + ("01" if name == "former" else "02"))
        with transaction(engine) as s:
            fn(s, batch_id, ERRORS, sha, key)
        with transaction(engine) as s:
            rows = s.execute(select(QuarantinedRow).where(QuarantinedRow.batch_id == batch_id)
                             .order_by(QuarantinedRow.id)).scalars().all()
            stored[name] = [(r.row, r.code, r.field, r.message, r.record, r.status,
                             r.resubmitted_batch_id, r.raw_sealed is None) for r in rows]
            if key is not None:  # each opens to the same raw bytes
                assert [unseal(key, r.raw_sealed, context=quarantine_context(sha, r.row))
                        for r in rows] == [ingest._raw_bytes(e) for e in ERRORS]
    assert stored["now"] == stored["former"]
    assert len(stored["now"]) == len(ERRORS)
