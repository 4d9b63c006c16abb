"""Every raw format gives back the canonical taps it was written from, each card under one token."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from clearing.taps import TAP_COLUMNS
from readers.config import ReaderConfig
from readers.registry import adapter_names, detect_format, get_adapter
from readers.tokenise import card_message, token
from tariffs.vocab import Media
from tongka.testing.synth import sample_taps, write_raw

CONFIG = ReaderConfig.demo()
FORMATS = ("card", "nfc", "wearable", "ssc", "qr")
DAY = dt.date(2026, 11, 24)


def test_the_five_media_formats_are_registered_in_order() -> None:
    assert adapter_names()[:5] == list(FORMATS)
    carried = sorted(int(m) for name in FORMATS for m in get_adapter(name).media)
    assert carried == sorted(int(m) for m in Media)  # every medium has exactly one format


def _written(fmt: str, tmp_path: Path, n: int = 600, seed: int = 3) -> tuple[pa.Table, list[Path]]:
    media = tuple(int(m) for m in get_adapter(fmt).media)
    taps = sample_taps(n, seed=seed, media=media, day=DAY)
    return taps, write_raw(taps, fmt, tmp_path, CONFIG)


def _parse_all(paths: list[Path]) -> tuple[pa.Table, list]:
    tables, errors = [], []
    for p in paths:
        r = get_adapter(detect_format(p)).parse(p, CONFIG)
        tables.append(r.taps)
        errors.extend(r.errors)
    return pa.concat_tables(tables), errors


def _sorted(t: pa.Table) -> pa.Table:
    return t.sort_by(
        [("operator", "ascending"), ("device_id", "ascending"), ("device_seq", "ascending")]
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_gives_the_same_taps(fmt: str, tmp_path: Path) -> None:
    taps, paths = _written(fmt, tmp_path)
    assert paths and all(p.name.startswith(f"{fmt}-{DAY.isoformat()}-op") for p in paths)
    back, errors = _parse_all(paths)
    assert errors == []
    assert back.num_rows == taps.num_rows
    a, b = _sorted(taps), _sorted(back)
    for name in TAP_COLUMNS:
        if name != "card_id":
            assert a.column(name).equals(b.column(name)), name
    # each card keeps one identity: the old and the new card ids map one to one
    pairs = set(
        zip(
            a.column("issuer").to_pylist(),
            a.column("card_id").to_pylist(),
            b.column("card_id").to_pylist(),
            strict=True,
        )
    )
    old = {(i, c) for i, c, _ in pairs}
    new = {(i, c) for i, _, c in pairs}
    assert len(pairs) == len(old) == len(new)


@pytest.mark.parametrize("fmt", FORMATS)
def test_batch_declares_its_operator_and_day(fmt: str, tmp_path: Path) -> None:
    _, paths = _written(fmt, tmp_path)
    for p in paths:
        r = get_adapter(fmt).parse(p, CONFIG)
        assert r.operator == int(p.stem.split("-op")[1])
        assert r.service_day == DAY
        assert r.rows == r.taps.num_rows + len(r.errors)
        assert list(r.source_rows) == list(range(r.rows))  # no errors: tap i is line i


@pytest.mark.parametrize("fmt", FORMATS)
def test_card_id_is_the_spec_hmac_of_issuer_and_number(fmt: str, tmp_path: Path) -> None:
    """SPEC §3: first 8 bytes, big-endian, of HMAC-SHA256(key, "<issuer>:<number>")."""
    taps, paths = _written(fmt, tmp_path, n=50)
    from tongka.testing.synth import identities

    ids = identities(taps)
    key = CONFIG.pii_key_bytes()
    number = {
        "qr": [str(a) for a in ids.account],
    }.get(fmt, [ids.asn[i].tobytes().decode() for i in range(taps.num_rows)])
    expected = {
        (
            taps["operator"][i].as_py(),
            taps["device_id"][i].as_py(),
            taps["device_seq"][i].as_py(),
        ): token(key, card_message(int(taps["issuer"][i].as_py()), number[i]))
        for i in range(taps.num_rows)
    }
    back, _ = _parse_all(paths)
    device_keys = zip(
        back["operator"].to_pylist(),
        back["device_id"].to_pylist(),
        back["device_seq"].to_pylist(),
        strict=True,
    )
    got = dict(zip(device_keys, back["card_id"].to_pylist(), strict=True))
    assert got == expected


def test_all_writes_every_medium_once(tmp_path: Path) -> None:
    taps = sample_taps(900, seed=5, day=DAY)
    paths = write_raw(taps, "all", tmp_path, CONFIG)
    back, errors = _parse_all(paths)
    assert errors == []
    assert back.num_rows == taps.num_rows
    assert np.array_equal(np.sort(back["ts_ms"].to_numpy()), np.sort(taps["ts_ms"].to_numpy()))


def test_crlf_line_ends_read_the_same(tmp_path: Path) -> None:
    for fmt in FORMATS:
        _, paths = _written(fmt, tmp_path / fmt, n=40)
        p = paths[0]
        unix = get_adapter(fmt).parse(p, CONFIG)
        dos = tmp_path / f"dos-{p.name}"
        dos.write_bytes(p.read_bytes().replace(b"\n", b"\r\n"))
        assert get_adapter(fmt).parse(dos, CONFIG).taps.equals(unix.taps), fmt


def test_empty_file_is_an_empty_batch(tmp_path: Path) -> None:
    p = tmp_path / "empty"
    p.write_bytes(b"")
    for fmt in FORMATS:
        r = get_adapter(fmt).parse(p, CONFIG)
        assert (r.rows, r.taps.num_rows, r.errors, r.operator, r.service_day) == (
            0,
            0,
            [],
            None,
            None,
        )
