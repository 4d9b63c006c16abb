"""QR codes (account-based): scans of ed25519-signed codes, verified, expiry- and replay-checked.

A rider's app shows a short-lived code signed by the issuer's account platform; the reader
scans it and the operator exports one JSON line per scan: the code exactly as scanned and
where and when it was scanned. The adapter checks the signature with the issuer's public key
(``ReaderConfig.qr_key``), the code's validity window against the scan time, and that no
account uses one nonce for two different scans. Nothing is debited at the reader: the taps are
account-based (``debited_fen = -1``) and the nonce is the tap's ``card_seq`` (SPEC §3).
docs/formats/qr.md is the format.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
from cryptography.exceptions import InvalidSignature

from clearing.taps import ACCOUNT_BASED
from readers.base import ParseResult, parse_file, result
from readers.columns import (
    INT32_MAX,
    INT64_MAX,
    UINT8_MAX,
    UINT16_MAX,
    UINT32_MAX,
    RowChecks,
    code_of,
    echo,
    split_lines,
    taps_from_columns,
)
from readers.config import ReaderConfig, ed25519_public
from readers.fields import TAP_NAMES
from readers.jsonl import INT, STR, JsonField, load_object, read_json_lines
from readers.stored import first_object
from readers.tokenise import card_ids, card_message, token_hex
from readers.tunion import MAX_TS_MS
from tariffs.error_codes import ErrorCode
from tariffs.vocab import Media

PAYLOAD_TAG = "TQR1"
SIGNATURE_BYTES = 64
_CODE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_KID = re.compile(r"[A-Za-z0-9._-]{1,32}")
_ACCOUNT = re.compile(r"[!-{}~]{1,64}")  # visible ASCII but '|', which separates the payload
_NUMBER = re.compile(r"[0-9]{1,18}")

# The scan's own fields, checked in this order after the code; (name, largest value).
SCAN_FIELDS: tuple[tuple[str, int], ...] = (
    ("operator", UINT16_MAX),
    ("device_id", INT64_MAX),
    ("device_seq", INT64_MAX),
    ("scan_ms", MAX_TS_MS),
    ("city", UINT32_MAX),
    ("line", UINT32_MAX),
    ("stop", UINT32_MAX),
)
JSON_FIELDS = (
    JsonField("code", STR),
    *(JsonField(n, INT) for n, _ in SCAN_FIELDS),
    JsonField("tap", STR),
)


class Payload:
    """A decoded code: what the issuer signed, and the signature."""

    __slots__ = (
        "signed",
        "signature",
        "kid",
        "issuer",
        "account",
        "product",
        "issued_ms",
        "expires_ms",
        "nonce",
    )

    def __init__(self, signed: bytes, signature: bytes, parts: list[str]) -> None:
        self.signed, self.signature = signed, signature
        self.kid, self.account = parts[1], parts[3]
        self.issuer, self.product = int(parts[2]), int(parts[4])
        self.issued_ms, self.expires_ms, self.nonce = int(parts[5]), int(parts[6]), int(parts[7])


def decode_code(code: str) -> Payload | None:
    """The payload of a scanned code, or None when it is not a well-formed signed payload."""
    if not _CODE.fullmatch(code):
        return None
    body, sig = code.split(".")
    try:
        signed = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        parts = signed.decode("ascii").split("|")
    except (binascii.Error, ValueError):
        return None
    if len(signature) != SIGNATURE_BYTES or len(parts) != 8 or parts[0] != PAYLOAD_TAG:
        return None
    if not (
        _KID.fullmatch(parts[1])
        and _ACCOUNT.fullmatch(parts[3])
        and all(_NUMBER.fullmatch(p) for p in (parts[2], *parts[4:]))
    ):
        return None
    p = Payload(signed, signature, parts)
    if (
        p.issuer > UINT16_MAX
        or p.product > UINT8_MAX
        or p.nonce > INT32_MAX
        or p.expires_ms < p.issued_ms
    ):
        return None
    return p


class QrAdapter:
    """``qr``: account-based QR codes scanned at readers."""

    name = "qr"
    description = "account-based QR codes: JSON Lines of scanned ed25519-signed codes (.jsonl)"
    media: tuple[Media, ...] = (Media.QR_CODE,)
    suffix = ".jsonl"

    def sniff(self, head: bytes) -> bool:
        obj = first_object(head)
        return obj is not None and "code" in obj and "scan_ms" in obj

    def parse(self, path: Path, config: ReaderConfig) -> ParseResult:
        """Read and parse one file (``readers.base.parse_file``)."""
        return parse_file(self, path, config)

    def parse_bytes(self, data: bytes, config: ReaderConfig, *, name: str = "") -> ParseResult:
        key = config.pii_key_bytes()
        lines = split_lines(data)
        n = len(lines)
        checks = RowChecks(n)
        cols = read_json_lines(lines, JSON_FIELDS, checks)
        valid = {f.name: cols.usable[f.name].copy() for f in JSON_FIELDS}

        # The code first: it is what the rider presented.
        code_col = cols.strs["code"].to_pylist()
        payloads: list[Payload | None] = [
            decode_code(c) if cols.usable["code"][i] else None for i, c in enumerate(code_col)
        ]
        malformed = np.array([p is None for p in payloads], dtype=bool) & cols.usable["code"]
        checks.flag(
            malformed, ErrorCode.QR_MALFORMED, "code",
            "the code is not a well-formed signed payload",
        )
        valid["code"] &= ~malformed
        for name, hi in SCAN_FIELDS:
            v = cols.ints[name]
            bad = cols.usable[name] & ((v < 0) | (v > hi))
            checks.flag(bad, ErrorCode.FIELD_RANGE, name, f"{name} must be between 0 and {hi}")
            valid[name] &= ~bad
        tap = code_of(cols.strs["tap"], TAP_NAMES)
        unknown_tap = cols.usable["tap"] & (tap < 0)
        checks.flag(
            unknown_tap, ErrorCode.VALUE_UNKNOWN, "tap",
            f"tap must be one of: {', '.join(TAP_NAMES)}",
        )
        valid["tap"] &= ~unknown_tap

        # Authenticity, then the validity window, then replay: each only for rows still good.
        issuer = np.zeros(n, dtype=np.int64)
        product = np.zeros(n, dtype=np.int64)
        nonce = np.zeros(n, dtype=np.int64)
        issued = np.zeros(n, dtype=np.int64)
        expires = np.zeros(n, dtype=np.int64)
        unknown_key = np.zeros(n, dtype=bool)
        forged = np.zeros(n, dtype=bool)
        for i in np.flatnonzero(checks.ok):
            p = payloads[i]
            assert p is not None
            issuer[i], product[i], nonce[i] = p.issuer, p.product, p.nonce
            issued[i], expires[i] = p.issued_ms, p.expires_ms
            qr_key = config.qr_key(p.kid)
            if qr_key is None:
                unknown_key[i] = True
                continue
            if qr_key.issuer != p.issuer:  # a key signs only for its own issuer's accounts
                forged[i] = True
                continue
            try:
                ed25519_public(qr_key.public_key).verify(p.signature, p.signed)
            except InvalidSignature:
                forged[i] = True
        checks.flag(
            unknown_key, ErrorCode.QR_UNKNOWN_KEY, "code", "the code's key id is not configured"
        )
        checks.flag(
            forged, ErrorCode.QR_FORGED, "code", "the code's signature does not verify: forged"
        )
        scan = cols.ints["scan_ms"]
        ok = checks.ok
        checks.flag(
            ok & (scan < issued - config.qr_clock_skew_ms),
            ErrorCode.QR_NOT_YET_VALID,
            "scan_ms",
            "the code was scanned before it was issued",
        )
        checks.flag(
            checks.ok & (scan > expires),
            ErrorCode.QR_EXPIRED,
            "scan_ms",
            "the code was scanned after it expired",
        )

        live = np.flatnonzero(checks.ok)
        accounts = pa.array([payloads[i].account for i in live], type=pa.string())  # type: ignore[union-attr]
        card_id_live = card_ids(key, issuer[live], accounts)
        replay = _replays(
            card_id_live,
            issuer[live],
            nonce[live],
            np.stack(
                [
                    cols.ints["operator"][live],
                    cols.ints["device_id"][live],
                    cols.ints["device_seq"][live],
                ],
                axis=1,
            ),
        )
        replayed = np.zeros(n, dtype=bool)
        replayed[live[replay]] = True
        checks.flag(
            replayed,
            ErrorCode.QR_REPLAYED,
            "code",
            "this code's nonce was already used in another scan",
        )

        keep = checks.ok
        card_id = np.zeros(n, dtype=np.uint64)
        card_id[live] = card_id_live
        canonical = {
            "operator": cols.ints["operator"],
            "device_id": cols.ints["device_id"],
            "device_seq": cols.ints["device_seq"],
            "card_id": card_id,
            "card_seq": nonce,
            "issuer": issuer,
            "product": product,
            "media": np.full(n, int(Media.QR_CODE)),
            "ts_ms": scan,
            "city": cols.ints["city"],
            "line": cols.ints["line"],
            "stop": cols.ints["stop"],
            "tap_type": np.maximum(tap, 0),
            "debited_fen": np.full(n, ACCOUNT_BASED),
        }
        taps = taps_from_columns(canonical, keep)

        def record(i: int) -> dict[str, object]:
            raw = load_object(lines.raw(i)) or {}
            out: dict[str, object] = {}
            p = payloads[i]
            if p is not None:
                out.update(
                    kid=p.kid,
                    issuer=p.issuer,
                    product=p.product,
                    issued_ms=p.issued_ms,
                    expires_ms=p.expires_ms,
                    nonce=p.nonce,
                    card_token=token_hex(key, card_message(p.issuer, p.account)),
                )
            for name in (
                "operator",
                "device_id",
                "device_seq",
                "scan_ms",
                "city",
                "line",
                "stop",
                "tap",
            ):
                value = raw.get(name)
                if value is not None:
                    shown = value if isinstance(value, int | str) else type(value).__name__
                    out[name] = echo(shown, bool(valid[name][i]) and isinstance(value, int | str))
            return out

        return result(taps, checks.errors(lines, record), n, lines.rows[keep], lines)


def _replays(
    card_id: np.ndarray, issuer: np.ndarray, nonce: np.ndarray, device_key: np.ndarray
) -> np.ndarray:
    """Rows whose (card, nonce) an earlier row used in a different scan (another device key).

    The same scan exported twice (same device key) is not a replay but a duplicate, which
    ingestion counts (SPEC §4); so only rows that differ from the first use are flagged.
    """
    m = len(card_id)
    if m == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((np.arange(m), nonce, issuer, card_id))
    k = np.stack(
        [card_id[order].astype(np.uint64).view(np.int64), issuer[order], nonce[order]], axis=1
    )
    new = np.r_[True, np.any(k[1:] != k[:-1], axis=1)]
    first = order[np.maximum.accumulate(np.where(new, np.arange(m), 0))]
    out = np.zeros(m, dtype=bool)
    out[order] = np.any(device_key[order] != device_key[first], axis=1)
    return out
