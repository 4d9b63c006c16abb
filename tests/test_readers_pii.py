"""Personal data never leaves the adapters: a full run over all five media, then a scan of every
byte it wrote (files, database rows, logs, console) for the raw card, social-security and
account numbers. None may appear, in any encoding we can think of."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr
from sqlalchemy import MetaData, select
from sqlalchemy.engine import Engine

from clearing.db import make_engine
from clearing.ingest import ingest_taps
from clearing.reference import match_and_price
from readers.config import ReaderConfig
from readers.registry import detect_format, get_adapter
from readers.tunion import FIELDS
from tariffs.error_codes import ErrorCode
from tariffs.load import load_tariff_set
from tongka.schema import upgrade
from tongka.testing.generate import generate_day
from tongka.testing.synth import identities, write_raw

DAY = dt.date(2026, 11, 24)
CONFIG = ReaderConfig.demo()


# ---------------------------------------------------------------------------------------------
# The input: a generated day in all five raw formats, plus hostile records


def _plant(paths: list[Path], planted: set[bytes]) -> None:
    """Add records that put personal numbers where they do not belong; remember each number."""
    by_fmt = {p.name.split("-")[0]: p for p in paths}
    card = by_fmt["card"]
    lines = card.read_bytes().splitlines()
    f = FIELDS["amount"]
    forged = lines[0][: f.offset] + b"00000001" + lines[0][f.offset + f.width :]  # TAC_INVALID
    asn = lines[0][FIELDS["asn"].offset : FIELDS["asn"].offset + 20]
    shifted = (
        lines[1][:4] + b"9" + lines[1][4:-1]
    )  # every field one place right: a misaligned record
    card.write_bytes(b"\n".join([*lines, forged, shifted, lines[2][:60], asn]) + b"\n")
    planted.add(asn)

    nfc = by_fmt["nfc"]
    lines = nfc.read_bytes().splitlines()
    rec = json.loads(lines[0])
    asn = rec["virtual_asn"].encode()
    bad = [
        dict(rec, terminal_id=int(asn)),  # FIELD_RANGE on a number that is a card number
        dict(rec, operator=asn.decode()),  # FIELD_TYPE with the card number as text
        dict(rec, tac=asn.decode()[:8] + "Z"),  # FIELD_FORMAT
        dict(rec, amount_fen=0),  # TAC_INVALID
        dict(rec, wallet_account="has space " + asn.decode()),  # FIELD_FORMAT on a personal field
        dict(rec, virtual_asn=asn.decode() + "0"),  # 21 digits: FIELD_FORMAT on the number itself
    ]
    planted.add(asn.decode().encode() + b"0")
    text = [json.dumps(b).encode() for b in bad] + [b'{"virtual_asn": "' + asn + b'", broken']
    nfc.write_bytes(b"\n".join([*lines, *text]) + b"\n")

    ssc = by_fmt["ssc"]
    lines = ssc.read_bytes().splitlines()
    parts = lines[0].split(b"|")
    ssn = parts[1]
    wrong = (
        ssn[:5] + bytes([48 + (ssn[5] - 47) % 10]) + ssn[6:]
    )  # SS_NUMBER_INVALID, still personal
    planted.add(wrong)
    extra = [
        b"|".join([parts[0], wrong, *parts[2:]]),
        b"|".join([parts[0], parts[2], parts[1], *parts[3:]]),  # the two numbers swapped
        b"|".join([ssn, *parts[1:]]),  # the number where the tag belongs: RECORD_TYPE
        lines[0] + b"|" + ssn,  # COLUMN_COUNT
    ]
    ssc.write_bytes(b"\n".join([*lines, *extra]) + b"\n")

    qr = by_fmt["qr"]
    lines = qr.read_bytes().splitlines()
    rec = json.loads(lines[0])
    body, sig = rec["code"].split(".")
    payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().split("|")
    payload[4] = "2"  # claim a senior's product: QR_FORGED
    forged_code = (
        base64.urlsafe_b64encode("|".join(payload).encode()).rstrip(b"=").decode() + "." + sig
    )
    extra = [
        json.dumps(dict(rec, code=forged_code)).encode(),
        json.dumps(dict(rec, scan_ms=rec["scan_ms"] + 86_400_000)).encode(),  # QR_EXPIRED
        json.dumps(dict(rec, device_id=rec["device_id"] + 7)).encode(),  # QR_REPLAYED
        json.dumps(dict(rec, stop=payload[3])).encode(),  # the account token in a number field
    ]
    qr.write_bytes(b"\n".join([*lines, *extra]) + b"\n")


def _needles(taps: pa.Table, planted: set[bytes]) -> set[bytes]:
    ids = identities(taps)
    raw: set[bytes] = set(planted)
    raw |= {ids.asn[i].tobytes() for i in range(taps.num_rows)}
    raw |= {ids.ss_number[i].tobytes() for i in range(taps.num_rows)}
    raw |= {str(a).encode() for a in ids.wallet} | {str(a).encode() for a in ids.account}
    out = set(raw)
    for r in raw:
        out.add(r.decode().encode("utf-16-le"))
        out.add(base64.b64encode(r).rstrip(b"="))
        out.add(hashlib.sha256(r).hexdigest().encode())  # an unkeyed hash is as good as the number
        if r.isdigit() and int(r) < 2**64:
            out |= {int(r).to_bytes(8, "little"), int(r).to_bytes(8, "big")}
    return out


# ---------------------------------------------------------------------------------------------
# The scan


def _files(root: Path) -> Iterator[Path]:
    yield from (p for p in sorted(root.rglob("*")) if p.is_file())


def _texts(root: Path) -> Iterator[tuple[str, bytes]]:
    """Every file's bytes, and for Parquet also its decoded values (pages may be compressed)."""
    for p in _files(root):
        data = p.read_bytes()
        yield str(p), data
        if data[:4] == b"PAR1":
            table = pq.read_table(p)
            yield f"{p} (decoded)", repr(table.to_pylist()).encode()


