"""Risk signals (SPEC v1.2 §10): evidence of cloned cards, altered purses and replayed taps.

Signals never change a fare, an obligation or the ledger: they are computed from a cleared
day's accepted taps and legs and kept beside the legs (``clearing.risk_store``). The per-card
signals come from one numba walk over the day's taps in card order, the order pricing has
already sorted them into (``record_signals`` reads its records, ``card_signals`` its order or
sorts). The replay signal streams earlier days' stored keys, as far back as
``REPLAY_REACH_DAYS``, through a hash table of the day's card keys, as de-duplication does
(``clearing.tapstore``), so memory follows the day and time the reach, not history; an earlier
day with a trusted key digest (``clearing.risk_digest``) is merged with the day's sorted key
hashes instead, and only its hits are read from Parquet, so the signals are the same.
DEBIT_MISMATCH counts each boarding device's legs in a hash table of the devices.
This module is the orchestration (inputs checked, blocks cut, threads run, results turned into
the signal table); the compiled loops are in ``clearing.risk_kernels``, and
``clearing.risk_reference`` is the plain twin of each.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clearing import risk_reference as ref
from clearing.errors import InputError
from clearing.fast import thread_count
from clearing.legs import PENALTY_STATUSES, SIGNAL_LEG_COLUMNS, DebitKind, legs_from_table
from clearing.risk_digest import DayHashes, EarlierDigest, HashBuffer
from clearing.risk_digest import warm_up as digest_warm_up
from clearing.risk_kernels import (
    BLOCK_FIELDS,
    count_devices,
    device_lookup,
    gather_order,
    gather_records,
    key_filter,
    lookup_coordinates,
    order_cut,
    probe_filtered,
    probe_records,
    record_cut,
    walk,
)
from clearing.sorted_day import SortedDay
from clearing.sorting import (
    RECORD_COLUMNS,
    TAP_WORDS,
    W_CARD,
    W_KEY,
    W_ROW,
    W_SEQ_STOP,
    record_fields,
    run_parallel,
    sort_tap_records,
    sort_taps,
)
from clearing.taps import TAP_SCHEMA, balances
from clearing.tapstore import CARD_KEY, CARD_SEED, DEVICE_KEY, group_kernel
from tariffs.registry import DEFAULT_REGISTRY_DIR


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
    return lookup_coordinates(np.ascontiguousarray(stop), dense_lat, dense_lon)




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
        cuts.append(int(order_cut(order, columns[0], columns[1], cuts[-1] + CARD_BLOCK)))

    def gather(lo: int, hi: int, seen: np.ndarray, buf: _Block) -> bool:
        gather_order(order, lo, hi, seen, *columns, *buf)
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
        cuts.append(int(record_cut(records, cuts[-1] + CARD_BLOCK)))

    def gather(lo: int, hi: int, seen: np.ndarray, buf: _Block) -> bool:
        return bool(gather_records(records, lo, hi, seen, bal, dense[0], dense[1], *buf))

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
        buf = (np.empty(size, np.uint64), np.empty((BLOCK_FIELDS, size), np.int64),
               np.empty((2, size), np.float64))  # once per worker: fresh pages cost
        out = []
        for lo, hi in mine:
            ok = gather(lo, hi, seen, buf)
            out.append(walk(hi - lo, *buf) if ok else (np.zeros((0, 3), np.int64), False))
        return out

    walked = [part for parts in run_parallel([partial(work, blocks[w::workers])
                                              for w in range(workers)]) for part in parts]
    if check and not (all(ok for _, ok in walked) and seen.all()):
        raise _bad_order(n)
    pairs = np.concatenate([np.zeros((0, 3), np.int64), *(found for found, _ in walked)])
    # a later tap b has at most one partner per kind: (kind, b) orders the rows fully
    return pairs[np.lexsort((pairs[:, 2], pairs[:, 0]))]


RECORDS_CHECKED = 4096  # records whose row is read back from the table (see below)


def _check_records_name_taps(records: np.ndarray, taps: pa.Table) -> None:
    """Raise ``RISK_BAD_ORDER`` unless ``records`` can be the sorted records of ``taps``: one
    per row, and at ``RECORDS_CHECKED`` records spread over them, the table's row ``W_ROW``
    holds the record's card key. The walk reads the taps' fields from the records and only
    ``balance_fen`` and the evidence from the table, so records of another table, or of the
    same taps in another row order, would otherwise give wrong balances and evidence.
    """
    n = records.shape[0]
    if records.ndim != 2 or records.shape[1] != TAP_WORDS or n != taps.num_rows:
        raise _bad_order(taps.num_rows)
    if n == 0:
        return
    at = np.unique(np.linspace(0, n - 1, min(n, RECORDS_CHECKED)).astype(np.int64))
    rows = records[at, W_ROW].astype(np.int64)
    if int(rows.max()) >= n:
        raise _bad_order(n)
    got = taps.select(["card_id", "issuer", "card_seq"]).take(pa.array(rows))
    key = records[at, W_SEQ_STOP] & np.uint64(0xFFFFFFFF)
    if not (np.array_equal(np.asarray(got.column("card_id").to_numpy()), records[at, W_CARD])
            and np.array_equal(np.asarray(got.column("issuer").to_numpy(), np.uint64),
                               records[at, W_KEY] >> np.uint64(48))
            and np.array_equal(np.asarray(got.column("card_seq").to_numpy()).view(np.uint32),
                               key.astype(np.uint32))):
        raise _bad_order(n)


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
    shift: int  # a key's filter bit: filter_hash(key) >> shift

    @classmethod
    def of(cls, today: Mapping[str, np.ndarray]) -> ReplayIndex:
        k0, k1, k2 = (np.ascontiguousarray(today[c]) for c in ("issuer", "card_id", "card_seq"))
        k = (k0, k1, k2)
        n = len(k[0])
        table, group = group_kernel(k[0], k[1], k[2], np.ones(n, np.bool_), CARD_SEED)
        members: dict[int, list[int]] = {}
        # after de-duplication a day's card keys are unique and this stays empty
        for r in np.flatnonzero(group != np.arange(n)).tolist():
            members.setdefault(int(group[r]), [int(group[r])]).append(r)
        log2 = max(6, int(FILTER_BITS_PER_KEY * max(n, 1) - 1).bit_length())
        bits = key_filter(k[0], k[1], k[2], log2)
        return cls(k, table, members, bits, 64 - log2)

    def probe(self, chunk: Mapping[str, np.ndarray]) -> list[tuple[int, int]]:
        """``(day row, chunk row)`` of every stored key in ``chunk`` that the day has."""
        s = [np.ascontiguousarray(chunk[c]) for c in ("issuer", "card_id", "card_seq")]
        if len(s[0]) == 0 or len(self.keys[0]) == 0:
            return []
        hit = probe_filtered(self.bits, self.shift, self.table, *self.keys, s[0], s[1], s[2])
        out: list[tuple[int, int]] = []
        for j in np.flatnonzero(hit >= 0).tolist():
            g = int(hit[j])
            out.extend((i, j) for i in self.members.get(g, [g]))
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

    SPEC §10 DEBIT_MISMATCH per boarding device: ``m >= 20`` and ``100 * m > n``, where ``n``
    counts every leg boarded at the device, penalty legs included, and ``m`` the mismatching
    ones; a penalty leg (INCOMPLETE, OVERTIME, ORPHAN_EXIT: ``clearing.legs.PENALTY_STATUSES``,
    SPEC §5) never counts in ``m`` (the owner's reading, see ``_mismatch_columns``).

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


_PENALTY_CODES = np.array(sorted(int(s) for s in PENALTY_STATUSES), np.uint8)


def _mismatch_columns(legs: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each leg's boarding (operator, device_id), and whether it counts as mismatching for
    DEBIT_MISMATCH: SPEC §10 "stored-value, charged differs from computed", and not a penalty
    leg (``risk_reference.counts_as_mismatch``, the rule both twins and the partitioned clear
    apply).

    A penalty leg is priced ``max_fare`` for the rider's missing or late tap (SPEC §6 step 1):
    a stored-value INCOMPLETE leg is charged its entry's 0 while it computes the penalty, by
    the SPEC itself, on any reader. The signal is about a device charging unlike the tariff (a
    stale tariff), so penalty legs count among the device's legs but never as mismatching.
    """
    op = np.ascontiguousarray(legs.column("operator").to_numpy(), dtype=np.int64)
    dev = np.ascontiguousarray(legs.column("board_device_id").to_numpy(), dtype=np.int64)
    bad = ((np.asarray(legs.column("debit_kind").to_numpy()) == int(DebitKind.STORED_VALUE))
           & (np.asarray(legs.column("charged_fen").to_numpy())
              != np.asarray(legs.column("computed_fen").to_numpy())))
    sel = np.flatnonzero(bad)  # a few per cent of the legs: read their status only
    status = np.asarray(legs.column("status").to_numpy())
    bad[sel[np.isin(status[sel], _PENALTY_CODES)]] = False
    return op, dev, np.ascontiguousarray(bad)


