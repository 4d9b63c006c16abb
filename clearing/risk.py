"""Risk signals (SPEC v1.2 §10): evidence of cloned cards, altered purses and replayed taps.

Signals never change a fare, an obligation or the ledger: they are computed from a cleared
day's accepted taps and legs and kept beside the legs (``clearing.risk_store``). The per-card
signals come from one numba walk over the day's taps in card order, the order pricing has
already sorted them into (``record_signals`` reads its records, ``card_signals`` its order or
sorts). The replay signal streams earlier days' stored keys, as far back as
``REPLAY_REACH_DAYS``, through a hash table of the day's card keys, as de-duplication does
(``clearing.tapstore``), so memory follows the day and time the reach, not history.
DEBIT_MISMATCH counts each boarding device's legs in a hash table of the devices.
``clearing.risk_reference`` is the plain twin of each kernel.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numba import njit

from clearing import risk_reference as ref
from clearing.errors import InputError
from clearing.fast import thread_count
from clearing.legs import DebitKind
from clearing.sorting import (
    RECORD_COLUMNS,
    TAP_WORDS,
    W_CARD,
    W_ROW,
    rec_card_seq,
    rec_debit,
    rec_issuer,
    rec_row,
    rec_stop,
    rec_ts,
    run_parallel,
    sort_tap_records,
    sort_taps,
)
from clearing.taps import balances
from clearing.tapstore import (
    _CARD_SEED,
    _DEVICE_SEED,
    CARD_KEY,
    DEVICE_KEY,
    _group_kernel,
    _mix,
    probe_key,
)


class RiskKind(enum.IntEnum):
    """The five signals of SPEC §10, in its order."""

    CARD_SEQ_REPLAY = ref.CARD_SEQ_REPLAY  # a card key accepted again 2+ days later
    CARD_SEQ_BACKWARDS = ref.CARD_SEQ_BACKWARDS  # a stored-value counter went back
    BALANCE_BREAK = ref.BALANCE_BREAK  # consecutive counters, balance not the debit apart
    IMPOSSIBLE_TRAVEL = ref.IMPOSSIBLE_TRAVEL  # adjacent taps faster than 150 km/h apart
    DEBIT_MISMATCH = ref.DEBIT_MISMATCH  # a boarding device charging unlike the tariff


REPLAY_MIN_DAYS = 2  # SPEC §4: a card key seen again this many days apart or more is a replay
REPLAY_REACH_DAYS = 30  # and no further back than this (see replay_days)

DENY_KINDS = frozenset({RiskKind.CARD_SEQ_REPLAY, RiskKind.CARD_SEQ_BACKWARDS,
                        RiskKind.BALANCE_BREAK})  # SPEC §10: the kinds the deny list carries

EVIDENCE_TYPE = pa.struct([
    pa.field("service_day", pa.date32(), nullable=False),
    pa.field("operator", pa.uint16(), nullable=False),
    pa.field("device_id", pa.int64(), nullable=False),
    pa.field("device_seq", pa.int64(), nullable=False),
])
SIGNAL_SCHEMA = pa.schema([
    pa.field("service_day", pa.date32(), nullable=False),  # the day the signal belongs to
    pa.field("kind", pa.string(), nullable=False),  # a RiskKind name
    pa.field("issuer", pa.uint16()),  # the card; null for DEBIT_MISMATCH (a device signal)
    pa.field("card_id", pa.uint64()),
    pa.field("operator", pa.uint16(), nullable=False),  # of the signal's last evidence tap
    pa.field("device_id", pa.int64()),  # DEBIT_MISMATCH: the boarding device; else null
    pa.field("city", pa.uint32(), nullable=False),  # of the last evidence tap
    pa.field("ts_ms", pa.int64(), nullable=False),  # of the last evidence tap
    pa.field("evidence", pa.list_(EVIDENCE_TYPE), nullable=False),  # the taps that show it
])

SIGNAL_COLUMNS = ("card_id", "issuer", "ts_ms", "card_seq", "debited_fen")


# ---------------------------------------------------------------------------------------------
# Stop coordinates


@cache
def stop_coordinates(registry_dir: Path | None = None) -> Mapping[int, tuple[float, float]]:
    """WGS-84 (lat, lon) of every registry stop that has them: stops whose ``source`` names a
    station of ``wuhan-metro/stations.csv`` (``osm:<station_id>``). Other stops have none,
    so IMPOSSIBLE_TRAVEL skips them (SPEC §10)."""
    from tariffs.registry import DEFAULT_REGISTRY_DIR

    root = Path(registry_dir or DEFAULT_REGISTRY_DIR)
    stations: dict[str, tuple[float, float]] = {}
    path = root / "wuhan-metro" / "stations.csv"
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                if r.get("lat") and r.get("lon"):
                    stations[r["station_id"]] = (float(r["lat"]), float(r["lon"]))
    out: dict[int, tuple[float, float]] = {}
    with open(root / "stops.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            source = r.get("source") or ""
            if source.startswith("osm:") and source[4:] in stations:
                out[int(r["stop"])] = stations[source[4:]]
    return out


def tap_coordinates(stop: np.ndarray, coords: Mapping[int, tuple[float, float]]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each tap's (lat, lon) in degrees, NaN where its stop has none (stop 0 included)."""
    n = len(stop)
    if not coords or n == 0:
        return np.full(n, np.nan), np.full(n, np.nan)
    dense_lat, dense_lon = _dense(tuple(sorted(coords.items())))
    return _lookup_coordinates(np.ascontiguousarray(stop), dense_lat, dense_lon)


