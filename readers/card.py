"""Physical and shaped cards (异形卡): fixed-width T-Union-style terminal records, parsed as arrays.

A well-formed file is one strided (n, 134) byte view of itself: every field is a column slice,
every check one array expression, and only the TAC (one HMAC per record) and the tokens (one
HMAC per distinct card) touch each row in a tight loop. docs/formats/card.md is the format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from readers.base import ParseResult, parse_file, result
from readers.columns import (
    RowChecks,
    all_digits,
    compact_time_ms,
    digits,
    echo,
    fixed_block,
    hex_bytes,
    split_lines,
    taps_from_columns,
)
from readers.config import ReaderConfig
from readers.tokenise import card_ids_fixed, token_hex
from readers.tunion import (
    FIELDS,
    LAYOUT,
    MAX_VALUE,
    RECORD_TAG,
    RECORD_WIDTH,
    TXN_COMPOUND,
    TXN_SIMPLE,
    check_tacs_at,
)
from tariffs.error_codes import ErrorCode
from tariffs.vocab import Media

NUMERIC = tuple(f.name for f in LAYOUT if f.name not in {"tag", "asn", "time", "tac"})


class CardAdapter:
    """``card``: physical cards and shaped cards (key fobs, pendants) at T-Union terminals."""

    name = "card"
    description = "physical and shaped cards: fixed-width T-Union terminal records (.dat)"
    media: tuple[Media, ...] = (Media.CARD, Media.SHAPED_CARD)
    suffix = ".dat"

    def sniff(self, head: bytes) -> bool:
        first = head.split(b"\n", 1)[0].rstrip(b"\r")
        return first.startswith(RECORD_TAG) and len(first) == RECORD_WIDTH

    def parse(self, path: Path, config: ReaderConfig) -> ParseResult:
        """Read and parse one file (``readers.base.parse_file``)."""
        return parse_file(self, path, config)

    def parse_bytes(self, data: bytes, config: ReaderConfig, *, name: str = "") -> ParseResult:
        return parse_card_bytes(data, config)


def parse_card_bytes(data: bytes, config: ReaderConfig) -> ParseResult:
    """Parse the bytes of a card file (``CardAdapter.parse`` without the file)."""
    key = config.pii_key_bytes()
    lines = split_lines(data)
    n = len(lines)
    checks = RowChecks(n)
    sized = lines.lengths == RECORD_WIDTH
    checks.flag(
        ~sized,
        ErrorCode.RECORD_LENGTH,
        "",
        f"a card record is exactly {RECORD_WIDTH} characters before the line break",
    )
    sel = np.flatnonzero(sized)  # rows that have a record's shape; ``rec`` is indexed like sel
    rec = fixed_block(lines, RECORD_WIDTH, sized)

    def flag(bad_sel: np.ndarray, code: ErrorCode, field_name: str, message: str) -> None:
        bad = np.zeros(n, dtype=bool)
        bad[sel] = bad_sel
        checks.flag(bad, code, field_name, message)

    def col(name: str) -> np.ndarray:
        f = FIELDS[name]
        return rec[:, f.offset : f.offset + f.width]

    tag_ok = np.all(col("tag") == np.frombuffer(RECORD_TAG, dtype=np.uint8), axis=1)
    flag(~tag_ok, ErrorCode.RECORD_TYPE, "tag", "a card record starts with TU1")

    values: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}  # per field: did its characters parse (for echoing)
    for f in LAYOUT[1:]:
        if f.name == "asn":
            valid["asn"] = all_digits(col("asn"))
            flag(~valid["asn"], ErrorCode.FIELD_FORMAT, "asn", "the card number must be 20 digits")
            continue
        if f.name == "time":
            ts, fmt_ok, real = compact_time_ms(col("time"))
            values["ts_ms"], valid["time"] = ts, real
            flag(
                ~fmt_ok,
                ErrorCode.FIELD_FORMAT,
                "time",
                "the time must be 17 digits YYYYMMDDhhmmssfff",
            )
            flag(~real, ErrorCode.TIME_INVALID, "time", "the time names no real date and time")
            continue
        if f.name == "tac":
            _, valid["tac"] = hex_bytes(col("tac"))
            flag(~valid["tac"], ErrorCode.FIELD_FORMAT, "tac", "the TAC must be 8 hex digits")
            continue
        v, ok = digits(col(f.name))
        values[f.name] = v
        flag(~ok, ErrorCode.FIELD_FORMAT, f.name, f"{f.name} must be {f.width} digits")
        limit = MAX_VALUE.get(f.name)
        if limit is not None and limit < 10**f.width - 1:
            too_big = ok & (v > limit)
            flag(too_big, ErrorCode.FIELD_RANGE, f.name, f"{f.name} must be at most {limit}")
            ok = ok & ~too_big
        if f.name == "form":
            ok = ok & np.isin(v, (Media.CARD, Media.SHAPED_CARD))
            flag(~ok, ErrorCode.VALUE_UNKNOWN, "form", "form must be 0 (card) or 1 (shaped card)")
        elif f.name == "txn_type":
            ok = ok & np.isin(v, (TXN_SIMPLE, TXN_COMPOUND))
            flag(~ok, ErrorCode.VALUE_UNKNOWN, "txn_type", "txn_type must be 06 or 09")
        elif f.name == "direction":
            ok = ok & (v <= 2)
            flag(~ok, ErrorCode.VALUE_UNKNOWN, "direction", "direction must be 0, 1 or 2")
        valid[f.name] = ok

    txn, direction = values["txn_type"], values["direction"]
    flag(
        ((txn == TXN_SIMPLE) & (direction != 0)) | ((txn == TXN_COMPOUND) & (direction == 0)),
        ErrorCode.TXN_MISMATCH,
        "direction",
        "txn_type 06 has direction 0; txn_type 09 has 1 or 2",
    )

    # Authenticity last: only records that parsed are worth an HMAC (SPEC: forged -> quarantine).
    live = checks.ok[sel]
    live_idx = np.flatnonzero(live)
    no_key, forged = check_tacs_at(
        data, lines.starts[sel[live_idx]], values["issuer"][live_idx], col("tac")[live_idx], config
    )
    for mask, code, msg in (
        (no_key, ErrorCode.TAC_KEY_UNKNOWN, "no TAC key is configured for this issuer"),
        (forged, ErrorCode.TAC_INVALID, "the TAC does not authenticate this record"),
    ):
        bad = np.zeros(len(sel), dtype=bool)
        bad[live_idx] = mask
        flag(bad, code, "tac", msg)

    keep_sel = checks.ok[sel]
    kept = rec[keep_sel]
    asn_f = FIELDS["asn"]
    card_id = card_ids_fixed(
        key, values["issuer"][keep_sel], kept[:, asn_f.offset : asn_f.offset + asn_f.width]
    )
    cols = {name: values[name][keep_sel] for name in NUMERIC}
    cols["ts_ms"] = values["ts_ms"][keep_sel]
    taps = taps_from_columns(canonical(cols, card_id), np.ones(len(card_id), dtype=bool))

    where = np.full(n, -1, dtype=np.int64)
    where[sel] = np.arange(len(sel))

    def record(i: int) -> dict[str, object]:
        j = int(where[i])
        if j < 0:
            return {"length": int(lines.lengths[i])}
        if not tag_ok[j]:  # another layout: its fields are not where ours are, echo nothing
            return {
                "length": RECORD_WIDTH,
                "tag": echo(rec[j, :3].tobytes().decode("ascii", "backslashreplace"), False),
            }
        return error_record(rec[j].tobytes(), {k: bool(v[j]) for k, v in valid.items()}, key)

    errors = checks.errors(lines, record)
    return result(taps, errors, n, lines.rows[sel[keep_sel]], lines)


def canonical(cols: dict[str, np.ndarray], card_id: np.ndarray) -> dict[str, np.ndarray]:
    """SPEC §3 columns from the T-Union fields (direction 0/1/2 is FLAT/ENTRY/EXIT)."""
    return {
        "operator": cols["operator"],
        "device_id": cols["terminal_id"],
        "device_seq": cols["terminal_seq"],
        "card_id": card_id,
        "card_seq": cols["card_seq"],
        "issuer": cols["issuer"],
        "product": cols["product"],
        "media": cols["form"],
        "ts_ms": cols["ts_ms"],
        "city": cols["city"],
        "line": cols["line"],
        "stop": cols["stop"],
        "tap_type": cols["direction"],
        "debited_fen": cols["amount"],
        "balance_fen": cols["balance"],  # authenticated by the TAC; risk signals only (§10)
    }


def error_record(raw: bytes, valid: dict[str, bool], key: bytes) -> dict[str, object]:
    """A rejected record as field texts, the card number replaced by its keyed token."""
    text = {
        f.name: raw[f.offset : f.offset + f.width].decode("ascii", "backslashreplace")
        for f in LAYOUT
    }
    issuer = str(int(text["issuer"])) if valid.get("issuer") else text["issuer"]
    asn = raw[FIELDS["asn"].offset : FIELDS["asn"].offset + FIELDS["asn"].width]
    out: dict[str, object] = {
        "card_token": token_hex(key, issuer.encode("ascii", "backslashreplace") + b":" + asn)
    }
    for f in LAYOUT:
        if f.name != "asn":
            out[f.name] = echo(text[f.name], valid.get(f.name, True))
    return out
