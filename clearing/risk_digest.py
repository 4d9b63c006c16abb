"""A cleared day's card-key digest: what CARD_SEQ_REPLAY's lookback reads instead of Parquet.

The replay lookback (``clearing.risk``, SPEC §4/§10) asks, per clear, which of the day's card
keys (issuer, card_id, card_seq) were accepted on each of the 29 days before it (from
``risk.REPLAY_REACH_DAYS`` back to two days back). Decoding those days' stored keys from Parquet
costs 20-35 s at ten million taps a day. Instead, each clear writes beside its legs

    legs/day=D/keys.json         which digest is current, and what it covers
    legs/day=D/keys-<token>.npy  the day's 64-bit key hashes, sorted (uint64, memory-mapped)
    legs/day=D/rows-<token>.npy  each hash's tap row in the day's files, in acceptance order
                                 (uint32)

and a later clear intersects its own sorted hashes with each earlier digest: a filter of the
day's hashes, built once per clear (``DayProbe``), is tested by every hash of the earlier
digest in one pass straight over its memory map, and the rare candidates are looked up in the
day's sorted hashes (``probe_equal``; ``merge_equal`` is the two-pointer merge it replaced,
the same pairs). A hash is not a key: only the hits (real replays, and the rare false hit) are
read back from the stored Parquet files, and the exact keys decide, so the signals are those
of streaming every key (``EarlierDigest.replays``).

A digest is trusted only when it still describes the day's stored taps: its ``keys.json``
names the legs revision it was written with (``clearing.legs_store.REVISION_KEY``) and every
tap file (path, bytes, rows) it hashed, and the lookback compares both with the day as it is
now (``trusted``). A late or withdrawn batch changes the day's files, so the old digest is
ignored (and that day streamed from Parquet) until the day is cleared again, which rewrites
it. Days cleared before digests existed, days never cleared, and days cleared on partitions
have none, and are streamed. ``keys.json`` is written last and names its token, so a crash
leaves the old digest whole or the new one, never a mix.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros

from clearing.files import atomic_file, write_text
from clearing.sorting import W_CARD, W_ROW, rec_card_seq, rec_issuer
from clearing.tapstore import CARD_KEY, DEVICE_KEY, mix_hash, read_stored_rows

DIGEST_VERSION = 1  # the hash and layout; a digest of another version is never trusted
HASH_BITS = 64  # bits of the key hash kept; tests lower it to force false hits (exactness)
_DIGEST_SEED = np.uint64(0x3C6EF372FE94F82B)
META_NAME = "keys.json"


def digest_dir(data_dir: Path, day: dt.date) -> Path:
    return Path(data_dir) / "legs" / f"day={day.isoformat()}"


def _mask(bits: int) -> np.uint64:
    """The hash bits kept: the top ``bits`` (sorted order stays the order of the hash)."""
    return np.uint64(0xFFFFFFFFFFFFFFFF ^ ((1 << (64 - bits)) - 1))


# ---------------------------------------------------------------------------------------------
# Kernels: hashing, sorting, merging


@njit(inline="always")
def key_hash(issuer: int, card: int, seq: int, mask: np.uint64) -> np.uint64:  # pragma: no cover
    # two splitmix rounds over (card_id) and (issuer, card_seq's 32 bits): card_seq is read as
    # int32 from Parquet and as the low 32 bits of a record, the same bits either way
    lo = (np.uint64(issuer) << np.uint64(32)) | (np.uint64(seq) & np.uint64(0xFFFFFFFF))
    return mix_hash(mix_hash(_DIGEST_SEED, np.uint64(card)), lo) & mask


@njit(cache=True, nogil=True)
def hash_records(records: np.ndarray, mask: np.uint64
                 ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Per sorted tap record: its key hash and its table row (``W_ROW``)."""
    n = records.shape[0]
    h = np.empty(n, np.uint64)
    rows = np.empty(n, np.uint32)
    for i in range(n):
        h[i] = key_hash(rec_issuer(records, i), records[i, W_CARD], rec_card_seq(records, i),
                        mask)
        rows[i] = np.uint32(records[i, W_ROW])
    return h, rows


