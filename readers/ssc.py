"""Third-generation social-security cards with the Wuhan Tong function: pipe-delimited records.

The card carries two numbers: the holder's social-security number (personal data that the
clearing centre has no use for: checked, then dropped, kept in quarantine only as a keyed
token) and the serial of the card's transit application, which is the card's number for
clearing (tokenised into ``card_id`` like any ASN). The transit application is a T-Union
purse, so each debit carries the same TAC as a physical card's. docs/formats/ssc.md is the
format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from readers.base import ParseResult, parse_file, result
from readers.columns import Lines, RowChecks, split_lines
from readers.config import ReaderConfig
from readers.fields import (
    ASN,
    COMPACT_MS,
    DIGITS,
    HEX8,
    SSN,
    TAP_NAME,
    Spec,
    check_fields,
    error_record,
    stored_value_taps,
)
from tariffs.error_codes import ErrorCode
from tariffs.vocab import Media

TAG = "SSC3"  # third-generation card, layout 1
SEPARATOR = "|"
SPECS: tuple[Spec, ...] = (
    Spec("ss_number", SSN, "ssn"),
    Spec("transit_serial", ASN, "asn"),
    Spec("issuer", DIGITS, "issuer"),
    Spec("card_seq", DIGITS, "card_seq"),
    Spec("product", DIGITS, "product"),
    Spec("tap", TAP_NAME, "tap"),
    Spec("amount", DIGITS, "amount"),
    Spec("balance", DIGITS, "balance"),
    Spec("operator", DIGITS, "operator"),
    Spec("terminal_id", DIGITS, "terminal_id"),
    Spec("terminal_seq", DIGITS, "terminal_seq"),
    Spec("time", COMPACT_MS, "ts_ms"),
    Spec("city", DIGITS, "city"),
    Spec("line", DIGITS, "line"),
    Spec("stop", DIGITS, "stop"),
    Spec("tac", HEX8, "tac"),
)
COLUMNS = 1 + len(SPECS)  # the tag, then the fields


class SocialSecurityAdapter:
    """``ssc``: social-security cards whose transit application is a Wuhan Tong purse."""

    name = "ssc"
    description = "social-security cards with the transit purse: pipe-delimited records (.txt)"
    media: tuple[Media, ...] = (Media.SOCIAL_SECURITY,)
    suffix = ".txt"

    def sniff(self, head: bytes) -> bool:
        first = next((ln for ln in head.split(b"\n") if ln.strip()), b"")
        return first.startswith(f"{TAG}{SEPARATOR}".encode())

    def parse(self, path: Path, config: ReaderConfig) -> ParseResult:
        """Read and parse one file (``readers.base.parse_file``)."""
        return parse_file(self, path, config)

    def parse_bytes(self, data: bytes, config: ReaderConfig, *, name: str = "") -> ParseResult:
        key = config.pii_key_bytes()
        lines = split_lines(data)
        n = len(lines)
        checks = RowChecks(n)
        ascii_ok = _ascii_rows(lines)
        checks.flag(~ascii_ok, ErrorCode.RECORD_ENCODING, "", "a record is plain ASCII text")
        text = pa.array([lines.raw(i) if ascii_ok[i] else b"" for i in range(n)], type=pa.binary())
        parts = pc.split_pattern(text.cast(pa.string()), SEPARATOR)
        count = np.asarray(
            pc.list_value_length(parts).to_numpy(zero_copy_only=False), dtype=np.int64
        )
        shaped = count == COLUMNS
        checks.flag(
            ~shaped, ErrorCode.COLUMN_COUNT, "", f"a record has {COLUMNS} fields separated by |"
        )
        flat = parts.flatten()
        offsets = np.asarray(parts.offsets.to_numpy(), dtype=np.int64)[:-1]

        def column(j: int) -> pa.Array:
            idx = pa.array(np.where(shaped, offsets + j, 0), type=pa.int64(), mask=~shaped)
            return flat.take(idx) if len(flat) else pa.nulls(n, type=pa.string())

        tag = column(0)
        checks.flag(
            shaped
            & ~np.asarray(pc.equal(tag, TAG).fill_null(False).to_numpy(zero_copy_only=False)),
            ErrorCode.RECORD_TYPE,
            "tag",
            f"a social-security record starts with {TAG}",
        )
        strs, usable = {}, {}
        for j, s in enumerate(SPECS, start=1):
            strs[s.name] = column(j)
            empty = np.asarray(
                pc.equal(strs[s.name], "").fill_null(True).to_numpy(zero_copy_only=False)
            )
            checks.flag(empty, ErrorCode.FIELD_MISSING, s.name, f"{s.name} is required")
            usable[s.name] = ~empty
        checked = check_fields(SPECS, n, {}, strs, usable, checks)
        taps, keep = stored_value_taps(
            checked, checks, int(Media.SOCIAL_SECURITY), config, key, "tac"
        )

        def record(i: int) -> dict[str, object]:
            raw = lines.raw(i)
            fields = raw.decode("ascii", "backslashreplace").split(SEPARATOR)
            if not shaped[i]:
                return {"fields": len(fields)}
            valid = {name: bool(mask[i]) for name, mask in checked.valid.items()}
            out: dict[str, object] = {"tag": fields[0] if fields[0] == TAG else "<other>"}
            out.update(
                error_record(
                    SPECS, dict(zip((s.name for s in SPECS), fields[1:], strict=True)), valid, key
                )
            )
            return out

        return result(taps, checks.errors(lines, record), n, lines.rows[keep], lines)


def _ascii_rows(lines: Lines) -> np.ndarray:
    """Rows made only of 7-bit bytes (found from the positions of the file's high bytes)."""
    ok = np.ones(len(lines), dtype=bool)
    high = np.flatnonzero(lines.data >= 0x80)
    if len(high) and len(lines):
        row = np.searchsorted(lines.starts, high, side="right") - 1
        inside = (row >= 0) & (high < lines.ends[np.maximum(row, 0)])
        ok[row[inside]] = False
    return ok
