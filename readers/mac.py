"""HMAC-SHA256 over many fixed-width messages at once: the per-record cost of TACs and tokens.

HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)) (RFC 2104). The two keyed prefixes are one
64-byte SHA-256 block each, so their hash states ("midstates") are computed once per key and
copied per message: each message then costs one ``copy``/``update``/``digest`` pair in
OpenSSL instead of a full ``hmac.digest`` with its key schedule. Measured on this machine
this halves the cost per record against ``hmac.digest`` (bench/test_bench_readers.py); a
numba SHA-256 was slower than OpenSSL and is not used. Tests check every result against
``hmac.digest``.
"""

from __future__ import annotations

import hashlib

import numpy as np

_BLOCK = 64  # SHA-256 block size in bytes


def _midstates(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()  # RFC 2104: long keys are hashed first
    padded = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
    return inner, outer


def hmac_at(
    key: bytes, data: bytes | memoryview, starts: np.ndarray, width: int, nbytes: int
) -> np.ndarray:
    """The first ``nbytes`` of HMAC-SHA256(key, data[s : s + width]) for each offset ``s``.

    Reading the messages in place (the raw file's bytes) saves copying them into a block.
    """
    n = len(starts)
    if n == 0:
        return np.zeros((0, nbytes), dtype=np.uint8)
    inner, outer = _midstates(key)
    icopy, ocopy = inner.copy, outer.copy
    view = memoryview(data)
    digests: list[bytes] = []
    append = digests.append
    for s in starts.tolist():
        h = icopy()
        h.update(view[s : s + width])
        o = ocopy()
        o.update(h.digest())
        append(o.digest())
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(n, 32)[:, :nbytes]


def hmac_rows(key: bytes, block: np.ndarray, nbytes: int) -> np.ndarray:
    """The first ``nbytes`` of HMAC-SHA256(key, row) of every row of an (n, w) uint8 block."""
    n, w = block.shape
    data = np.ascontiguousarray(block).tobytes()
    return hmac_at(key, data, np.arange(0, n * w, w, dtype=np.int64), w, nbytes)


def hmac_messages(key: bytes, messages: list[bytes], nbytes: int) -> np.ndarray:
    """The first ``nbytes`` of HMAC-SHA256(key, m) of messages of any length: (n, nbytes)."""
    if not messages:
        return np.zeros((0, nbytes), dtype=np.uint8)
    inner, outer = _midstates(key)
    icopy, ocopy = inner.copy, outer.copy
    digests: list[bytes] = []
    for m in messages:
        h = icopy()
        h.update(m)
        o = ocopy()
        o.update(h.digest())
        digests.append(o.digest()[:nbytes])
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(messages), nbytes)
