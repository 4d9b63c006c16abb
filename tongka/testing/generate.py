"""Deterministic synthetic service days of canonical taps with the circle's real structure.

A day is built in array stages, never one Python object per tap, so that ten million taps take
seconds: a **plan** per card (issuer, product, medium, where it rides today, its journeys and at
most one injected anomaly, drawn from counter-based hashes so that a card's plan does not depend
on how many cards are drawn), then **journeys** (morning and evening peaks, bus–metro–bus
chains inside the transfer windows, metro trips between real stations with journey times from
the track metres), then **taps** (card and device counters), then the **anomalies** that
ingestion must catch, then the **debits** stored-value readers wrote, from one call of a pricer
over the day's valid taps.

Everything is a pure function of ``(day, n_taps, seed)`` and the tariff set.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clearing.accept import DayRules, day_rules
from clearing.legs import LegStatus
from clearing.service_day import MINUTE_MS, day_bounds_ms, day_number
from clearing.taps import ACCOUNT_BASED, TAP_SCHEMA, TapType
from tariffs.load import TariffSet
from tariffs.registry import FLAT, Registry
from tariffs.vocab import Media, Mode, Product

PriceFn = Callable[[pa.Table, TariffSet], pa.Table]

SERVICE_DAY_KEY = b"tongka.service_day"  # Parquet schema metadata: "YYYY-MM-DD"
OPERATOR_KEY = b"tongka.operator"  # Parquet schema metadata: decimal operator code

HOUR_MS = 60 * MINUTE_MS
CARD_SEQ_PER_DAY = 40  # card_seq advances this much per service day: no card makes 40 taps a day
DEVICE_SEQ_PER_DAY = 10_000_000  # likewise for a reader's counter
MAX_JOURNEYS = 3
CHUNK_TAPS = 1 << 19  # rows generated per block of cards (part of the output's definition)
MAX_LEGS = 3

# Out-of-domain values used for invalid rows (SPEC §4): none of them exists in the registry.
UNKNOWN_ISSUER = 999
UNKNOWN_CITY = 999_999
UNKNOWN_LINE = 9_999
UNKNOWN_STOP = 9_999_999


class Anomaly(enum.IntEnum):
    """What may go wrong with one card's day; at most one per card, so effects never interact."""

    NONE = 0  # a clean day
    MISSING_EXIT = 1  # an EXIT tap never reached the centre: an INCOMPLETE leg
    ORPHAN_EXIT = 2  # the ENTRY tap was lost: an ORPHAN_EXIT leg
    OVERTIME = 3  # the day's last metro/intercity trip outlasts max_journey_minutes
    INVALID = 4  # one row is corrupt and ingestion must quarantine it
    DUPLICATE = 5  # one row is resent unchanged (same device key and card key)


class Invalid(enum.IntEnum):
    """How an invalid row is corrupt; each fails exactly one SPEC §4 check, named by its code."""

    UNKNOWN_ISSUER = 0  # issuer not in the registry
    UNKNOWN_CITY = 1  # city not in the registry
    UNKNOWN_LINE = 2  # line not run by the operator
    UNKNOWN_STOP = 3  # stop not in the registry
    BAD_TAP_TYPE = 4  # tap_type outside the enum
    BAD_PRODUCT = 5  # product outside the enum
    BAD_MEDIA = 6  # media outside the enum
    OUTSIDE_SERVICE_DAY = 7  # ts_ms outside the batch's service day
    STOP_NOT_ON_LINE = 8  # a real stop of the same city that the line does not serve
    STOP_ZERO_ON_NETWORK = 9  # stop 0 on an entry-exit line
    BAD_DEBIT = 10  # negative debit other than -1
    CITY_MISMATCH = 11  # city is not the stop's city
    TAP_TYPE_LINE_MISMATCH = 12  # ENTRY on a flat line, or FLAT on an entry-exit network


@dataclass(frozen=True, eq=False)
class GeneratedDay:
    """A generated day and what was injected into it, so tests can check ingestion and matching."""

    day: dt.date
    table: pa.Table  # canonical taps (TAP_SCHEMA), in file order: (operator, device_id, device_seq)
    cards: int  # cards riding that day
    missing_exits: int  # EXIT rows removed
    orphan_exits: int  # ENTRY rows removed
    overtime: int  # exits moved past max_journey_minutes
    duplicates: int  # rows present twice, byte for byte
    invalid: Mapping[str, int]  # invalid rows by Invalid name
    invalid_entries: int  # invalid rows that were ENTRY taps: their exit becomes an orphan
    invalid_exits: int  # invalid rows that were EXIT taps: their entry becomes incomplete
    stale_devices: tuple[tuple[int, int], ...]  # (operator, device_id) running an old tariff
    stale_legs: int  # stored-value legs whose debit differs from the computed fare
    row_invalid: np.ndarray  # per table row: the Invalid kind, -1 for a well-formed row
    row_resent: np.ndarray  # per table row: True for the second copy of a resent row

    @property
    def invalid_rows(self) -> int:
        return sum(self.invalid.values())

    @property
    def expected_incomplete(self) -> int:
        """INCOMPLETE legs that matching must find on the valid, de-duplicated taps."""
        return self.missing_exits + self.invalid_exits

    @property
    def expected_orphan_exits(self) -> int:
        return self.orphan_exits + self.invalid_entries

    @property
    def accepted_mask(self) -> np.ndarray:
        """Rows ingestion accepts: well-formed and not a resent copy (SPEC §4)."""
        return (self.row_invalid < 0) & ~self.row_resent


# ---------------------------------------------------------------------------------------------
# Design data: who rides where, and how. Shares are percentages; they need not sum to 100.

WUHAN = 420100  # the circle's centre: its cards dominate, partner cards visit it

# Share of the circle's card holders by home city (Wuhan dominant, partners by size).
CITY_SHARE: Mapping[int, float] = MappingProxyType({
    420100: 66.0, 420200: 6.0, 420700: 3.5, 420900: 4.0, 421100: 4.5,
    421200: 3.5, 429004: 3.0, 429005: 3.0, 429006: 2.5,
})
ISSUER_KIND_SHARE: Mapping[str, float] = MappingProxyType({"tunion": 1.5, "closed": 1.0})  # each
TRAVEL_SHARE = 0.04  # Wuhan Tong cards riding in a partner city today
VISIT_WUHAN_SHARE = 0.10  # partner-city cards riding in Wuhan today
VISITOR_IN_WUHAN_SHARE = 0.8  # T-Union and closed cards: ride in Wuhan, else a partner city

PRODUCT_SHARE = (84.0, 8.0, 5.0, 1.5, 1.5)  # ordinary, student, senior, disabled, other
VISITOR_PRODUCT_SHARE = (97.0, 3.0, 0.0, 0.0, 0.0)
CIRCLE_MEDIA_SHARE = (48.0, 5.0, 16.0, 4.0, 9.0, 18.0)  # card, shaped, NFC, wearable, SSC, QR
TUNION_MEDIA_SHARE = (70.0, 0.0, 25.0, 5.0, 0.0, 0.0)
CLOSED_MEDIA_SHARE = (100.0, 0.0, 0.0, 0.0, 0.0, 0.0)
COMMUTER_SHARE = (0.55, 0.75, 0.10, 0.30, 0.40)  # by product; visitors: VISITOR_COMMUTER_SHARE
VISITOR_COMMUTER_SHARE = 0.10

