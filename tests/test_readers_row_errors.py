"""Every way a raw record can be wrong has its own stable code, field and 0-based row number."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from readers.codes import ROW_CODES
from readers.config import ReaderConfig
from readers.registry import get_adapter
from readers.tunion import BLOCK_WIDTH, FIELDS, RECORD_WIDTH, expected_tacs, tac_hex
from tariffs.error_codes import ErrorCode
from tariffs.vocab import Media
from tongka.testing.raw_writers import encode_code
from tongka.testing.synth import identities, sample_taps, write_raw

CONFIG = ReaderConfig.demo()
DAY = dt.date(2026, 11, 24)


def good_lines(fmt: str, tmp_path: Path, n: int = 8, **kw: object) -> list[bytes]:
    kw.setdefault("media", tuple(int(m) for m in get_adapter(fmt).media))
    taps = sample_taps(200, seed=11, day=DAY, **kw)  # type: ignore[arg-type]
    taps = taps.filter(np.asarray(taps["operator"].to_numpy() == taps["operator"][0].as_py()))
    taps = taps.slice(0, n)
    (path,) = write_raw(taps, fmt, tmp_path / "good", CONFIG)
    return path.read_bytes().splitlines()


def parse(fmt: str, lines: list[bytes], tmp_path: Path, config: ReaderConfig = CONFIG):  # type: ignore[no-untyped-def]
    p = tmp_path / f"in-{fmt}"
    p.write_bytes(b"\n".join(lines) + b"\n")
    r = get_adapter(fmt).parse(p, config)
    assert r.rows == r.taps.num_rows + len(r.errors)
    return r


def only_error(
    fmt: str, lines: list[bytes], tmp_path: Path, row: int, **kw: object
) -> tuple[str, str]:
    r = parse(fmt, lines, tmp_path, **kw)  # type: ignore[arg-type]
    assert [e.row for e in r.errors] == [row], r.errors
    assert r.errors[0].code in ROW_CODES
    return r.errors[0].code, r.errors[0].field


# ---------------------------------------------------------------------------------------------
# card: fixed width


def put(line: bytes, field_name: str, text: bytes) -> bytes:
    f = FIELDS[field_name]
    assert len(text) == f.width
    return line[: f.offset] + text + line[f.offset + f.width :]


def retac(line: bytes, config: ReaderConfig = CONFIG) -> bytes:
    """Give a changed record the TAC its issuer's key makes (so only the change is wrong)."""
    block = np.frombuffer(line[:BLOCK_WIDTH], dtype=np.uint8).reshape(1, BLOCK_WIDTH)
    issuer = np.array([int(line[FIELDS["issuer"].offset : FIELDS["issuer"].offset + 5])])
    tacs, _ = expected_tacs(block, issuer, config)
    return line[:BLOCK_WIDTH] + tac_hex(tacs).tobytes()


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        (lambda ln: ln[:-1], ErrorCode.RECORD_LENGTH, ""),
        (lambda ln: ln + b" ", ErrorCode.RECORD_LENGTH, ""),
        (lambda ln: b"TU2" + ln[3:], ErrorCode.RECORD_TYPE, "tag"),
        (lambda ln: put(ln, "form", b"7"), ErrorCode.VALUE_UNKNOWN, "form"),
        (lambda ln: put(ln, "issuer", b"0x001"), ErrorCode.FIELD_FORMAT, "issuer"),
        (lambda ln: put(ln, "issuer", b"70000"), ErrorCode.FIELD_RANGE, "issuer"),
        (lambda ln: put(ln, "asn", b"1234567890123456789A"), ErrorCode.FIELD_FORMAT, "asn"),
        (lambda ln: put(ln, "card_seq", b"2147483648"), ErrorCode.FIELD_RANGE, "card_seq"),
        (lambda ln: put(ln, "card_seq", b" 000000001"), ErrorCode.FIELD_FORMAT, "card_seq"),
        (lambda ln: put(ln, "txn_type", b"07"), ErrorCode.VALUE_UNKNOWN, "txn_type"),
        (lambda ln: put(ln, "direction", b"3"), ErrorCode.VALUE_UNKNOWN, "direction"),
        (
            lambda ln: put(put(ln, "txn_type", b"06"), "direction", b"1"),
            ErrorCode.TXN_MISMATCH,
            "direction",
        ),
        (
            lambda ln: put(put(ln, "txn_type", b"09"), "direction", b"0"),
            ErrorCode.TXN_MISMATCH,
            "direction",
        ),
        (lambda ln: put(ln, "amount", b"-0000001"), ErrorCode.FIELD_FORMAT, "amount"),
        (lambda ln: put(ln, "time", b"20261324080000000"), ErrorCode.TIME_INVALID, "time"),
        (
            lambda ln: put(ln, "time", b"20260229080000000"),
            ErrorCode.TIME_INVALID,
            "time",
        ),  # not a leap year
        (lambda ln: put(ln, "time", b"20261124246000000"), ErrorCode.TIME_INVALID, "time"),
        (lambda ln: put(ln, "time", b"2026-11-24 08:00:"), ErrorCode.FIELD_FORMAT, "time"),
        (lambda ln: put(ln, "tac", b"ZZZZZZZZ"), ErrorCode.FIELD_FORMAT, "tac"),
        (lambda ln: put(ln, "amount", b"00000001"), ErrorCode.TAC_INVALID, "tac"),  # a forged debit
        (lambda ln: put(ln, "tac", b"00000000"), ErrorCode.TAC_INVALID, "tac"),
        (
            lambda ln: retac(put(ln, "issuer", b"00777")),
            ErrorCode.TAC_KEY_UNKNOWN,
            "tac",
        ),  # no key for 777
    ],
)
def test_card_record_errors(change, code: str, field: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines = good_lines("card", tmp_path)
    lines[3] = change(lines[3])
    assert only_error("card", lines, tmp_path, row=3) == (code, field)


def test_card_retac_keeps_a_changed_record_authentic(tmp_path: Path) -> None:
    """The helper above is honest: a consistent change with a fresh TAC is accepted."""
    lines = good_lines("card", tmp_path)
    lines[2] = retac(put(lines[2], "amount", b"00000077"))
    r = parse("card", lines, tmp_path)
    assert r.errors == [] and r.taps["debited_fen"][2].as_py() == 77


def test_card_first_failure_wins_in_layout_order(tmp_path: Path) -> None:
    lines = good_lines("card", tmp_path)
    lines[1] = put(
        put(put(lines[1], "time", b"2026132408000000x"), "card_seq", b"x000000001"),
        "tac",
        b"--------",
    )
    lines[4] = put(put(lines[4], "stop", b"0000000x"), "tac", b"--------")
    r = parse("card", lines, tmp_path)
    assert [(e.row, e.code, e.field) for e in r.errors] == [
        (1, ErrorCode.FIELD_FORMAT, "card_seq"),
        (4, ErrorCode.FIELD_FORMAT, "stop"),
    ]


def test_card_row_numbers_count_blank_lines(tmp_path: Path) -> None:
    lines = good_lines("card", tmp_path, n=4)
    lines = [lines[0], b"", lines[1], b"\r", lines[2][:10], lines[3]]
    r = parse("card", lines, tmp_path)
    assert r.rows == 4  # the empty line and the lone CR are not records
    assert [(e.row, e.code) for e in r.errors] == [(4, ErrorCode.RECORD_LENGTH)]
    assert list(r.source_rows) == [0, 2, 5]


def test_a_tac_made_for_another_medium_does_not_verify(tmp_path: Path) -> None:
    """The medium is part of the TAC block: a physical card record replayed as a fob is forged."""
    lines = good_lines("card", tmp_path, media=(int(Media.CARD),))
    lines[0] = put(lines[0], "form", b"1")
    assert only_error("card", lines, tmp_path, row=0) == (ErrorCode.TAC_INVALID, "tac")


def test_without_a_tac_key_the_issuers_records_are_quarantined(tmp_path: Path) -> None:
    lines = good_lines("card", tmp_path, issuers=(2,))
    no_keys = ReaderConfig.model_construct(
        pii_key=None,
        tac_keys={},
        qr_public_keys={},
        qr_signing_keys={},
        qr_clock_skew_ms=60_000,
        demo_keys=False,
    )
    with pytest.raises(Exception, match="TONGKA_PII_KEY"):
        parse("card", lines, tmp_path, config=no_keys)
    only_pii = ReaderConfig(pii_key="ab" * 32)
    r = parse("card", lines, tmp_path, config=only_pii)
    assert r.taps.num_rows == 0 and {e.code for e in r.errors} == {ErrorCode.TAC_KEY_UNKNOWN}


# ---------------------------------------------------------------------------------------------
# nfc and wearable: JSON Lines


def edit(line: bytes, **changes: object) -> bytes:
    obj = json.loads(line)
    for k, v in changes.items():
        if v is ...:
            del obj[k]
        else:
            obj[k] = v
    return json.dumps(obj).encode()


JSON_CASES = [
    (lambda ln, f: b"{not json", ErrorCode.JSON_INVALID, ""),
    (lambda ln, f: b"[1, 2]", ErrorCode.JSON_INVALID, ""),
    (lambda ln, f: b'"x"', ErrorCode.JSON_INVALID, ""),
    (lambda ln, f: ln + ln, ErrorCode.JSON_INVALID, ""),  # two objects on one line
    (lambda ln, f: b"\xff" + ln, ErrorCode.JSON_INVALID, ""),
    (
        lambda ln, f: ln.replace(b':"', b':"\x80', 1),
        ErrorCode.JSON_INVALID,
        "",
    ),  # not UTF-8 inside a string
    (lambda ln, f: edit(ln, **{f["operator"]: ...}), ErrorCode.FIELD_MISSING, "operator"),
    (lambda ln, f: edit(ln, **{f["operator"]: None}), ErrorCode.FIELD_MISSING, "operator"),
    (lambda ln, f: edit(ln, **{f["operator"]: "101"}), ErrorCode.FIELD_TYPE, "operator"),
    (lambda ln, f: edit(ln, **{f["operator"]: 101.0}), ErrorCode.FIELD_TYPE, "operator"),
    (lambda ln, f: edit(ln, **{f["operator"]: True}), ErrorCode.FIELD_TYPE, "operator"),
    (lambda ln, f: edit(ln, **{f["operator"]: 2**70}), ErrorCode.FIELD_RANGE, "operator"),
    (lambda ln, f: edit(ln, **{f["operator"]: 65536}), ErrorCode.FIELD_RANGE, "operator"),
    (lambda ln, f: edit(ln, **{f["operator"]: -1}), ErrorCode.FIELD_RANGE, "operator"),
    (lambda ln, f: edit(ln, **{f["asn"]: "1234"}), ErrorCode.FIELD_FORMAT, None),
    (lambda ln, f: edit(ln, **{f["asn"]: 12345678901234567890}), ErrorCode.FIELD_TYPE, None),
    (lambda ln, f: edit(ln, **{f["tap"]: "board"}), ErrorCode.VALUE_UNKNOWN, None),
    (lambda ln, f: edit(ln, **{f["tac"]: "XYZ"}), ErrorCode.FIELD_FORMAT, None),
    (lambda ln, f: edit(ln, **{f["amount"]: 1}), ErrorCode.TAC_INVALID, None),
    (lambda ln, f: edit(ln, **{f["stop"]: 1}), ErrorCode.TAC_INVALID, None),
    (lambda ln, f: edit(ln, issuer=777), ErrorCode.TAC_KEY_UNKNOWN, None),
]
JSON_NAMES = {
    "nfc": {
        "operator": "operator",
        "asn": "virtual_asn",
        "tap": "txn",
        "tac": "tac",
        "amount": "amount_fen",
        "stop": "stop",
    },
    "wearable": {
        "operator": "operator",
        "asn": "card_no",
        "tap": "tap",
        "tac": "mac",
        "amount": "fare_fen",
        "stop": "stop",
    },
}


@pytest.mark.parametrize("fmt", ["nfc", "wearable"])
@pytest.mark.parametrize(("change", "code", "field"), JSON_CASES)
def test_json_record_errors(fmt: str, change, code: str, field: str | None, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    names = JSON_NAMES[fmt]
    lines = good_lines(fmt, tmp_path)
    lines[5] = change(lines[5], names)
    got_code, got_field = only_error(fmt, lines, tmp_path, row=5)
    assert got_code == code
    if field is not None:
        assert got_field == field
    elif code.startswith("TAC"):
        assert got_field == names["tac"]


def test_one_bad_json_line_does_not_change_the_others(tmp_path: Path) -> None:
    lines = good_lines("nfc", tmp_path)
    clean = parse("nfc", lines, tmp_path)
    lines.insert(4, b'{"virtual_asn": ')
    r = parse("nfc", lines, tmp_path)
    assert [(e.row, e.code) for e in r.errors] == [(4, ErrorCode.JSON_INVALID)]
    assert r.taps.equals(clean.taps)


def test_wearable_time_errors(tmp_path: Path) -> None:
    lines = good_lines("wearable", tmp_path)
    lines[1] = edit(lines[1], time="2026-02-30T08:00:00.000+08:00")
    lines[2] = edit(lines[2], time="2026-11-24T08:00:00+08:00")
    lines[3] = edit(lines[3], time="2026-11-24T08:00:00.000+24:00")
    lines[4] = edit(lines[4], device_kind="ring")
    lines[6] = edit(lines[6], product="child")
    r = parse("wearable", lines, tmp_path)
    assert [(e.row, e.code, e.field) for e in r.errors] == [
        (1, ErrorCode.TIME_INVALID, "time"),
        (2, ErrorCode.FIELD_FORMAT, "time"),
        (3, ErrorCode.TIME_INVALID, "time"),
        (4, ErrorCode.VALUE_UNKNOWN, "device_kind"),
        (6, ErrorCode.VALUE_UNKNOWN, "product"),
    ]


def test_wearable_time_offset_is_honoured(tmp_path: Path) -> None:
    """The same instant written at UTC+8 and at UTC+0 is one ts_ms (and one TAC)."""
    lines = good_lines("wearable", tmp_path, n=1)
    obj = json.loads(lines[0])
    local = dt.datetime.fromisoformat(obj["time"])
    obj["time"] = local.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    r1, r2 = (
        parse("wearable", lines, tmp_path),
        parse("wearable", [json.dumps(obj).encode()], tmp_path),
    )
    assert r2.errors == [] and r1.taps.equals(r2.taps)


# ---------------------------------------------------------------------------------------------
# ssc: pipe-delimited


def ssc_put(line: bytes, index: int, value: bytes) -> bytes:
    parts = line.split(b"|")
    parts[index] = value
    return b"|".join(parts)


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        (lambda ln: ln + b"|x", ErrorCode.COLUMN_COUNT, ""),
        (lambda ln: ln.rsplit(b"|", 1)[0], ErrorCode.COLUMN_COUNT, ""),
        (lambda ln: ssc_put(ln, 0, b"SSC2"), ErrorCode.RECORD_TYPE, "tag"),
        (lambda ln: ln.replace(b"|", "|é".encode(), 1), ErrorCode.RECORD_ENCODING, ""),
        (lambda ln: ssc_put(ln, 1, b""), ErrorCode.FIELD_MISSING, "ss_number"),
        (lambda ln: ssc_put(ln, 1, b"42010018500101001"), ErrorCode.FIELD_FORMAT, "ss_number"),
        (lambda ln: ssc_put(ln, 2, b"0001"), ErrorCode.FIELD_FORMAT, "transit_serial"),
        (lambda ln: ssc_put(ln, 3, b"abc"), ErrorCode.FIELD_FORMAT, "issuer"),
        (lambda ln: ssc_put(ln, 4, b"9999999999"), ErrorCode.FIELD_RANGE, "card_seq"),
        (lambda ln: ssc_put(ln, 6, b"ENTRY"), ErrorCode.VALUE_UNKNOWN, "tap"),
        (lambda ln: ssc_put(ln, 12, b"20261124250000000"), ErrorCode.TIME_INVALID, "time"),
        (lambda ln: ssc_put(ln, 7, b"1"), ErrorCode.TAC_INVALID, "tac"),
    ],
)
def test_ssc_record_errors(change, code: str, field: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines = good_lines("ssc", tmp_path)
    lines[2] = change(lines[2])
    assert only_error("ssc", lines, tmp_path, row=2) == (code, field)


def test_ssc_social_security_check_character(tmp_path: Path) -> None:
    """Any one changed digit of the number breaks ISO 7064 MOD 11-2; the number is checked first."""
    lines = good_lines("ssc", tmp_path)
    ssn = lines[0].split(b"|")[1]
    for pos in range(17):
        wrong = ssn[:pos] + bytes([48 + (ssn[pos] - 48 + 1) % 10]) + ssn[pos + 1 :]
        assert only_error("ssc", [ssc_put(lines[0], 1, wrong)], tmp_path, row=0) == (
            ErrorCode.SS_NUMBER_INVALID,
            "ss_number",
        )


# ---------------------------------------------------------------------------------------------
# qr: signed codes


def qr_lines(tmp_path: Path, n: int = 8) -> list[bytes]:
    return good_lines("qr", tmp_path, n=n, issuers=(1,))


def recode(
    line: bytes,
    *,
    payload: dict[int, str] | None = None,
    key: Ed25519PrivateKey | None = None,
    keep_signature: bool = False,
    **scan: object,
) -> bytes:
    obj = json.loads(line)
    body, sig = obj["code"].split(".")
    parts = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().split("|")
    for i, v in (payload or {}).items():
        parts[i] = v
    text = "|".join(parts)
    if keep_signature:
        obj["code"] = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode() + "." + sig
    else:
        kid_issuer = int(parts[2])
        obj["code"] = encode_code(text, key or CONFIG.qr_signer(kid_issuer)[1])
    obj.update(scan)
    return json.dumps(obj).encode()


def test_qr_codes_verify_and_become_account_based_taps(tmp_path: Path) -> None:
    r = parse("qr", qr_lines(tmp_path), tmp_path)
    assert r.errors == [] and r.taps.num_rows == 8
    assert set(r.taps["debited_fen"].to_pylist()) == {-1}
    assert set(r.taps["media"].to_pylist()) == {int(Media.QR_CODE)}


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda ln: edit(ln, code="not-a-code"), ErrorCode.QR_MALFORMED),
        (
            lambda ln: edit(ln, code=json.loads(ln)["code"].split(".")[0] + ".AAAA"),
            ErrorCode.QR_MALFORMED,
        ),
        (lambda ln: recode(ln, payload={0: "TQR9"}), ErrorCode.QR_MALFORMED),
        (
            lambda ln: recode(ln, payload={7: "2147483648"}),
            ErrorCode.QR_MALFORMED,
        ),  # nonce beyond card_seq
        (lambda ln: recode(ln, payload={1: "nobody"}), ErrorCode.QR_UNKNOWN_KEY),
        (
            lambda ln: recode(ln, payload={4: "2"}, keep_signature=True),
            ErrorCode.QR_FORGED,
        ),  # senior, unsigned
        (
            lambda ln: recode(ln, key=Ed25519PrivateKey.generate()),
            ErrorCode.QR_FORGED,
        ),  # signed by a stranger
        (
            lambda ln: recode(ln, payload={1: "demo-2"}, key=CONFIG.qr_signer(2)[1]),
            ErrorCode.QR_FORGED,
        ),  # 2 for 1
        (lambda ln: edit(ln, scan_ms=json.loads(ln)["scan_ms"] + 3_600_000), ErrorCode.QR_EXPIRED),
        (
            lambda ln: edit(ln, scan_ms=json.loads(ln)["scan_ms"] - 3_600_000),
            ErrorCode.QR_NOT_YET_VALID,
        ),
        (lambda ln: edit(ln, tap="in"), ErrorCode.VALUE_UNKNOWN),
        (lambda ln: edit(ln, device_id=-5), ErrorCode.FIELD_RANGE),
    ],
)
def test_qr_errors(change, code: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines = qr_lines(tmp_path)
    lines[6] = change(lines[6])
    assert only_error("qr", lines, tmp_path, row=6)[0] == code


def test_qr_replay_is_a_second_scan_with_a_used_nonce(tmp_path: Path) -> None:
    lines = qr_lines(tmp_path)
    first = json.loads(lines[2])
    replay = dict(first, device_id=first["device_id"] + 1, scan_ms=first["scan_ms"] + 1000)
    resent = dict(first)  # the same scan exported twice: a duplicate for ingestion, not a replay
    lines += [json.dumps(replay).encode(), json.dumps(resent).encode()]
    r = parse("qr", lines, tmp_path)
    assert [(e.row, e.code) for e in r.errors] == [(8, ErrorCode.QR_REPLAYED)]
    assert r.taps.num_rows == 9


def _payload(line: bytes) -> list[str]:
    body = json.loads(line)["code"].split(".")[0]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().split("|")


def test_qr_replay_needs_the_same_account(tmp_path: Path) -> None:
    """Another account may use the same nonce; the replay check is per account."""
    lines = qr_lines(tmp_path)
    first = _payload(lines[0])
    other = next(i for i, ln in enumerate(lines) if _payload(ln)[3] != first[3])
    lines[other] = recode(lines[other], payload={7: first[7]})
    assert _payload(lines[other])[7] == first[7]
    assert parse("qr", lines, tmp_path).errors == []


def test_qr_clock_skew_is_configurable(tmp_path: Path) -> None:
    lines = qr_lines(tmp_path, n=1)
    obj = json.loads(lines[0])
    issued = int(_payload(lines[0])[5])
    early = [json.dumps(dict(obj, scan_ms=issued - 30_000)).encode()]
    assert parse("qr", early, tmp_path).errors == []  # within the default 60 s
    strict = ReaderConfig.demo().model_copy(update={"qr_clock_skew_ms": 10_000})
    assert only_error("qr", early, tmp_path, row=0, config=strict)[0] == ErrorCode.QR_NOT_YET_VALID


def test_identities_are_deterministic() -> None:
    t = sample_taps(50, seed=1)
    a, b = identities(t), identities(t)
    assert np.array_equal(a.asn, b.asn) and list(a.account) == list(b.account)


def test_row_error_records_hold_no_raw_card_number(tmp_path: Path) -> None:
    lines = good_lines("card", tmp_path)
    asn = lines[0][FIELDS["asn"].offset : FIELDS["asn"].offset + 20]
    lines[0] = put(lines[0], "tac", b"00000000")
    r = parse("card", lines, tmp_path)
    (err,) = r.errors
    # RowError.raw is the record as it came in (sealed in quarantine), so only it may hold it
    assert err.raw == lines[0] and asn in err.raw
    assert asn.decode() not in repr(dataclasses.replace(err, raw=b""))
    assert len(err.record["card_token"]) == 16 and RECORD_WIDTH == 136
