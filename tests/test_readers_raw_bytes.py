"""Every row error carries its record's raw bytes, exactly as they were in the file (issue #19).

A quarantined row can only be corrected and resubmitted if the quarantine holds what came
in: the line without its line break (LF, or CR LF), byte for byte, even when it is not UTF-8
or not JSON at all. The tokenised ``record`` is for people to read; ``raw`` is the record.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from readers.base import ParseResult
from readers.config import ReaderConfig
from readers.registry import get_adapter
from readers.tunion import FIELDS
from tariffs.error_codes import ErrorCode
from tongka.testing.synth import sample_taps, write_raw

CONFIG = ReaderConfig.demo()
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "readers"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
FORMATS = ("card", "nfc", "wearable", "ssc", "qr")


@cache
def good_lines(fmt: str) -> tuple[bytes, ...]:
    """Valid records of one operator and day (each parses to a tap on its own)."""
    media = tuple(int(m) for m in get_adapter(fmt).media)
    taps = sample_taps(200, seed=5, day=dt.date(2026, 11, 24), media=media, issuers=(1, 2))
    taps = taps.filter(np.asarray(taps["operator"].to_numpy() == taps["operator"][0].as_py()))
    with tempfile.TemporaryDirectory() as d:
        (path,) = write_raw(taps.slice(0, 12), fmt, Path(d), CONFIG)
        return tuple(path.read_bytes().splitlines())


def file_records(data: bytes) -> dict[int, bytes]:
    """Row number -> record bytes, computed independently of the adapters (the oracle)."""
    lines = data.split(b"\n")
    return {i: ln.removesuffix(b"\r") for i, ln in enumerate(lines) if ln.removesuffix(b"\r")}


def parse(fmt: str, data: bytes) -> ParseResult:
    return get_adapter(fmt).parse_bytes(data, CONFIG, name=f"batch.{fmt}")


def assert_raw_is_the_record(data: bytes, r: ParseResult) -> None:
    records = file_records(data)
    for e in r.errors:
        assert e.raw == records[e.row], (e.code, e.row)


def jedit(line: bytes, **changes: object) -> bytes:
    obj = json.loads(line)
    for k, v in changes.items():
        if v is ...:
            del obj[k]
        else:
            obj[k] = v
    return json.dumps(obj, separators=(",", ":")).encode()


def put(line: bytes, name: str, text: bytes) -> bytes:
    f = FIELDS[name]
    return line[: f.offset] + text + line[f.offset + f.width :]


def field(line: bytes, name: str) -> bytes:
    f = FIELDS[name]
    return line[f.offset : f.offset + f.width]


def ssc_put(line: bytes, index: int, value: bytes) -> bytes:
    parts = line.split(b"|")
    parts[index] = value
    return b"|".join(parts)


Change = Callable[[bytes], bytes]
# Per format, one bad record of each kind the format can have, and the code it must get.
JSON_STORED: dict[str, dict[str, str]] = {
    "nfc": {"amount": "amount_fen", "asn": "virtual_asn", "tap": "txn"},
    "wearable": {"amount": "fare_fen", "asn": "card_no", "tap": "tap"},
}


def json_cases(names: dict[str, str]) -> list[tuple[Change, str]]:
    return [
        (lambda ln: b"{not json", ErrorCode.JSON_INVALID),
        (lambda ln: b"\xff\xfe" + ln, ErrorCode.JSON_INVALID),  # not UTF-8: kept byte for byte
        (lambda ln: ln.replace(b':"', b':"\x80', 1), ErrorCode.JSON_INVALID),
        (lambda ln: b"[1, 2]", ErrorCode.JSON_INVALID),
        (lambda ln: jedit(ln, operator=...), ErrorCode.FIELD_MISSING),
        (lambda ln: jedit(ln, operator="101"), ErrorCode.FIELD_TYPE),
        (lambda ln: jedit(ln, operator=-1), ErrorCode.FIELD_RANGE),
        (lambda ln: jedit(ln, **{names["asn"]: "12"}), ErrorCode.FIELD_FORMAT),
        (lambda ln: jedit(ln, **{names["tap"]: "board"}), ErrorCode.VALUE_UNKNOWN),
        (
            lambda ln: jedit(ln, **{names["amount"]: json.loads(ln)[names["amount"]] + 1}),
            ErrorCode.TAC_INVALID,
        ),
        (lambda ln: jedit(ln, issuer=777), ErrorCode.TAC_KEY_UNKNOWN),
    ]


CASES: dict[str, list[tuple[Change, str]]] = {
    "card": [
        (lambda ln: ln[:-1], ErrorCode.RECORD_LENGTH),
        (lambda ln: ln + b"  ", ErrorCode.RECORD_LENGTH),
        (lambda ln: b"\xff" * len(ln), ErrorCode.RECORD_TYPE),  # garbage of the right length
        (lambda ln: b"TU2" + ln[3:], ErrorCode.RECORD_TYPE),
        (lambda ln: put(ln, "asn", b"\xe9" * 20), ErrorCode.FIELD_FORMAT),
        (lambda ln: put(ln, "form", b"7"), ErrorCode.VALUE_UNKNOWN),
        (lambda ln: put(ln, "card_seq", b"9999999999"), ErrorCode.FIELD_RANGE),
        (lambda ln: put(ln, "time", b"20261324120000000"), ErrorCode.TIME_INVALID),
        (
            lambda ln: put(
                ln, "direction", b"1" if ln[FIELDS["txn_type"].offset + 1] == 54 else b"0"
            ),
            ErrorCode.TXN_MISMATCH,
        ),
        (
            lambda ln: put(ln, "amount", b"%08d" % (int(field(ln, "amount")) + 1)),
            ErrorCode.TAC_INVALID,
        ),
        (lambda ln: put(ln, "issuer", b"00777"), ErrorCode.TAC_KEY_UNKNOWN),
    ],
    "nfc": json_cases(JSON_STORED["nfc"]),
    "wearable": json_cases(JSON_STORED["wearable"]),
    "ssc": [
        (lambda ln: ln.replace(b"|", b"|\xc3\xa9", 1), ErrorCode.RECORD_ENCODING),
        (lambda ln: ln.rsplit(b"|", 1)[0], ErrorCode.COLUMN_COUNT),
        (lambda ln: b"SSC2" + ln[4:], ErrorCode.RECORD_TYPE),
        (lambda ln: ssc_put(ln, 3, b""), ErrorCode.FIELD_MISSING),
        (lambda ln: ssc_put(ln, 4, b"x1"), ErrorCode.FIELD_FORMAT),
        (lambda ln: ssc_put(ln, 1, ln.split(b"|")[1][:17] + b"Y"), ErrorCode.FIELD_FORMAT),
        (lambda ln: ssc_put(ln, 7, b"%d" % (int(ln.split(b"|")[7]) + 1)), ErrorCode.TAC_INVALID),
    ],
    "qr": [
        (lambda ln: b"\xff" + ln, ErrorCode.JSON_INVALID),
        (lambda ln: b" ", ErrorCode.JSON_INVALID),  # a line of blanks is a record, not a blank line
        (lambda ln: jedit(ln, code="not-a-code"), ErrorCode.QR_MALFORMED),
        (lambda ln: jedit(ln, scan_ms=...), ErrorCode.FIELD_MISSING),
        (lambda ln: jedit(ln, device_id=-5), ErrorCode.FIELD_RANGE),
        (lambda ln: jedit(ln, tap="in"), ErrorCode.VALUE_UNKNOWN),
        (lambda ln: jedit(ln, scan_ms=json.loads(ln)["scan_ms"] + 3_600_000), ErrorCode.QR_EXPIRED),
    ],
}


def bad_batch(fmt: str) -> tuple[bytes, dict[int, tuple[bytes, str]]]:
    """Good records with every bad kind of ``fmt`` between them, some lines ending CR LF.

    Returns the file and, per bad row, its record bytes and the code it must get.
    """
    good = good_lines(fmt)
    out: list[bytes] = []
    bad: dict[int, tuple[bytes, str]] = {}
    for k, (change, code) in enumerate(CASES[fmt]):
        out.append(good[k % len(good)] + (b"\r\n" if k % 2 else b"\n"))
        record = change(good[(k + 1) % len(good)])
        bad[len(out)] = (record, code)
        out.append(record + (b"\r\n" if k % 3 == 0 else b"\n"))
        out.append(b"\n")  # a blank line: no row, but it counts in the row numbers
    return b"".join(out), bad


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_kind_of_bad_record_keeps_its_raw_bytes(fmt: str) -> None:
    data, bad = bad_batch(fmt)
    r = parse(fmt, data)
    got = {e.row: (e.raw, e.code) for e in r.errors}
    assert got == bad
    assert r.taps.num_rows == len(CASES[fmt])  # the good records between them all read


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_files_quarantine_the_lines_they_came_as(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    r = parse(EXPECTED[name]["format"], data)
    assert [e.row for e in r.errors] == [e["row"] for e in EXPECTED[name]["errors"]]
    assert_raw_is_the_record(data, r)
    assert all(e.raw for e in r.errors)


@pytest.mark.parametrize("fmt", ["nfc", "wearable", "qr"])
def test_a_row_that_does_not_decode_can_be_corrected_from_its_raw_bytes(fmt: str) -> None:
    good = good_lines(fmt)
    data = good[0] + b"\n" + good[1].replace(b'":', b'"\xff:', 1) + b"\n"
    (err,) = parse(fmt, data).errors
    assert err.code == ErrorCode.JSON_INVALID and err.row == 1
    fixed = parse(fmt, err.raw.replace(b"\xff", b""))  # the operator's correction
    assert fixed.errors == [] and fixed.taps.num_rows == 1


@cache
def any_lines(fmt: str) -> tuple[bytes, ...]:
    return good_lines(fmt) + tuple(change(good_lines(fmt)[0]) for change, _ in CASES[fmt])


@st.composite
def batches(draw: st.DrawFn, fmt: str) -> bytes:
    """Good and bad records, random bytes, blank lines; LF or CR LF; a last break or none."""
    pool = any_lines(fmt)
    parts = draw(
        st.lists(
            st.one_of(st.sampled_from(pool), st.binary(max_size=40), st.just(b"")),
            max_size=12,
        )
    )
    ends = draw(
        st.lists(st.sampled_from([b"\n", b"\r\n"]), min_size=len(parts), max_size=len(parts))
    )
    data = b"".join(p + e for p, e in zip(parts, ends, strict=True))
    return data[:-1] if data and draw(st.booleans()) else data


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_raw_bytes_are_the_record_for_any_batch(fmt: str, data: st.DataObject) -> None:
    batch = data.draw(batches(fmt))
    r = parse(fmt, batch)
    assert_raw_is_the_record(batch, r)
    records = file_records(batch)
    assert r.rows == len(records)


@pytest.mark.parametrize("fmt", FORMATS)
def test_rows_rejected_after_the_adapter_have_their_raw_bytes_too(fmt: str) -> None:
    # ingestion rejects parsed taps later (SPEC §4): it finds their bytes by source row
    data, bad = bad_batch(fmt)
    r = parse(fmt, data)
    records = file_records(data)
    assert r.raw_records(r.source_rows) == [records[int(i)] for i in r.source_rows]
    assert r.raw_records([e.row for e in r.errors]) == [e.raw for e in r.errors]
    blank = min(set(range(max(records) + 2)) - set(records))
    for not_a_record in ([blank], [max(records) + 1], [-1]):
        with pytest.raises(ValueError):
            r.raw_records(not_a_record)