@njit(cache=True, nogil=True)
def hash_columns(issuer: np.ndarray, card: np.ndarray, seq: np.ndarray, mask: np.uint64
                 ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Per row of key columns: its key hash and its row."""
    n = len(card)
    h = np.empty(n, np.uint64)
    rows = np.empty(n, np.uint32)
    for i in range(n):
        h[i] = key_hash(int(issuer[i]), card[i], int(seq[i]), mask)
        rows[i] = np.uint32(i)
    return h, rows


@njit(cache=True, nogil=True)
def hash_columns_into(issuer: np.ndarray, card: np.ndarray, seq: np.ndarray, mask: np.uint64,
                      start: int, h: np.ndarray, rows: np.ndarray) -> None:  # pragma: no cover
    """``hash_columns`` of a slice of the day's rows (the first at ``start``) into ``h`` and
    ``rows`` at ``start``: a table in many chunks is hashed chunk by chunk, never copied."""
    for i in range(len(card)):
        h[start + i] = key_hash(int(issuer[i]), card[i], int(seq[i]), mask)
        rows[start + i] = np.uint32(start + i)


TOP_BITS = 10  # the first scatter's buckets: few enough write streams to stay in cache
LANES = 8  # independent merges interleaved (see merge_equal)


@njit(cache=True, nogil=True)
def _scatter(h: np.ndarray, r: np.ndarray, lo: int, hi: int, shift: np.uint64, bits: int,
             count: np.ndarray, out_h: np.ndarray, out_r: np.ndarray) -> None:  # pragma: no cover
    """Rows lo:hi of (h, r) into out_* at lo:hi, grouped by ``(h >> shift)``'s low ``bits``
    (stable); ``count`` ends holding each group's start (a counting sort's offsets)."""
    m = np.uint64((1 << bits) - 1)
    count[:(1 << bits) + 1] = 0
    for i in range(lo, hi):
        count[np.int64((h[i] >> shift) & m) + 1] += 1
    count[0] = lo
    for g in range(1 << bits):
        count[g + 1] += count[g]
    for i in range(lo, hi):
        at = np.int64((h[i] >> shift) & m)
        out_h[count[at]] = h[i]
        out_r[count[at]] = r[i]
        count[at] += 1
    # count[g] is now the end of group g: shift back so count[g] is its start, count[g+1] its end
    for g in range(1 << bits, 0, -1):
        count[g] = count[g - 1]
    count[0] = lo


@njit(cache=True, nogil=True)
def _sort_small(h: np.ndarray, r: np.ndarray, lo: int, hi: int) -> None:  # pragma: no cover
    """Sort (h, r)[lo:hi] by hash, then row, in place."""
    if hi - lo > 64:  # only hashes cut short by a test hook make a group this large
        by = np.argsort(r[lo:hi], kind="mergesort")
        h[lo:hi], r[lo:hi] = h[lo:hi][by], r[lo:hi][by]
        by = np.argsort(h[lo:hi], kind="mergesort")  # stable: rows stay in order
        h[lo:hi], r[lo:hi] = h[lo:hi][by], r[lo:hi][by]
        return
    for i in range(lo + 1, hi):  # insertion sort
        x, y = h[i], r[i]
        j = i - 1
        while j >= lo and (h[j] > x or (h[j] == x and r[j] > y)):
            h[j + 1] = h[j]
            r[j + 1] = r[j]
            j -= 1
        h[j + 1] = x
        r[j + 1] = y


@njit(cache=True, nogil=True)
def sort_hashes(h: np.ndarray, rows: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """(hash, row) pairs sorted by hash, then row, in the arrays given (which it overwrites).
    Hashes are uniform: a counting scatter on
    the top ``TOP_BITS`` bits, then within each bucket (small enough for the cache) a second
    on the next bits, leaving groups of a handful for an insertion sort. Three passes over the
    day, where a general sort of ten million keys costs several times that."""
    n = len(h)
    tmp_h = np.empty(n, np.uint64)
    tmp_r = np.empty(n, np.uint32)
    out_h, out_r = h, rows  # the input is read once, into tmp_*: its room takes the result
    top = np.empty((1 << TOP_BITS) + 1, np.int64)
    _scatter(h, rows, 0, n, np.uint64(64 - TOP_BITS), TOP_BITS, top, tmp_h, tmp_r)
    big = 1
    for b in range(1 << TOP_BITS):
        big = max(big, top[b + 1] - top[b])
    inner = np.empty((1 << 20) + 1, np.int64)
    for b in range(1 << TOP_BITS):
        lo, hi = top[b], top[b + 1]
        m = hi - lo
        if m <= 16:
            out_h[lo:hi] = tmp_h[lo:hi]
            out_r[lo:hi] = tmp_r[lo:hi]
            _sort_small(out_h, out_r, lo, hi)
            continue
        bits = 1
        while bits < 20 and (m >> (bits + 2)) > 0:  # about four a group
            bits += 1
        _scatter(tmp_h, tmp_r, lo, hi, np.uint64(64 - TOP_BITS - bits), bits, inner,
                 out_h, out_r)
        for g in range(1 << bits):
            if inner[g + 1] - inner[g] > 1:
                _sort_small(out_h, out_r, inner[g], inner[g + 1])
    return out_h, out_r


@njit(cache=True, nogil=True)
def merge_equal(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Every (i, j) with ``a[i] == b[j]``, both sorted: one pass over each.

    The hash range is cut into ``LANES`` parts merged side by side, one step of each in turn:
    a single merge waits on each load to decide the next, the lanes' loads overlap. Equal
    hashes are rare (a real replay, or a false hit): only they leave the branch-free step, to
    pair whole runs.
    """
    na, nb = len(a), len(b)
    ia = np.empty(LANES, np.int64)
    ea = np.empty(LANES, np.int64)
    jb = np.empty(LANES, np.int64)
    eb = np.empty(LANES, np.int64)
    step = np.uint64(1) << np.uint64(64 - 3)  # LANES == 8: the top three bits
    for k in range(LANES):
        if k == 0:
            ia[k], jb[k] = 0, 0
        else:
            v = np.uint64(k) * step
            ia[k] = np.searchsorted(a, v)
            jb[k] = np.searchsorted(b, v)
        if k > 0:
            ea[k - 1], eb[k - 1] = ia[k], jb[k]
    ea[LANES - 1], eb[LANES - 1] = na, nb
    out_i = np.empty(64, np.int64)
    out_j = np.empty(64, np.int64)
    found = 0
    active = True
    while active:
        active = False
        for k in range(LANES):
            i, j = ia[k], jb[k]
            if i >= ea[k] or j >= eb[k]:
                continue
            active = True
            x, y = a[i], b[j]
            if x != y:
                ia[k] = i + np.int64(x < y)
                jb[k] = j + np.int64(y < x)
                continue
            i2, j2 = i, j
            while i2 < ea[k] and a[i2] == x:
                i2 += 1
            while j2 < eb[k] and b[j2] == x:
                j2 += 1
            for p in range(i, i2):
                for q in range(j, j2):
                    if found == len(out_i):
                        out_i = np.concatenate((out_i, np.empty(found, np.int64)))
                        out_j = np.concatenate((out_j, np.empty(found, np.int64)))
                    out_i[found] = p
                    out_j[found] = q
                    found += 1
            ia[k], jb[k] = i2, j2
    return out_i[:found], out_j[:found]


