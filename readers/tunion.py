"""The T-Union-style terminal transaction record (JT/T 978 in spirit) and its TAC.

Every stored-value medium (physical and shaped cards, phone NFC, wearables, social-security
cards) debits an electronic purse the same way, so its transaction is authenticated by the
same TAC over the same fixed-width block: the card format's record up to its TAC field. The
other formats rebuild that block from their own fields, so a TAC made for one medium never
verifies as another (the medium is a field of the block).

The TAC stands in for the real 3DES / SM4 MAC: the first 4 bytes of HMAC-SHA256 with the
issuer's TAC key (``ReaderConfig.tac_key``), written as 8 upper-case hex digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clearing.taps import TapType
from readers.columns import INT32_MAX, UINT16_MAX, hex_bytes, put_compact_time, put_digits
from readers.config import ReaderConfig
from readers.mac import hmac_at

RECORD_TAG = b"TU1"  # record type "TU", layout version 1
TAC_BYTES = 4


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    offset: int
    width: int


def _layout(*spec: tuple[str, int]) -> tuple[Field, ...]:
    out, offset = [], 0
    for name, width in spec:
        out.append(Field(name, offset, width))
        offset += width
    return tuple(out)


# docs/formats/card.md documents this table; the order is also the order fields are checked.
LAYOUT: tuple[Field, ...] = _layout(
    ("tag", 3),  # "TU1"
    (
        "form",
        1,
    ),  # medium: 0 card, 1 shaped card (2 NFC, 3 wearable, 4 social-security in the TAC block)
    ("issuer", 5),  # issuer code (registry)
    ("asn", 20),  # card number (application serial number): personal data
    ("card_seq", 10),  # card transaction counter
    ("txn_type", 2),  # 06 simple purchase (flat fare), 09 compound purchase (entry / exit)
    ("direction", 1),  # 0 none, 1 entry, 2 exit
    ("product", 2),  # card type: SPEC §3 product
    ("amount", 8),  # fen debited
    ("balance", 10),  # purse balance after the debit, fen
    ("operator", 5),  # operator code (registry)
    ("terminal_id", 12),  # reader id (PSAM terminal number)
    ("terminal_seq", 12),  # reader transaction counter (grows across days)
    ("time", 17),  # YYYYMMDDhhmmssfff, China Standard Time
    ("city", 6),  # GB/T 2260 code of the tap's city
    ("line", 6),
    ("stop", 8),
    ("tac", 8),  # hex, over every byte before it
)
FIELDS: dict[str, Field] = {f.name: f for f in LAYOUT}
BLOCK_WIDTH = FIELDS["tac"].offset  # the TAC covers the record up to the TAC itself
RECORD_WIDTH = BLOCK_WIDTH + FIELDS["tac"].width

TXN_SIMPLE = 6  # "06": one debit, flat fare
TXN_COMPOUND = 9  # "09": compound purchase, entry or exit of a distance-priced network

# The largest value each numeric field can carry, where the canonical tap (SPEC §3) or the
# record's width is narrower than the digits: FIELD_RANGE beyond these.
MAX_VALUE: dict[str, int] = {
    "issuer": UINT16_MAX,
    "card_seq": INT32_MAX,
    "product": 99,
    "amount": 99_999_999,
    "balance": 9_999_999_999,
    "operator": UINT16_MAX,
    "terminal_id": 999_999_999_999,
    "terminal_seq": 999_999_999_999,
    "city": 999_999,
    "line": 999_999,
    "stop": 99_999_999,
}
MAX_TS_MS = 253_402_271_999_999  # 9999-12-31 23:59:59.999 CST: the last instant "time" can write


def txn_of_tap_type(tap_type: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(txn_type, direction) of canonical tap types: FLAT 06/0, ENTRY 09/1, EXIT 09/2."""
    tap_type = np.asarray(tap_type, dtype=np.int64)
    txn = np.where(tap_type == TapType.FLAT, TXN_SIMPLE, TXN_COMPOUND)
    direction = np.where(tap_type == TapType.FLAT, 0, tap_type)
    return txn, direction


def build_blocks(cols: dict[str, np.ndarray], asn: np.ndarray) -> np.ndarray:
    """The (n, BLOCK_WIDTH) TAC block of each row from its values (each within ``MAX_VALUE``).

    ``cols`` holds int64 arrays for form, issuer, card_seq, txn_type, direction, product,
    amount, balance, operator, terminal_id, terminal_seq, ts_ms, city, line, stop; ``asn`` is
    the (n, 20) ASCII card numbers.
    """
    n = len(asn)
    out = np.empty((n, BLOCK_WIDTH), dtype=np.uint8)
    out[:, 0:3] = np.frombuffer(RECORD_TAG, dtype=np.uint8)
    for f in LAYOUT[1:-1]:
        if f.name == "asn":
            out[:, f.offset : f.offset + f.width] = asn
        elif f.name == "time":
            put_compact_time(out, f.offset, cols["ts_ms"])
        else:
            put_digits(out, f.offset, f.width, cols[f.name])
    return out


def expected_tacs(
    blocks: np.ndarray, issuers: np.ndarray, config: ReaderConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The TAC each (n, BLOCK_WIDTH) block should carry, (n, 4) uint8, and whether its issuer
    has a key at all."""
    n, w = blocks.shape
    data = np.ascontiguousarray(blocks).tobytes()
    return expected_tacs_at(data, np.arange(0, n * w, w, dtype=np.int64), issuers, config)


def expected_tacs_at(
    data: bytes | memoryview, starts: np.ndarray, issuers: np.ndarray, config: ReaderConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``expected_tacs`` of the blocks that start at ``starts`` in ``data`` (read in place)."""
    n = len(starts)
    out = np.zeros((n, TAC_BYTES), dtype=np.uint8)
    has_key = np.zeros(n, dtype=bool)
    issuers = np.asarray(issuers, dtype=np.int64)
    for issuer in np.unique(issuers):
        key = config.tac_key(int(issuer))
        if key is None:
            continue
        rows = np.flatnonzero(issuers == issuer)
        has_key[rows] = True
        out[rows] = hmac_at(key, data, starts[rows], BLOCK_WIDTH, TAC_BYTES)
    return out, has_key


def tac_hex(tacs: np.ndarray) -> np.ndarray:
    """(n, 4) TAC bytes as (n, 8) upper-case ASCII hex."""
    digits = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
    out = np.empty((len(tacs), 2 * TAC_BYTES), dtype=np.uint8)
    out[:, 0::2] = digits[tacs >> 4]
    out[:, 1::2] = digits[tacs & 15]
    return out


def check_tacs(
    blocks: np.ndarray, issuers: np.ndarray, tac_text: np.ndarray, config: ReaderConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(no key for the issuer, TAC mismatch) masks for rows whose block and hex TAC parsed."""
    return _compare(tac_text, *expected_tacs(blocks, issuers, config))


def check_tacs_at(
    data: bytes | memoryview,
    starts: np.ndarray,
    issuers: np.ndarray,
    tac_text: np.ndarray,
    config: ReaderConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """``check_tacs`` for blocks read in place from ``data`` at ``starts``."""
    return _compare(tac_text, *expected_tacs_at(data, starts, issuers, config))


def _compare(
    tac_text: np.ndarray, want: np.ndarray, has_key: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    given, _ = hex_bytes(tac_text)
    return ~has_key, has_key & np.any(given != want, axis=1)
