# mypy: disable-error-code="return-value,arg-type,operator,call-arg"
# (numba kernels compute on numpy scalars: int64 where mypy expects int, uint64 keys)
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

Why records: taps arrive in reader order, so putting them in card order is one random access
per tap whatever the method. ``sort_tap_records`` makes that access move a whole tap as one
64-byte record (a cache line) during the scatter; matching and pricing then read the records
in order. Gathering the tap columns one by one instead costs a cache miss per tap per column,
and made pricing ten times slower.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

import numpy as np
from numba import njit

# The sort packs (issuer, ts_ms - min ts_ms) into one uint64: 16 bits of issuer and 48 bits of
# milliseconds (8 900 years). A wider span of ts_ms (never in real data) falls back to lexsort.
TS_BITS = 48
MAX_BUCKET_BITS = 24  # at most 16M buckets
TOP_BITS = 11  # 2048 top buckets: the scatter's write streams and counters stay in cache
TAPS_PER_BUCKET = 8  # target mean bucket size: a few cards, finished by insertion sort
INSERTION_MAX = 48  # larger buckets are merge-sorted
_T = TypeVar("_T")  # what a job of run_parallel returns

# One tap as a row of uint64 words. Words 0-2 are the sort key (card_id; issuer and ts offset;
# card_seq in the low half of word 2); word 3 is the input row. ``sort_taps`` sorts only these
# KEY_WORDS; ``sort_tap_records`` carries the fields matching and pricing read (TAP_WORDS).
W_CARD = 0  # card_id
W_KEY = 1  # issuer << 48 | (ts_ms - min ts_ms); after the lexsort fallback: issuer << 48 only
W_SEQ_STOP = 2  # card_seq (low 32 bits, two's complement) | stop << 32
W_ROW = 3  # the tap's row in the input
W_DEVICE = 4  # device_id (int64 bits)
W_LINE = 5  # operator | tap_type << 16 | product << 24 | line << 32
W_DEBIT = 6  # debited_fen (low 32 bits, two's complement) | media << 32
W_TS = 7  # ts_ms (int64 bits)
KEY_WORDS = 4
TAP_WORDS = 8
RECORD_COLUMNS: tuple[str, ...] = (
    "card_id", "issuer", "ts_ms", "card_seq", "stop", "device_id", "operator", "tap_type",
    "product", "line", "debited_fen", "media",
)


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
    tmin, tmax = int(ts_ms.min()), int(ts_ms.max())
    if tmax - tmin >= 1 << TS_BITS:
        return sort_taps_naive(card_id, issuer, ts_ms, card_seq)
    # numpy allocates the big arrays (it asks the kernel for huge pages, numba's allocator
    # does not): the random-access scatter is TLB-bound without them.
    records = np.empty((n, KEY_WORDS), dtype=np.uint64)
    plan, top = _bucketing([card_id])
    _scatter_keys(card_id, issuer, ts_ms, card_seq, plan, top[:-1].copy(), tmin, records)
    _refine(records, plan, top, _scratch(top, KEY_WORDS))
    return records[:, W_ROW].astype(np.int64)


def sort_taps_naive(card_id: np.ndarray, issuer: np.ndarray, ts_ms: np.ndarray,
                    card_seq: np.ndarray) -> np.ndarray:
    """The obvious twin of ``sort_taps``: a stable 4-key ``np.lexsort`` (last key is primary)."""
    return np.lexsort((card_seq, ts_ms, issuer, card_id)).astype(np.int64)