def _db_dump(engine: Engine) -> bytes:
    meta = MetaData()
    meta.reflect(engine)
    out = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                out.append(repr(tuple(row)))
    return "\n".join(out).encode()


def _scan(sources: list[tuple[str, bytes]], needles: set[bytes]) -> list[str]:
    """Where any needle (each >= 8 bytes) occurs: every 8-byte window of the data, at each of
    the 8 alignments, is probed against the needles' first 8 bytes, then candidates are checked."""
    by_prefix: dict[bytes, list[bytes]] = {}
    for n in needles:
        assert len(n) >= 8
        by_prefix.setdefault(n[:8], []).append(n)
    keys = np.sort(np.array([int.from_bytes(k, "little") for k in by_prefix], dtype=np.uint64))
    hits = []
    for where, data in sources:
        for a in range(8):
            count = (len(data) - a) // 8
            if count <= 0:
                continue
            windows = np.frombuffer(data, dtype="<u8", count=count, offset=a)
            found = keys[np.minimum(np.searchsorted(keys, windows), len(keys) - 1)] == windows
            for i in np.flatnonzero(found):
                pos = a + 8 * int(i)
                hits += [
                    f"{where}: {n[:6]!r}..."
                    for n in by_prefix[data[pos : pos + 8]]
                    if data.startswith(n, pos)
                ]
    return hits


# ---------------------------------------------------------------------------------------------


@pytest.fixture
def day_taps() -> pa.Table:
    return generate_day(DAY, 2500, 4, load_tariff_set())