@njit(cache=True, nogil=True)
def _lookup_coordinates(stop, dense_lat, dense_lon):  # type: ignore[no-untyped-def]  # pragma: no cover
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


@cache
def _dense(items: tuple[tuple[int, tuple[float, float]], ...]) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates indexed by stop id (NaN where none): a lookup per tap is one gather."""
    top = max(stop for stop, _ in items) + 1
    lat = np.full(top, np.nan)
    lon = np.full(top, np.nan)
    for stop, (a, b) in items:
        lat[stop], lon[stop] = a, b
    return lat, lon


# ---------------------------------------------------------------------------------------------
# Per-card signals: one pass in card order

CARD_BLOCK = 1 << 18  # taps brought into card order at a time: memory stays small at 10M
_BACKWARDS = np.int64(ref.CARD_SEQ_BACKWARDS)  # the kinds as the compiled walk emits them
_BREAK = np.int64(ref.BALANCE_BREAK)
_TRAVEL = np.int64(ref.IMPOSSIBLE_TRAVEL)
# a block's fields in card order, rows of one int64 array (card ids and coordinates apart)
_ISSUER, _TS, _SEQ, _DEBIT, _BALANCE, _ROW = range(6)


@njit(cache=True, nogil=True)
def _metres(lat1, lon1, lat2, lon2):  # type: ignore[no-untyped-def]  # pragma: no cover
    # the same formula, operation for operation, as risk_reference.haversine_metres
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    d = 2.0 * 6_371_008.8 * math.asin(math.sqrt(min(1.0, a)))
    return np.int64(math.floor(d + 0.5))


@njit(cache=True, nogil=True)
def _order_cut(order, card, issuer, at):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The first position >= ``at`` of ``order`` where a card starts (its length if none)."""
    n = len(order)
    while 0 < at < n and card[order[at]] == card[order[at - 1]] \
            and issuer[order[at]] == issuer[order[at - 1]]:
        at += 1
    return min(at, n)