# The day's filter (``DayProbe``): one 64-bit word per bucket of the top ``wbits`` bits of the
# hash, in which each of the day's hashes in the bucket sets FILTER_BITS bits chosen by the
# hash bits just below (a one-word blocked Bloom filter). The earlier digest is sorted, so its
# hashes read the words in order: the test is a load, a few shifts and no branch, and the loop
# vectorises (gathers); the two-pointer merge waits on each comparison to pick its next load.
FILTER_BITS = 3  # bits set per hash: ~0.25 % false candidates at ~2.4 day hashes a word
FILTER_HASHES_PER_WORD = 2.5  # the words: about n / 2.5 (26 bits a day hash)
FILTER_MAX_BITS = 24  # at most 2^24 words (128 MB): 40 million day hashes
START_COARSER = 2  # the start index has a quarter as many buckets as the filter words
SCAN_BLOCK = 32  # hashes tested per step of the scan (one bit each in a 64-bit mask)
RESOLVE_BATCH = 256  # candidates whose day buckets are loaded together (their misses overlap)


def filter_bits(n: int) -> int:
    """The filter's word count (as bits of the hash) for a day of ``n`` hashes."""
    return max(1, min(FILTER_MAX_BITS, math.ceil(math.log2(max(n, 1) / FILTER_HASHES_PER_WORD))))


