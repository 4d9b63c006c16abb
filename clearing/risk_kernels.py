"""The compiled kernels of the risk signals (SPEC v1.2 §10); ``clearing.risk`` drives them.

Split from ``clearing.risk`` so that the orchestration (which arrays go in, in which blocks, on
which threads, and what the results mean) reads apart from the loops. Each kernel is called
from one place in ``clearing.risk`` and is tested through it against its plain twin in
``clearing.risk_reference``; nothing here allocates per tap in Python or touches Arrow.

Sections: stop coordinates; the per-card walk over blocks of taps in card order (and the two
ways a block is gathered: through an order, or from pricing's sorted records); the replay
prefilter and probes; the per-device counts of DEBIT_MISMATCH.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from clearing import risk_reference as ref
from clearing.sorting import (
    W_CARD,
    rec_card_seq,
    rec_debit,
    rec_issuer,
    rec_row,
    rec_stop,
    rec_ts,
)
from clearing.tapstore import CARD_SEED, DEVICE_SEED, mix_hash, probe_key

# ---------------------------------------------------------------------------------------------
# Stop coordinates


@njit(cache=True, nogil=True)
def lookup_coordinates(stop: np.ndarray, dense_lat: np.ndarray,  # pragma: no cover
                       dense_lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # one pass, where masks and fancy indexing made five over ten million taps
    lat = np.empty(len(stop), np.float64)
    lon = np.empty(len(stop), np.float64)
    for i in range(len(stop)):
        s = np.int64(stop[i])
        if 0 <= s < len(dense_lat):
            lat[i] = dense_lat[s]
            lon[i] = dense_lon[s]
        else:
            lat[i] = np.nan
            lon[i] = np.nan
    return lat, lon

# ---------------------------------------------------------------------------------------------
# Per-card signals: blocks of whole cards in card order, walked once

BACKWARDS = np.int64(ref.CARD_SEQ_BACKWARDS)  # the kinds as the compiled walk emits them
BREAK = np.int64(ref.BALANCE_BREAK)
TRAVEL = np.int64(ref.IMPOSSIBLE_TRAVEL)
# a block's fields in card order, rows of one int64 array (card ids and coordinates apart)
F_ISSUER, F_TS, F_SEQ, F_DEBIT, F_BALANCE, F_ROW = range(6)
BLOCK_FIELDS = 6


@njit(cache=True, nogil=True)
def metres(lat1: float, lon1: float, lat2: float, lon2: float) -> np.int64:  # pragma: no cover
    # the same formula, operation for operation, as risk_reference.haversine_metres
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    d = 2.0 * 6_371_008.8 * math.asin(math.sqrt(min(1.0, a)))
    return np.int64(math.floor(d + 0.5))


@njit(cache=True, nogil=True)
def order_cut(order: np.ndarray, card: np.ndarray, issuer: np.ndarray,  # pragma: no cover
              at: int) -> int:
    """The first position >= ``at`` of ``order`` where a card starts (its length if none)."""
    n = len(order)
    while 0 < at < n and card[order[at]] == card[order[at - 1]] \
            and issuer[order[at]] == issuer[order[at - 1]]:
        at += 1
    return min(at, n)


@njit(cache=True, nogil=True)
def record_cut(records: np.ndarray, at: int) -> int:  # pragma: no cover
    """The first record >= ``at`` where a card starts (the record count if none)."""
    n: int = records.shape[0]
    while 0 < at < n and records[at, W_CARD] == records[at - 1, W_CARD] \
            and rec_issuer(records, at) == rec_issuer(records, at - 1):
        at += 1
    return min(at, n)


@njit(cache=True, nogil=True)
def gather_order(order: np.ndarray, lo: int, hi: int, seen: np.ndarray,  # pragma: no cover
                 card: np.ndarray, issuer: np.ndarray, ts: np.ndarray, seq: np.ndarray,
                 debit: np.ndarray, bal: np.ndarray, lat: np.ndarray, lon: np.ndarray,
                 c: np.ndarray, f: np.ndarray, geo: np.ndarray) -> None:
    """Positions [lo, hi) of ``order`` into the block buffers (``c`` card ids, ``f`` the int
    fields, ``geo`` lat and lon), one column at a time; marks each row in ``seen``.

    A tight gather per column streams through memory far faster than the card walk reading
    each tap's fields through ``order`` (a cache miss per field, stalled by its branches).
    """
    rows = order[lo:hi]
    m = hi - lo
    for k in range(m):
        c[k] = card[rows[k]]
        seen[rows[k]] = True
        f[F_ROW, k] = rows[k]
    for k in range(m):
        f[F_ISSUER, k] = issuer[rows[k]]
    for k in range(m):
        f[F_TS, k] = ts[rows[k]]
    for k in range(m):
        f[F_SEQ, k] = seq[rows[k]]
    for k in range(m):
        f[F_DEBIT, k] = debit[rows[k]]
    for k in range(m):
        f[F_BALANCE, k] = bal[rows[k]]
    for k in range(m):
        geo[0, k] = lat[rows[k]]
    for k in range(m):
        geo[1, k] = lon[rows[k]]


@njit(cache=True, nogil=True)
def gather_records(records: np.ndarray, lo: int, hi: int, seen: np.ndarray,  # pragma: no cover
                   bal: np.ndarray, dense_lat: np.ndarray, dense_lon: np.ndarray,
                   c: np.ndarray, f: np.ndarray, geo: np.ndarray) -> bool:
    """Records [lo, hi) (pricing's, already in card order) into the block buffers: their
    fields are read in sequence; only ``bal`` (empty: no balances) is gathered by row, and
    coordinates come from the stop's entry in the small dense tables. False when a record's
    row is not a row of ``seen``."""
    n = len(seen)
    for k in range(hi - lo):
        i = lo + k
        r = rec_row(records, i)
        if r < 0 or r >= n:
            return False
        seen[r] = True
        c[k] = records[i, W_CARD]
        f[F_ROW, k] = r
        f[F_ISSUER, k] = rec_issuer(records, i)
        f[F_TS, k] = rec_ts(records, i)
        f[F_SEQ, k] = rec_card_seq(records, i)
        f[F_DEBIT, k] = rec_debit(records, i)
        s = rec_stop(records, i)
        if s < len(dense_lat):  # as tap_coordinates
            geo[0, k] = dense_lat[s]
            geo[1, k] = dense_lon[s]
        else:
            geo[0, k] = np.nan
            geo[1, k] = np.nan
    if len(bal) == 0:
        for k in range(hi - lo):
            f[F_BALANCE, k] = -1  # clearing.taps.BALANCE_UNKNOWN
    else:
        for k in range(hi - lo):
            f[F_BALANCE, k] = bal[f[F_ROW, k]]
    return True


@njit(cache=True, nogil=True)
def walk(m: int, c: np.ndarray, f: np.ndarray,  # pragma: no cover
         geo: np.ndarray) -> tuple[np.ndarray, bool]:
    """The per-card signals of a block of ``m`` taps in card order (whole cards), as
    ``(kind, a, b)`` table rows in the order found, and whether the block really is in card
    order (the key (card, issuer, ts_ms, card_seq) never goes down)."""
    iss, t, q, d, b, rows = f[F_ISSUER], f[F_TS], f[F_SEQ], f[F_DEBIT], f[F_BALANCE], f[F_ROW]
    la, lo_ = geo[0], geo[1]
    for k in range(1, m):
        if c[k] != c[k - 1]:
            if c[k] < c[k - 1]:
                return np.empty((0, 3), np.int64), False
        elif iss[k] != iss[k - 1]:
            if iss[k] < iss[k - 1]:
                return np.empty((0, 3), np.int64), False
        elif t[k] != t[k - 1]:
            if t[k] < t[k - 1]:
                return np.empty((0, 3), np.int64), False
        elif q[k] < q[k - 1]:
            return np.empty((0, 3), np.int64), False
    out = np.empty((16, 3), np.int64)
    found = 0
    i = 0
    while i < m:
        j = i + 1
        while j < m and c[j] == c[i] and iss[j] == iss[i]:
            j += 1
        prev_sv = -1
        monotonic = True
        for k in range(i, j):
            if d[k] >= 0:
                if prev_sv >= 0 and q[k] < q[prev_sv]:
                    out, found = emit(out, found, BACKWARDS, rows[prev_sv], rows[k])
                prev_sv = k
            if k > i:
                p = k - 1
                if q[k] < q[p]:
                    monotonic = False
                # SPEC §10: a tap without coordinates is skipped, nothing pairs across it
                if not (np.isnan(la[k]) or np.isnan(la[p])):
                    dt_ = t[k] - t[p]
                    # the arc is at most R(|dphi| + |dlambda|): most pairs are too far apart in
                    # time to be impossible, and need no trigonometry (0.1 % and 2 m of margin)
                    bound = 6_371_008.8 * 1.001 * math.radians(
                        abs(la[k] - la[p]) + abs(lo_[k] - lo_[p])) + 2.0
                    if 24.0 * bound >= dt_:
                        dist = metres(la[p], lo_[p], la[k], lo_[k])
                        if 24 * dist > dt_:
                            out, found = emit(out, found, TRAVEL, rows[p], rows[k])
        if j - i > 1:
            if monotonic:  # the usual case: counters already in order, no sort needed
                for k in range(i + 1, j):
                    if breaks(k - 1, k, q, d, b):
                        out, found = emit(out, found, BREAK, rows[k - 1], rows[k])
            else:  # stable: taps with one counter stay in (ts_ms, card_seq) order
                by_seq = i + np.argsort(q[i:j], kind="mergesort")
                for r in range(1, j - i):
                    x, y = by_seq[r - 1], by_seq[r]
                    if breaks(x, y, q, d, b):
                        out, found = emit(out, found, BREAK, rows[x], rows[y])
        i = j
    return out[:found], True


@njit(inline="always")
def breaks(x: int, y: int, q: np.ndarray, d: np.ndarray,  # pragma: no cover
           b: np.ndarray) -> bool:
    # SPEC §10 BALANCE_BREAK: counters n, n+1 leave no room for a top-up in between
    broken: bool = (q[y] - q[x] == 1 and d[x] >= 0 and d[y] >= 0 and b[x] >= 0 and b[y] >= 0
                    and b[y] != b[x] - d[y])
    return broken


@njit(inline="always")
def emit(out: np.ndarray, found: int, kind: np.int64, a: int,  # pragma: no cover
         b: int) -> tuple[np.ndarray, int]:
    if found == len(out):  # signals are rare: grow by doubling
        grown = np.empty((2 * len(out), 3), np.int64)
        grown[:found] = out
        out = grown
    out[found, 0] = kind
    out[found, 1] = a
    out[found, 2] = b
    return out, found + 1

# ---------------------------------------------------------------------------------------------
# Replays: a cheap filter in front of the day's key table (``clearing.risk.ReplayIndex``)


@njit(inline="always")
def filter_hash(issuer: int, card: int, seq: int) -> np.uint64:  # pragma: no cover
    # two multiplies, where the table's hash takes six: card ids are keyed hashes already
    # (SPEC §3), and the final multiply's top bits spread any ids (Fibonacci hashing)
    k = (np.uint64(card) ^ (np.uint64(seq) * np.uint64(0x9E3779B97F4A7C15))
         ^ (np.uint64(issuer) << np.uint64(48)))
    return k * np.uint64(0xD6E8FEB86659FD93)


@njit(cache=True, nogil=True)
def key_filter(k0: np.ndarray, k1: np.ndarray, k2: np.ndarray,  # pragma: no cover
               log2: int) -> np.ndarray:
    """A bitmap of 2**log2 bits with the bit of every key set (``filter_hash``'s top bits)."""
    bits = np.zeros(1 << (log2 - 6), np.uint64)
    shift = np.uint64(64 - log2)
    for i in range(len(k0)):
        b = filter_hash(k0[i], k1[i], k2[i]) >> shift
        bits[b >> np.uint64(6)] |= np.uint64(1) << (b & np.uint64(63))
    return bits


@njit(cache=True, nogil=True)
def probe_filtered(bits: np.ndarray, shift: int, table: np.ndarray,  # pragma: no cover
                   k0: np.ndarray, k1: np.ndarray, k2: np.ndarray, s0: np.ndarray,
                   s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """``tapstore.probe_groups`` behind the filter: the same hash, the same table, so the
    same answer; a key whose filter bit is clear is absent and skips the table."""
    sh = np.uint64(shift)
    out = np.full(len(s0), -1, np.int64)
    for i in range(len(s0)):
        b = filter_hash(s0[i], s1[i], s2[i]) >> sh
        if (bits[b >> np.uint64(6)] >> (b & np.uint64(63))) & np.uint64(1) == 0:
            continue
        out[i] = probe_key(table, k0, k1, k2, CARD_SEED, s0[i], s1[i], s2[i])
    return out


@njit(cache=True, nogil=True)
def probe_records(bits: np.ndarray, shift: int, table: np.ndarray,  # pragma: no cover
                  k0: np.ndarray, k1: np.ndarray, k2: np.ndarray,
                  records: np.ndarray) -> np.ndarray:
    """``probe_filtered`` with the probing keys read from tap records in sequence: per
    record, the key group it hits, -1 for none."""
    sh = np.uint64(shift)
    out = np.full(records.shape[0], -1, np.int64)
    for i in range(records.shape[0]):
        s0 = rec_issuer(records, i)
        s1 = records[i, W_CARD]
        s2 = rec_card_seq(records, i)
        b = filter_hash(s0, s1, s2) >> sh
        if (bits[b >> np.uint64(6)] >> (b & np.uint64(63))) & np.uint64(1) == 0:
            continue
        out[i] = probe_key(table, k0, k1, k2, CARD_SEED, s0, s1, s2)
    return out

# ---------------------------------------------------------------------------------------------
# DEBIT_MISMATCH: per boarding device, in a hash table of the devices


@njit(cache=True, nogil=True)
def count_devices(op: np.ndarray, dev: np.ndarray, bad: np.ndarray,  # pragma: no cover
                  cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """``_device_counts`` with room for ``cap`` devices; -1 groups when there are more.
    Open addressing at load <= 1/4."""
    table = np.full(4 * cap, -1, np.int64)
    mask = np.uint64(len(table) - 1)
    g_op = np.empty(cap, np.int64)
    g_dev = np.empty(cap, np.int64)
    n = np.zeros(cap, np.int64)
    m = np.zeros(cap, np.int64)
    groups = 0
    for i in range(len(op)):
        slot = device_hash(op[i], dev[i]) & mask
        while True:
            g = table[slot]
            if g < 0 or (g_op[g] == op[i] and g_dev[g] == dev[i]):
                break
            slot = (slot + np.uint64(1)) & mask
        if g < 0:
            if groups == cap:
                return g_op, g_dev, n, m, -1
            g = groups
            groups += 1
            table[slot] = g
            g_op[g] = op[i]
            g_dev[g] = dev[i]
        n[g] += 1
        if bad[i]:
            m[g] += 1
    return g_op, g_dev, n, m, groups


@njit(inline="always")
def device_hash(op: int, dev: int) -> np.uint64:  # pragma: no cover
    # one splitmix round over the packed key (device ids fit 48 bits in practice; a wider id
    # only collides more, the probe compares the full key)
    return mix_hash(DEVICE_SEED, (np.uint64(op) << np.uint64(48)) ^ np.uint64(dev))


@njit(cache=True, nogil=True)
def device_lookup(op: np.ndarray, dev: np.ndarray, want_op: np.ndarray,  # pragma: no cover
                  want_dev: np.ndarray) -> np.ndarray:
    size = 2
    while size < 4 * len(want_op):
        size <<= 1
    mask = np.uint64(size - 1)
    table = np.full(size, -1, np.int64)
    for g in range(len(want_op)):
        s = device_hash(want_op[g], want_dev[g]) & mask
        while table[s] >= 0:
            s = (s + np.uint64(1)) & mask
        table[s] = g
    out = np.full(len(op), -1, np.int64)
    for i in range(len(op)):
        s = device_hash(op[i], dev[i]) & mask
        while True:
            g = table[s]
            if g < 0:
                break
            if want_op[g] == op[i] and want_dev[g] == dev[i]:
                out[i] = g
                break
            s = (s + np.uint64(1)) & mask
    return out