def test_full_run_writes_no_personal_data(
    db_url: str,
    tmp_path: Path,
    day_taps: pa.Table,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    incoming, data_dir, out = tmp_path / "incoming", tmp_path / "data", tmp_path / "out"
    paths = write_raw(day_taps, "all", incoming, CONFIG)
    assert {p.name.split("-")[0] for p in paths} == {"card", "nfc", "wearable", "ssc", "qr"}
    planted: set[bytes] = set()
    _plant(paths, planted)

    engine = make_engine(db_url)
    upgrade(engine)
    codes: set[str] = set()
    accepted = 0
    for p in paths:
        fmt = detect_format(p)
        r = get_adapter(fmt).parse(p, CONFIG)
        codes |= {e.code for e in r.errors}
        (out / "parsed").mkdir(parents=True, exist_ok=True)
        pq.write_table(r.taps, out / "parsed" / f"{p.name}.parquet")
        (out / "parsed" / f"{p.name}.errors.json").write_text(
            json.dumps([e.__repr__() for e in r.errors] + [e.record for e in r.errors])
        )
        report = ingest_taps(
            engine,
            data_dir,
            r.taps_with_source_rows(),
            r.errors,
            file_sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
            source_format=fmt,
            source_name=p.name,
            service_day=r.service_day or DAY,
            operator=r.operator if r.operator is not None else int(p.stem.split("-op")[1]),
        )
        assert report.received == r.rows
        accepted += report.accepted
        logging.getLogger("tongka.test").info("ingested %s: %s", p.name, report)
    # the planted records were all caught, each with its own code
    assert {
        ErrorCode.TAC_INVALID,
        ErrorCode.FIELD_RANGE,
        ErrorCode.FIELD_TYPE,
        ErrorCode.FIELD_FORMAT,
        ErrorCode.SS_NUMBER_INVALID,
        ErrorCode.RECORD_TYPE,
        ErrorCode.COLUMN_COUNT,
        ErrorCode.QR_FORGED,
        ErrorCode.QR_EXPIRED,
        ErrorCode.QR_REPLAYED,
        ErrorCode.JSON_INVALID,
        ErrorCode.RECORD_LENGTH,
    } <= codes
    stored = [pq.read_table(p) for p in _files(data_dir)
              if p.suffix == ".parquet" and not p.name.endswith(".dup.parquet")]
    kept_duplicates = [p for p in _files(data_dir) if p.name.endswith(".dup.parquet")]
    assert all(pq.read_table(p).num_rows > 0 for p in kept_duplicates)  # scanned below too
    assert accepted > 1000 and sum(t.num_rows for t in stored) == accepted
    legs = match_and_price(
        pa.concat_tables(stored).select(list(stored[0].schema.names)), load_tariff_set()
    )
    pq.write_table(legs, out / "legs.parquet")
    assert legs.num_rows > 500

    sources = [
        *_texts(data_dir),
        *_texts(out),
        ("database", _db_dump(engine)),
        ("logs", caplog.text.encode()),
        ("console", "".join(capsys.readouterr()).encode()),
    ]
    if db_url.startswith("sqlite"):
        assert any(p.suffix == ".sqlite" for p in _files(tmp_path)), "the SQLite file is scanned"
    engine.dispose()
    needles = _needles(day_taps, planted)
    assert len(needles) > 4000
    assert _scan(sources, needles) == []
    # and the scan can see: the raw inputs do contain the numbers
    assert _scan(list(_texts(incoming)), needles)


def test_tokens_are_keyed(day_taps: pa.Table, tmp_path: Path) -> None:
    """The same cards under another PII key get other card_ids: the token is not a plain hash."""
    paths = write_raw(day_taps, "card", tmp_path, CONFIG)
    other = CONFIG.model_copy(update={"pii_key": SecretStr("cd" * 32)})
    a = get_adapter("card").parse(paths[0], CONFIG).taps["card_id"].to_numpy()
    b = get_adapter("card").parse(paths[0], other).taps["card_id"].to_numpy()
    assert len(a) and not np.any(a == b)


def test_cli_run_over_all_media_writes_no_personal_data(tmp_path: Path, day_taps: pa.Table) -> None:
    """The same through the commands an operator runs: tongka ingest (format detected), clear,
    settle, with the demo keys from the environment; everything in the data directory and on
    the console is scanned."""
    import os
    import subprocess
    import sys

    home, incoming = tmp_path / "home", tmp_path / "incoming"
    paths = write_raw(day_taps, "all", incoming, CONFIG)
    planted: set[bytes] = set()
    _plant(paths, planted)
    tongka = Path(sys.executable).parent / "tongka"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TONGKA_")}
    env.update(TONGKA_HOME=str(home), TONGKA_DEMO_KEYS="1")
    console = []
    for args in (
        ["ingest", *map(str, paths)],
        ["clear", "--date", DAY.isoformat()],
        ["settle", "--date", DAY.isoformat()],
    ):
        run = subprocess.run([str(tongka), *args], env=env, capture_output=True, timeout=600)
        console.append(run.stdout + run.stderr)
        assert run.returncode == 0, (args, run.stderr.decode()[-2000:])
    assert b"qr-" in console[0] and b"quarantined" in console[0]
    sources = [*_texts(home), ("console", b"\n".join(console))]
    assert any(p.suffix == ".sqlite" for p in _files(home))
    assert _scan(sources, _needles(day_taps, planted)) == []