@njit(cache=True, nogil=True)
def _record_cut(records, at):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The first record >= ``at`` where a card starts (the record count if none)."""
    n = records.shape[0]
    while 0 < at < n and records[at, W_CARD] == records[at - 1, W_CARD] \
            and rec_issuer(records, at) == rec_issuer(records, at - 1):
        at += 1
    return min(at, n)


@njit(cache=True, nogil=True)
def _gather_order(order, lo, hi, seen, card, issuer, ts, seq, debit, bal, lat, lon,  # type: ignore[no-untyped-def]
                  c, f, geo):  # pragma: no cover - compiled
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
        f[_ROW, k] = rows[k]
    for k in range(m):
        f[_ISSUER, k] = issuer[rows[k]]
    for k in range(m):
        f[_TS, k] = ts[rows[k]]
    for k in range(m):
        f[_SEQ, k] = seq[rows[k]]
    for k in range(m):
        f[_DEBIT, k] = debit[rows[k]]
    for k in range(m):
        f[_BALANCE, k] = bal[rows[k]]
    for k in range(m):
        geo[0, k] = lat[rows[k]]
    for k in range(m):
        geo[1, k] = lon[rows[k]]


@njit(cache=True, nogil=True)
def _gather_records(records, lo, hi, seen, bal, dense_lat, dense_lon, c, f, geo):  # type: ignore[no-untyped-def]  # pragma: no cover
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
        f[_ROW, k] = r
        f[_ISSUER, k] = rec_issuer(records, i)
        f[_TS, k] = rec_ts(records, i)
        f[_SEQ, k] = rec_card_seq(records, i)
        f[_DEBIT, k] = rec_debit(records, i)
        s = rec_stop(records, i)
        if s < len(dense_lat):  # as tap_coordinates
            geo[0, k] = dense_lat[s]
            geo[1, k] = dense_lon[s]
        else:
            geo[0, k] = np.nan
            geo[1, k] = np.nan
    if len(bal) == 0:
        for k in range(hi - lo):
            f[_BALANCE, k] = -1  # clearing.taps.BALANCE_UNKNOWN
    else:
        for k in range(hi - lo):
            f[_BALANCE, k] = bal[f[_ROW, k]]
    return True


@njit(cache=True, nogil=True)
def _walk(m, c, f, geo):  # type: ignore[no-untyped-def]  # pragma: no cover
    """The per-card signals of a block of ``m`` taps in card order (whole cards), as
    ``(kind, a, b)`` table rows in the order found, and whether the block really is in card
    order (the key (card, issuer, ts_ms, card_seq) never goes down)."""
    iss, t, q, d, b, rows = f[_ISSUER], f[_TS], f[_SEQ], f[_DEBIT], f[_BALANCE], f[_ROW]
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
                    out, found = _emit(out, found, _BACKWARDS, rows[prev_sv], rows[k])
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
                        dist = _metres(la[p], lo_[p], la[k], lo_[k])
                        if 24 * dist > dt_:
                            out, found = _emit(out, found, _TRAVEL, rows[p], rows[k])
        if j - i > 1:
            if monotonic:  # the usual case: counters already in order, no sort needed
                for k in range(i + 1, j):
                    if _breaks(k - 1, k, q, d, b):
                        out, found = _emit(out, found, _BREAK, rows[k - 1], rows[k])
            else:  # stable: taps with one counter stay in (ts_ms, card_seq) order
                by_seq = i + np.argsort(q[i:j], kind="mergesort")
                for r in range(1, j - i):
                    x, y = by_seq[r - 1], by_seq[r]
                    if _breaks(x, y, q, d, b):
                        out, found = _emit(out, found, _BREAK, rows[x], rows[y])
        i = j
    return out[:found], True


@njit(inline="always")
def _breaks(x, y, q, d, b):  # type: ignore[no-untyped-def]  # pragma: no cover
    # SPEC §10 BALANCE_BREAK: counters n, n+1 leave no room for a top-up in between
    return (q[y] - q[x] == 1 and d[x] >= 0 and d[y] >= 0 and b[x] >= 0 and b[y] >= 0
            and b[y] != b[x] - d[y])


@njit(inline="always")
def _emit(out, found, kind, a, b):  # type: ignore[no-untyped-def]  # pragma: no cover
    if found == len(out):  # signals are rare: grow by doubling
        grown = np.empty((2 * len(out), 3), np.int64)
        grown[:found] = out
        out = grown
    out[found, 0] = kind
    out[found, 1] = a
    out[found, 2] = b
    return out, found + 1


def signal_columns(taps: pa.Table) -> dict[str, np.ndarray]:
    """The tap columns the per-card signals read, as contiguous numpy arrays (one chunk)."""
    missing = [c for c in (*SIGNAL_COLUMNS, "stop") if c not in taps.column_names]
    if missing:
        raise InputError(f"taps have no column {missing[0]!r}: give every TAP_SCHEMA column",
                         code="TAPS_MISSING_COLUMN")
    cols = {c: np.ascontiguousarray(taps.column(c).to_numpy()) for c in SIGNAL_COLUMNS}
    cols["balance_fen"] = np.ascontiguousarray(balances(taps))
    return cols


def card_signals(cols: Mapping[str, np.ndarray], lat: np.ndarray, lon: np.ndarray,
                 order: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
    """The per-card signals of one service day's taps: rows ``(kind, tap a, tap b)``.

    Same contract as ``risk_reference.card_signals``: table rows, sorted by (kind, b, a).

    ``order`` is the taps' card order, (card_id, issuer, ts_ms, card_seq) as
    ``clearing.sorting.sort_taps`` gives it, when the caller has it already; None sorts here.
    A given order is checked during the walk (every row once, the key never going down) and
    a wrong one raises ``RISK_BAD_ORDER``. The cards are cut into blocks of about
    ``CARD_BLOCK`` taps, walked on ``threads`` threads (default: as pricing,
    ``clearing.fast.thread_count``).
    """
    n = len(cols["card_id"])
    if n == 0:
        return np.zeros((0, 3), dtype=np.int64)
    given = order is not None
    if order is None:
        order = sort_taps(cols["card_id"], cols["issuer"], cols["ts_ms"], cols["card_seq"])
    order = np.ascontiguousarray(order, dtype=np.int64)
    if len(order) != n or int(order.min()) < 0 or int(order.max()) >= n:
        raise _bad_order(n)
    columns = (cols["card_id"], cols["issuer"], cols["ts_ms"], cols["card_seq"],
               cols["debited_fen"], cols["balance_fen"], np.ascontiguousarray(lat, np.float64),
               np.ascontiguousarray(lon, np.float64))
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(int(_order_cut(order, columns[0], columns[1], cuts[-1] + CARD_BLOCK)))

    def gather(lo: int, hi: int, seen: np.ndarray, buf: _Block) -> bool:
        _gather_order(order, lo, hi, seen, *columns, *buf)
        return True

    return _walk_blocks(n, cuts, gather, threads, given)


def record_signals(records: np.ndarray, balance: np.ndarray | None,
                   coords: Mapping[int, tuple[float, float]], threads: int | None = None
                   ) -> np.ndarray:
    """``card_signals`` of taps given as pricing's sorted records.

    ``records`` is ``clearing.sorting.sort_tap_records`` of the day's taps (what
    ``clearing.fast`` sorts them into before matching): already in card order, one 64-byte
    record per tap, so the walk reads them in sequence and neither sorts nor gathers the day
    again (at ten million taps, gathering eight columns through an order costs more than
    the rest of the signals). ``balance`` is the taps' ``balance_fen`` in table order, None
    when the day has none. Same result as ``card_signals``; records that are not a card
    order of ``len(records)`` rows raise ``RISK_BAD_ORDER``.
    """
    n = records.shape[0]
    if n == 0:
        return np.zeros((0, 3), dtype=np.int64)
    if records.ndim != 2 or records.shape[1] != TAP_WORDS or records.dtype != np.uint64:
        raise _bad_order(n)
    bal = np.zeros(0, np.int64) if balance is None else np.ascontiguousarray(balance, np.int64)
    if balance is not None and len(bal) != n:
        raise _bad_order(n)
    dense = (_dense(tuple(sorted(coords.items()))) if coords
             else (np.zeros(0), np.zeros(0)))
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(int(_record_cut(records, cuts[-1] + CARD_BLOCK)))

    def gather(lo: int, hi: int, seen: np.ndarray, buf: _Block) -> bool:
        return bool(_gather_records(records, lo, hi, seen, bal, dense[0], dense[1], *buf))

    return _walk_blocks(n, cuts, gather, threads, True)


_Block = tuple[np.ndarray, np.ndarray, np.ndarray]  # card ids, int fields, coordinates


def _walk_blocks(n: int, cuts: list[int], gather: Callable[..., bool], threads: int | None,
                 check: bool) -> np.ndarray:
    """Gather and walk the blocks between ``cuts`` on threads: block k on worker k % workers,
    each with its own buffers and its own signals (no shared writes but ``seen``)."""
    blocks = list(zip(cuts, cuts[1:], strict=False))
    workers = max(1, min(thread_count(n) if threads is None else threads, len(blocks)))
    seen = np.zeros(n, np.bool_)

    def work(mine: list[tuple[int, int]]) -> list[tuple[np.ndarray, bool]]:
        size = max(hi - lo for lo, hi in mine)
        buf = (np.empty(size, np.uint64), np.empty((6, size), np.int64),
               np.empty((2, size), np.float64))  # once per worker: fresh pages cost
        out = []
        for lo, hi in mine:
            ok = gather(lo, hi, seen, buf)
            out.append(_walk(hi - lo, *buf) if ok else (np.zeros((0, 3), np.int64), False))
        return out

    walked = [part for parts in run_parallel([partial(work, blocks[w::workers])
                                              for w in range(workers)]) for part in parts]
    if check and not (all(ok for _, ok in walked) and seen.all()):
        raise _bad_order(n)
    pairs = np.concatenate([np.zeros((0, 3), np.int64), *(found for found, _ in walked)])
    # a later tap b has at most one partner per kind: (kind, b) orders the rows fully
    return pairs[np.lexsort((pairs[:, 2], pairs[:, 0]))]


def _bad_order(n: int) -> InputError:
    return InputError(f"the given tap order is not a card order of these {n:,} taps: pass "
                      "clearing.sorting.sort_taps(card_id, issuer, ts_ms, card_seq), or "
                      "sort_tap_records, of the same table, or None", code="RISK_BAD_ORDER")


# ---------------------------------------------------------------------------------------------
# Replays: earlier days' stored keys streamed through a table of the day's card keys


FILTER_BITS_PER_KEY = 16  # the prefilter's size: about 6 % of absent keys pass it


@dataclass(frozen=True, slots=True)
class ReplayIndex:
    """A hash table over the day's card keys, built once and probed by every stored chunk.

    Nearly every stored key is absent from the day (a card's counter only grows), and a probe
    of the table costs a strong hash and two cache misses (slot, then the key). A filter of
    ``FILTER_BITS_PER_KEY`` bits a key (2 MB for a million taps), one bit per key set at a
    cheap multiplicative hash, turns most of them away first; the table still decides, so
    the result is exact whatever the filter lets through.
    """

    keys: tuple[np.ndarray, np.ndarray, np.ndarray]  # issuer, card_id, card_seq of the day
    table: np.ndarray
    members: dict[int, list[int]]  # a key group's rows, for the rare group of several rows
    bits: np.ndarray  # the filter: uint64 words
    shift: int  # a key's filter bit: _filter_hash(key) >> shift

    @classmethod
    def of(cls, today: Mapping[str, np.ndarray]) -> ReplayIndex:
        k = tuple(np.ascontiguousarray(today[c]) for c in ("issuer", "card_id", "card_seq"))
        n = len(k[0])
        table, group = _group_kernel(k[0], k[1], k[2], np.ones(n, np.bool_), _CARD_SEED)
        members: dict[int, list[int]] = {}
        # after de-duplication a day's card keys are unique and this stays empty
        for r in np.flatnonzero(group != np.arange(n)).tolist():
            members.setdefault(int(group[r]), [int(group[r])]).append(r)
        log2 = max(6, int(FILTER_BITS_PER_KEY * max(n, 1) - 1).bit_length())
        bits = _key_filter(k[0], k[1], k[2], log2)
        return cls(k, table, members, bits, 64 - log2)  # type: ignore[arg-type]

    def probe(self, chunk: Mapping[str, np.ndarray]) -> list[tuple[int, int]]:
        """``(day row, chunk row)`` of every stored key in ``chunk`` that the day has."""
        s = [np.ascontiguousarray(chunk[c]) for c in ("issuer", "card_id", "card_seq")]
        if len(s[0]) == 0 or len(self.keys[0]) == 0:
            return []
        hit = _probe_filtered(self.bits, self.shift, self.table, *self.keys, s[0], s[1], s[2])
        out: list[tuple[int, int]] = []
        for j in np.flatnonzero(hit >= 0).tolist():
            g = int(hit[j])
            out.extend((i, j) for i in self.members.get(g, [g]))
        return out


@njit(inline="always")
def _filter_hash(issuer, card, seq):  # type: ignore[no-untyped-def]  # pragma: no cover
    # two multiplies, where the table's hash takes six: card ids are keyed hashes already
    # (SPEC §3), and the final multiply's top bits spread any ids (Fibonacci hashing)
    k = (np.uint64(card) ^ (np.uint64(seq) * np.uint64(0x9E3779B97F4A7C15))
         ^ (np.uint64(issuer) << np.uint64(48)))
    return k * np.uint64(0xD6E8FEB86659FD93)


@njit(cache=True, nogil=True)
def _key_filter(k0, k1, k2, log2):  # type: ignore[no-untyped-def]  # pragma: no cover
    """A bitmap of 2**log2 bits with the bit of every key set (``_filter_hash``'s top bits)."""
    bits = np.zeros(1 << (log2 - 6), np.uint64)
    shift = np.uint64(64 - log2)
    for i in range(len(k0)):
        b = _filter_hash(k0[i], k1[i], k2[i]) >> shift
        bits[b >> np.uint64(6)] |= np.uint64(1) << (b & np.uint64(63))
    return bits


@njit(cache=True, nogil=True)
def _probe_filtered(bits, shift, table, k0, k1, k2, s0, s1, s2):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``tapstore.probe_groups`` behind the filter: the same hash, the same table, so the
    same answer; a key whose filter bit is clear is absent and skips the table."""
    sh = np.uint64(shift)
    out = np.full(len(s0), -1, np.int64)
    for i in range(len(s0)):
        b = _filter_hash(s0[i], s1[i], s2[i]) >> sh
        if (bits[b >> np.uint64(6)] >> (b & np.uint64(63))) & np.uint64(1) == 0:
            continue
        out[i] = probe_key(table, k0, k1, k2, _CARD_SEED, s0[i], s1[i], s2[i])
    return out


@njit(cache=True, nogil=True)
def _probe_records(bits, shift, table, k0, k1, k2, records):  # type: ignore[no-untyped-def]  # pragma: no cover
    """``_probe_filtered`` with the probing keys read from tap records in sequence: per
    record, the key group it hits, -1 for none."""
    sh = np.uint64(shift)
    out = np.full(records.shape[0], -1, np.int64)
    for i in range(records.shape[0]):
        s0 = rec_issuer(records, i)
        s1 = records[i, W_CARD]
        s2 = rec_card_seq(records, i)
        b = _filter_hash(s0, s1, s2) >> sh
        if (bits[b >> np.uint64(6)] >> (b & np.uint64(63))) & np.uint64(1) == 0:
            continue
        out[i] = probe_key(table, k0, k1, k2, _CARD_SEED, s0, s1, s2)
    return out


def replay_hits(today: Mapping[str, np.ndarray],
                stored: Iterable[Mapping[str, np.ndarray]]) -> list[tuple[int, int, int]]:
    """Same contract as ``risk_reference.replay_hits``: ``(today row, chunk, chunk row)``."""
    index = ReplayIndex.of(today)
    return sorted((i, c, j) for c, chunk in enumerate(stored) for i, j in index.probe(chunk))


# ---------------------------------------------------------------------------------------------
# DEBIT_MISMATCH: per boarding device, from the legs


def mismatch_devices(legs: pa.Table) -> list[tuple[int, int, int, int]]:
    """Same contract as ``risk_reference.mismatch_devices``, vectorised over a leg table.

    Legs come in card order, not device order, but a device's legs need only be counted, not
    put side by side: one pass over a hash table of the boarding devices (a few thousand; it
    stays in cache) counts them, and only the devices are sorted. An argsort of every leg by
    device cost more than the rest of the signals together.
    """
    if legs.num_rows == 0:
        return []
    op, dev, bad = _mismatch_columns(legs)
    g_op, g_dev, n, m = _device_counts(op, dev, bad)
    hit = (m >= ref.MISMATCH_MIN_LEGS) & (100 * m > ref.MISMATCH_SHARE_PERCENT * n)
    at = np.flatnonzero(hit)
    at = at[np.lexsort((g_dev[at], g_op[at]))]  # SPEC order: by (operator, device)
    return [(int(o), int(d), int(a), int(b))
            for o, d, a, b in zip(g_op[at], g_dev[at], m[at], n[at], strict=True)]


def _mismatch_columns(legs: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each leg's boarding (operator, device_id), and whether it mismatches (SPEC §10:
    stored-value, charged differs from computed)."""
    op = np.ascontiguousarray(legs.column("operator").to_numpy(), dtype=np.int64)
    dev = np.ascontiguousarray(legs.column("board_device_id").to_numpy(), dtype=np.int64)
    bad = ((np.asarray(legs.column("debit_kind").to_numpy()) == int(DebitKind.STORED_VALUE))
           & (np.asarray(legs.column("charged_fen").to_numpy())
              != np.asarray(legs.column("computed_fen").to_numpy())))
    return op, dev, np.ascontiguousarray(bad)


def _device_counts(op: np.ndarray, dev: np.ndarray, bad: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct (operator, device), in order of first appearance: the key, its rows and
    its ``bad`` rows. The hash table is sized by the devices (a few thousand, so it stays in
    cache), not by the rows: it starts small and the count restarts larger when it fills."""
    cap = 4096
    while True:
        g_op, g_dev, n, m, groups = _count_devices(op, dev, bad, cap)
        if groups >= 0:
            return g_op[:groups], g_dev[:groups], n[:groups], m[:groups]
        cap *= 4


@njit(cache=True, nogil=True)
def _count_devices(op, dev, bad, cap):  # type: ignore[no-untyped-def]  # pragma: no cover
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
        slot = _device_hash(op[i], dev[i]) & mask
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
def _device_hash(op, dev):  # type: ignore[no-untyped-def]  # pragma: no cover
    # one splitmix round over the packed key (device ids fit 48 bits in practice; a wider id
    # only collides more, the probe compares the full key)
    return _mix(_DEVICE_SEED, (np.uint64(op) << np.uint64(48)) ^ np.uint64(dev))


# ---------------------------------------------------------------------------------------------
# The day's signal table


@dataclass(frozen=True, slots=True)
class EarlierKeys:
    """Keys of taps accepted on an earlier day, a chunk of the stored tap files.

    ``keys`` holds the card key (issuer, card_id, card_seq), and the device key (operator,
    device_id, device_seq) unless ``devices`` reads it: evidence needs the device key of the
    few rows that replay, so the store decodes it only for them (half the bytes of a key).
    """

    day: dt.date
    keys: Mapping[str, np.ndarray]
    devices: Callable[[np.ndarray], Mapping[str, np.ndarray]] | None = None  # rows -> key

    def device_keys(self, rows: np.ndarray) -> Mapping[str, np.ndarray]:
        """The device key columns of ``rows`` of the chunk."""
        if self.devices is not None:
            return self.devices(rows)
        return {c: np.asarray(self.keys[c])[rows] for c in DEVICE_KEY}


def day_signals(day: dt.date, taps: pa.Table, legs: pa.Table | None = None, *,
                earlier: Iterable[EarlierKeys] = (),
                coords: Mapping[int, tuple[float, float]] | None = None,
                reference: bool = False, order: np.ndarray | None = None,
                records: np.ndarray | None = None) -> pa.Table:
    """Every SPEC §10 signal of one cleared service day, as a ``SIGNAL_SCHEMA`` table.

    ``taps`` are the day's accepted taps (``balance_fen`` optional), ``legs`` its legs (for
    DEBIT_MISMATCH; None skips it), ``earlier`` the stored keys of the days a replay reaches
    (``clearing.risk_store.earlier_keys``, for CARD_SEQ_REPLAY). Pricing has already put the
    taps in card order: ``records`` are its sorted records (``record_signals``), ``order`` the
    permutation (``card_signals``); with neither, the taps are sorted here. The result is the
    same. ``reference=True`` uses the plain twins (audits, tests).
    """
    coords = stop_coordinates() if coords is None else coords
    day_taps = _DayTaps(taps, None if reference else records)
    if reference:
        cols = day_taps.columns()
        lat, lon = tap_coordinates(day_taps["stop"], coords)
        pairs = ref.card_signals(cols, lat, lon)
    elif records is not None:
        pairs = record_signals(records, day_taps.balance(), coords)
    else:
        lat, lon = tap_coordinates(day_taps["stop"], coords)
        pairs = card_signals(day_taps.columns(), lat, lon, order=order)
    replayed = _replay_evidence(day_taps, earlier, reference)
    if legs is None:
        devices: list[tuple[int, int, int, int]] = []
    elif reference:
        from clearing.legs import legs_from_table

        devices = ref.mismatch_devices(legs_from_table(legs))
    else:
        devices = mismatch_devices(legs)
    return _assemble(day, day_taps, pairs, replayed, devices, legs)


class _DayTaps:
    """The day's taps for the signals: each column converted to numpy once, when first read
    (a day read from many files is in many chunks, and each conversion copies ten million
    values); and pricing's sorted records, when given, which spare most of them."""

    def __init__(self, taps: pa.Table, records: np.ndarray | None) -> None:
        missing = [c for c in (*SIGNAL_COLUMNS, "stop") if c not in taps.column_names]
        if missing:
            raise InputError(f"taps have no column {missing[0]!r}: give every TAP_SCHEMA "
                             "column", code="TAPS_MISSING_COLUMN")
        self.taps = taps
        self.records = records
        self._cols: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cols:
            self._cols[name] = (np.ascontiguousarray(balances(self.taps)) if name == "balance_fen"
                                else np.ascontiguousarray(self.taps.column(name).to_numpy()))
        return self._cols[name]

    def columns(self) -> dict[str, np.ndarray]:
        """``signal_columns`` of the taps."""
        return {c: self[c] for c in (*SIGNAL_COLUMNS, "balance_fen")}

    def balance(self) -> np.ndarray | None:
        """``balance_fen`` in table order, None when no tap has one (no column, or all -1)."""
        if "balance_fen" not in self.taps.column_names:
            return None
        top = pc.max(self.taps.column("balance_fen")).as_py()
        return None if top is None or top < 0 else self["balance_fen"]

    def probe(self, index: ReplayIndex) -> tuple[np.ndarray, np.ndarray]:
        """(tap row, key group) of every tap whose card key ``index`` holds."""
        if self.records is not None:  # in sequence through the records: no column copied
            hit = _probe_records(index.bits, index.shift, index.table, *index.keys, self.records)
            at = np.flatnonzero(hit >= 0)
            return self.records[at, W_ROW].astype(np.int64), hit[at]
        hit = _probe_filtered(index.bits, index.shift, index.table, *index.keys, self["issuer"],
                              self["card_id"], self["card_seq"])
        rows = np.flatnonzero(hit >= 0)
        return rows, hit[rows]


def _replay_evidence(day_taps: _DayTaps, earlier: Iterable[EarlierKeys],
                     reference: bool) -> dict[int, list[dict]]:
    """Per replayed tap of the day, its earlier taps (SPEC §10 evidence), one stored chunk
    at a time: only the hits outlive their chunk, so memory is the day's, not history's.
    The day's index is built on the first chunk: a day with nothing to reach pays nothing."""
    index: ReplayIndex | None = None
    out: dict[int, list[dict]] = {}
    for chunk in earlier:
        keys = {c: day_taps[c] for c in CARD_KEY}
        if reference:
            pairs = [(i, j) for i, _, j in ref.replay_hits(keys, [chunk.keys])]
        else:
            index = ReplayIndex.of(keys) if index is None else index
            pairs = index.probe(chunk.keys)
        if not pairs:
            continue
        rows = np.array([j for _, j in pairs], dtype=np.int64)
        device = chunk.device_keys(rows)
        for k, (i, _) in enumerate(pairs):
            out.setdefault(i, []).append(
                {"service_day": chunk.day, "operator": int(device["operator"][k]),
                 "device_id": int(device["device_id"][k]),
                 "device_seq": int(device["device_seq"][k])})
    return out


def _assemble(day: dt.date, day_taps: _DayTaps, pairs: np.ndarray,
              replayed: dict[int, list[dict]], devices: list[tuple[int, int, int, int]],
              legs: pa.Table | None) -> pa.Table:
    """Rows of SIGNAL_SCHEMA, sorted by (kind, issuer, card, time): one per signal.

    Only the taps that signals name are read (one ``take``): converting whole columns of a
    day read from many files would copy every tap to build a few hundred rows.
    """
    taps = day_taps.taps
    evidence_of = (_mismatch_evidence(day_taps, legs, devices)
                   if devices and legs is not None else [])
    named = np.unique(np.concatenate([
        pairs[:, 1:].ravel(), np.fromiter(replayed, np.int64, len(replayed)),
        *(np.asarray(e, np.int64) for e in evidence_of)]).astype(np.int64))
    picked = taps.select(["operator", "device_id", "device_seq", "issuer", "card_id", "city",
                          "ts_ms"]).take(pa.array(named)).to_pydict()
    at = {r: k for k, r in enumerate(named.tolist())}  # a table row -> its place in picked
    # one evidence entry per named tap, shared by the signals that name it (read, not changed)
    entries = [{"service_day": day, "operator": o, "device_id": d, "device_seq": q}
               for o, d, q in zip(picked["operator"], picked["device_id"],
                                  picked["device_seq"], strict=True)]

    def get(c: str, r: int) -> int:
        return int(picked[c][at[r]])

    def tap(r: int) -> dict:
        return entries[at[r]]

    def card_row(kind: RiskKind, evidence: list[dict], last: int) -> dict:
        return {"service_day": day, "kind": kind.name, "issuer": get("issuer", last),
                "card_id": get("card_id", last), "operator": get("operator", last),
                "device_id": None, "city": get("city", last), "ts_ms": get("ts_ms", last),
                "evidence": evidence}

    rows = [card_row(RiskKind(k), [tap(a), tap(b)], b) for k, a, b in pairs.tolist()]
    for i, earlier in replayed.items():
        # evidence: every earlier accepted tap with the key (oldest first), then this one
        earlier.sort(key=lambda e: (e["service_day"], e["operator"], e["device_id"],
                                    e["device_seq"]))
        rows.append(card_row(RiskKind.CARD_SEQ_REPLAY, [*earlier, tap(i)], i))
    for (op, dev, _, _), evidence in zip(devices, evidence_of, strict=False):
        last = evidence[-1] if evidence else None
        rows.append({"service_day": day, "kind": RiskKind.DEBIT_MISMATCH.name,
                     "issuer": None, "card_id": None, "operator": op, "device_id": dev,
                     "city": get("city", last) if last is not None else 0,
                     "ts_ms": get("ts_ms", last) if last is not None else 0,
                     "evidence": [tap(r) for r in evidence]})
    rows.sort(key=lambda r: (RiskKind[r["kind"]], r["issuer"] or 0, r["card_id"] or 0,
                             r["operator"], r["device_id"] or 0, r["ts_ms"]))
    return pa.Table.from_pylist(rows, schema=SIGNAL_SCHEMA)


def _device_index(operator: np.ndarray, device: np.ndarray,
                  devices: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Per row, the index in ``devices`` (operator, device_id, ...) of the device that read
    it, -1 for none: one pass over the rows probing a small hash set of the devices (a pass
    per device cost most of a 10M-tap day's clearing; a join of tables of every row, most of
    the rest)."""
    if not devices or len(operator) == 0:
        return np.full(len(operator), -1, np.int64)
    return _device_lookup(np.ascontiguousarray(operator, dtype=np.int64),
                          np.ascontiguousarray(device, dtype=np.int64),
                          np.array([o for o, _, _, _ in devices], np.int64),
                          np.array([d for _, d, _, _ in devices], np.int64))


@njit(cache=True, nogil=True)
def _device_lookup(op, dev, want_op, want_dev):  # type: ignore[no-untyped-def]  # pragma: no cover
    size = 2
    while size < 4 * len(want_op):
        size <<= 1
    mask = np.uint64(size - 1)
    table = np.full(size, -1, np.int64)
    for g in range(len(want_op)):
        s = _device_hash(want_op[g], want_dev[g]) & mask
        while table[s] >= 0:
            s = (s + np.uint64(1)) & mask
        table[s] = g
    out = np.full(len(op), -1, np.int64)
    for i in range(len(op)):
        s = _device_hash(op[i], dev[i]) & mask
        while True:
            g = table[s]
            if g < 0:
                break
            if want_op[g] == op[i] and want_dev[g] == dev[i]:
                out[i] = g
                break
            s = (s + np.uint64(1)) & mask
    return out


def _group_of(index: ReplayIndex, n: int) -> np.ndarray:
    """Each indexed row's key group (the first row with its key), from ``index.members``."""
    group = np.arange(n)
    for g, rows in index.members.items():
        group[rows] = g
    return group


def _mismatch_evidence(day_taps: _DayTaps, legs: pa.Table,
                       devices: list[tuple[int, int, int, int]]) -> list[list[int]]:
    """Per flagged device, the tap rows boarding its mismatching legs, in time order.

    A leg names its boarding tap by card key (issuer, card_id, board_card_seq), unique in a
    day after de-duplication (SPEC §4), and the tap was read by the leg's boarding device.
    The mismatching legs of flagged devices (a few per cent of the legs at most) go into a
    hash table that every tap's card key probes once (``_DayTaps.probe``).
    """
    op, dev, bad = _mismatch_columns(legs)
    sel = np.flatnonzero(bad)  # a few per cent of the legs: look only these up
    at = np.full(len(op), -1, np.int64)
    at[sel] = _device_index(op[sel], dev[sel], devices)
    sel = sel[at[sel] >= 0]
    if len(sel) == 0:
        return [[] for _ in devices]
    index = ReplayIndex.of({"issuer": np.asarray(legs.column("issuer").to_numpy())[sel],
                            "card_id": np.asarray(legs.column("card_id").to_numpy())[sel],
                            "card_seq": np.asarray(legs.column("board_card_seq").to_numpy())[sel]})
    # the same filtered probe as replays: most taps are turned away by one cache-resident bit
    tap_rows, hit = day_taps.probe(index)
    group = _group_of(index, len(sel))
    row_of = np.full(len(sel), -1, np.int64)
    row_of[hit] = tap_rows  # a key group's tap (one: card keys are unique in a day)
    board = row_of[group]
    found = board >= 0
    board, sel = board[found], sel[found]
    # only a tap read by the leg's boarding device boards it
    t = day_taps.taps.select(["operator", "device_id", "ts_ms"]).take(pa.array(board))
    same = ((np.asarray(t.column("operator").to_numpy(), np.int64) == op[sel])
            & (np.asarray(t.column("device_id").to_numpy(), np.int64) == dev[sel]))
    board, device = board[same], at[sel[same]]
    ts = np.asarray(t.column("ts_ms").to_numpy())[same]
    by = np.lexsort((board, ts, device))  # per device, in time order (then row)
    board, device = board[by], device[by]
    cuts = np.searchsorted(device, np.arange(len(devices) + 1))
    return [board[cuts[k]:cuts[k + 1]].tolist() for k in range(len(devices))]


def replay_days(day: dt.date) -> tuple[dt.date, dt.date]:
    """The first and last earlier service day whose stored keys can replay into ``day``.

    The last is two days before (SPEC §4: nearer, a repeated key is a duplicate). The first is
    ``REPLAY_REACH_DAYS`` before: SPEC §10 sets no limit, and without one every clearing would
    read the whole history's keys. As de-duplication does at its reach, a key repeated further
    apart than that is treated as a different tap. 30 days is the SPEC's own horizon for a
    card's signals (the deny list's window).
    """
    return day - dt.timedelta(days=REPLAY_REACH_DAYS), day - dt.timedelta(days=REPLAY_MIN_DAYS)


def warm_up() -> None:
    """Compile (or load from numba's cache) the risk kernels ahead of first use, with the
    argument types clearing gives them."""
    from clearing.taps import TAP_SCHEMA

    one: dict[str, np.ndarray] = {
        "card_id": np.array([1, 1], np.uint64), "issuer": np.array([1, 1], np.uint16),
        "ts_ms": np.array([0, 1], np.int64), "card_seq": np.array([2, 1], np.int32),
        "debited_fen": np.array([0, 0], np.int32), "balance_fen": np.array([0, 0], np.int64)}
    card_signals(one, np.zeros(2), np.zeros(2))
    card_signals(one, np.zeros(2), np.zeros(2), order=np.array([0, 1]))
    chunk = {c: np.ones(2, TAP_SCHEMA.field(c).type.to_pandas_dtype()) for c in RECORD_COLUMNS}
    chunk.update({c: one[c] for c in ("card_id", "issuer", "ts_ms", "card_seq")})
    records = sort_tap_records([chunk])
    record_signals(records, one["balance_fen"], {1: (30.0, 114.0)})
    index = ReplayIndex.of(one)
    replay_hits(one, [one])
    _probe_records(index.bits, index.shift, index.table, *index.keys, records)
    tap_coordinates(np.ones(2, np.uint32), {1: (30.0, 114.0)})
    device = np.array([1, 2], np.int64)
    _device_counts(device, device, np.array([True, False]))
    _device_index(device, device, [(1, 1, 0, 0)])
