"""The readers' building blocks against independent references: hmac, datetime, bytes.split."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from readers import tokenise
from readers.columns import (
    civil_from_days,
    compact_time_ms,
    days_from_civil,
    digits,
    iso_times,
    put_compact_time,
    put_digits,
    split_lines,
)
from readers.fields import iso_ms, ssn_check_ok
from readers.mac import hmac_messages, hmac_rows
from tongka.testing.synth import social_security_numbers

CST = dt.timezone(dt.timedelta(hours=8))


@given(
    key=st.binary(max_size=150),
    rows=st.lists(st.binary(min_size=7, max_size=7), max_size=20),
    nbytes=st.integers(1, 32),
)
def test_hmac_rows_is_hmac_sha256(key: bytes, rows: list[bytes], nbytes: int) -> None:
    block = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), 7)
    got = hmac_rows(key, block, nbytes)
    assert [g.tobytes() for g in got] == [
        hmac.digest(key, r, hashlib.sha256)[:nbytes] for r in rows
    ]


@given(
    key=st.binary(min_size=1, max_size=100), messages=st.lists(st.binary(max_size=200), max_size=10)
)
def test_hmac_messages_is_hmac_sha256(key: bytes, messages: list[bytes]) -> None:
    got = hmac_messages(key, messages, 8)
    assert [g.tobytes() for g in got] == [hmac.digest(key, m, hashlib.sha256)[:8] for m in messages]


def test_one_hmac_per_distinct_card(monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[int] = []  # how many messages each HMAC call of the tokeniser covered
    real_tokens, real_rows = tokenise.tokens, tokenise.hmac_rows

    def counting_tokens(key: bytes, messages):  # type: ignore[no-untyped-def]
        messages = list(messages)
        hashed.append(len(messages))
        return real_tokens(key, messages)

    def counting_rows(key: bytes, block: np.ndarray, nbytes: int) -> np.ndarray:
        hashed.append(len(block))
        return real_rows(key, block, nbytes)

    monkeypatch.setattr(tokenise, "tokens", counting_tokens)
    monkeypatch.setattr(tokenise, "hmac_rows", counting_rows)
    key = b"k" * 32
    rng = np.random.default_rng(1)
    issuers = rng.choice([1, 2, 20], 1000)
    numbers = rng.integers(0, 50, 1000)
    block = np.frombuffer("".join(f"{x:020d}" for x in numbers).encode(), dtype=np.uint8)
    ids = tokenise.card_ids_fixed(key, issuers, block.reshape(1000, 20))
    distinct = len({(int(i), int(x)) for i, x in zip(issuers, numbers, strict=True)})
    assert sum(hashed) == distinct
    expected = [
        tokenise.token(key, f"{i}:{x:020d}".encode()) for i, x in zip(issuers, numbers, strict=True)
    ]
    assert ids.tolist() == expected
    hashed.clear()
    strings = pa.array([f"{x:020d}" for x in numbers])
    assert tokenise.card_ids(key, issuers, strings).tolist() == expected
    assert sum(hashed) == distinct


def test_token_is_the_first_8_bytes_big_endian() -> None:
    key = bytes(range(32))
    digest = hmac.new(key, b"1:00000000000000000042", hashlib.sha256).digest()
    assert tokenise.token(key, tokenise.card_message(1, "00000000000000000042")) == int.from_bytes(
        digest[:8], "big"
    )


@settings(max_examples=300)
@given(st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9999, 12, 30)))
def test_compact_time_is_china_standard_time(when: dt.datetime) -> None:
    when = when.replace(microsecond=when.microsecond // 1000 * 1000, tzinfo=CST)
    ms = (when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)
    text = when.strftime("%Y%m%d%H%M%S") + f"{when.microsecond // 1000:03d}"
    block = np.frombuffer(text.encode().rjust(17, b"0"), dtype=np.uint8).reshape(1, 17)
    got, fmt_ok, real = compact_time_ms(block)
    assert fmt_ok[0] and real[0] and int(got[0]) == ms
    out = np.zeros((1, 17), dtype=np.uint8)
    put_compact_time(out, 0, got)
    assert out.tobytes() == block.tobytes()
    iso = iso_times(got)[0]
    assert dt.datetime.fromisoformat(iso) == when
    ms2, ok2 = iso_ms(np.frombuffer(iso.encode(), dtype=np.uint8).reshape(1, 29))
    assert ok2[0] and int(ms2[0]) == ms


@given(st.dates(min_value=dt.date(1, 1, 1), max_value=dt.date(9999, 12, 31)))
def test_civil_days_round_trip(day: dt.date) -> None:
    n = (day - dt.date(1970, 1, 1)).days
    d = days_from_civil(np.array([day.year]), np.array([day.month]), np.array([day.day]))
    assert int(d[0]) == n
    y, m, dd = civil_from_days(np.array([n]))
    assert (int(y[0]), int(m[0]), int(dd[0])) == (day.year, day.month, day.day)


@given(st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99))
def test_impossible_dates_are_caught(y: int, m: int, d: int) -> None:
    text = f"{y:04d}{m:02d}{d:02d}120000000".encode()
    _, _, real = compact_time_ms(np.frombuffer(text, dtype=np.uint8).reshape(1, 17))
    try:
        dt.date(y, m, d)
        exists = True
    except ValueError:
        exists = False
    assert bool(real[0]) == exists


@given(st.lists(st.integers(0, 10**15 - 1), max_size=20))
def test_digits_round_trip(values: list[int]) -> None:
    block = np.zeros((len(values), 15), dtype=np.uint8)
    put_digits(block, 0, 15, np.array(values, dtype=np.int64))
    got, ok = digits(block)
    assert ok.all() and got.tolist() == values
    assert [bytes(r).decode() for r in block] == [f"{v:015d}" for v in values]


@given(st.binary(max_size=300))
def test_split_lines_agrees_with_bytes_split(data: bytes) -> None:
    lines = split_lines(data)
    parts = data.split(b"\n")
    if parts and parts[-1] == b"":
        parts.pop()
    expected = [(i, p[:-1] if p.endswith(b"\r") else p) for i, p in enumerate(parts)]
    expected = [(i, p) for i, p in expected if p]
    assert [(int(r), lines.raw(k)) for k, r in enumerate(lines.rows)] == expected


@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=50))
def test_synthetic_social_security_numbers_pass_their_check(h: list[int]) -> None:
    block = social_security_numbers(np.array(h, dtype=np.uint64))
    assert ssn_check_ok(block).all()
    for row in block:
        text = row.tobytes().decode()
        assert 1850 <= int(text[6:10]) <= 1899  # nobody alive
        assert dt.date(int(text[6:10]), int(text[10:12]), int(text[12:14]))