def _device_counts(op: np.ndarray, dev: np.ndarray, bad: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct (operator, device), in order of first appearance: the key, its rows and
    its ``bad`` rows. The hash table is sized by the devices (a few thousand, so it stays in
    cache), not by the rows: it starts small and the count restarts larger when it fills."""
    cap = 4096
    while True:
        g_op, g_dev, n, m, groups = count_devices(op, dev, bad, cap)
        if groups >= 0:
            return g_op[:groups], g_dev[:groups], n[:groups], m[:groups]
        cap *= 4






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


def day_signals(day: dt.date, taps: pa.Table | SortedDay, legs: pa.Table | None = None, *,
                earlier: Iterable[EarlierKeys | EarlierDigest] = (),
                coords: Mapping[int, tuple[float, float]] | None = None,
                reference: bool = False, order: np.ndarray | None = None,
                records: np.ndarray | None = None, hashes: DayHashes | None = None,
                replayed: Replays | None = None, walked: np.ndarray | None = None,
                boards: np.ndarray | None = None) -> pa.Table:
    """Every SPEC §10 signal of one cleared service day, as a ``SIGNAL_SCHEMA`` table.

    ``taps`` are the day's accepted taps (``balance_fen`` optional), or the day read straight
    into pricing's records (``clearing.sorted_day.SortedDay``: its records serve as
    ``records``, and the few rows the signals name are read back), ``legs`` its legs (for
    DEBIT_MISMATCH; None skips it), ``earlier`` the stored keys of the days a replay reaches
    (``clearing.risk_store.earlier_keys``, for CARD_SEQ_REPLAY): stored key chunks, or an
    earlier day's digest (``clearing.risk_digest``), probed with the day's sorted key hashes
    (``hashes``, made here from the records or the key columns when not given). Pricing has
    already put the taps in card order: ``records`` are its sorted records
    (``record_signals``), ``order`` the permutation (``card_signals``); with neither, the taps
    are sorted here. The result is the same. ``reference=True`` uses the plain twins (audits,
    tests). ``replayed`` is the replay lookback already done (``replay_evidence`` of these
    taps, e.g. on a thread while the day was priced: ``risk_store.start_replay_lookback``);
    ``earlier`` is then not read. ``walked`` are the per-card signal rows already walked
    (``record_signals`` of these taps' records, by the same thread: ``risk_store`` walks them
    beside pricing); the fast path then does not walk them again. ``boards`` are each leg's
    boarding record in ``records`` (``clearing.fast.RangePricer.boards``): DEBIT_MISMATCH's
    evidence is read there instead of probing every record for the legs' card keys.
    """
    coords = stop_coordinates() if coords is None else coords
    if reference and isinstance(taps, SortedDay):
        raise InputError("the reference twin of the signals reads the day's taps as a table "
                         "(clearing.tapstore.read_day_taps), not a SortedDay",
                         code="RISK_REFERENCE_NEEDS_TABLE")
    day_taps = _DayTaps(taps, None if reference else records, hashes)
    if reference:
        cols = day_taps.columns()
        lat, lon = tap_coordinates(day_taps["stop"], coords)
        pairs = ref.card_signals(cols, lat, lon)
    elif day_taps.records is not None:
        if day_taps.sorted is None:
            _check_records_name_taps(day_taps.records, taps)
        pairs = (walked if walked is not None
                 else record_signals(day_taps.records, day_taps.balance(), coords))
    else:
        lat, lon = tap_coordinates(day_taps["stop"], coords)
        pairs = card_signals(day_taps.columns(), lat, lon, order=order)
    if replayed is None:
        replayed = _replay_evidence(day_taps, earlier, reference)
    else:  # the caller's own: evidence lists are sorted in place by _assemble
        replayed = {i: list(e) for i, e in replayed.items()}
    if legs is None:
        devices: list[tuple[int, int, int, int]] = []
    elif reference:
        devices = ref.mismatch_devices(legs_from_table(legs))
    else:
        legs = legs.select(list(SIGNAL_LEG_COLUMNS))  # all it reads: a clear keeps only these
        devices = mismatch_devices(legs)
    return _assemble(day, day_taps, pairs, replayed, devices, legs,
                     None if reference else boards)


class _DayTaps:
    """The day's taps for the signals: each column converted to numpy once, when first read
    (a day read from many files is in many chunks, and each conversion copies ten million
    values); and pricing's sorted records, when given, which spare most of them."""

    def __init__(self, taps: pa.Table | SortedDay, records: np.ndarray | None,
                 hashes: DayHashes | None = None) -> None:
        self.sorted = taps if isinstance(taps, SortedDay) else None
        if isinstance(taps, SortedDay):  # the records are the taps: no table to check
            records = taps.records
        else:
            missing = [c for c in (*SIGNAL_COLUMNS, "stop") if c not in taps.column_names]
            if missing:
                raise InputError(f"taps have no column {missing[0]!r}: give every TAP_SCHEMA "
                                 "column", code="TAPS_MISSING_COLUMN")
        self.taps = taps
        self.records = records
        self._hashes = hashes
        self._cols: dict[str, np.ndarray] = {}

    def hashes(self) -> DayHashes:
        """The day's card-key hashes, sorted (``risk_digest.DayHashes``), made once."""
        if self._hashes is None:
            self._hashes = (DayHashes.of(records=self.records) if self.records is not None
                            else DayHashes.of_table(self.taps))
        return self._hashes

    def keys_of(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The card key columns of some rows (a few: one ``take``, or their records)."""
        if self.sorted is not None:
            return self.sorted.card_keys(rows)
        return self.take(rows, CARD_KEY)

    def take(self, rows: np.ndarray, columns: Iterable[str]) -> dict[str, np.ndarray]:
        """Some rows' columns: the signals name a few hundred taps of millions."""
        rows = np.asarray(rows, np.int64)
        if self.sorted is not None:
            return self.sorted.take(rows, list(columns))
        assert isinstance(self.taps, pa.Table)
        got = self.taps.select(list(columns)).take(pa.array(rows, pa.int64()))
        return {c: np.asarray(got.column(c).to_numpy()) for c in got.column_names}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cols:
            if self.sorted is not None:  # only the card key is ever read whole from records
                if name not in CARD_KEY:
                    raise KeyError(f"a sorted day gives whole columns of {CARD_KEY} only")
                self._cols.update(self.sorted.key_columns())
                return self._cols[name]
            assert isinstance(self.taps, pa.Table)
            self._cols[name] = (np.ascontiguousarray(balances(self.taps)) if name == "balance_fen"
                                else np.ascontiguousarray(self.taps.column(name).to_numpy()))
        return self._cols[name]

    def columns(self) -> dict[str, np.ndarray]:
        """``signal_columns`` of the taps."""
        return {c: self[c] for c in (*SIGNAL_COLUMNS, "balance_fen")}

    def balance(self) -> np.ndarray | None:
        """``balance_fen`` in table order, None when no tap has one (no column, or all -1)."""
        if self.sorted is not None:
            return self.sorted.balance
        assert isinstance(self.taps, pa.Table)
        if "balance_fen" not in self.taps.column_names:
            return None
        top = pc.max(self.taps.column("balance_fen")).as_py()
        return None if top is None or top < 0 else self["balance_fen"]

    def probe(self, index: ReplayIndex) -> tuple[np.ndarray, np.ndarray]:
        """(tap row, key group) of every tap whose card key ``index`` holds."""
        if self.records is not None:  # in sequence through the records: no column copied
            hit = probe_records(index.bits, index.shift, index.table, *index.keys, self.records)
            at = np.flatnonzero(hit >= 0)
            return self.records[at, W_ROW].astype(np.int64), hit[at]
        hit = probe_filtered(index.bits, index.shift, index.table, *index.keys, self["issuer"],
                              self["card_id"], self["card_seq"])
        rows = np.flatnonzero(hit >= 0)
        return rows, hit[rows]


Replays = dict[int, list[dict[str, Any]]]  # a replayed tap's row -> its earlier taps (evidence)


def replay_evidence(taps: pa.Table | SortedDay, earlier: Iterable[EarlierKeys | EarlierDigest],
                    hashes: DayHashes | None = None) -> Replays:
    """The fast path's replay lookback of the day's ``taps`` alone: per replayed tap row, its
    earlier taps (``day_signals(replayed=...)`` takes it). It needs none of pricing's output,
    so it can run while the day is priced. ``hashes`` are the day's (``DayHashes``), made
    here when an earlier digest needs them and none are given."""
    return _replay_evidence(_DayTaps(taps, None, hashes), earlier, False)


def _replay_evidence(day_taps: _DayTaps, earlier: Iterable[EarlierKeys | EarlierDigest],
                     reference: bool) -> dict[int, list[dict[str, Any]]]:
    """Per replayed tap of the day, its earlier taps (SPEC §10 evidence), one stored chunk
    (or one earlier day's digest) at a time: only the hits outlive their chunk, so memory is
    the day's, not history's. The day's index (or sorted hashes) is built on the first chunk
    (digest) that needs it: a day with nothing to reach pays nothing.

    A digest gives the same pairs as streaming its day's keys: its hash hits are confirmed
    on the stored exact keys (``EarlierDigest.replays``). ``risk_store`` hands digests only
    to the fast path: the reference twin is given stored keys.
    """
    index: ReplayIndex | None = None
    buffer = HashBuffer()  # one earlier day's hashes at a time
    out: dict[int, list[dict[str, Any]]] = {}
    for chunk in earlier:
        if isinstance(chunk, EarlierDigest):
            replayed, theirs = chunk.replays(day_taps.hashes(), day_taps.keys_of, buffer)
            for k, i in enumerate(replayed.tolist()):
                out.setdefault(i, []).append(
                    {"service_day": chunk.day, "operator": int(theirs["operator"][k]),
                     "device_id": int(theirs["device_id"][k]),
                     "device_seq": int(theirs["device_seq"][k])})
            continue
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
              replayed: dict[int, list[dict[str, Any]]], devices: list[tuple[int, int, int, int]],
              legs: pa.Table | None, boards: np.ndarray | None = None) -> pa.Table:
    """Rows of SIGNAL_SCHEMA, sorted by (kind, issuer, card, time): one per signal.

    Only the taps that signals name are read (one ``take``): converting whole columns of a
    day read from many files would copy every tap to build a few hundred rows.
    """
    evidence_of = (_mismatch_evidence(day_taps, legs, devices, boards)
                   if devices and legs is not None else [])
    named = np.unique(np.concatenate([
        pairs[:, 1:].ravel(), np.fromiter(replayed, np.int64, len(replayed)),
        *(np.asarray(e, np.int64) for e in evidence_of)]).astype(np.int64))
    picked = {c: v.tolist() for c, v in day_taps.take(named, (
        "operator", "device_id", "device_seq", "issuer", "card_id", "city", "ts_ms")).items()}
    at = {r: k for k, r in enumerate(named.tolist())}  # a table row -> its place in picked
    # one evidence entry per named tap, shared by the signals that name it (read, not changed)
    entries = [{"service_day": day, "operator": o, "device_id": d, "device_seq": q}
               for o, d, q in zip(picked["operator"], picked["device_id"],
                                  picked["device_seq"], strict=True)]

    def get(c: str, r: int) -> int:
        return int(picked[c][at[r]])

    def tap(r: int) -> dict[str, Any]:
        return entries[at[r]]

    def card_row(kind: RiskKind, evidence: list[dict[str, Any]], last: int) -> dict[str, Any]:
        return {"service_day": day, "kind": kind.name, "issuer": get("issuer", last),
                "card_id": get("card_id", last), "operator": get("operator", last),
                "device_id": None, "city": get("city", last), "ts_ms": get("ts_ms", last),
                "evidence": evidence}

    rows = [card_row(RiskKind(k), [tap(a), tap(b)], b) for k, a, b in pairs.tolist()]
    for i, earlier in sorted(replayed.items()):  # by tap row, however they were found
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
    return device_lookup(np.ascontiguousarray(operator, dtype=np.int64),
                          np.ascontiguousarray(device, dtype=np.int64),
                          np.array([o for o, _, _, _ in devices], np.int64),
                          np.array([d for _, d, _, _ in devices], np.int64))