# Per-card anomaly probabilities (SPEC §4-§5 cases ingestion and matching must handle).
ANOMALY_SHARE: Mapping[Anomaly, float] = MappingProxyType({
    Anomaly.MISSING_EXIT: 0.06,  # of cards with a metro or intercity leg
    Anomaly.ORPHAN_EXIT: 0.015,  # of cards with a metro or intercity leg
    Anomaly.OVERTIME: 0.01,  # of cards whose day ends with a metro or intercity leg
    Anomaly.INVALID: 0.04,
    Anomaly.DUPLICATE: 0.03,
})
STOP_ZERO_SHARE = 0.015  # flat taps whose reader did not know the stop (allowed, SPEC §3)
SAME_STATION_SHARE = 0.003  # metro trips leaving where they entered
STALE_LEG_SHARE = 0.005  # stored-value legs debited by readers running an old tariff
STALE_DELTAS = np.array([-40, -20, -10, 10, 20, 30], dtype=np.int64)

# Journeys by the city a card rides in: (weight, legs). A leg is an operator code (a ride on one
# of its flat lines), "N<id>" (a trip on entry-exit network <id>) or "N<id>@" (a trip entering
# that network at a station in the rider's own city: Ezhou riders at Line 11's Gediannan).
JOURNEYS: Mapping[int, tuple[tuple[float, tuple[str, ...]], ...]] = MappingProxyType({
    420100: (
        (30, ("N1",)), (22, ("101",)), (10, ("101", "N1")), (10, ("N1", "101")),
        (8, ("101", "N1", "101")), (7, ("101", "101")), (2, ("103",)), (2, ("101", "103")),
        (1, ("103", "101")), (1, ("101", "101", "101")), (1, ("N1", "N2")), (0.5, ("N2",)),
    ),
    420200: (
        (50, ("201",)), (12, ("201", "201")), (14, ("202",)), (10, ("203",)),
        (4, ("202", "201")), (3, ("201", "203")), (3, ("202", "202")),
    ),
    420700: (
        (40, ("301",)), (10, ("301", "301")), (15, ("N2",)), (10, ("301", "N2")),
        (5, ("N2", "N1")), (6, ("N1@",)), (3, ("301", "N1@")), (2, ("301", "N2", "N1")),
    ),
})
OTHER_CITY_JOURNEYS = ((78.0, 1), (18.0, 2), (4.0, 3))  # elsewhere: 1-3 rides on the city's buses

# Local hours (may exceed 24: the service day runs to 04:00) as (mean, sd, low, high).
MORNING_PEAK = (7.75, 0.7, 5.5, 10.5)
MIDDAY = (12.5, 0.6, 11.0, 14.5)
EVENING_PEAK = (18.1, 1.0, 16.0, 22.5)
CASUAL_TIMES = ((0.70, (13.5, 3.0, 5.5, 22.5)), (0.15, (9.5, 1.2, 6.0, 12.0)),
                (0.15, (19.5, 1.5, 16.0, 24.5)))

# Riders per line relative to the quietest (illustrative: the order follows the operator's
# published daily ridership, Line 2 the busiest; the ratios are rounded guesses). A station
# draws entries by the sum of its lines' weights, so interchanges of busy lines draw most and
# every line, however quiet, is ridden and transferred from. Lines not listed weigh 1.
LINE_WEIGHT: Mapping[tuple[int, int], float] = MappingProxyType({
    (102, 2): 10.0, (102, 4): 7.0, (102, 1): 6.0, (102, 3): 5.0, (102, 7): 5.0,
    (102, 6): 4.0, (102, 8): 4.0, (102, 5): 3.0, (102, 11): 3.0, (102, 12): 2.0,
    (102, 19): 2.0, (102, 16): 1.0, (102, 21): 1.0,
})

BUS_MIN_PER_STOP = (1.6, 2.8)
FERRY_MINUTES = (8.0, 15.0)
NETWORK_SPEED_M_PER_MIN = MappingProxyType({Mode.METRO: 580.0, Mode.INTERCITY: 700.0})
STATION_MINUTES = (2.0, 8.0)  # walking inside stations, waiting on the platform
TRANSFER_GAP_MINUTES = (2.0, 12.0)
JOURNEY_GAP_MINUTES = 20.0  # at least this between two journeys of a card
DAY_END_MARGIN_MINUTES = 15.0
BUS_VEHICLES = 30  # readers per flat line
GATES = 6  # entry readers and exit readers per station
_GATE_IDS = tuple(range(1, GATES + 1)) + tuple(range(11, GATES + 11))  # entry 1.., exit 11..


# ---------------------------------------------------------------------------------------------
# Public API


def generate_day(day: dt.date, n_taps: int, seed: int, tariffs: TariffSet, *,
                 price: PriceFn | None = None) -> pa.Table:
    """Exactly ``n_taps`` canonical taps of one service day of the whole circle, in file order."""
    return generate(day, n_taps, seed, tariffs, price=price).table


def generate(day: dt.date, n_taps: int, seed: int, tariffs: TariffSet, *,
             price: PriceFn | None = None) -> GeneratedDay:
    """Generate a day and report what was injected (see ``GeneratedDay``).

    ``price(taps, tariffs) -> legs`` prices the day's valid taps once, to set the stored-value
    debits; it defaults to the plain reference ``clearing.reference.match_and_price``.
    """
    if n_taps < 0:
        raise ValueError("n_taps must be >= 0")
    if n_taps == 0:
        empty = TAP_SCHEMA.empty_table()
        return GeneratedDay(day, empty, 0, 0, 0, 0, 0, MappingProxyType(
            {inv.name: 0 for inv in Invalid}), 0, 0, (), 0, np.zeros(0, np.int8),
            np.zeros(0, bool))
    if price is None:
        from clearing.reference import match_and_price

        price = match_and_price
    circle = _circle(tariffs)
    dayno = day_number(day)
    plan = _plan_exact(circle, seed, dayno, n_taps)
    # Cards in blocks of about CHUNK_TAPS rows: the arrays of a block stay small enough for the
    # allocator to reuse their memory, which makes ten million taps several times faster.
    parts: list[dict[str, np.ndarray]] = []
    reports: list[_Injected] = []
    first_row = 0
    for chunk, (lo, hi) in enumerate(_chunks(plan.taps, CHUNK_TAPS)):
        rng = np.random.default_rng(np.random.SeedSequence([seed & _MASK, dayno, n_taps, chunk]))
        block = _slice(plan, lo, hi)
        part = _rows(circle, block, day, rng)
        report = _inject(circle, block, part, day, tariffs, rng)
        part["_card"] += lo
        report.duplicate_rows += first_row
        first_row += len(part["_card"])
        parts.append(part)
        reports.append(report)
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    del parts
    report = _merge(reports)
    rng = np.random.default_rng(np.random.SeedSequence([seed & _MASK, dayno, n_taps]))
    _assign_device_seq(rows, dayno, day)
    stale_devices, stale_legs = _set_debits(rows, plan, tariffs, price, circle.devices, rng,
                                            day_rules(tariffs, day))
    table, row_invalid, row_resent = _table(rows, report.duplicate_rows)
    return GeneratedDay(
        day=day, table=table, cards=len(plan.card_id),
        missing_exits=report.missing_exits, orphan_exits=report.orphan_exits,
        overtime=report.overtime, duplicates=len(report.duplicate_rows),
        invalid=MappingProxyType(report.invalid), invalid_entries=report.invalid_entries,
        invalid_exits=report.invalid_exits, stale_devices=stale_devices, stale_legs=stale_legs,
        row_invalid=row_invalid, row_resent=row_resent,
    )