@njit(inline="always")
def _filter_mask(x: np.uint64, below: np.uint64) -> np.uint64:  # pragma: no cover
    # FILTER_BITS == 3 positions in the word, from the 18 hash bits below the word's index
    return ((np.uint64(1) << ((x >> below) & np.uint64(63)))
            | (np.uint64(1) << ((x >> (below - np.uint64(6))) & np.uint64(63)))
            | (np.uint64(1) << ((x >> (below - np.uint64(12))) & np.uint64(63))))


@njit(cache=True, nogil=True)
def day_filter(a: np.ndarray, wbits: int, sbits: int
               ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """The filter words of sorted hashes ``a`` (2^``wbits`` of them) and where each bucket of
    the top ``sbits`` bits starts in ``a`` (2^``sbits`` + 1 offsets, the last ``len(a)``)."""
    n = len(a)
    words = np.zeros(1 << wbits, np.uint64)
    shift = np.uint64(64 - wbits)
    below = np.uint64(64 - wbits - 6)
    for i in range(n):
        x = a[i]
        words[x >> shift] |= _filter_mask(x, below)
    groups = 1 << sbits
    start = np.full(groups + 1, n, np.uint32)
    s = np.uint64(64 - sbits)
    for i in range(n - 1, -1, -1):  # the last write of a bucket is its first hash
        start[a[i] >> s] = i
    for g in range(groups - 1, -1, -1):  # an empty bucket starts where the next one does
        start[g] = min(start[g], start[g + 1])
    return words, start


@njit(cache=True, nogil=True)
def probe_equal(a: np.ndarray, words: np.ndarray, start: np.ndarray, wbits: int, sbits: int,
                b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """Every (i, j) with ``a[i] == b[j]``, both sorted, ``words`` and ``start`` being
    ``day_filter(a, wbits, sbits)``: the pairs of ``merge_equal(a, b)``, in order of j, then i.

    One pass over ``b`` tests each hash against the filter, ``SCAN_BLOCK`` at a time into a
    bit mask (no branch per hash: the loop vectorises); only the candidates (every equal hash,
    and the filter's few false ones) are looked up in ``a``, from their bucket's start.
    """
    shift = np.uint64(64 - wbits)
    below = np.uint64(64 - wbits - 6)
    s = np.uint64(64 - sbits)
    nb = len(b)
    cj = np.empty(1024, np.int64)  # the candidates: their index in b, and their hash
    cx = np.empty(1024, np.uint64)
    c = 0
    full = nb - nb % SCAN_BLOCK
    for lo in range(0, nb, SCAN_BLOCK):
        hits = np.uint64(0)
        if lo < full:  # a whole block: a loop of constant length, vectorised whole
            for t in range(SCAN_BLOCK):
                x = b[lo + t]
                m = _filter_mask(x, below)
                hits |= np.uint64((words[x >> shift] & m) == m) << np.uint64(t)
        else:
            for t in range(nb - lo):
                x = b[lo + t]
                m = _filter_mask(x, below)
                hits |= np.uint64((words[x >> shift] & m) == m) << np.uint64(t)
        if hits == 0:
            continue
        if c + SCAN_BLOCK > len(cj):
            cj = np.concatenate((cj, np.empty(len(cj), np.int64)))
            cx = np.concatenate((cx, np.empty(len(cx), np.uint64)))
        while hits != 0:
            at = lo + np.int64(trailing_zeros(hits))  # type: ignore[call-arg]  # an intrinsic
            cj[c] = at
            cx[c] = b[at]
            c += 1
            hits &= hits - np.uint64(1)
    out_i = np.empty(64, np.int64)
    out_j = np.empty(64, np.int64)
    found = 0
    first = np.empty(RESOLVE_BATCH, np.int64)
    end = np.empty(RESOLVE_BATCH, np.int64)
    head = np.empty(RESOLVE_BATCH, np.uint64)
    for c0 in range(0, c, RESOLVE_BATCH):
        c1 = min(c0 + RESOLVE_BATCH, c)
        # a batch's bucket offsets, then their first hashes, are loaded before any is searched:
        # independent loads, whose cache misses overlap
        for t in range(c0, c1):
            g = np.int64(cx[t] >> s)
            first[t - c0] = start[g]
            end[t - c0] = start[g + 1]
        for t in range(c1 - c0):
            head[t] = a[first[t]] if first[t] < end[t] else np.uint64(0)
        for t in range(c0, c1):
            x = cx[t]
            lo, hi = first[t - c0], end[t - c0]
            if lo == hi or head[t - c0] > x:  # an empty bucket, or all of it above x
                continue
            top = hi
            while top - lo > 8:  # a bucket this large only when a test cuts the hashes short
                mid = (lo + top) >> 1
                if a[mid] < x:
                    lo = mid + 1
                else:
                    top = mid
            while lo < hi and a[lo] < x:
                lo += 1
            while lo < hi and a[lo] == x:
                if found == len(out_i):
                    out_i = np.concatenate((out_i, np.empty(found, np.int64)))
                    out_j = np.concatenate((out_j, np.empty(found, np.int64)))
                out_i[found] = lo
                out_j[found] = cj[t]
                found += 1
                lo += 1
    return out_i[:found], out_j[:found]


@dataclass(frozen=True, slots=True)
class DayProbe:
    """The day's filter and bucket starts (``day_filter``) over its sorted hashes: built once
    per clear, then tested by every earlier digest (``pairs``). ~26 bits a day hash."""

    hashes: np.ndarray  # the day's, sorted (the very array: HashBuffer checks it is the same)
    words: np.ndarray  # uint64
    start: np.ndarray  # uint32
    wbits: int
    sbits: int

    @classmethod
    def of(cls, hashes: np.ndarray) -> DayProbe:
        if len(hashes) >= 1 << 32:
            raise ValueError("a day's digest holds fewer than 2^32 hashes (rows are uint32)")
        a = np.ascontiguousarray(hashes, np.uint64)
        wbits = filter_bits(len(a))
        sbits = max(1, wbits - START_COARSER)
        return cls(hashes, *day_filter(a, wbits, sbits), wbits, sbits)

    def pairs(self, earlier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (i, j) with ``hashes[i] == earlier[j]`` (``earlier`` sorted, e.g. a memory
        map of a digest: read once, in order)."""
        return probe_equal(np.ascontiguousarray(self.hashes, np.uint64), self.words,
                           self.start, self.wbits, self.sbits,
                           np.ascontiguousarray(earlier, np.uint64))


# ---------------------------------------------------------------------------------------------
# The day's hashes


@dataclass(frozen=True, slots=True)
class DayHashes:
    """A day's card-key hashes, sorted, and each one's tap row: the digest written for the
    day, and what its clear probes earlier digests with."""

    hashes: np.ndarray  # uint64, sorted
    rows: np.ndarray  # uint32: the tap's row in the day's table (acceptance order)
    bits: int  # HASH_BITS when they were made

    @classmethod
    def of(cls, *, records: np.ndarray | None = None,
           keys: Mapping[str, np.ndarray] | None = None) -> DayHashes:
        """From pricing's sorted tap records (read in sequence), or from key columns."""
        mask = _mask(HASH_BITS)
        if records is not None:
            h, rows = hash_records(records, mask)
        elif keys is not None:
            h, rows = hash_columns(np.ascontiguousarray(keys["issuer"]),
                                   np.ascontiguousarray(keys["card_id"]),
                                   np.ascontiguousarray(keys["card_seq"]), mask)
        else:
            raise ValueError("DayHashes.of needs records or keys")
        return cls(*sort_hashes(h, rows), HASH_BITS)

    @classmethod
    def of_table(cls, taps: pa.Table) -> DayHashes:
        """From the card key columns of an Arrow table, a record batch at a time (no column
        copied: at ten million taps read from many files, the three columns' copies are
        140 MB). Equal to ``of(keys=...)`` of the same columns, and to ``of(records=...)`` of
        their sorted records (the same hash of the same 32 bits of ``card_seq``)."""
        mask = _mask(HASH_BITS)
        n = taps.num_rows
        h = np.empty(n, np.uint64)
        rows = np.empty(n, np.uint32)
        start = 0
        for batch in taps.select(list(CARD_KEY)).to_batches():
            issuer, card, seq = (np.ascontiguousarray(batch.column(c).to_numpy(
                zero_copy_only=False)) for c in CARD_KEY)
            hash_columns_into(issuer, card, seq, mask, start, h, rows)
            start += batch.num_rows
        return cls(*sort_hashes(h, rows), HASH_BITS)


# ---------------------------------------------------------------------------------------------
# Stored digests


@dataclass(frozen=True, slots=True)
class DayFile:
    """A stored tap file of a day as a digest covers it."""

    rel: str  # under the data directory
    size: int  # bytes (a stored batch file never changes; a rewrite gets a new name)
    rows: int


def day_files(data_dir: Path, rels: Sequence[str]) -> list[DayFile] | None:
    """``rels`` with their sizes and rows (from the footers); None if one is missing."""
    out = []
    for rel in rels:
        path = Path(data_dir) / rel
        try:
            size = path.stat().st_size
            rows = pq.read_metadata(path).num_rows
        except FileNotFoundError:
            return None
        out.append(DayFile(rel, size, rows))
    return out


def write_digest(data_dir: Path, day: dt.date, hashes: DayHashes, revision: int,
                 files: Sequence[DayFile]) -> Path:
    """Store ``hashes`` as the day's digest, covering ``files`` at legs ``revision``.

    The arrays go to new names first, then ``keys.json`` (naming them) replaces the old one,
    then the old arrays go: a reader sees the old digest or the new one, whole.
    """
    if sum(f.rows for f in files) != len(hashes.hashes):
        raise ValueError("a digest must cover exactly the day's taps")
    folder = digest_dir(data_dir, day)
    token = uuid.uuid4().hex[:16]
    for name, array in ((f"keys-{token}.npy", hashes.hashes), (f"rows-{token}.npy", hashes.rows)):
        with atomic_file(folder / name, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    meta = {"version": DIGEST_VERSION, "bits": hashes.bits, "revision": revision,
            "taps": len(hashes.hashes), "token": token,
            "files": [[f.rel, f.size, f.rows] for f in files]}
    path = write_text(folder / META_NAME, json.dumps(meta))
    for old in (*folder.glob("keys-*.npy"), *folder.glob("rows-*.npy")):
        if token not in old.name:
            old.unlink(missing_ok=True)
    return path


def remove_digest(data_dir: Path, day: dt.date) -> None:
    """Forget the day's digest (its clear could not tie one to its taps): ``keys.json``
    first, so no reader is left naming arrays that are gone."""
    folder = digest_dir(data_dir, day)
    (folder / META_NAME).unlink(missing_ok=True)
    for old in (*folder.glob("keys-*.npy"), *folder.glob("rows-*.npy")):
        old.unlink(missing_ok=True)


def read_meta(data_dir: Path, day: dt.date) -> dict[str, Any] | None:
    try:
        return dict(json.loads((digest_dir(data_dir, day) / META_NAME).read_text("utf-8")))
    except (FileNotFoundError, ValueError):
        return None


def trusted(data_dir: Path, day: dt.date, rels: Sequence[str], legs_revision: int | None
            ) -> EarlierDigest | None:
    """The day's digest if it still describes its stored taps, else None (stream them).

    Trusted only when written by this version with the current hash width, at the revision
    the day's legs now carry, over exactly ``rels`` (the day's live tap files as the
    lookback lists them now, in order) with their sizes unchanged, and its arrays are whole.
    """
    meta = read_meta(data_dir, day)
    if (meta is None or meta.get("version") != DIGEST_VERSION or meta.get("bits") != HASH_BITS
            or legs_revision is None or meta.get("revision") != legs_revision):
        return None
    files = [DayFile(str(r), int(s), int(n)) for r, s, n in meta["files"]]
    if [f.rel for f in files] != list(rels):
        return None
    for f in files:
        try:
            if (Path(data_dir) / f.rel).stat().st_size != f.size:
                return None
        except FileNotFoundError:
            return None
    folder = digest_dir(data_dir, day)
    try:
        hashes = np.load(folder / f"keys-{meta['token']}.npy", mmap_mode="r")
        rows = np.load(folder / f"rows-{meta['token']}.npy", mmap_mode="r")
    except (FileNotFoundError, ValueError):
        return None
    n = int(meta["taps"])
    if (hashes.dtype != np.uint64 or rows.dtype != np.uint32 or hashes.shape != (n,)
            or rows.shape != (n,) or sum(f.rows for f in files) != n):
        return None
    _will_read(folder / f"keys-{meta['token']}.npy")
    return EarlierDigest(day, hashes, rows, Path(data_dir), tuple(files))


def _will_read(path: Path) -> None:
    """Ask the kernel to read ``path`` ahead: ``trusted`` runs on the lookback's read-ahead
    thread, so a digest not in the page cache is read from disk while the day before it is
    scanned (the scan reads the memory map in order). Free when it is cached; a hint only."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# The lookback through a digest


class HashBuffer:
    """What one clear's lookback reuses from one earlier day to the next: the day's probe
    (``DayProbe``, built on the first digest, ~26 bits a day hash). Dropped with the lookback,
    and its memory with it. (It used to hold an array each earlier digest was copied into; the
    probe scans the memory maps in one in-order pass, where the copy cost more than the page
    faults: 7-12 ms a day of copying against ~1 ms of faults at ten million hashes.)"""

    def __init__(self) -> None:
        self._probe: DayProbe | None = None

    def probe(self, today: DayHashes) -> DayProbe:
        """``today``'s probe, built once (again only if asked for another day's hashes)."""
        if self._probe is None or self._probe.hashes is not today.hashes:
            self._probe = DayProbe.of(today.hashes)
        return self._probe


@dataclass(frozen=True, slots=True)
class EarlierDigest:
    """An earlier day's trusted digest: its sorted hashes and rows (memory-mapped) and the
    stored files they index, where the exact keys of the hits are read."""

    day: dt.date
    hashes: np.ndarray  # memory-mapped (scanned once, in order, by replays)
    rows: np.ndarray  # memory-mapped: only the hits' rows are read
    data_dir: Path
    files: tuple[DayFile, ...]

    def replays(self, today: DayHashes,
                today_keys: Callable[[np.ndarray], Mapping[str, np.ndarray]],
                buffer: HashBuffer | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(today's row, the stored tap's device key columns) of every stored tap of the day
        whose card key equals a tap of today's: hash hits, confirmed on the exact keys.

        ``today_keys(rows)`` gives the card key columns of some of today's rows; ``buffer``
        keeps the day's probe (``DayProbe``) from one earlier day to the next: without one,
        it is built here for this day alone. The hash pairs are ``merge_equal``'s
        (``probe_equal``), found in one pass over the digest's memory map.
        """
        probe = DayProbe.of(today.hashes) if buffer is None else buffer.probe(today)
        i, j = probe.pairs(np.asarray(self.hashes))
        if len(i) == 0:
            return np.zeros(0, np.int64), {c: np.zeros(0, np.int64) for c in DEVICE_KEY}
        mine = today.rows[i].astype(np.int64)
        stored = np.asarray(self.rows[j]).astype(np.int64)
        theirs = self.stored_rows(stored)
        ours = today_keys(mine)
        same = np.ones(len(mine), np.bool_)
        for c in CARD_KEY:
            same &= (np.asarray(ours[c]).astype(np.int64)
                     == np.asarray(theirs[c]).astype(np.int64))
        return mine[same], {c: np.asarray(theirs[c])[same] for c in DEVICE_KEY}

    def stored_rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The card and device key columns of some rows of the day's stored taps (rows counted
        across its files in order), as int64: only the row groups that hold them are decoded
        (``tapstore.read_stored_rows``)."""
        got = read_stored_rows([(self.data_dir / f.rel, f.rows) for f in self.files],
                               np.asarray(rows, np.int64), (*CARD_KEY, *DEVICE_KEY))
        return {c: np.asarray(v, np.int64) for c, v in got.items()}


def warm_up() -> None:
    """Compile the digest kernels (or load them from numba's cache)."""
    keys: dict[str, np.ndarray] = {"issuer": np.ones(2, np.uint16),
                                   "card_id": np.ones(2, np.uint64),
                                   "card_seq": np.array([1, 2], np.int32)}
    day = DayHashes.of(keys=keys)
    merge_equal(day.hashes, day.hashes)
    probe = DayProbe.of(day.hashes)
    mapped = day.hashes.copy()
    mapped.setflags(write=False)  # a digest's memory map is read-only: its own specialisation
    probe.pairs(day.hashes)
    probe.pairs(mapped)
    DayHashes.of_table(pa.table(keys))