def _group_of(index: ReplayIndex, n: int) -> np.ndarray:
    """Each indexed row's key group (the first row with its key), from ``index.members``."""
    group = np.arange(n)
    for g, rows in index.members.items():
        group[rows] = g
    return group


def _mismatch_evidence(day_taps: _DayTaps, legs: pa.Table,
                       devices: list[tuple[int, int, int, int]],
                       boards: np.ndarray | None = None) -> list[list[int]]:
    """Per flagged device, the tap rows boarding its mismatching legs, in time order.

    A leg names its boarding tap by card key (issuer, card_id, board_card_seq), unique in a
    day after de-duplication (SPEC §4), and the tap was read by the leg's boarding device.
    The mismatching legs of flagged devices (a few per cent of the legs at most) go into a
    hash table that every tap's card key probes once (``_DayTaps.probe``). Given ``boards``
    (each leg's boarding record, from pricing) the records say it directly; they are checked
    to hold each leg's card key and device, and the probe decides when one does not.
    """
    op, dev, bad = _mismatch_columns(legs)
    sel = np.flatnonzero(bad)  # a few per cent of the legs: look only these up
    at = np.full(len(op), -1, np.int64)
    at[sel] = _device_index(op[sel], dev[sel], devices)
    sel = sel[at[sel] >= 0]
    if len(sel) == 0:
        return [[] for _ in devices]
    boarding = (_boarding_rows(day_taps.records, boards, legs, sel, op, dev)
                if boards is not None and day_taps.records is not None
                and len(boards) == legs.num_rows else None)
    if boarding is not None:
        return _by_device(boarding[0], at[sel], boarding[1], len(devices))
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
    t = day_taps.take(board, ("operator", "device_id", "ts_ms"))
    same = ((t["operator"].astype(np.int64) == op[sel])
            & (t["device_id"].astype(np.int64) == dev[sel]))
    return _by_device(board[same], at[sel[same]], t["ts_ms"][same], len(devices))


