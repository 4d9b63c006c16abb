"""The stable row-error codes of the reader adapters, one per way a raw record can be wrong.

Codes are part of the contract with operators (quarantine reports, resubmission tools) and
never change meaning; docs/formats/README.md lists them. A record that fails several checks
is reported with the first one an adapter runs, in the order each format's page documents:
the record's shape, then each field in layout order, then the checks across fields, then
authenticity (TAC, signature), then replay.
"""

from __future__ import annotations

import enum


class RowCode(enum.StrEnum):
    """Why an adapter rejected a raw record (``RowError.code``)."""

    RECORD_EMPTY = "RECORD_EMPTY"  # reserved: blank lines are skipped, not rows (kept for plugins)
    RECORD_LENGTH = "RECORD_LENGTH"  # fixed-width record of the wrong length
    RECORD_TYPE = "RECORD_TYPE"  # unknown record tag or version
    RECORD_ENCODING = "RECORD_ENCODING"  # bytes that are not the format's character set
    JSON_INVALID = "JSON_INVALID"  # a JSON Lines row that is not one JSON object
    COLUMN_COUNT = "COLUMN_COUNT"  # delimited record with the wrong number of fields
    FIELD_MISSING = "FIELD_MISSING"  # a required field absent, null or empty
    FIELD_TYPE = "FIELD_TYPE"  # JSON value of the wrong type (string for number, float, bool, ...)
    FIELD_FORMAT = "FIELD_FORMAT"  # wrong characters or length (non-digit, bad hex, bad timestamp)
    FIELD_RANGE = "FIELD_RANGE"  # a number outside what the canonical tap can hold (SPEC §3 widths)
    TIME_INVALID = "TIME_INVALID"  # a timestamp that names no real instant (month 13, 25:00, ...)
    VALUE_UNKNOWN = "VALUE_UNKNOWN"  # a coded value outside its list (tap kind, device kind, ...)
    TXN_MISMATCH = "TXN_MISMATCH"  # transaction type and entry/exit flag contradict each other
    SS_NUMBER_INVALID = "SS_NUMBER_INVALID"  # social-security number failing its ISO 7064 check
    TAC_KEY_UNKNOWN = "TAC_KEY_UNKNOWN"  # no TAC key configured for the record's issuer
    TAC_INVALID = "TAC_INVALID"  # the TAC does not authenticate the record: forged or altered
    QR_MALFORMED = "QR_MALFORMED"  # the code is not a well-formed signed payload
    QR_UNKNOWN_KEY = "QR_UNKNOWN_KEY"  # the code names a key id the centre does not know
    QR_FORGED = "QR_FORGED"  # bad signature, or a key signing for another issuer
    QR_NOT_YET_VALID = "QR_NOT_YET_VALID"  # scanned before its issue time (beyond clock skew)
    QR_EXPIRED = "QR_EXPIRED"  # scanned after its expiry
    QR_REPLAYED = "QR_REPLAYED"  # a nonce already used by the account in another scan


ROW_CODES: tuple[str, ...] = tuple(c.value for c in RowCode)
