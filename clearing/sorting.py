"""The one sort of the fast path: a day's taps in card order (card_id, issuer, ts_ms, card_seq).

SPEC §5 walks each card's taps in ``(ts_ms, card_seq)`` order, and the leg table is sorted by
``LEG_SORT_KEYS`` = (card_id, issuer, board_ts_ms, board_card_seq); sorting the taps once by
(card_id, issuer, ts_ms, card_seq) gives both: every card is one contiguous run, and the legs
come out of the card walk already in table order.

Why not ``np.lexsort``: a 4-key lexsort of 10M rows takes seconds, and even a single
``np.argsort`` of the uint64 card ids takes about 1.7 s on the 2-core bench machine. Card ids are
keyed hashes (SPEC §3), so their high bits are close to uniform: one counting-sort pass on the
top bits of ``card_id - min(card_id)`` scatters the taps into about ``n / 8`` buckets of a few
cards each, and a bucket is finished by insertion sort on the full key (a merge sort when a
bucket is large, so clustered ids such as 1, 2, 3 stay O(n log n)). Every step is stable, so
equal keys keep their input order, exactly as ``np.lexsort`` does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# The sort packs (issuer, ts_ms - min ts_ms) into one uint64: 16 bits of issuer and 48 bits of
# milliseconds (8 900 years). A wider span of ts_ms (never in real data) falls back to lexsort.
TS_BITS = 48
MAX_BUCKET_BITS = 22  # 4M buckets: the counting array stays 32 MB
TAPS_PER_BUCKET = 8  # target mean bucket size: a few cards, finished by insertion sort
INSERTION_MAX = 48  # larger buckets are merge-sorted


def sort_taps(card_id: np.ndarray, issuer: np.ndarray, ts_ms: np.ndarray,
              card_seq: np.ndarray) -> np.ndarray:
    """The int64 permutation that orders taps by (card_id, issuer, ts_ms, card_seq), stably.

    Takes the TAP_SCHEMA dtypes: uint64, uint16, int64, int32 arrays of one length.
    """
    n = len(card_id)
    if not (len(issuer) == len(ts_ms) == len(card_seq) == n):
        raise ValueError("sort_taps: card_id, issuer, ts_ms and card_seq must have one length")
    card_id = np.ascontiguousarray(card_id, dtype=np.uint64)
    issuer = np.ascontiguousarray(issuer, dtype=np.uint16)
    ts_ms = np.ascontiguousarray(ts_ms, dtype=np.int64)
    card_seq = np.ascontiguousarray(card_seq, dtype=np.int32)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    span = int(ts_ms.max()) - int(ts_ms.min())
    if span >= 1 << TS_BITS:
        return sort_taps_naive(card_id, issuer, ts_ms, card_seq)
    bits = 1  # at least 1: a shift stays below 64
    while bits < MAX_BUCKET_BITS and (TAPS_PER_BUCKET << bits) < n:
        bits += 1
    # numpy allocates the big scratch arrays (it asks the kernel for huge pages, numba's
    # allocator does not): the random-access scatter below is TLB-bound without them.
    records = np.empty((n, 3), dtype=np.uint64)
    perm = np.empty(n, dtype=np.int64)
    _bucket_sort(card_id, issuer, ts_ms, card_seq, bits, records, perm)
    return perm


def sort_taps_naive(card_id: np.ndarray, issuer: np.ndarray, ts_ms: np.ndarray,
                    card_seq: np.ndarray) -> np.ndarray:
    """The obvious twin of ``sort_taps``: a stable 4-key ``np.lexsort`` (last key is primary)."""
    return np.lexsort((card_seq, ts_ms, issuer, card_id)).astype(np.int64)


@njit(cache=True, nogil=True)
def _bucket_sort(card_id: np.ndarray, issuer: np.ndarray, ts_ms: np.ndarray,
                 card_seq: np.ndarray, bits: int, records: np.ndarray, perm: np.ndarray) -> None:
    """Counting sort on the top ``bits`` of the card id's offset, then a sort of each bucket.

    ``records[i] = (card_id, issuer << 48 | ts_ms - min, input row)`` in bucket order.
    """
    n = card_id.size
    cmin = card_id[0]
    cmax = card_id[0]
    tmin = ts_ms[0]
    for i in range(n):
        c = card_id[i]
        if c < cmin:
            cmin = c
        if c > cmax:
            cmax = c
        if ts_ms[i] < tmin:
            tmin = ts_ms[i]
    span = cmax - cmin
    width = 0  # bit length of span; never shift by 64 (undefined in LLVM)
    while width < 64 and (span >> np.uint64(width)) != np.uint64(0):
        width += 1
    shift = np.uint64(max(0, width - bits))
    n_buckets = np.int64(1) << bits
    start = np.zeros(n_buckets + 1, dtype=np.int64)
    for i in range(n):
        start[np.int64((card_id[i] - cmin) >> shift) + 1] += 1
    for b in range(n_buckets):
        start[b + 1] += start[b]
    fill = start[:-1].copy()
    ts_shift = np.uint64(TS_BITS)
    for i in range(n):
        b = np.int64((card_id[i] - cmin) >> shift)
        p = fill[b]
        fill[b] = p + 1
        records[p, 0] = card_id[i]
        records[p, 1] = (np.uint64(issuer[i]) << ts_shift) | np.uint64(ts_ms[i] - tmin)
        records[p, 2] = np.uint64(i)
    scratch = np.empty((0, 3), dtype=np.uint64)
    for b in range(n_buckets):
        lo = start[b]
        hi = start[b + 1]
        if hi - lo <= INSERTION_MAX:
            _insertion_sort(records, lo, hi, card_seq)
        else:
            if scratch.shape[0] < hi - lo:
                scratch = np.empty((hi - lo, 3), dtype=np.uint64)
            _merge_sort(records, lo, hi, card_seq, scratch)
    for i in range(n):
        perm[i] = np.int64(records[i, 2])


@njit(cache=True, nogil=True, inline="always")
def _before(records: np.ndarray, a: int, b: int, card_seq: np.ndarray) -> bool:
    """Strictly before: row a's key < row b's key (card_seq read only on a full tie)."""
    ca = records[a, 0]
    cb = records[b, 0]
    if ca != cb:
        return ca < cb
    sa = records[a, 1]
    sb = records[b, 1]
    if sa != sb:
        return sa < sb
    return card_seq[np.int64(records[a, 2])] < card_seq[np.int64(records[b, 2])]


@njit(cache=True, nogil=True)
def _insertion_sort(records: np.ndarray, lo: int, hi: int, card_seq: np.ndarray) -> None:
    """Stable insertion sort of records[lo:hi]; buckets hold a few cards, often already ordered."""
    for i in range(lo + 1, hi):
        c = records[i, 0]
        s = records[i, 1]
        r = records[i, 2]
        q = card_seq[np.int64(r)]
        j = i - 1
        while j >= lo:
            cj = records[j, 0]
            if c > cj:
                break
            if c == cj:
                sj = records[j, 1]
                if s > sj:
                    break
                if s == sj and q >= card_seq[np.int64(records[j, 2])]:
                    break  # equal keys keep input order: stable
            records[j + 1, 0] = cj
            records[j + 1, 1] = records[j, 1]
            records[j + 1, 2] = records[j, 2]
            j -= 1
        records[j + 1, 0] = c
        records[j + 1, 1] = s
        records[j + 1, 2] = r


@njit(cache=True, nogil=True)
def _merge_sort(records: np.ndarray, lo: int, hi: int, card_seq: np.ndarray,
                scratch: np.ndarray) -> None:
    """Stable bottom-up merge sort of records[lo:hi] (runs of 16 start insertion-sorted)."""
    run = 16
    for a in range(lo, hi, run):
        _insertion_sort(records, a, min(a + run, hi), card_seq)
    width = run
    n = hi - lo
    while width < n:
        for a in range(lo, hi, 2 * width):
            mid = min(a + width, hi)
            end = min(a + 2 * width, hi)
            if mid >= end or not _before(records, mid, mid - 1, card_seq):
                continue  # already in order
            m = mid - a
            for k in range(m):
                scratch[k, 0] = records[a + k, 0]
                scratch[k, 1] = records[a + k, 1]
                scratch[k, 2] = records[a + k, 2]
            i = 0
            j = mid
            out = a
            while i < m and j < end:
                # take from the right run only when strictly before: stable
                if _right_first(records, j, scratch, i, card_seq):
                    records[out, 0] = records[j, 0]
                    records[out, 1] = records[j, 1]
                    records[out, 2] = records[j, 2]
                    j += 1
                else:
                    records[out, 0] = scratch[i, 0]
                    records[out, 1] = scratch[i, 1]
                    records[out, 2] = scratch[i, 2]
                    i += 1
                out += 1
            while i < m:
                records[out, 0] = scratch[i, 0]
                records[out, 1] = scratch[i, 1]
                records[out, 2] = scratch[i, 2]
                i += 1
                out += 1
        width *= 2


@njit(cache=True, nogil=True, inline="always")
def _right_first(records: np.ndarray, j: int, scratch: np.ndarray, i: int,
                 card_seq: np.ndarray) -> bool:
    """records[j] strictly before scratch[i]."""
    ca = records[j, 0]
    cb = scratch[i, 0]
    if ca != cb:
        return ca < cb
    sa = records[j, 1]
    sb = scratch[i, 1]
    if sa != sb:
        return sa < sb
    return card_seq[np.int64(records[j, 2])] < card_seq[np.int64(scratch[i, 2])]