def sort_tap_records(chunks: Sequence[Mapping[str, np.ndarray]], threads: int = 1) -> np.ndarray:
    """uint64[n, TAP_WORDS]: the taps as records in the order of ``sort_taps``.

    ``chunks`` are consecutive pieces of the input (Parquet row groups, Arrow chunks: nothing
    is concatenated), each holding the ``RECORD_COLUMNS`` with their TAP_SCHEMA dtypes; a
    record's ``W_ROW`` counts rows across the pieces. Read fields with the ``rec_*`` functions.
    With ``threads > 1`` the scatter and the bucket sorts run on that many threads (the
    kernels release the GIL); the result is the same.
    """
    pieces = [[np.ascontiguousarray(chunk[name]) for name in RECORD_COLUMNS]
              for chunk in chunks if len(chunk["card_id"])]
    n = sum(len(p[0]) for p in pieces)
    records = np.empty((n, TAP_WORDS), dtype=np.uint64)
    if n == 0:
        return records
    tmin = min(int(p[2].min()) for p in pieces)
    tmax = max(int(p[2].max()) for p in pieces)
    if tmax - tmin >= 1 << TS_BITS:
        whole = [np.concatenate([p[k] for p in pieces]) for k in range(len(RECORD_COLUMNS))]
        _pack_taps(*whole, sort_taps_naive(*whole[:4]), records)
        return records
    plan = _plan([p[0] for p in pieces])
    parts = _split_rows(pieces, threads)  # consecutive row ranges, one per thread
    counts = run_parallel([partial(_part_counts, part, plan) for part in parts])
    top = np.cumsum(np.sum(counts, axis=0))  # where each top bucket starts
    fill = top[:-1].copy()
    jobs = []
    for part, count in zip(parts, counts, strict=True):
        # a part writes each bucket after the parts before it: the scatter stays stable
        jobs.append(partial(_scatter_part, part, plan, fill.copy(), tmin, records))
        fill += count[1:]
    run_parallel(jobs)
    run_parallel([partial(_refine_range, records, plan, top[lo:hi + 1])
                  for lo, hi in _split_buckets(top, threads)])
    return records


