"""Risk signals (SPEC v1.2 §10): evidence of cloned cards, altered purses and replayed taps.

Signals never change a fare, an obligation or the ledger: they are computed from a cleared
day's accepted taps and legs and kept beside the legs (``clearing.risk_store``). The per-card
signals come from one numba pass over the day's taps in card order (``_card_kernel``); the
replay signal from streaming earlier days' stored keys through a hash table of the day's card
keys, as de-duplication does (``clearing.tapstore``), so memory follows the day, not history.
``clearing.risk_reference`` is the plain twin of each kernel.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pyarrow as pa
from numba import njit

from clearing import risk_reference as ref
from clearing.errors import InputError
from clearing.legs import DebitKind
from clearing.sorting import sort_taps
from clearing.taps import balances
from clearing.tapstore import _CARD_SEED, _group_kernel, probe_groups


class RiskKind(enum.IntEnum):
    """The five signals of SPEC §10, in its order."""

    CARD_SEQ_REPLAY = ref.CARD_SEQ_REPLAY  # a card key accepted again 2+ days later
    CARD_SEQ_BACKWARDS = ref.CARD_SEQ_BACKWARDS  # a stored-value counter went back
    BALANCE_BREAK = ref.BALANCE_BREAK  # consecutive counters, balance not the debit apart
    IMPOSSIBLE_TRAVEL = ref.IMPOSSIBLE_TRAVEL  # adjacent taps faster than 150 km/h apart
    DEBIT_MISMATCH = ref.DEBIT_MISMATCH  # a boarding device charging unlike the tariff


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
    lat = np.full(n, np.nan)
    lon = np.full(n, np.nan)
    if not coords or n == 0:
        return lat, lon
    dense_lat, dense_lon = _dense(tuple(sorted(coords.items())))
    s = np.asarray(stop, dtype=np.int64)
    inside = (s >= 0) & (s < len(dense_lat))
    lat[inside] = dense_lat[s[inside]]
    lon[inside] = dense_lon[s[inside]]
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
def _card_kernel(order, card, issuer, ts, seq, debit, bal, lat, lon,  # type: ignore[no-untyped-def]
                 back, travel, brk):  # pragma: no cover - compiled
    """Taps visited in card order (``order``: table rows); writes, at each table row b, the
    row a it forms a signal with (-1: none): ``back`` CARD_SEQ_BACKWARDS, ``travel``
    IMPOSSIBLE_TRAVEL, ``brk`` BALANCE_BREAK. Reading through ``order`` spares a copy of
    every column in card order."""
    n = len(order)
    i = 0
    while i < n:
        first = order[i]
        j = i + 1
        while j < n and card[order[j]] == card[first] and issuer[order[j]] == issuer[first]:
            j += 1
        prev_sv = -1
        monotonic = True
        for k in range(i, j):
            r = order[k]
            if debit[r] >= 0:
                if prev_sv >= 0 and seq[r] < seq[prev_sv]:
                    back[r] = prev_sv
                prev_sv = r
            if k > i:
                p = order[k - 1]
                if seq[r] < seq[p]:
                    monotonic = False
                # SPEC §10: a tap without coordinates is skipped, nothing pairs across it
                if not (np.isnan(lat[r]) or np.isnan(lat[p])):
                    t = ts[r] - ts[p]
                    # the arc is at most R(|dphi| + |dlambda|): most pairs are too far apart in
                    # time to be impossible, and need no trigonometry (0.1 % and 2 m of margin)
                    bound = 6_371_008.8 * 1.001 * math.radians(
                        abs(lat[r] - lat[p]) + abs(lon[r] - lon[p])) + 2.0
                    if 24.0 * bound >= t:
                        d = _metres(lat[p], lon[p], lat[r], lon[r])
                        if 24 * d > t:
                            travel[r] = p
        if j - i > 1:
            if monotonic:  # the usual case: counters already in order, no sort needed
                for k in range(i + 1, j):
                    _balance_pair(order[k - 1], order[k], seq, debit, bal, brk)
            else:
                group = order[i:j]
                by_seq = group[np.argsort(seq[group], kind="mergesort")]
                for m in range(1, j - i):
                    _balance_pair(by_seq[m - 1], by_seq[m], seq, debit, bal, brk)
        i = j


@njit(inline="always")
def _balance_pair(a, b, seq, debit, bal, brk):  # type: ignore[no-untyped-def]  # pragma: no cover
    # SPEC §10 BALANCE_BREAK: counters n, n+1 leave no room for a top-up in between
    if (np.int64(seq[b]) - np.int64(seq[a]) == 1 and debit[a] >= 0 and debit[b] >= 0
            and bal[a] >= 0 and bal[b] >= 0 and bal[b] != bal[a] - np.int64(debit[b])):
        brk[b] = a


def signal_columns(taps: pa.Table) -> dict[str, np.ndarray]:
    """The tap columns the per-card signals read, as contiguous numpy arrays (one chunk)."""
    missing = [c for c in (*SIGNAL_COLUMNS, "stop") if c not in taps.column_names]
    if missing:
        raise InputError(f"taps have no column {missing[0]!r}: give every TAP_SCHEMA column",
                         code="TAPS_MISSING_COLUMN")
    cols = {c: np.ascontiguousarray(taps.column(c).to_numpy()) for c in SIGNAL_COLUMNS}
    cols["balance_fen"] = np.ascontiguousarray(balances(taps))
    return cols


def card_signals(cols: Mapping[str, np.ndarray], lat: np.ndarray, lon: np.ndarray
                 ) -> np.ndarray:
    """The per-card signals of one service day's taps: rows ``(kind, tap a, tap b)``.

    Same contract as ``risk_reference.card_signals``: table rows, sorted by (kind, b, a).
    """
    n = len(cols["card_id"])
    if n == 0:
        return np.zeros((0, 3), dtype=np.int64)
    order = sort_taps(cols["card_id"], cols["issuer"], cols["ts_ms"], cols["card_seq"])
    partners = [np.full(n, -1, np.int64) for _ in range(3)]
    back, travel, brk = partners
    _card_kernel(order, cols["card_id"], cols["issuer"], cols["ts_ms"], cols["card_seq"],
                 cols["debited_fen"], cols["balance_fen"], lat, lon, back, travel, brk)
    parts = []
    # one partner per later tap b, found in row order: (kind, b, a) order with no sort
    for kind, partner in ((RiskKind.CARD_SEQ_BACKWARDS, back), (RiskKind.BALANCE_BREAK, brk),
                          (RiskKind.IMPOSSIBLE_TRAVEL, travel)):
        b = np.flatnonzero(partner >= 0)
        parts.append(np.column_stack([np.full(len(b), int(kind), np.int64), partner[b], b]))
    return np.concatenate(parts).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Replays: earlier days' stored keys streamed through a table of the day's card keys


@dataclass(frozen=True, slots=True)
class ReplayIndex:
    """A hash table over the day's card keys, built once and probed by every stored chunk."""

    keys: tuple[np.ndarray, np.ndarray, np.ndarray]  # issuer, card_id, card_seq of the day
    table: np.ndarray
    members: dict[int, list[int]]  # a key group's rows, for the rare group of several rows

    @classmethod
    def of(cls, today: Mapping[str, np.ndarray]) -> ReplayIndex:
        k = tuple(np.ascontiguousarray(today[c]) for c in ("issuer", "card_id", "card_seq"))
        n = len(k[0])
        table, group = _group_kernel(k[0], k[1], k[2], np.ones(n, np.bool_), _CARD_SEED)
        members: dict[int, list[int]] = {}
        # after de-duplication a day's card keys are unique and this stays empty
        for r in np.flatnonzero(group != np.arange(n)).tolist():
            members.setdefault(int(group[r]), [int(group[r])]).append(r)
        return cls(k, table, members)  # type: ignore[arg-type]

    def probe(self, chunk: Mapping[str, np.ndarray]) -> list[tuple[int, int]]:
        """``(day row, chunk row)`` of every stored key in ``chunk`` that the day has."""
        s = [np.ascontiguousarray(chunk[c]) for c in ("issuer", "card_id", "card_seq")]
        if len(s[0]) == 0 or len(self.keys[0]) == 0:
            return []
        hit = probe_groups(self.table, *self.keys, s[0], s[1], s[2], _CARD_SEED)
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
    """Same contract as ``risk_reference.mismatch_devices``, vectorised over a leg table."""
    if legs.num_rows == 0:
        return []
    op = np.asarray(legs.column("operator").to_numpy(), dtype=np.int64)
    dev = np.asarray(legs.column("board_device_id").to_numpy(), dtype=np.int64)
    bad = ((np.asarray(legs.column("debit_kind").to_numpy()) == int(DebitKind.STORED_VALUE))
           & (np.asarray(legs.column("charged_fen").to_numpy())
              != np.asarray(legs.column("computed_fen").to_numpy())))
    order = _device_order(op, dev)
    op, dev, bad = op[order], dev[order], bad[order]
    starts = np.flatnonzero(np.concatenate(([True], (op[1:] != op[:-1]) | (dev[1:] != dev[:-1]))))
    n = np.diff(np.append(starts, len(op)))
    m = np.add.reduceat(bad.astype(np.int64), starts)
    hit = (m >= ref.MISMATCH_MIN_LEGS) & (100 * m > ref.MISMATCH_SHARE_PERCENT * n)
    return [(int(o), int(d), int(a), int(b))
            for o, d, a, b in zip(op[starts][hit], dev[starts][hit], m[hit], n[hit], strict=True)]