def write_day(out_dir: Path, table: pa.Table, day: dt.date) -> list[Path]:
    """One canonical Parquet batch per operator, ``<day>-op<operator>.parquet``, in file order.

    Each file's schema metadata carries the batch's service day and operator, which ingestion
    reads to check every row (SPEC §4).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = table.select(list(TAP_SCHEMA.names)).cast(TAP_SCHEMA)
    operator = table.column("operator").to_numpy()
    device = table.column("device_id").to_numpy()
    seq = table.column("device_seq").to_numpy()
    order = np.arange(table.num_rows)
    if not _in_file_order(operator, device, seq):
        order = np.lexsort((seq, device, operator))
    paths = []
    for op in np.unique(operator):
        rows = order[operator[order] == op]  # lexsort is stable: resent rows follow their original
        part = table.take(pa.array(rows)).replace_schema_metadata({
            SERVICE_DAY_KEY: day.isoformat().encode(), OPERATOR_KEY: str(int(op)).encode()})
        path = out_dir / f"{day.isoformat()}-op{int(op)}.parquet"
        pq.write_table(part, path)
        paths.append(path)
    return paths


def _in_file_order(operator: np.ndarray, device: np.ndarray, seq: np.ndarray) -> bool:
    op_up = operator[1:] > operator[:-1]
    op_eq = operator[1:] == operator[:-1]
    dev_up = device[1:] > device[:-1]
    dev_eq = device[1:] == device[:-1]
    return bool((op_up | (op_eq & (dev_up | (dev_eq & (seq[1:] >= seq[:-1]))))).all())


# ---------------------------------------------------------------------------------------------
# Counter-based randomness: a card's plan is a function of (seed, card index), not of draw order


_MASK = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic is intended)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _key(*parts: int) -> np.uint64:
    h = 0x243F6A8885A308D3
    for p in parts:
        h = int(_mix(np.array([(h ^ (p & _MASK)) & _MASK], dtype=np.uint64))[0])
    return np.uint64(h)


def _hash(idx: np.ndarray, *key: int) -> np.ndarray:
    return _mix(_mix(idx.astype(np.uint64) ^ _key(*key)))


def _unit(idx: np.ndarray, *key: int) -> np.ndarray:
    """Uniform [0, 1) per index, a pure function of (index, key)."""
    return (_hash(idx, *key) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _choose(u: np.ndarray, weights: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """Index drawn by inverse CDF; zero weights are never drawn."""
    cdf = np.cumsum(np.asarray(weights, dtype=np.float64))
    return np.minimum(np.searchsorted(cdf / cdf[-1], u, side="right"), len(cdf) - 1)


# Salts of the hashed draws.
_S_ISSUER, _S_PRODUCT, _S_MEDIA, _S_CARD_ID, _S_SEQ = 1, 2, 3, 4, 5
_S_TRAVEL, _S_WHERE, _S_COMMUTER, _S_NJ, _S_TMPL, _S_ANOM, _S_DEVICE = 11, 12, 13, 14, 15, 16, 17


# ---------------------------------------------------------------------------------------------
# The circle compiled to arrays (from the registry and the design data above)


@dataclass(frozen=True, eq=False)
class _Net:
    network: int
    mode: Mode
    stops: np.ndarray  # stop ids
    city: np.ndarray  # each stop's city
    weight: np.ndarray  # popularity of each station as an entry
    dist: np.ndarray  # (S, S) shortest-path track metres
    by_distance: np.ndarray  # (S, S-1): the other stations, nearest first
    lines: np.ndarray  # (S, L) global line index of the lines serving each stop, padded -1
    n_lines: np.ndarray


@dataclass(frozen=True, eq=False)
class _Circle:
    registry: Registry
    cities: np.ndarray  # city codes, in registry order
    issuers: np.ndarray
    issuer_share: np.ndarray
    issuer_home: np.ndarray  # city index, -1 for visitors (T-Union, closed)
    issuer_kind: np.ndarray  # 0 circle, 1 tunion, 2 closed
    # lines, by global index
    line_op: np.ndarray
    line_id: np.ndarray
    line_mode: np.ndarray
    line_city: np.ndarray  # the operator's city
    line_net: np.ndarray  # network id, FLAT (0) for flat lines
    line_len: np.ndarray
    line_stops: np.ndarray  # (G, maxlen) padded 0
    line_other: np.ndarray  # (G, K) stops of the line's city that it does not serve
    # kinds of legs: flat service of an operator, or a network
    kind_net: np.ndarray  # network id, 0 for flat kinds
    kind_local: np.ndarray  # network kinds: enter in the rider's city
    kind_lines: np.ndarray  # (Kd, maxlines) global line indices of a flat kind, padded -1
    kind_nlines: np.ndarray
    nets: dict[int, _Net]
    # journey templates
    tmpl_kinds: np.ndarray  # (T, MAX_LEGS) kind index, -1 padded
    tmpl_legs: np.ndarray
    tmpl_taps: np.ndarray
    tmpl_has_net: np.ndarray
    tmpl_first_net: np.ndarray
    tmpl_last_net: np.ndarray
    city_tmpl_weight: np.ndarray  # (C, T)
    city_filler: np.ndarray  # (C,) a one-ride flat template per city
    stop_city: np.ndarray  # dense: stop id -> city code
    op_city: np.ndarray  # dense: operator code -> city code
    devices: np.ndarray  # every reader, sorted: operator << 32 | device_id


@cache
def _circle(tariffs: TariffSet) -> _Circle:
    reg = tariffs.registry
    cities = np.array(sorted(reg.cities), dtype=np.int64)
    city_index = {int(c): i for i, c in enumerate(cities)}
    issuers = sorted(reg.issuers.values(), key=lambda i: i.code)
    kinds = {"circle": 0, "tunion": 1, "closed": 2}
    issuer_kind = np.array([kinds.get(i.kind, 1) for i in issuers], dtype=np.int64)
    issuer_home = np.array([city_index.get(i.home_city, -1) if i.kind == "circle" else -1
                            for i in issuers], dtype=np.int64)
    share = np.array([CITY_SHARE.get(i.home_city, 2.0) if i.kind == "circle"
                      else ISSUER_KIND_SHARE.get(i.kind, 1.0) for i in issuers])
    # A circle issuer shares its city's riders with the city's other own issuers.
    for i, iss in enumerate(issuers):
        if iss.kind == "circle":
            share[i] /= max(1, sum(1 for j in issuers if j.kind == "circle"
                                   and j.home_city == iss.home_city))

    keys = sorted(reg.lines)
    lines = [reg.lines[k] for k in keys]
    g_of = {k: g for g, k in enumerate(keys)}
    maxlen = max(len(ln.stops) for ln in lines)
    line_stops = np.zeros((len(lines), maxlen), dtype=np.int64)
    for g, ln in enumerate(lines):
        line_stops[g, : len(ln.stops)] = ln.stops
    line_city = np.array([reg.operators[ln.operator].city for ln in lines], dtype=np.int64)
    line_op = np.array([ln.operator for ln in lines], dtype=np.int64)
    stops_by_city: dict[int, list[int]] = {}
    for s in sorted(reg.stops.values(), key=lambda s: s.stop):
        stops_by_city.setdefault(s.city, []).append(s.stop)
    fixed = np.random.default_rng(2260)  # design data, fixed: it is part of the registry's shape
    other = np.zeros((len(lines), 16), dtype=np.int64)
    for g, ln in enumerate(lines):
        pool = [s for s in stops_by_city.get(int(line_city[g]), []) if s not in set(ln.stops)]
        if pool:
            other[g] = fixed.choice(np.array(pool), size=16)

    nets: dict[int, _Net] = {}
    for nid, net in sorted(reg.networks.items()):
        stops = np.array(net.stops, dtype=np.int64)
        dist = reg.distances(nid)
        order = np.argsort(np.where(dist < 0, np.iinfo(np.int64).max, dist), axis=1, kind="stable")
        by_distance = np.array([[j for j in row if j != i] for i, row in enumerate(order)],
                               dtype=np.int64).reshape(len(stops), max(0, len(stops) - 1))
        serving = [[g_of[k] for k in net.lines if s in reg.lines[k].stops] for s in net.stops]
        width = max(len(x) for x in serving)
        net_lines = np.full((len(stops), width), -1, dtype=np.int64)
        for i, x in enumerate(serving):
            net_lines[i, : len(x)] = x
        n_lines = np.array([len(x) for x in serving], dtype=np.int64)
        # Interchanges and busy lines draw more riders; stations vary around their lines'
        # weight (fixed, like the registry).
        line_weight = np.array([sum(LINE_WEIGHT.get(keys[g], 1.0) for g in x) for x in serving])
        weight = line_weight * fixed.lognormal(0.0, 0.5, size=len(stops))
        mode = reg.lines[net.lines[0]].mode
        nets[nid] = _Net(nid, mode, stops,
                         np.array([reg.stops[s].city for s in net.stops], dtype=np.int64),
                         weight, dist, by_distance, net_lines, n_lines)

    # Kinds and templates from the design data, keeping only what this registry has.
    kind_names: list[str] = []
    templates: list[tuple[int, tuple[str, ...]]] = []  # (city index, legs)
    tmpl_weight: list[float] = []
    flat_ops = {c: sorted({ln.operator for ln in lines if ln.network == FLAT
                           and reg.operators[ln.operator].city == c}) for c in city_index}

    def usable(leg: str) -> bool:
        if leg.startswith("N"):
            return int(leg[1:].rstrip("@")) in nets
        return int(leg) in reg.operators and any(
            ln.operator == int(leg) and ln.network == FLAT for ln in lines)

    filler: dict[int, int] = {}
    for city, ci in city_index.items():
        journeys: list[tuple[float, tuple[str, ...]]] = list(JOURNEYS.get(city, ()))
        if not journeys:
            ops = flat_ops[city]
            for w, n in OTHER_CITY_JOURNEYS:
                for a in ops:  # every sequence of n rides over the city's flat operators
                    seqs: list[tuple[str, ...]] = [(str(a),)]
                    for _ in range(n - 1):
                        seqs = [s + (str(b),) for s in seqs for b in ops]
                    journeys.extend((w / len(ops) ** n, s) for s in seqs)
        for w, legs in journeys:
            if all(usable(leg) for leg in legs):
                templates.append((ci, legs))
                tmpl_weight.append(w)
                for leg in legs:
                    if leg not in kind_names:
                        kind_names.append(leg)
        if flat_ops[city]:
            legs = (str(flat_ops[city][0]),)
            if (ci, legs) not in templates:
                templates.append((ci, legs))
                tmpl_weight.append(0.0)
                if legs[0] not in kind_names:
                    kind_names.append(legs[0])
            filler[ci] = templates.index((ci, legs))

    kind_net = np.array([int(k[1:].rstrip("@")) if k.startswith("N") else 0 for k in kind_names],
                        dtype=np.int64)
    kind_local = np.array([k.endswith("@") for k in kind_names])
    flat_lines = [[g for g, ln in enumerate(lines) if not k.startswith("N")
                   and ln.operator == int(k) and ln.network == FLAT] for k in kind_names]
    width = max([len(x) for x in flat_lines] + [1])
    kind_lines = np.full((len(kind_names), width), -1, dtype=np.int64)
    for i, x in enumerate(flat_lines):
        kind_lines[i, : len(x)] = x
    kind_nlines = np.array([len(x) for x in flat_lines], dtype=np.int64)

    T = len(templates)
    tmpl_kinds = np.full((T, MAX_LEGS), -1, dtype=np.int64)
    for t, (_, legs) in enumerate(templates):
        tmpl_kinds[t, : len(legs)] = [kind_names.index(leg) for leg in legs]
    is_net = np.append(kind_net > 0, False)  # index -1 (padding) reads False
    tmpl_legs = (tmpl_kinds >= 0).sum(axis=1)
    tmpl_taps = tmpl_legs + is_net[tmpl_kinds].sum(axis=1)
    city_tmpl_weight = np.zeros((len(cities), T))
    for t, (ci, _) in enumerate(templates):
        city_tmpl_weight[ci, t] = tmpl_weight[t]

    stop_city = np.zeros(max(reg.stops) + 1, dtype=np.int64)
    for s in reg.stops.values():
        stop_city[s.stop] = s.city
    op_city = np.zeros(max(reg.operators) + 1, dtype=np.int64)
    for o in reg.operators.values():
        op_city[o.code] = o.city

    readers = [(ln.operator << 32) | (ln.line * 1000 + v)
               for ln in lines if ln.network == FLAT for v in range(BUS_VEHICLES)]
    for compiled in nets.values():
        for i, stop in enumerate(compiled.stops.tolist()):
            for g in compiled.lines[i, : compiled.n_lines[i]].tolist():
                readers += [(int(line_op[g]) << 32) | (stop * 100 + gate) for gate in _GATE_IDS]
    devices = np.unique(np.array(readers, dtype=np.int64))

    return _Circle(
        registry=reg, cities=cities, issuers=np.array([i.code for i in issuers], dtype=np.int64),
        issuer_share=share, issuer_home=issuer_home, issuer_kind=issuer_kind,
        line_op=line_op,
        line_id=np.array([ln.line for ln in lines], dtype=np.int64),
        line_mode=np.array([int(ln.mode) for ln in lines], dtype=np.int64),
        line_city=line_city, line_net=np.array([ln.network for ln in lines], dtype=np.int64),
        line_len=np.array([len(ln.stops) for ln in lines], dtype=np.int64),
        line_stops=line_stops, line_other=other,
        kind_net=kind_net, kind_local=kind_local, kind_lines=kind_lines, kind_nlines=kind_nlines,
        nets=nets, tmpl_kinds=tmpl_kinds, tmpl_legs=tmpl_legs, tmpl_taps=tmpl_taps,
        tmpl_has_net=np.asarray(is_net[tmpl_kinds].any(axis=1)),
        tmpl_first_net=is_net[tmpl_kinds[:, 0]],
        tmpl_last_net=is_net[tmpl_kinds[np.arange(T), tmpl_legs - 1]],
        city_tmpl_weight=city_tmpl_weight,
        city_filler=np.array([filler.get(ci, -1) for ci in range(len(cities))], dtype=np.int64),
        stop_city=stop_city, op_city=op_city, devices=devices,
    )


# ---------------------------------------------------------------------------------------------
# Stage 1: a plan per card


@dataclass
class _Plan:
    index: np.ndarray  # card index in the population (stable across days for one seed)
    issuer: np.ndarray
    product: np.ndarray
    media: np.ndarray
    card_id: np.ndarray  # uint64
    seq_base: np.ndarray  # card_seq of the card's first tap of the day
    ride_city: np.ndarray  # city index where the card rides today
    commuter: np.ndarray
    n_journeys: np.ndarray
    tmpl: np.ndarray  # (N, MAX_JOURNEYS) template per journey, -1 padded
    reverse: np.ndarray  # (N, MAX_JOURNEYS) the journey retraces the first one (commute home)
    anomaly: np.ndarray
    taps: np.ndarray  # rows the card contributes to the day's table


def _plan_exact(circle: _Circle, seed: int, dayno: int, n_taps: int) -> _Plan:
    """Cards in index order until their rows reach ``n_taps`` exactly.

    The cards that fit whole are kept; the few rows left over are filled with one-ride cards,
    so the table has exactly ``n_taps`` rows and every card's day is whole.
    """
    parts: list[_Plan] = []
    have, start = 0, 0
    while have < n_taps:
        count = max(256, int((n_taps - have) / 3.2))
        part = _plan_cards(circle, seed, dayno, np.arange(start, start + count, dtype=np.int64))
        parts.append(part)
        have += int(part.taps.sum())
        start += count
    plan = _concat(parts) if parts else _plan_cards(circle, seed, dayno, np.zeros(0, np.int64))
    cum = np.cumsum(plan.taps)
    keep = int(np.searchsorted(cum, n_taps, side="right"))
    plan = _slice(plan, 0, keep)
    deficit = n_taps - int(cum[keep - 1] if keep else 0)
    if deficit:
        filler = _plan_cards(circle, seed, dayno, np.arange(keep, keep + deficit, dtype=np.int64),
                             filler=True)
        plan = _concat([plan, filler])
    return plan


def _concat(parts: list[_Plan]) -> _Plan:
    fields = _Plan.__dataclass_fields__
    return _Plan(*(np.concatenate([getattr(p, f) for p in parts]) for f in fields))


def _slice(plan: _Plan, start: int, stop: int) -> _Plan:
    return _Plan(*(getattr(plan, f)[start:stop] for f in _Plan.__dataclass_fields__))


def _chunks(taps: np.ndarray, size: int) -> list[tuple[int, int]]:
    """Consecutive card ranges of about ``size`` rows each."""
    cum = np.cumsum(taps)
    cuts = np.searchsorted(cum, np.arange(size, int(cum[-1]), size), side="right")
    edges = np.unique(np.concatenate([[0], cuts, [len(taps)]]))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _plan_cards(circle: _Circle, seed: int, dayno: int, idx: np.ndarray, *,
                filler: bool = False) -> _Plan:
    n = len(idx)
    # The card itself: fixed for a seed, whatever the day.
    iss = _choose(_unit(idx, seed, _S_ISSUER), circle.issuer_share)
    kind = circle.issuer_kind[iss]
    visitor = kind > 0
    product = np.where(visitor, _choose(_unit(idx, seed, _S_PRODUCT), VISITOR_PRODUCT_SHARE),
                       _choose(_unit(idx, seed, _S_PRODUCT), PRODUCT_SHARE))
    u_media = _unit(idx, seed, _S_MEDIA)
    media = np.select([kind == 0, kind == 1],
                      [_choose(u_media, CIRCLE_MEDIA_SHARE), _choose(u_media, TUNION_MEDIA_SHARE)],
                      _choose(u_media, CLOSED_MEDIA_SHARE))
    card_id = _hash(idx, seed, _S_CARD_ID)
    seq_base = (_hash(idx, seed, _S_SEQ) % np.uint64(1_000_000)).astype(np.int64) + (
        dayno * CARD_SEQ_PER_DAY)

    # Where it rides today: home mostly; Wuhan Tong visits partners, partner cards visit Wuhan.
    n_cities = len(circle.cities)
    is_wuhan = circle.cities == WUHAN
    wuhan = int(np.flatnonzero(is_wuhan)[0]) if is_wuhan.any() else 0
    partner_w = np.array([CITY_SHARE.get(int(c), 2.0) for c in circle.cities])
    partner_w[wuhan] = 0.0
    if partner_w.sum() == 0:
        partner_w[:] = 1.0
    home = circle.issuer_home[iss]
    home = np.where(home < 0, wuhan, home)
    u_travel = _unit(idx, seed, dayno, _S_TRAVEL)
    elsewhere = _choose(_unit(idx, seed, dayno, _S_WHERE), partner_w)
    is_wuhan_home = home == wuhan
    travel = np.where(visitor, u_travel >= VISITOR_IN_WUHAN_SHARE,
                      u_travel < np.where(is_wuhan_home, TRAVEL_SHARE, VISIT_WUHAN_SHARE))
    away = np.where(is_wuhan_home | visitor, elsewhere, wuhan)
    ride_city = np.where(travel, away, home)
    if filler:
        has = circle.city_filler[ride_city] >= 0
        ride_city = np.where(has, ride_city, int(np.flatnonzero(circle.city_filler >= 0)[0]))

    commuter_p = np.where(visitor, VISITOR_COMMUTER_SHARE, np.asarray(COMMUTER_SHARE)[product])
    commuter = (_unit(idx, seed, dayno, _S_COMMUTER) < commuter_p) & (not filler)
    u_nj = _unit(idx, seed, dayno, _S_NJ)
    n_journeys = np.where(commuter, 2 + (u_nj < 0.15),
                          1 + (u_nj >= 0.5) + (u_nj >= 0.88)).astype(np.int64)
    if filler:
        n_journeys[:] = 1

    tmpl = np.full((n, MAX_JOURNEYS), -1, dtype=np.int64)
    for j in range(MAX_JOURNEYS):
        u = _unit(idx, seed, dayno, _S_TMPL, j)
        for ci in range(n_cities):
            rows = np.flatnonzero((ride_city == ci) & (n_journeys > j))
            if len(rows) and circle.city_tmpl_weight[ci].sum() > 0:
                tmpl[rows, j] = _choose(u[rows], circle.city_tmpl_weight[ci])
    if filler:
        tmpl[:, 0] = circle.city_filler[ride_city]
    reverse = np.zeros((n, MAX_JOURNEYS), dtype=bool)
    last = n_journeys - 1
    rows = np.flatnonzero(commuter)
    tmpl[rows, last[rows]] = tmpl[rows, 0]  # a commuter goes home the way it came
    reverse[rows, last[rows]] = True

    valid = tmpl >= 0
    t = np.where(valid, tmpl, 0)
    taps = np.where(valid, circle.tmpl_taps[t], 0).sum(axis=1)
    has_net = (valid & circle.tmpl_has_net[t]).any(axis=1)
    last_t = t[np.arange(n), last]
    ends_net = np.where(reverse[np.arange(n), last], circle.tmpl_first_net[last_t],
                        circle.tmpl_last_net[last_t])

    u_anom = _unit(idx, seed, dayno, _S_ANOM)
    anomaly = np.zeros(n, dtype=np.int64)
    lo = 0.0
    for a, p in ANOMALY_SHARE.items():
        hit = (u_anom >= lo) & (u_anom < lo + p)
        if a in (Anomaly.MISSING_EXIT, Anomaly.ORPHAN_EXIT):
            hit &= has_net
        elif a == Anomaly.OVERTIME:
            hit &= ends_net
        anomaly[hit] = int(a)
        lo += p
    if filler:
        anomaly[:] = int(Anomaly.NONE)
    taps = taps - np.isin(anomaly, [Anomaly.MISSING_EXIT, Anomaly.ORPHAN_EXIT]) + (
        anomaly == Anomaly.DUPLICATE)
    return _Plan(idx, circle.issuers[iss], product.astype(np.int64), media.astype(np.int64),
                 card_id, seq_base, ride_city, commuter, n_journeys, tmpl, reverse, anomaly,
                 taps.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Stage 2: journeys, legs and taps


def _clipped_normal(rng: np.random.Generator, n: int, spec: tuple[float, float, float, float]
                    ) -> np.ndarray:
    mean, sd, low, high = spec
    return np.clip(rng.normal(mean, sd, n), low, high)


def _rows(circle: _Circle, plan: _Plan, day: dt.date, rng: np.random.Generator
          ) -> dict[str, np.ndarray]:
    """The day's base taps, card by card in time order, before anomalies and debits."""
    n_cards = len(plan.card_id)
    day_start, day_end = day_bounds_ms(day)
    local_midnight = day_start - 4 * HOUR_MS

    # Journeys, card-major.
    j_card = np.repeat(np.arange(n_cards), plan.n_journeys)
    first_j = np.concatenate([[0], np.cumsum(plan.n_journeys)[:-1]]).astype(np.int64)
    j_ord = np.arange(len(j_card)) - first_j[j_card]
    j_tmpl = plan.tmpl[j_card, j_ord]
    j_rev = plan.reverse[j_card, j_ord]
    nj = len(j_card)
    hours = np.empty(nj)
    commute = plan.commuter[j_card]
    last_j = j_ord == plan.n_journeys[j_card] - 1
    morning = commute & (j_ord == 0)
    evening = commute & last_j
    midday = commute & ~morning & ~evening
    hours[morning] = _clipped_normal(rng, int(morning.sum()), MORNING_PEAK)
    hours[evening] = _clipped_normal(rng, int(evening.sum()), EVENING_PEAK)
    hours[midday] = _clipped_normal(rng, int(midday.sum()), MIDDAY)
    casual = np.flatnonzero(~commute)
    mix = _choose(rng.random(len(casual)), np.array([w for w, _ in CASUAL_TIMES]))
    for m, (_, spec) in enumerate(CASUAL_TIMES):
        sel = casual[mix == m]
        hours[sel] = _clipped_normal(rng, len(sel), spec)
    # A casual rider's journeys in time order: sort the hours within each card.
    by_card = np.full((n_cards, MAX_JOURNEYS), np.inf)
    by_card[j_card, j_ord] = hours
    by_card.sort(axis=1)
    hours = np.where(commute, hours, by_card[j_card, j_ord])

    # Legs, journey-major; a reversed journey runs its template backwards.
    n_legs = circle.tmpl_legs[j_tmpl]
    l_j = np.repeat(np.arange(nj), n_legs)
    first_l = np.concatenate([[0], np.cumsum(n_legs)[:-1]]).astype(np.int64)
    l_ord = np.arange(len(l_j)) - first_l[l_j]
    pos = np.where(j_rev[l_j], n_legs[l_j] - 1 - l_ord, l_ord)
    l_kind = circle.tmpl_kinds[j_tmpl[l_j], pos]
    nl = len(l_j)
    l_card = j_card[l_j]
    l_net = circle.kind_net[l_kind]
    flat = l_net == 0

    line = np.zeros(nl, dtype=np.int64)  # global line index of the boarding tap
    exit_line = np.full(nl, -1, dtype=np.int64)
    board = np.zeros(nl, dtype=np.int64)  # stop ids
    alight = np.zeros(nl, dtype=np.int64)
    minutes = np.zeros(nl)

    # Flat rides: a line of the operator, two distinct stops on it.
    f = np.flatnonzero(flat)
    k = l_kind[f]
    line[f] = circle.kind_lines[k, (rng.random(len(f)) * circle.kind_nlines[k]).astype(np.int64)]
    length = circle.line_len[line[f]]
    a = (rng.random(len(f)) * length).astype(np.int64)
    b = (rng.random(len(f)) * (length - 1)).astype(np.int64)
    b += b >= a
    board[f] = circle.line_stops[line[f], a]
    alight[f] = circle.line_stops[line[f], b]
    ferry = circle.line_mode[line[f]] == Mode.FERRY
    per_stop = rng.uniform(*BUS_MIN_PER_STOP, len(f))
    minutes[f] = np.where(ferry, rng.uniform(*FERRY_MINUTES, len(f)),
                          np.abs(a - b) * per_stop + rng.uniform(0.5, 2.0, len(f)))

    # Network trips: entry by station popularity, exit nearer rather than farther.
    metres = np.zeros(nl, dtype=np.int64)
    for nid, net in circle.nets.items():
        sel = np.flatnonzero(l_net == nid)
        if not len(sel):
            continue
        cdf = np.cumsum(net.weight)
        e = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(len(sel)), side="right"),
                       len(net.stops) - 1)
        local = circle.kind_local[l_kind[sel]]
        if local.any():  # enter at a station in the rider's own city (Gediannan for Ezhou)
            rider_city = circle.cities[plan.ride_city[l_card[sel[local]]]]
            w = net.weight[None, :] * (net.city[None, :] == rider_city[:, None])
            ok = w.sum(axis=1) > 0
            wc = np.cumsum(np.where(ok[:, None], w, net.weight[None, :]), axis=1)
            u = rng.random(int(local.sum())) * wc[:, -1]
            e[local] = np.minimum((wc <= u[:, None]).sum(axis=1), len(net.stops) - 1)
        q = rng.random(len(sel)) ** 1.6  # short trips are more common than long ones
        x = net.by_distance[e, (q * net.by_distance.shape[1]).astype(np.int64)]
        x = np.where(rng.random(len(sel)) < SAME_STATION_SHARE, e, x)
        board[sel], alight[sel] = net.stops[e], net.stops[x]
        metres[sel] = net.dist[e, x]
        line[sel] = _serving_line(net, e, rng)
        exit_line[sel] = _serving_line(net, x, rng)
        speed = NETWORK_SPEED_M_PER_MIN.get(net.mode, 600.0)
        minutes[sel] = metres[sel] / speed + rng.uniform(*STATION_MINUTES, len(sel))

    # The commute home retraces the morning: same lines, stops swapped.
    back = np.flatnonzero(j_rev[l_j])
    if len(back):
        outbound_j = first_j[j_card[l_j[back]]]
        mirror = first_l[outbound_j] + n_legs[l_j[back]] - 1 - l_ord[back]
        board_line = np.where(flat[back], line[mirror], exit_line[mirror])
        exit_line[back] = np.where(flat[back], -1, line[mirror])
        line[back] = board_line
        board[back], alight[back] = alight[mirror], board[mirror]
        metres[back] = metres[mirror]
        minutes[back] = minutes[mirror] * rng.uniform(0.9, 1.1, len(back))

    # Times: legs follow each other with a transfer gap; journeys never overlap and all end
    # before the service day does (SPEC §1: nothing pairs across 04:00).
    gap = np.where(l_ord > 0, rng.uniform(*TRANSFER_GAP_MINUTES, nl), 0.0)
    offset = np.zeros(nl)
    for o in range(1, MAX_LEGS):
        sel = np.flatnonzero(l_ord == o)
        offset[sel] = offset[sel - 1] + minutes[sel - 1] + gap[sel]
    last_leg = first_l + n_legs - 1
    duration = (offset[last_leg] + minutes[last_leg]) * MINUTE_MS
    start = local_midnight + hours * HOUR_MS
    j_gap = JOURNEY_GAP_MINUTES * MINUTE_MS * rng.uniform(1.0, 3.0, nj)
    for o in range(1, MAX_JOURNEYS):
        sel = np.flatnonzero(j_ord == o)
        start[sel] = np.maximum(start[sel], start[sel - 1] + duration[sel - 1] + j_gap[sel])
    limit = np.full(nj, float(day_end - DAY_END_MARGIN_MINUTES * MINUTE_MS))
    for o in range(MAX_JOURNEYS - 1, -1, -1):
        sel = np.flatnonzero(j_ord == o)
        start[sel] = np.maximum(np.minimum(start[sel], limit[sel] - duration[sel]),
                                day_start + MINUTE_MS)
        prev = sel[j_ord[sel] > 0]
        limit[prev - 1] = start[prev] - j_gap[prev]
    board_ms = start[l_j] + offset * MINUTE_MS
    exit_ms = board_ms + minutes * MINUTE_MS

    # Taps: one FLAT per flat ride, ENTRY and EXIT per network trip.
    per_leg = np.where(flat, 1, 2)
    t_leg = np.repeat(np.arange(nl), per_leg)
    first_t = np.concatenate([[0], np.cumsum(per_leg)[:-1]]).astype(np.int64)
    is_exit = (np.arange(len(t_leg)) - first_t[t_leg]) == 1
    t_flat = flat[t_leg]
    tap_type = np.where(t_flat, TapType.FLAT, np.where(is_exit, TapType.EXIT, TapType.ENTRY))
    g = np.where(is_exit, exit_line[t_leg], line[t_leg])
    stop = np.where(is_exit, alight[t_leg], board[t_leg])
    stop = np.where(t_flat & (rng.random(len(t_leg)) < STOP_ZERO_SHARE), 0, stop)
    ts = np.where(is_exit, exit_ms[t_leg], board_ms[t_leg]).astype(np.int64)
    op = circle.line_op[g]
    city = np.where(stop == 0, circle.op_city[op], circle.stop_city[stop])
    vehicle = (rng.random(len(t_leg)) * BUS_VEHICLES).astype(np.int64)
    gate = (rng.random(len(t_leg)) * GATES).astype(np.int64) + np.where(is_exit, 11, 1)
    device = np.where(t_flat, circle.line_id[g] * 1000 + vehicle,
                      np.where(is_exit, alight[t_leg], board[t_leg]) * 100 + gate)
    reader = np.searchsorted(circle.devices, (op << 32) | device)
    t_card = l_card[t_leg]
    first_card_row = np.concatenate([[0], np.cumsum(np.bincount(t_card, minlength=n_cards))[:-1]])
    card_seq = plan.seq_base[t_card] + (np.arange(len(t_card)) - first_card_row[t_card])
    media = plan.media[t_card]
    columns = {
        "operator": op, "device_id": device, "device_seq": np.zeros(len(t_leg), dtype=np.int64),
        "card_id": plan.card_id[t_card], "card_seq": card_seq, "issuer": plan.issuer[t_card],
        "product": plan.product[t_card], "media": media, "ts_ms": ts, "city": city,
        "line": circle.line_id[g], "stop": stop, "tap_type": tap_type.astype(np.int64),
        "debited_fen": np.where(media == Media.QR_CODE, ACCOUNT_BASED, 0),
    }
    # Storage widths from here on: later stages gather these columns, and narrow ones are cheap.
    rows = {f.name: columns[f.name].astype(f.type.to_pandas_dtype(), copy=False)
            for f in TAP_SCHEMA}
    return rows | {
        # bookkeeping, dropped before the table is built
        "_card": t_card, "_g": g, "_reader": reader, "_rank": np.zeros(len(t_leg), np.int64),
        "_keep": np.ones(len(t_leg), dtype=bool),
        "_invalid": np.full(len(t_leg), -1, dtype=np.int64),
    }


