"""Fuzzing every adapter: random bytes, mutated records and random JSON values never crash
one, and every record becomes exactly one canonical tap or one row error (rows in = taps out
+ errors)."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from functools import cache
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.taps import TAP_SCHEMA
from readers.base import ParseResult
from readers.codes import ROW_CODES
from readers.config import ReaderConfig
from readers.registry import get_adapter
from tongka.testing.synth import sample_taps, write_raw

CONFIG = ReaderConfig.demo()
FORMATS = ("card", "nfc", "wearable", "ssc", "qr")
FUZZ = settings(
    max_examples=int(os.environ.get("TONGKA_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@cache
def valid_lines(fmt: str) -> tuple[bytes, ...]:
    media = tuple(int(m) for m in get_adapter(fmt).media)
    taps = sample_taps(60, seed=7, media=media, day=dt.date(2026, 11, 24))
    with tempfile.TemporaryDirectory() as d:
        return tuple(
            ln for p in write_raw(taps, fmt, Path(d), CONFIG) for ln in p.read_bytes().splitlines()
        )


def parse_bytes(fmt: str, data: bytes) -> ParseResult:
    return get_adapter(fmt).parse_bytes(data, CONFIG)  # type: ignore[attr-defined, no-any-return]


def record_rows(data: bytes) -> list[int]:
    """The 0-based line numbers of the records, computed independently of the adapters."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [i for i, ln in enumerate(lines) if ln not in (b"", b"\r")]


def check_contract(fmt: str, data: bytes) -> ParseResult:
    r = parse_bytes(fmt, data)
    rows = record_rows(data)
    assert r.rows == len(rows) == r.taps.num_rows + len(r.errors)
    error_rows = [e.row for e in r.errors]
    assert sorted(error_rows + list(r.source_rows)) == rows  # a partition of the records
    assert len(set(error_rows)) == len(error_rows)
    assert r.taps.schema == TAP_SCHEMA
    for e in r.errors:
        assert e.code in ROW_CODES and isinstance(e.field, str) and e.message
        json.dumps(e.record)  # quarantine stores it: it must be plain data
    return r


@FUZZ
@given(fmt=st.sampled_from(FORMATS), data=st.binary(max_size=2000))
def test_random_bytes(fmt: str, data: bytes) -> None:
    check_contract(fmt, data)


@FUZZ
@given(
    fmt=st.sampled_from(FORMATS),
    lines=st.lists(st.text(alphabet=st.characters(codec="ascii"), max_size=200), max_size=20),
)
def test_random_text_lines(fmt: str, lines: list[str]) -> None:
    check_contract(fmt, "\n".join(lines).encode())


MUTATIONS = ("flip", "delete", "insert", "truncate", "duplicate", "swap", "blank", "crlf", "splice")


@st.composite
def mutated(draw: st.DrawFn, fmt: str) -> tuple[bytes, int]:
    base = list(valid_lines(fmt))
    lines = [
        base[i] for i in draw(st.lists(st.integers(0, len(base) - 1), min_size=1, max_size=12))
    ]
    n_mut = draw(st.integers(0, 6))
    for _ in range(n_mut):
        kind = draw(st.sampled_from(MUTATIONS))
        i = draw(st.integers(0, len(lines) - 1))
        ln = lines[i]
        pos = draw(st.integers(0, max(0, len(ln) - 1)))
        if kind == "flip" and ln:
            lines[i] = ln[:pos] + bytes([draw(st.integers(0, 255))]) + ln[pos + 1 :]
        elif kind == "delete":
            lines[i] = ln[:pos] + ln[pos + 1 :]
        elif kind == "insert":
            lines[i] = ln[:pos] + bytes([draw(st.integers(32, 126))]) + ln[pos:]
        elif kind == "truncate":
            lines[i] = ln[:pos]
        elif kind == "duplicate":
            lines.insert(i, ln)
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "blank":
            lines.insert(i, b"")
        elif kind == "crlf":
            lines[i] = ln + b"\r"
        elif kind == "splice":
            other = base[draw(st.integers(0, len(base) - 1))]
            lines[i] = ln[:pos] + other[pos:]
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n"])), n_mut


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(FORMATS))
def test_mutated_records(data: st.DataObject, fmt: str) -> None:
    raw, n_mut = data.draw(mutated(fmt))
    r = check_contract(fmt, raw)
    if n_mut == 0:
        assert r.errors == []


def json_values() -> st.SearchStrategy[object]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True),
        st.text(max_size=30),
        st.sampled_from(["flat", "entry", "exit", "watch"]),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )


@FUZZ
@given(data=st.data(), fmt=st.sampled_from(["nfc", "wearable", "qr"]))
def test_json_fields_with_random_values(data: st.DataObject, fmt: str) -> None:
    base = [json.loads(ln) for ln in valid_lines(fmt)[:10]]
    out = []
    for obj in base:
        keys = sorted(obj)
        for k in data.draw(st.lists(st.sampled_from(keys), max_size=3)):
            obj[k] = data.draw(json_values())
        if data.draw(st.booleans()):
            obj.pop(data.draw(st.sampled_from(keys)), None)
        out.append(json.dumps(obj).encode())
    check_contract(fmt, b"\n".join(out))


@FUZZ
@given(fmt=st.sampled_from(FORMATS), seed=st.integers(0, 2**16), n=st.integers(1, 40))
def test_valid_records_all_become_taps(fmt: str, seed: int, n: int) -> None:
    media = tuple(int(m) for m in get_adapter(fmt).media)
    taps = sample_taps(n, seed=seed, media=media)
    with tempfile.TemporaryDirectory() as d:
        paths = write_raw(taps, fmt, Path(d), CONFIG)
        got = sum(get_adapter(fmt).parse(p, CONFIG).taps.num_rows for p in paths)
        errs = [e for p in paths for e in get_adapter(fmt).parse(p, CONFIG).errors]
    assert errs == [] and got == n
    assert np.all(taps["card_seq"].to_numpy() >= 0)