def _device_order(op: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """The order of legs by (operator, device): one radix-friendly uint64 key when device ids
    fit in 48 bits (they do in practice), two-key lexsort otherwise."""
    if len(dev) and dev.min() >= 0 and dev.max() < (1 << 48):
        key = (op.astype(np.uint64) << np.uint64(48)) | dev.astype(np.uint64)
        return np.argsort(key, kind="stable")
    return np.lexsort((dev, op))


# ---------------------------------------------------------------------------------------------
# The day's signal table


@dataclass(frozen=True, slots=True)
class EarlierKeys:
    """Keys of taps accepted on an earlier day, a chunk of the stored tap files."""

    day: dt.date
    keys: Mapping[str, np.ndarray]  # issuer, card_id, card_seq, operator, device_id, device_seq


def day_signals(day: dt.date, taps: pa.Table, legs: pa.Table | None = None, *,
                earlier: Iterable[EarlierKeys] = (),
                coords: Mapping[int, tuple[float, float]] | None = None,
                reference: bool = False) -> pa.Table:
    """Every SPEC §10 signal of one cleared service day, as a ``SIGNAL_SCHEMA`` table.

    ``taps`` are the day's accepted taps (``balance_fen`` optional), ``legs`` its legs (for
    DEBIT_MISMATCH; None skips it), ``earlier`` the stored keys of days ``<= day - 2`` (for
    CARD_SEQ_REPLAY). ``reference=True`` uses the plain twins (audits, tests).
    """
    coords = stop_coordinates() if coords is None else coords
    cols = signal_columns(taps)
    lat, lon = tap_coordinates(np.asarray(taps.column("stop").to_numpy()), coords)
    pairs = (ref.card_signals(cols, lat, lon) if reference else card_signals(cols, lat, lon))
    replayed = _replay_evidence(cols, earlier, reference)
    if legs is None:
        devices: list[tuple[int, int, int, int]] = []
    elif reference:
        from clearing.legs import legs_from_table

        devices = ref.mismatch_devices(legs_from_table(legs))
    else:
        devices = mismatch_devices(legs)
    return _assemble(day, taps, pairs, replayed, devices, legs)


def _replay_evidence(cols: Mapping[str, np.ndarray], earlier: Iterable[EarlierKeys],
                     reference: bool) -> dict[int, list[dict]]:
    """Per replayed tap of the day, its earlier taps (SPEC §10 evidence), one stored chunk
    at a time: only the hits outlive their chunk, so memory is the day's, not history's."""
    index = None if reference else ReplayIndex.of(cols)
    out: dict[int, list[dict]] = {}
    for chunk in earlier:
        if index is None:
            pairs = [(i, j) for i, _, j in ref.replay_hits(cols, [chunk.keys])]
        else:
            pairs = index.probe(chunk.keys)
        keys = chunk.keys
        for i, j in pairs:
            out.setdefault(i, []).append(
                {"service_day": chunk.day, "operator": int(keys["operator"][j]),
                 "device_id": int(keys["device_id"][j]),
                 "device_seq": int(keys["device_seq"][j])})
    return out


def _assemble(day: dt.date, taps: pa.Table, pairs: np.ndarray, replayed: dict[int, list[dict]],
              devices: list[tuple[int, int, int, int]], legs: pa.Table | None) -> pa.Table:
    """Rows of SIGNAL_SCHEMA, sorted by (kind, issuer, card, time): one per signal."""
    col = {c: taps.column(c).to_numpy() for c in
           ("operator", "device_id", "device_seq", "issuer", "card_id", "city", "ts_ms")}

    def tap(r: int) -> dict:
        return {"service_day": day, "operator": int(col["operator"][r]),
                "device_id": int(col["device_id"][r]), "device_seq": int(col["device_seq"][r])}

    def card_row(kind: RiskKind, evidence: list[dict], last: int) -> dict:
        return {"service_day": day, "kind": kind.name, "issuer": int(col["issuer"][last]),
                "card_id": int(col["card_id"][last]), "operator": int(col["operator"][last]),
                "device_id": None, "city": int(col["city"][last]),
                "ts_ms": int(col["ts_ms"][last]), "evidence": evidence}

    rows = [card_row(RiskKind(k), [tap(a), tap(b)], b) for k, a, b in pairs.tolist()]
    for i, earlier in replayed.items():
        # evidence: every earlier accepted tap with the key (oldest first), then this one
        earlier.sort(key=lambda e: (e["service_day"], e["operator"], e["device_id"],
                                    e["device_seq"]))
        rows.append(card_row(RiskKind.CARD_SEQ_REPLAY, [*earlier, tap(i)], i))
    if devices and legs is not None:
        for (op, dev, _, _), evidence in zip(devices, _mismatch_evidence(taps, legs, devices),
                                             strict=True):
            last = evidence[-1] if evidence else None
            rows.append({"service_day": day, "kind": RiskKind.DEBIT_MISMATCH.name,
                         "issuer": None, "card_id": None, "operator": op, "device_id": dev,
                         "city": int(col["city"][last]) if last is not None else 0,
                         "ts_ms": int(col["ts_ms"][last]) if last is not None else 0,
                         "evidence": [tap(r) for r in evidence]})
    rows.sort(key=lambda r: (RiskKind[r["kind"]], r["issuer"] or 0, r["card_id"] or 0,
                             r["operator"], r["device_id"] or 0, r["ts_ms"]))
    return pa.Table.from_pylist(rows, schema=SIGNAL_SCHEMA)


def _at_devices(operator: np.ndarray, device: np.ndarray,
                devices: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Which rows were read by one of ``devices`` (operator, device_id, ...): one hash join,
    not a pass over the rows per device (which cost most of a 10M-tap day's clearing)."""
    mask = np.zeros(len(operator), dtype=bool)
    if not devices or len(operator) == 0:
        return mask
    rows = pa.table({"operator": pa.array(operator, pa.int64()),
                     "device": pa.array(device, pa.int64()),
                     "row": pa.array(np.arange(len(operator), dtype=np.int64))})
    wanted = pa.table({"operator": pa.array([o for o, _, _, _ in devices], pa.int64()),
                       "device": pa.array([d for _, d, _, _ in devices], pa.int64())})
    hit = rows.join(wanted, ["operator", "device"], join_type="inner").column("row")
    mask[np.asarray(hit.to_numpy(), dtype=np.int64)] = True
    return mask


def _mismatch_evidence(taps: pa.Table, legs: pa.Table,
                       devices: list[tuple[int, int, int, int]]) -> list[list[int]]:
    """Per flagged device, the tap rows boarding its mismatching legs, in time order.

    A leg names its boarding tap by card key (issuer, card_id, board_card_seq), unique in a
    day after de-duplication (SPEC §4); a join finds the rows without a dict of every tap.
    """
    op = np.asarray(legs.column("operator").to_numpy(), dtype=np.int64)
    dev = np.asarray(legs.column("board_device_id").to_numpy(), dtype=np.int64)
    bad = ((np.asarray(legs.column("debit_kind").to_numpy()) == int(DebitKind.STORED_VALUE))
           & (np.asarray(legs.column("charged_fen").to_numpy())
              != np.asarray(legs.column("computed_fen").to_numpy())))
    flagged = _at_devices(op, dev, devices)
    sel = legs.filter(pa.array(bad & flagged)).select(
        ["operator", "board_device_id", "issuer", "card_id", "board_card_seq"]).rename_columns(
        ["leg_operator", "leg_device", "issuer", "card_id", "card_seq"])
    # a leg's boarding tap was read by the leg's boarding device: only those taps can match
    t_op = np.asarray(taps.column("operator").to_numpy(), dtype=np.int64)
    t_dev = np.asarray(taps.column("device_id").to_numpy(), dtype=np.int64)
    rows = np.flatnonzero(_at_devices(t_op, t_dev, devices))
    keyed = taps.select(["issuer", "card_id", "card_seq", "ts_ms"]).take(pa.array(rows)
                                                                         ).append_column(
        "row", pa.array(rows.astype(np.int64)))
    joined = sel.join(keyed, ["issuer", "card_id", "card_seq"], join_type="inner")
    lo = joined.column("leg_operator").to_pylist()
    ld = joined.column("leg_device").to_pylist()
    ts = joined.column("ts_ms").to_pylist()
    rows = joined.column("row").to_pylist()
    found: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for o, d, t, r in zip(lo, ld, ts, rows, strict=True):
        found.setdefault((o, d), []).append((t, r))
    return [[r for _, r in sorted(found.get((o, d), []))] for o, d, _, _ in devices]


def replay_reach_start(day: dt.date) -> dt.date:
    """The last earlier day whose keys can replay into ``day``: two days before (SPEC §4)."""
    return day - dt.timedelta(days=2)


def warm_up() -> None:
    """Compile (or load from numba's cache) the risk kernels ahead of first use."""
    one: dict[str, np.ndarray] = {
        "card_id": np.array([1, 1], np.uint64), "issuer": np.array([1, 1], np.uint16),
        "ts_ms": np.array([0, 1], np.int64), "card_seq": np.array([2, 1], np.int32),
        "debited_fen": np.array([0, 0], np.int32), "balance_fen": np.array([0, 0], np.int64)}
    card_signals(one, np.zeros(2), np.zeros(2))
    replay_hits(one, [one])
