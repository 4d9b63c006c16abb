"""Sealing raw records: AES-GCM under a key derived (HKDF-SHA256) from the caller's key.

Quarantine keeps every rejected row's raw bytes so that a row can always be corrected (SPEC
v1.2 §4), but a raw record may hold a card or social-security number, and no file or row
Tongka writes may hold one in clear (docs/pii.md). So raw records are stored sealed. The key
is a parameter: the command line derives it from ``TONGKA_PII_KEY``; this module never reads
the environment. Each seal is bound to where it is stored (``context``, e.g. the batch and
row), so a sealed value copied onto another row does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from clearing.errors import InputError
from tariffs.error_codes import ErrorCode

VERSION = b"\x01"  # first byte of every sealed value: the format, so it can change later
NONCE_BYTES = 12  # AES-GCM's standard nonce; random per seal (2**-32 collision bound is far)
MIN_KEY_BYTES = 16
_INFO = b"tongka quarantine raw v1"  # HKDF info: this key is for nothing but quarantine


def derive_key(key: bytes) -> bytes:
    """The 256-bit AES key for quarantine raw records, derived from the caller's key."""
    if len(key) < MIN_KEY_BYTES:
        raise InputError(f"the sealing key has {len(key)} bytes; it needs at least "
                         f"{MIN_KEY_BYTES} (set TONGKA_PII_KEY to a long random secret)",
                         code=ErrorCode.SEAL_KEY_INVALID)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(key)


def seal(key: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """``plaintext`` encrypted and authenticated under ``key``, bound to ``context``."""
    return Sealer(key).seal(plaintext, context=context)


def unseal(key: bytes, sealed: bytes, *, context: bytes) -> bytes:
    """The plaintext of a ``seal`` result; InputError if the key or the context is wrong."""
    if sealed[:1] != VERSION or len(sealed) < 1 + NONCE_BYTES + 16:
        raise InputError("a sealed raw record has an unknown format", code=ErrorCode.SEAL_CORRUPT)
    nonce, body = sealed[1:1 + NONCE_BYTES], sealed[1 + NONCE_BYTES:]
    try:
        return AESGCM(derive_key(key)).decrypt(nonce, body, context)
    except InvalidTag:
        raise InputError("a sealed raw record does not open with this key: give the "
                         "TONGKA_PII_KEY it was sealed with",
                         code=ErrorCode.SEAL_KEY_WRONG) from None


class Sealer:
    """Seals many records under one key, deriving the AES key once (a batch can be large)."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(derive_key(key))

    def seal(self, plaintext: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return VERSION + nonce + self._aead.encrypt(nonce, plaintext, context)


def quarantine_context(batch_sha256: str, row: int) -> bytes:
    """What a quarantined row's seal is bound to: its batch's identity and its source row."""
    return f"quarantine:{batch_sha256}:{row}".encode()
