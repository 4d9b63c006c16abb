"""Card tokenisation (SPEC §3): card numbers become keyed HMAC tokens, one HMAC per distinct card.

``card_id`` = the first 8 bytes, read as a big-endian unsigned 64-bit integer, of
HMAC-SHA256(PII key, message), where the message is the ASCII text ``"<issuer>:<number>"``:
the issuer code in decimal without leading zeros, a colon, and the card number exactly as the
medium carries it (the physical or virtual card's ASN, the social-security card's transit
serial, or the QR account token). docs/pii.md states the same rule.

Tokens are computed once per distinct (issuer, number) in a batch and spread back with the
inverse index, so a day of ten million taps by two million cards costs two million HMACs.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from readers.mac import hmac_rows


def card_message(issuer: int, number: str | bytes) -> bytes:
    """The HMAC message of SPEC §3 for one card: ``b"<issuer>:<number>"``."""
    raw = number.encode("utf-8", "surrogatepass") if isinstance(number, str) else bytes(number)
    return str(int(issuer)).encode("ascii") + b":" + raw


def token(key: bytes, message: bytes) -> int:
    """The 64-bit token of one message (big-endian first 8 bytes of HMAC-SHA256)."""
    return int.from_bytes(hmac.digest(key, message, hashlib.sha256)[:8], "big")


def token_hex(key: bytes, message: bytes) -> str:
    """The token as 16 hex digits: what error records carry instead of a personal number."""
    return f"{token(key, message):016x}"


def field_token(key: bytes, field_name: str, value: str | bytes) -> str:
    """A keyed token of any other personal value (social-security number, wallet account)."""
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)
    return token_hex(key, field_name.encode("ascii") + b"=" + raw)


def tokens(key: bytes, messages: Iterable[bytes]) -> np.ndarray:
    """Tokens of distinct messages, as uint64."""
    out = [token(key, m) for m in messages]
    return np.array(out, dtype=np.uint64)


def card_ids(key: bytes, issuers: np.ndarray, numbers: pa.Array) -> np.ndarray:
    """SPEC §3 ``card_id`` of every row: one HMAC per distinct (issuer, number), then spread back.

    ``numbers`` is a string or binary Arrow array without nulls, aligned with ``issuers``.
    """
    if len(numbers) == 0:
        return np.zeros(0, dtype=np.uint64)
    issuer_text = pc.cast(pa.array(np.asarray(issuers, dtype=np.int64)), pa.string())
    messages = pc.binary_join_element_wise(issuer_text, numbers.cast(pa.string()), ":")
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    encoded = messages.dictionary_encode()
    distinct = encoded.dictionary.cast(pa.binary()).to_pylist()
    out: np.ndarray = tokens(key, distinct)[encoded.indices.to_numpy(zero_copy_only=False)]
    return out


def card_ids_fixed(key: bytes, issuers: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    """``card_ids`` for card numbers held as an (n, w) ASCII block (the fixed-width formats).

    The distinct cards are found on the raw bytes (issuer and number side by side as one
    fixed-size key, hashed by Arrow); their messages are built per issuer as one block
    (``"<issuer>:" + number`` has one width per issuer), so no Python object is made per card.
    """
    n, w = numbers.shape
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    keyed = np.empty((n, 2 + w), dtype=np.uint8)
    keyed[:, :2] = np.asarray(issuers, dtype=">u2").view(np.uint8).reshape(n, 2)
    keyed[:, 2:] = numbers
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(2 + w), n, [None, pa.py_buffer(keyed)])
    encoded = fixed.dictionary_encode()
    distinct = np.frombuffer(encoded.dictionary.buffers()[1], dtype=np.uint8)
    distinct = distinct[encoded.dictionary.offset * (2 + w) :][: len(encoded.dictionary) * (2 + w)]
    distinct = distinct.reshape(-1, 2 + w)
    d_issuer = distinct[:, :2].copy().view(">u2").ravel().astype(np.int64)
    ids = np.empty(len(distinct), dtype=np.uint64)
    for issuer in np.unique(d_issuer):
        rows = np.flatnonzero(d_issuer == issuer)
        prefix = np.frombuffer(str(int(issuer)).encode("ascii") + b":", dtype=np.uint8)
        block = np.empty((len(rows), len(prefix) + w), dtype=np.uint8)
        block[:, : len(prefix)] = prefix
        block[:, len(prefix) :] = distinct[rows, 2:]
        ids[rows] = hmac_rows(key, block, 8).copy().view(">u8").ravel()
    out: np.ndarray = ids[encoded.indices.to_numpy(zero_copy_only=False)]
    return out