def sort_tap_records_streamed(card_ids: Sequence[np.ndarray], tmin: int, tmax: int,
                              chunks: Iterable[Mapping[str, np.ndarray]], threads: int = 1
                              ) -> np.ndarray:
    """``sort_tap_records`` of chunks that are read one at a time, never all held (issue 13).

    The counting sort needs every tap's top bucket before it places the first record, and the
    ts offset (``tmin``) for every record it writes: the caller reads those first, the
    ``card_ids`` of every chunk and the whole input's ``tmin``/``tmax`` (two columns of the
    twelve). ``chunks`` then yields each chunk's ``RECORD_COLUMNS`` in the same order, and each
    is scattered and dropped before the next, so memory holds the records and one chunk, not
    the whole input beside its records. The records are those of ``sort_tap_records`` on the
    chunks (byte for byte: same plan, same offsets, same scatter); a chunk whose card ids are
    not the ones counted raises ``ValueError`` (the input changed between the reads).
    """
    n = sum(len(c) for c in card_ids)
    chunks = _as_counted(chunks, card_ids)
    if n and tmax - tmin >= 1 << TS_BITS:  # the lexsort fallback needs the whole input
        return sort_tap_records(list(chunks), threads=threads)
    records = np.empty((n, TAP_WORDS), dtype=np.uint64)
    if n == 0:
        for _ in chunks:
            pass
        return records
    plan = _plan([c for c in card_ids if len(c)])
    threads = max(1, threads)
    # each chunk's rows cut into ``threads`` slices, counted side by side
    slices = [[(len(c) * k // threads, len(c) * (k + 1) // threads) for k in range(threads)]
              for c in card_ids]
    counts = [run_parallel([partial(_slice_counts, c, a, b, plan) for a, b in cut])
              for c, cut in zip(card_ids, slices, strict=True)]
    top = np.cumsum(np.sum([c for sliced in counts for c in sliced], axis=0))
    fill = top[:-1].copy()
    fills: list[list[np.ndarray]] = []
    for sliced in counts:  # a slice writes each bucket after the slices before it: stable
        fills.append([])
        for count in sliced:
            fills[-1].append(fill.copy())
            fill += count[1:]
    row0 = 0
    for k, chunk in enumerate(chunks):
        cols = [np.ascontiguousarray(chunk[name]) for name in RECORD_COLUMNS]
        run_parallel([partial(_scatter_taps, *(col[a:b] for col in cols), plan, f, row0 + a,
                              tmin, records)
                      for (a, b), f in zip(slices[k], fills[k], strict=True) if a < b])
        row0 += len(cols[0])
        del cols
    run_parallel([partial(_refine_range, records, plan, top[lo:hi + 1])
                  for lo, hi in _split_buckets(top, threads)])
    return records


def _as_counted(chunks: Iterable[Mapping[str, np.ndarray]], card_ids: Sequence[np.ndarray]
                ) -> Iterator[Mapping[str, np.ndarray]]:
    """``chunks``, each checked to hold the card ids counted for it, and as many as counted:
    records placed by counts of other taps would be wrong without any error."""
    k = -1
    for k, chunk in enumerate(chunks):
        if k >= len(card_ids):
            raise ValueError("sort_tap_records_streamed: more chunks than card_ids")
        if not np.array_equal(np.asarray(chunk["card_id"]), card_ids[k]):
            raise ValueError(f"sort_tap_records_streamed: chunk {k}'s card ids are not the "
                             "ones counted (the input changed between the reads)")
        yield chunk
    if k + 1 != len(card_ids):
        raise ValueError("sort_tap_records_streamed: fewer chunks than card_ids")


def _slice_counts(card_id: np.ndarray, lo: int, hi: int, plan: np.ndarray) -> np.ndarray:
    top = np.zeros((1 << int(plan[2])) + 1, dtype=np.int64)
    if lo < hi:
        _count_tops(card_id[lo:hi], plan, top)
    return top


def run_parallel(jobs: Sequence[Callable[[], _T]]) -> list[_T]:
    """Run no-argument callables, on threads when there are several; their results in order.

    The kernels are ``nogil``: threads run them side by side.
    """
    if len(jobs) <= 1:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(lambda job: job(), jobs))


def _split_rows(pieces: list[list[np.ndarray]], parts: int
                ) -> list[list[tuple[int, list[np.ndarray]]]]:
    """The pieces cut into ``parts`` runs of about equal rows: [(first row, columns), ...]."""
    n = sum(len(p[0]) for p in pieces)
    bounds = [n * k // max(parts, 1) for k in range(max(parts, 1) + 1)]
    out: list[list[tuple[int, list[np.ndarray]]]] = []
    for k in range(len(bounds) - 1):
        lo, hi = bounds[k], bounds[k + 1]
        run, row0 = [], 0
        for p in pieces:
            a, b = max(lo, row0), min(hi, row0 + len(p[0]))
            if a < b:
                run.append((a, [col[a - row0:b - row0] for col in p]))
            row0 += len(p[0])
        if run:
            out.append(run)
    return out


def _part_counts(part: list[tuple[int, list[np.ndarray]]], plan: np.ndarray) -> np.ndarray:
    top = np.zeros((1 << int(plan[2])) + 1, dtype=np.int64)
    for _row0, cols in part:
        _count_tops(cols[0], plan, top)
    return top


def _scatter_part(part: list[tuple[int, list[np.ndarray]]], plan: np.ndarray, fill: np.ndarray,
                  tmin: int, records: np.ndarray) -> None:
    for row0, cols in part:
        _scatter_taps(*cols, plan, fill, row0, tmin, records)


def _refine_range(records: np.ndarray, plan: np.ndarray, top: np.ndarray) -> None:
    _refine(records, plan, top, _scratch(top, records.shape[1]))


def _split_buckets(top: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """Top-bucket ranges [lo, hi) holding about equal records, one per thread."""
    n_top = len(top) - 1
    cuts = np.searchsorted(top, [top[-1] * k // parts for k in range(1, parts)])
    bounds = sorted({0, n_top, *(int(min(max(c, 0), n_top)) for c in cuts)})
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if a < b]


def _plan(card_ids: Sequence[np.ndarray]) -> np.ndarray:
    """uint64[4]: (min card id, shift, top bits, sub bits) of the two-level bucketing.

    A tap's bucket is ``key = (card_id - min) >> shift``, about ``n / TAPS_PER_BUCKET``
    buckets. The top ``top bits`` of the key pick one of at most ``2**TOP_BITS`` top buckets
    (the scatter from the input: few enough write streams to stay in cache), the low ``sub
    bits`` a bucket inside it (refined while the top bucket sits in cache).
    """
    ranges = [_card_range(c) for c in card_ids]
    cmin = min(int(r[0]) for r in ranges)
    cmax = max(int(r[1]) for r in ranges)
    width = (cmax - cmin).bit_length()
    # significant bits of a bucket key; at least 1 when ids differ, so a shift stays below 64
    bits = min(max(_bucket_bits(sum(len(c) for c in card_ids)), 1), width)
    sub = max(0, bits - TOP_BITS)
    return np.array([cmin, width - bits, bits - sub, sub], dtype=np.uint64)


def _bucketing(card_ids: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(plan, top starts): ``top`` is int64[top buckets + 1], where each top bucket starts."""
    plan = _plan(card_ids)
    top = np.zeros((1 << int(plan[2])) + 1, dtype=np.int64)
    for c in card_ids:
        _count_tops(c, plan, top)
    np.cumsum(top, out=top)
    return plan, top


def _scratch(top: np.ndarray, words: int) -> np.ndarray:
    """Room for the largest top bucket (a few hundred KB on hashed ids)."""
    largest = int(np.diff(top).max()) if len(top) > 1 else 0
    return np.empty((max(largest, 1), words), dtype=np.uint64)


def _bucket_bits(n: int) -> int:
    bits = 0
    while bits < MAX_BUCKET_BITS and (TAPS_PER_BUCKET << bits) < n:
        bits += 1
    return bits


# ---------------------------------------------------------------------------------------------
# Record fields, for the kernels


@njit(cache=True, nogil=True, inline="always")
def _low32_signed(word: int) -> int:
    v = np.int64(word & np.uint64(0xFFFFFFFF))
    return v - np.int64(1 << 32) if v >= np.int64(1 << 31) else v


@njit(cache=True, nogil=True, inline="always")
def rec_issuer(rec: np.ndarray, i: int) -> int:
    return np.int64(rec[i, W_KEY] >> np.uint64(48))


@njit(cache=True, nogil=True, inline="always")
def rec_card_seq(rec: np.ndarray, i: int) -> int:
    return _low32_signed(rec[i, W_SEQ_STOP])


@njit(cache=True, nogil=True, inline="always")
def rec_stop(rec: np.ndarray, i: int) -> int:
    return np.int64(rec[i, W_SEQ_STOP] >> np.uint64(32))


@njit(cache=True, nogil=True, inline="always")
def rec_row(rec: np.ndarray, i: int) -> int:
    return np.int64(rec[i, W_ROW])


@njit(cache=True, nogil=True, inline="always")
def rec_device(rec: np.ndarray, i: int) -> int:
    return np.int64(rec[i, W_DEVICE])


@njit(cache=True, nogil=True, inline="always")
def rec_operator(rec: np.ndarray, i: int) -> int:
    return np.int64(rec[i, W_LINE] & np.uint64(0xFFFF))


@njit(cache=True, nogil=True, inline="always")
def rec_tap_type(rec: np.ndarray, i: int) -> int:
    return np.int64((rec[i, W_LINE] >> np.uint64(16)) & np.uint64(0xFF))


@njit(cache=True, nogil=True, inline="always")
def rec_product(rec: np.ndarray, i: int) -> int:
    return np.int64((rec[i, W_LINE] >> np.uint64(24)) & np.uint64(0xFF))


@njit(cache=True, nogil=True, inline="always")
def rec_line(rec: np.ndarray, i: int) -> int:
    return np.int64(rec[i, W_LINE] >> np.uint64(32))


@njit(cache=True, nogil=True, inline="always")
def rec_debit(rec: np.ndarray, i: int) -> int:
    return _low32_signed(rec[i, W_DEBIT])


@njit(cache=True, nogil=True, inline="always")
def rec_media(rec: np.ndarray, i: int) -> int:
    return np.int64((rec[i, W_DEBIT] >> np.uint64(32)) & np.uint64(0xFF))


@njit(cache=True, nogil=True, inline="always")
def rec_ts(rec: np.ndarray, i: int) -> int:
    return np.int64(rec[i, W_TS])


def record_fields(records: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The tap columns ``names`` (any of ``RECORD_COLUMNS``) of some records, in their
    TAP_SCHEMA dtypes: what the record layout above packed, unpacked a column at a time."""
    u64 = np.uint64
    low32, low16, byte = u64(0xFFFFFFFF), u64(0xFFFF), u64(0xFF)

    def field(name: str) -> np.ndarray:
        if name == "card_id":
            return records[:, W_CARD].copy()
        if name == "issuer":
            return (records[:, W_KEY] >> u64(48)).astype(np.uint16)
        if name == "ts_ms":
            return records[:, W_TS].view(np.int64).copy()
        if name == "card_seq":
            return (records[:, W_SEQ_STOP] & low32).astype(np.uint32).view(np.int32)
        if name == "stop":
            return (records[:, W_SEQ_STOP] >> u64(32)).astype(np.uint32)
        if name == "device_id":
            return records[:, W_DEVICE].view(np.int64).copy()
        if name == "operator":
            return (records[:, W_LINE] & low16).astype(np.uint16)
        if name == "tap_type":
            return ((records[:, W_LINE] >> u64(16)) & byte).astype(np.uint8)
        if name == "product":
            return ((records[:, W_LINE] >> u64(24)) & byte).astype(np.uint8)
        if name == "line":
            return (records[:, W_LINE] >> u64(32)).astype(np.uint32)
        if name == "debited_fen":
            return (records[:, W_DEBIT] & low32).astype(np.uint32).view(np.int32)
        if name == "media":
            return ((records[:, W_DEBIT] >> u64(32)) & byte).astype(np.uint8)
        raise KeyError(f"a tap record holds no column {name!r}: {RECORD_COLUMNS}")

    return {name: field(name) for name in names}


def record_tap(records: np.ndarray, i: int, names: Sequence[str] = RECORD_COLUMNS
               ) -> dict[str, int]:
    """Record ``i``'s tap fields (error messages that name the tap pricing failed on)."""
    return {name: int(v[0]) for name, v in record_fields(records[i:i + 1], names).items()}


# ---------------------------------------------------------------------------------------------
# Kernels


@njit(cache=True, nogil=True)
def _card_range(card_id: np.ndarray) -> tuple[int, int]:
    cmin = card_id[0]
    cmax = card_id[0]
    for i in range(card_id.size):
        c = card_id[i]
        if c < cmin:
            cmin = c
        if c > cmax:
            cmax = c
    return cmin, cmax


@njit(cache=True, nogil=True, inline="always")
def _top_of(card: int, plan: np.ndarray) -> int:
    return np.int64(((card - plan[0]) >> plan[1]) >> plan[3])


@njit(cache=True, nogil=True)
def _count_tops(card_id: np.ndarray, plan: np.ndarray, top: np.ndarray) -> None:
    """Add each tap to the count of its top bucket (``top[b + 1]``, for the prefix sum)."""
    for i in range(card_id.size):
        top[_top_of(card_id[i], plan) + 1] += 1


@njit(cache=True, nogil=True, inline="always")
def _key_words(card: int, issuer: int, ts: int, tmin: int,
               seq: int) -> tuple[int, int]:
    key = (np.uint64(issuer) << np.uint64(TS_BITS)) | np.uint64(ts - tmin)
    return key, np.uint64(seq & 0xFFFFFFFF)


@njit(cache=True, nogil=True)
def _scatter_keys(card_id: np.ndarray, issuer: np.ndarray, ts_ms: np.ndarray,
                  card_seq: np.ndarray, plan: np.ndarray, fill: np.ndarray, tmin: int,
                  records: np.ndarray) -> None:
    """Counting-sort scatter of (card, key, card_seq, row) records into top-bucket order."""
    for i in range(card_id.size):
        b = _top_of(card_id[i], plan)
        p = fill[b]
        fill[b] = p + 1
        key, seq = _key_words(card_id[i], np.int64(issuer[i]), ts_ms[i], tmin,
                              np.int64(card_seq[i]))
        records[p, W_CARD] = card_id[i]
        records[p, W_KEY] = key
        records[p, W_SEQ_STOP] = seq
        records[p, W_ROW] = np.uint64(i)


@njit(cache=True, nogil=True, inline="always")
def _put_tap(records: np.ndarray, p: int, i: int, row: int, card_id: np.ndarray,
             issuer: np.ndarray, ts_ms: np.ndarray, card_seq: np.ndarray, stop: np.ndarray,
             device_id: np.ndarray, operator: np.ndarray, tap_type: np.ndarray,
             product: np.ndarray, line: np.ndarray, debited_fen: np.ndarray, media: np.ndarray,
             tmin: int) -> None:
    key, seq = _key_words(card_id[i], np.int64(issuer[i]), ts_ms[i], tmin, np.int64(card_seq[i]))
    records[p, W_CARD] = card_id[i]
    records[p, W_KEY] = key
    records[p, W_SEQ_STOP] = seq | (np.uint64(stop[i]) << np.uint64(32))
    records[p, W_ROW] = np.uint64(row)
    records[p, W_DEVICE] = np.uint64(device_id[i])
    records[p, W_LINE] = (np.uint64(operator[i]) | (np.uint64(tap_type[i]) << np.uint64(16))
                          | (np.uint64(product[i]) << np.uint64(24))
                          | (np.uint64(line[i]) << np.uint64(32)))
    records[p, W_DEBIT] = (np.uint64(np.int64(debited_fen[i]) & 0xFFFFFFFF)
                           | (np.uint64(media[i]) << np.uint64(32)))
    records[p, W_TS] = np.uint64(ts_ms[i])


@njit(cache=True, nogil=True)
def _scatter_taps(card_id: np.ndarray, issuer: np.ndarray, ts_ms: np.ndarray,
                  card_seq: np.ndarray, stop: np.ndarray, device_id: np.ndarray,
                  operator: np.ndarray, tap_type: np.ndarray, product: np.ndarray,
                  line: np.ndarray, debited_fen: np.ndarray, media: np.ndarray,
                  plan: np.ndarray, fill: np.ndarray, row0: int, tmin: int,
                  records: np.ndarray) -> None:
    """Counting-sort scatter of whole tap records into top-bucket order (the one pass that
    moves taps across memory: each record is written as one cache line)."""
    for i in range(card_id.size):
        b = _top_of(card_id[i], plan)
        p = fill[b]
        fill[b] = p + 1
        _put_tap(records, p, i, row0 + i, card_id, issuer, ts_ms, card_seq, stop, device_id,
                 operator, tap_type, product, line, debited_fen, media, tmin)


@njit(cache=True, nogil=True)
def _pack_taps(card_id: np.ndarray, issuer: np.ndarray, ts_ms: np.ndarray,
               card_seq: np.ndarray, stop: np.ndarray, device_id: np.ndarray,
               operator: np.ndarray, tap_type: np.ndarray, product: np.ndarray,
               line: np.ndarray, debited_fen: np.ndarray, media: np.ndarray, perm: np.ndarray,
               records: np.ndarray) -> None:
    """Records in a given order (the lexsort fallback): only the issuer stays in W_KEY."""
    for p in range(perm.size):
        i = perm[p]
        _put_tap(records, p, i, i, card_id, issuer, ts_ms, card_seq, stop, device_id, operator,
                 tap_type, product, line, debited_fen, media, ts_ms[i])


@njit(cache=True, nogil=True)
def _refine(records: np.ndarray, plan: np.ndarray, top: np.ndarray,
            scratch: np.ndarray) -> None:
    """Sort each top bucket: counting sort on the sub bits (through ``scratch``), then
    insertion sort of each small bucket (merge sort of a large one)."""
    width = records.shape[1]
    row = np.empty(width, dtype=np.uint64)  # one buffer for every insertion
    n_sub = np.int64(1) << np.int64(plan[3])
    sub_mask = np.uint64(n_sub - 1)
    sub_start = np.zeros(n_sub + 1, dtype=np.int64)
    for t in range(top.size - 1):
        lo = top[t]
        hi = top[t + 1]
        if hi - lo <= INSERTION_MAX:
            _insertion_sort(records, lo, hi, row)
            continue
        if n_sub == 1:
            _merge_sort(records, lo, hi, scratch, row)
            continue
        sub_start[:] = 0
        for i in range(lo, hi):
            sub_start[np.int64(((records[i, W_CARD] - plan[0]) >> plan[1]) & sub_mask) + 1] += 1
        for b in range(n_sub):
            sub_start[b + 1] += sub_start[b]
        for i in range(lo, hi):  # scatter into scratch, by sub-bucket, keeping order
            s = np.int64(((records[i, W_CARD] - plan[0]) >> plan[1]) & sub_mask)
            p = sub_start[s]
            sub_start[s] = p + 1
            for w in range(width):
                scratch[p, w] = records[i, w]
        for i in range(hi - lo):
            for w in range(width):
                records[lo + i, w] = scratch[i, w]
        a = lo  # sub_start[b] now holds the end of sub-bucket b
        for b in range(n_sub):
            e = lo + sub_start[b]
            if e - a <= INSERTION_MAX:
                _insertion_sort(records, a, e, row)
            else:
                _merge_sort(records, a, e, scratch, row)
            a = e


@njit(cache=True, nogil=True, inline="always")
def _less(c0: int, k0: int, s0: int, c1: int, k1: int,
          s1: int) -> bool:
    """(card, key, signed card_seq) strictly less."""
    if c0 != c1:
        return c0 < c1
    if k0 != k1:
        return k0 < k1
    return _low32_signed(s0) < _low32_signed(s1)


@njit(cache=True, nogil=True)
def _insertion_sort(records: np.ndarray, lo: int, hi: int, row: np.ndarray) -> None:
    """Stable insertion sort of records[lo:hi]; buckets hold a few cards, often in order."""
    width = records.shape[1]
    for i in range(lo + 1, hi):
        c = records[i, W_CARD]
        k = records[i, W_KEY]
        s = records[i, W_SEQ_STOP]
        j = i - 1
        if not _less(c, k, s, records[j, W_CARD], records[j, W_KEY], records[j, W_SEQ_STOP]):
            continue  # already in place: the common case
        for w in range(width):
            row[w] = records[i, w]
        while j >= lo and _less(c, k, s, records[j, W_CARD], records[j, W_KEY],
                                records[j, W_SEQ_STOP]):
            for w in range(width):
                records[j + 1, w] = records[j, w]
            j -= 1
        for w in range(width):
            records[j + 1, w] = row[w]


@njit(cache=True, nogil=True)
def _merge_sort(records: np.ndarray, lo: int, hi: int, scratch: np.ndarray,
                row: np.ndarray) -> None:
    """Stable bottom-up merge sort of records[lo:hi] (runs of 16 start insertion-sorted)."""
    width = records.shape[1]
    run = 16
    for a in range(lo, hi, run):
        _insertion_sort(records, a, min(a + run, hi), row)
    step = run
    n = hi - lo
    while step < n:
        for a in range(lo, hi, 2 * step):
            mid = min(a + step, hi)
            end = min(a + 2 * step, hi)
            if mid >= end or not _less(records[mid, W_CARD], records[mid, W_KEY],
                                       records[mid, W_SEQ_STOP], records[mid - 1, W_CARD],
                                       records[mid - 1, W_KEY], records[mid - 1, W_SEQ_STOP]):
                continue  # the two runs are already in order
            m = mid - a
            for k in range(m):
                for w in range(width):
                    scratch[k, w] = records[a + k, w]
            i = 0
            j = mid
            out = a
            while i < m and j < end:
                # the right run goes first only when strictly less: stable
                if _less(records[j, W_CARD], records[j, W_KEY], records[j, W_SEQ_STOP],
                         scratch[i, W_CARD], scratch[i, W_KEY], scratch[i, W_SEQ_STOP]):
                    for w in range(width):
                        records[out, w] = records[j, w]
                    j += 1
                else:
                    for w in range(width):
                        records[out, w] = scratch[i, w]
                    i += 1
                out += 1
            while i < m:
                for w in range(width):
                    records[out, w] = scratch[i, w]
                i += 1
                out += 1
        step *= 2