def _by_device(board: np.ndarray, device: np.ndarray, ts: np.ndarray, devices: int
               ) -> list[list[int]]:
    """Per device index, its boarding tap rows in time order (then row)."""
    by = np.lexsort((board, ts, device))
    board, device = board[by], device[by]
    cuts = np.searchsorted(device, np.arange(devices + 1))
    return [board[cuts[k]:cuts[k + 1]].tolist() for k in range(devices)]


def _boarding_rows(records: np.ndarray, boards: np.ndarray, legs: pa.Table, sel: np.ndarray,
                   op: np.ndarray, dev: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(the tap rows boarding legs ``sel``, their times), read from their boarding records;
    None unless every record holds its leg's card key (issuer, card_id, board_card_seq) and
    device."""
    rec = records[boards[sel].astype(np.int64)]
    f = record_fields(rec, ("issuer", "card_id", "card_seq", "operator", "device_id", "ts_ms"))
    ok = ((f["operator"].astype(np.int64) == op[sel]) & (f["device_id"] == dev[sel])
          & (f["card_id"] == np.asarray(legs.column("card_id").to_numpy())[sel])
          & (f["issuer"] == np.asarray(legs.column("issuer").to_numpy())[sel])
          & (f["card_seq"] == np.asarray(legs.column("board_card_seq").to_numpy())[sel]))
    return (rec[:, W_ROW].astype(np.int64), f["ts_ms"]) if bool(ok.all()) else None


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
    probe_records(index.bits, index.shift, index.table, *index.keys, records)
    tap_coordinates(np.ones(2, np.uint32), {1: (30.0, 114.0)})
    DayHashes.of(records=records)
    digest_warm_up()
    device = np.array([1, 2], np.int64)
    _device_counts(device, device, np.array([True, False]))
    _device_index(device, device, [(1, 1, 0, 0)])