def _serving_line(net: _Net, station: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A line that serves the station (any one at an interchange): a tap's stop is on its line."""
    pick = (rng.random(len(station)) * net.n_lines[station]).astype(np.int64)
    return net.lines[station, pick]


# ---------------------------------------------------------------------------------------------
# Stage 3: anomalies


@dataclass
class _Injected:
    missing_exits: int
    orphan_exits: int
    overtime: int
    invalid: dict[str, int]
    invalid_entries: int
    invalid_exits: int
    duplicate_rows: np.ndarray


def _merge(reports: list[_Injected]) -> _Injected:
    return _Injected(
        missing_exits=sum(r.missing_exits for r in reports),
        orphan_exits=sum(r.orphan_exits for r in reports),
        overtime=sum(r.overtime for r in reports),
        invalid={k: sum(r.invalid[k] for r in reports) for k in reports[0].invalid},
        invalid_entries=sum(r.invalid_entries for r in reports),
        invalid_exits=sum(r.invalid_exits for r in reports),
        duplicate_rows=np.concatenate([r.duplicate_rows for r in reports]),
    )


def _one_per_card(card: np.ndarray, eligible: np.ndarray, cards: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """One eligible row per card of ``cards`` (uniformly among the card's eligible rows)."""
    cand = np.flatnonzero(eligible & np.isin(card, cards))
    order = np.lexsort((rng.random(len(cand)), card[cand]))
    cand = cand[order]
    last = np.ones(len(cand), dtype=bool)
    last[:-1] = card[cand][1:] != card[cand][:-1]
    return cand[last]


def _inject(circle: _Circle, plan: _Plan, rows: dict[str, np.ndarray], day: dt.date,
            tariffs: TariffSet, rng: np.random.Generator) -> _Injected:
    card, tap_type = rows["_card"], rows["tap_type"]
    anomaly = plan.anomaly

    def cards(a: Anomaly) -> np.ndarray:
        return np.flatnonzero(anomaly == a)

    missing = _one_per_card(card, tap_type == TapType.EXIT, cards(Anomaly.MISSING_EXIT), rng)
    orphan = _one_per_card(card, tap_type == TapType.ENTRY, cards(Anomaly.ORPHAN_EXIT), rng)
    rows["_keep"][missing] = False
    rows["_keep"][orphan] = False

    # Overtime: the card's last tap is an EXIT; move it past the network's limit when the day
    # has room for it (it stays the card's last tap, so no other leg changes).
    ends = np.append(card[1:] != card[:-1], True)
    over = np.flatnonzero(ends & np.isin(card, cards(Anomaly.OVERTIME))
                          & (tap_type == TapType.EXIT))
    limit = np.full(len(over), -1, dtype=np.int64)
    for nid, _net in circle.nets.items():
        try:
            fare = {n.network: n for n in tariffs.version_for(
                tariffs.registry.networks[nid].city, day).networks}.get(nid)
        except (LookupError, KeyError):
            fare = None
        on = circle.line_net[rows["_g"][over]] == nid
        if fare is not None:
            limit[on] = fare.max_journey_minutes * MINUTE_MS
    entry_ts = rows["ts_ms"][over - 1]
    new_ts = entry_ts + limit + (rng.uniform(1, 45, len(over)) * MINUTE_MS).astype(np.int64)
    ok = (limit > 0) & (new_ts < day_bounds_ms(day)[1] - MINUTE_MS)
    rows["ts_ms"][over[ok]] = new_ts[ok]

    invalid_rows = _one_per_card(card, np.ones(len(card), dtype=bool), cards(Anomaly.INVALID), rng)
    original_type = tap_type[invalid_rows].copy()  # _corrupt may rewrite tap_type in place
    counts = _corrupt(circle, rows, invalid_rows, day, rng)

    dup = _one_per_card(card, np.ones(len(card), dtype=bool), cards(Anomaly.DUPLICATE), rng)
    return _Injected(
        missing_exits=len(missing), orphan_exits=len(orphan), overtime=int(ok.sum()),
        invalid=counts, invalid_entries=int((original_type == TapType.ENTRY).sum()),
        invalid_exits=int((original_type == TapType.EXIT).sum()), duplicate_rows=dup,
    )


def _corrupt(circle: _Circle, rows: dict[str, np.ndarray], at: np.ndarray, day: dt.date,
             rng: np.random.Generator) -> dict[str, int]:
    """Make each row of ``at`` fail exactly one SPEC §4 check; return counts by kind."""
    tap_type = rows["tap_type"][at]
    g = rows["_g"][at]
    on_net = tap_type != TapType.FLAT
    # Stop-not-on-line needs a stop of the row's own city (else the city check fails first).
    same_city = circle.line_city[g] == rows["city"][at]
    applicable = np.ones((len(at), len(Invalid)), dtype=bool)
    applicable[:, Invalid.STOP_ZERO_ON_NETWORK] = on_net
    applicable[:, Invalid.STOP_NOT_ON_LINE] = same_city & (circle.line_other[g, 0] > 0)
    w = applicable * rng.random((len(at), len(Invalid)))
    kind = np.argmax(w, axis=1)
    day_start, day_end = day_bounds_ms(day)
    other_cities = circle.cities
    rows["_invalid"][at] = kind
    for inv in Invalid:
        sel = at[kind == inv]
        n = len(sel)
        if not n:
            continue
        if inv == Invalid.UNKNOWN_ISSUER:
            rows["issuer"][sel] = UNKNOWN_ISSUER
        elif inv == Invalid.UNKNOWN_CITY:
            rows["city"][sel] = UNKNOWN_CITY
        elif inv == Invalid.UNKNOWN_LINE:
            rows["line"][sel] = UNKNOWN_LINE
        elif inv == Invalid.UNKNOWN_STOP:
            rows["stop"][sel] = UNKNOWN_STOP
        elif inv == Invalid.BAD_TAP_TYPE:
            rows["tap_type"][sel] = rng.integers(3, 10, n)
        elif inv == Invalid.BAD_PRODUCT:
            rows["product"][sel] = rng.integers(len(Product), 10, n)
        elif inv == Invalid.BAD_MEDIA:
            rows["media"][sel] = rng.integers(len(Media), 10, n)
        elif inv == Invalid.OUTSIDE_SERVICE_DAY:
            shift = (rng.uniform(1, 120, n) * MINUTE_MS).astype(np.int64)
            rows["ts_ms"][sel] = np.where(rng.random(n) < 0.5, day_start - shift, day_end + shift)
        elif inv == Invalid.STOP_NOT_ON_LINE:
            rows["stop"][sel] = circle.line_other[rows["_g"][sel], rng.integers(0, 16, n)]
        elif inv == Invalid.STOP_ZERO_ON_NETWORK:
            rows["stop"][sel] = 0
            rows["city"][sel] = circle.op_city[rows["operator"][sel]]
        elif inv == Invalid.BAD_DEBIT:
            rows["debited_fen"][sel] = -rng.integers(2, 500, n)
        elif inv == Invalid.CITY_MISMATCH:
            shift = rng.integers(1, len(other_cities), n)
            here = np.searchsorted(other_cities, rows["city"][sel])
            rows["city"][sel] = other_cities[(here + shift) % len(other_cities)]
        elif inv == Invalid.TAP_TYPE_LINE_MISMATCH:
            rows["tap_type"][sel] = np.where(rows["tap_type"][sel] == TapType.FLAT,
                                             TapType.ENTRY, TapType.FLAT)
    return {inv.name: int((kind == inv).sum()) for inv in Invalid}


# ---------------------------------------------------------------------------------------------
# Stage 4: device counters, debits, the table


def _assign_device_seq(rows: dict[str, np.ndarray], dayno: int, day: dt.date) -> None:
    """Each reader numbers its taps in time order, from a counter that grows day by day."""
    # One int64 key (reader, time) sorts faster than a lexsort of three columns; every ts_ms,
    # even a corrupt one, lies within two hours of the service day, so 27 bits hold it.
    since = rows["ts_ms"] - (day_bounds_ms(day)[0] - 2 * HOUR_MS)
    order = np.argsort((rows["_reader"] << 27) | since, kind="stable")
    reader = rows["_reader"][order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = reader[1:] != reader[:-1]
    group_start = np.maximum.accumulate(np.where(new, np.arange(len(order)), 0))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - group_start
    offset = (_hash(rows["_reader"], _S_DEVICE) % np.uint64(1_000_000)).astype(np.int64)
    rows["_rank"] = rank
    rows["_order"] = order
    rows["device_seq"] = dayno * DEVICE_SEQ_PER_DAY + offset + rank


def _set_debits(rows: dict[str, np.ndarray], plan: _Plan, tariffs: TariffSet, price: PriceFn,
                readers: np.ndarray, rng: np.random.Generator, rules: DayRules
                ) -> tuple[tuple[tuple[int, int], ...], int]:
    """Stored-value readers debit the fare the tariff computes for the leg (SPEC §6).

    FLAT and ORPHAN_EXIT taps debit their leg's fare, an ENTRY debits 0 and the EXIT that closes
    a trip debits the trip's fare. A few readers run an old tariff and debit a little off.
    Returns the stale readers and the number of legs they debited wrongly. A stale debit never
    exceeds what one leg can cost in its area that day (``rules.max_leg``, SPEC §4), so that it
    stays a plausible debit that ingestion accepts.
    """
    valid = np.flatnonzero(rows["_keep"] & (rows["_invalid"] < 0))
    taps = _arrow({k: v[valid] for k, v in rows.items() if not k.startswith("_")})
    legs = price(taps, tariffs)
    del taps
    if legs.num_rows == 0:
        return (), 0

    # The boarding tap of a leg, found without a search: rows are card-major and a card's
    # counter numbers its rows from seq_base, dropped and corrupt rows included.
    card_order = np.argsort(plan.card_id)
    leg_card_id = legs.column("card_id").to_numpy()
    found = np.minimum(np.searchsorted(plan.card_id[card_order], leg_card_id), len(card_order) - 1)
    leg_card = card_order[found]
    first_row = np.zeros(len(plan.card_id) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows["_card"], minlength=len(plan.card_id)), out=first_row[1:])
    board_seq = legs.column("board_card_seq").to_numpy()
    at = first_row[leg_card] + (board_seq - plan.seq_base[leg_card])
    at = np.clip(at, 0, len(rows["_card"]) - 1)
    if not ((plan.card_id[leg_card] == leg_card_id) & (rows["card_seq"][at] == board_seq)
            & (rows["_card"][at] == leg_card)).all():
        raise ValueError("the pricer returned legs whose boarding tap is not among the taps given")
    status = legs.column("status").to_numpy()
    computed = legs.column("computed_fen").to_numpy().astype(np.int64)
    closes_trip = (status == LegStatus.COMPLETE) | (status == LegStatus.OVERTIME)
    debits = status != LegStatus.INCOMPLETE  # an unclosed entry debited 0 and stays so
    row = (at + closes_trip)[debits]  # a trip's EXIT is the row after its ENTRY
    fare = computed[debits]

    stored = rows["media"][row] != Media.QR_CODE
    row, fare = row[stored], fare[stored]
    if not len(row):
        return (), 0
    # Readers running an old tariff: whole readers, drawn until they hold ~STALE_LEG_SHARE.
    n_readers = len(readers)
    reader = rows["_reader"][row]
    per_reader = np.bincount(reader, minlength=n_readers)
    shuffled = rng.permutation(np.flatnonzero(per_reader))
    cum = np.cumsum(per_reader[shuffled])
    stale = np.sort(shuffled[: int(np.searchsorted(cum, STALE_LEG_SHARE * len(row))) + 1])
    delta = np.zeros(n_readers, dtype=np.int64)
    delta[stale] = STALE_DELTAS[rng.integers(0, len(STALE_DELTAS), len(stale))]
    cap = np.maximum(fare, rules.max_leg(rows["operator"][row]))
    debit = np.minimum(np.maximum(0, fare + delta[reader]), cap)
    rows["debited_fen"][row] = debit
    names = tuple((int(k) >> 32, int(k) & 0xFFFF_FFFF) for k in readers[stale])
    return names, int((debit != fare).sum())


def _arrow(columns: Mapping[str, np.ndarray]) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(np.asarray(columns[f.name]).astype(f.type.to_pandas_dtype(), copy=False),
                  type=f.type)
         for f in TAP_SCHEMA],
        schema=TAP_SCHEMA,
    )


def _table(rows: dict[str, np.ndarray], duplicate_rows: np.ndarray
           ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Kept rows plus their resent copies, in file order: (operator, device_id, device_seq).

    Also returns, per table row, its Invalid kind (-1 if none) and whether it is a resent copy.
    """
    # Readers are numbered in (operator, device_id) order, so the readers' own order is file
    # order; a resent copy follows its original.
    order = rows["_order"]
    copies = np.zeros(len(order), dtype=np.int64)
    copies[duplicate_rows] = 1
    take = np.repeat(order, (rows["_keep"] * (1 + copies))[order])
    resent = np.zeros(len(take), dtype=bool)
    resent[1:] = take[1:] == take[:-1]
    table = _arrow({k: v[take] for k, v in rows.items() if not k.startswith("_")})
    return table, rows["_invalid"][take].astype(np.int8), resent

