"""Hypothesis strategies for QA: valid taps, adversarial card-days, days, batches, tariff sets.

Every strategy draws *valid, accepted, de-duplicated* taps (SPEC §3-§4) on the registry's real
lines and stops, so that whatever the engine does with them is a pricing question, never an
acceptance one. The adversarial parts are the ones SPEC §5-§6 must get right: taps in the
same millisecond, exits without entries, an entry on one network and an exit on another,
journeys exactly at ``max_journey_minutes`` and one millisecond past it, same-station exits,
boardings exactly at the transfer-window edge and one millisecond past it, chains longer than
the step list, daily caps reached mid-chain, stored-value / account-based / mixed debits,
every issuer, product and medium, card ids shared by two issuers, and days that straddle a
tariff version change and the 04:00 service-day boundary.

Typical use::

    from hypothesis import given
    from tongka.testing.strategies import days, tariffs_and_days
    from clearing.reference import match_and_price
    from tariffs.load import load_tariff_set

    @given(days())
    def test_something(taps):
        legs = match_and_price(taps, load_tariff_set())
        ...

The strategies take an optional ``TariffSet`` (the default set when omitted) because the
edges they aim at (windows, journey limits, band break points) are read from its values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from hypothesis import strategies as st

from clearing.accept import day_rules
from clearing.service_day import DAY_MS, MINUTE_MS, day_bounds_ms, service_day_of
from clearing.taps import ACCOUNT_BASED, TAP_SCHEMA, TapType
from tariffs.load import TariffSet, load_tariff_set
from tariffs.model import Tariff, TariffVersion
from tariffs.registry import FLAT, Line, Registry
from tariffs.validate import check_tariff
from tariffs.vocab import Media, Mode, Product

__all__ = [
    "VERSION_EDGE",
    "World",
    "world",
    "service_days",
    "card_ids",
    "debits",
    "taps",
    "card_days",
    "days",
    "batches",
    "shuffled",
    "recard",
    "tariff_sets",
    "tariffs_and_days",
    "own_issuer",
]

HOUR_MS = 60 * MINUTE_MS
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1

# The default set's one version change inside the circle (Wuhan's 2020 integrated policy);
# ``tariff_sets`` adds versions to other areas on this same day, so straddling days meet them.
VERSION_EDGE = dt.date(2020, 12, 1)

# Debits a reader plausibly wrote: free rides, the circle's usual fares, a max fare.
_USUAL_DEBITS = (0, 0, 50, 90, 100, 135, 144, 150, 160, 170, 180, 200, 270, 300, 1200, 1500)


# ---------------------------------------------------------------------------------------------
# The registry, indexed for drawing


@dataclass(frozen=True, slots=True)
class World:
    """The registry arranged for drawing: lines per tariff area, flat or per network."""

    registry: Registry
    areas: tuple[int, ...]  # every city code, sorted
    flat_lines: dict[int, tuple[Line, ...]]  # area -> flat lines of the area's operators
    network_lines: dict[int, tuple[Line, ...]]  # network -> its lines
    area_networks: dict[int, tuple[int, ...]]  # area -> entry-exit networks
    issuers: tuple[int, ...]  # every issuer code, sorted


_WORLDS: dict[int, tuple[Registry, World]] = {}


def world(registry: Registry) -> World:
    """The drawing index of a registry, built once per registry object."""
    cached = _WORLDS.get(id(registry))
    if cached is not None and cached[0] is registry:
        return cached[1]
    flat: dict[int, list[Line]] = {c: [] for c in registry.cities}
    by_net: dict[int, list[Line]] = {n: [] for n in registry.networks}
    for key in sorted(registry.lines):
        ln = registry.lines[key]
        if ln.network == FLAT:
            flat[registry.line_area(*key)].append(ln)
        elif ln.stops:
            by_net[ln.network].append(ln)
    area_nets: dict[int, list[int]] = {c: [] for c in registry.cities}
    for nid in sorted(registry.networks):
        if by_net[nid]:
            area_nets[registry.networks[nid].city].append(nid)
    w = World(
        registry=registry,
        areas=tuple(sorted(registry.cities)),
        flat_lines={c: tuple(v) for c, v in flat.items()},
        network_lines={n: tuple(v) for n, v in by_net.items()},
        area_networks={c: tuple(v) for c, v in area_nets.items()},
        issuers=tuple(sorted(registry.issuers)),
    )
    _WORLDS[id(registry)] = (registry, w)
    return w


def own_issuer(registry: Registry, area: int) -> int:
    """The first of the area's own issuers (SPEC §2: Wuhan Tong is Wuhan's)."""
    own = registry.own_issuers(area)
    if not own:
        raise LookupError(f"city {area} has no own issuer in the registry")
    return min(own)


# ---------------------------------------------------------------------------------------------
# Small strategies


def _first_priced_day(tariffs: TariffSet) -> dt.date:
    """The first service day on which every area has a version in force."""
    return max(t.versions[0].valid_from for t in tariffs.tariffs.values())


def service_days(tariffs: TariffSet | None = None) -> st.SearchStrategy[dt.date]:
    """Service days every area can price; often a version's first day or the day before it."""
    ts = tariffs or load_tariff_set()
    first = _first_priced_day(ts)
    edges = sorted({v.valid_from + dt.timedelta(days=d)
                    for t in ts.tariffs.values() for v in t.versions for d in (-1, 0)
                    if v.valid_from + dt.timedelta(days=d) >= first}
                   | {VERSION_EDGE, VERSION_EDGE - dt.timedelta(days=1)})
    return st.one_of(
        st.sampled_from(edges),
        st.dates(min_value=first, max_value=first + dt.timedelta(days=4 * 366)),
    )


def card_ids() -> st.SearchStrategy[int]:
    """Pseudonymous card tokens: any uint64, small ones often (so that ids collide)."""
    return st.one_of(st.integers(1, 50), st.integers(0, UINT64_MAX))


def debits() -> st.SearchStrategy[int]:
    """A stored-value debit in fen: usual fares mostly, any int32-safe amount sometimes (the
    day strategies cap it at the most one leg can cost, SPEC v1.2 §4 DEBIT_TOO_HIGH)."""
    return st.one_of(st.sampled_from(_USUAL_DEBITS), st.integers(0, 20_000))


_DEBIT_MODES = ("account", "stored", "stored", "mixed")


# ---------------------------------------------------------------------------------------------
# Card-days: the adversarial core


@dataclass(frozen=True, slots=True)
class _Place:
    operator: int
    line: int
    stop: int
    city: int  # SPEC §3: the stop's city; for stop 0 the city of the line's operator


def _place(reg: Registry, ln: Line, stop: int) -> _Place:
    city = reg.stops[stop].city if stop else reg.operators[ln.operator].city
    return _Place(ln.operator, ln.line, stop, city)


def _version(tariffs: TariffSet, area: int, ts_ms: int) -> TariffVersion:
    return tariffs.version_for(area, service_day_of(ts_ms))


@st.composite
def _time_after(draw: st.DrawFn, cursor: int, anchors: Sequence[int],
                limits_ms: Sequence[int]) -> int:
    """The next boarding time: same ms, soon, later, or exactly at / 1 ms past a limit."""
    kind = draw(st.sampled_from(("same", "soon", "soon", "soon", "later", "edge", "edge")))
    if kind == "same":
        return cursor
    if kind == "soon":
        return cursor + draw(st.integers(1, 30 * MINUTE_MS))
    if kind == "later":
        return cursor + draw(st.integers(30 * MINUTE_MS, 5 * HOUR_MS))
    if not anchors or not limits_ms:
        return cursor + draw(st.integers(0, 10 * MINUTE_MS))
    target = (draw(st.sampled_from(list(anchors))) + draw(st.sampled_from(list(limits_ms)))
              + draw(st.sampled_from((0, 0, 1, -1))))
    return target if target >= cursor else cursor + draw(st.integers(0, 2 * MINUTE_MS))


def _window_ms(version: TariffVersion) -> list[int]:
    return [version.transfer.window_minutes * MINUTE_MS] if version.transfer else []


def _journey_ms(version: TariffVersion, network: int) -> int:
    for nf in version.networks:
        if nf.network == network:
            return nf.max_journey_minutes * MINUTE_MS
    return 240 * MINUTE_MS


@st.composite
def _events(draw: st.DrawFn, tariffs: TariffSet, start: int, end: int, home: int,
            max_events: int) -> list[tuple[_Place, int, int]]:
    """A card's taps in intended order, as (place, tap_type, ts_ms), ts within [start, end)."""
    w = world(tariffs.registry)
    reg = tariffs.registry
    n_events = draw(st.integers(1, max_events))
    cursor = draw(st.one_of(
        st.just(start),  # the first millisecond of the service day (04:00:00.000)
        st.integers(start, end - 1),
        st.integers(max(start, end - 2 * HOUR_MS), end - 1),  # late night, near 03:59:59.999
    ))
    anchors: list[int] = []  # boardings and last taps so far: where windows start
    out: list[tuple[_Place, int, int]] = []

    def clamp(ts: int) -> int:
        return min(max(ts, start), end - 1)

    for _ in range(n_events):
        area = home if draw(st.integers(0, 9)) < 8 else draw(st.sampled_from(w.areas))
        version = _version(tariffs, area, clamp(cursor))
        nets = w.area_networks[area]
        kinds = ["flat"] * 3 if w.flat_lines[area] else []
        if nets:
            kinds += ["journey"] * 4 + ["entry_only", "exit_only"]
            if len([n for n in w.network_lines if w.network_lines[n]]) > 1:
                kinds.append("cross_network")
        kind = draw(st.sampled_from(kinds))
        board = clamp(draw(_time_after(cursor, anchors, _window_ms(version))))
        if kind == "flat":
            ln = draw(st.sampled_from(w.flat_lines[area]))
            # Stop 0 (unknown) is allowed on flat lines only (SPEC §3).
            known = bool(ln.stops) and draw(st.integers(0, 5)) > 0
            stop: int = draw(st.sampled_from(ln.stops)) if known else 0
            out.append((_place(reg, ln, stop), int(TapType.FLAT), board))
            anchors.append(board)
            cursor = board
            continue
        net = draw(st.sampled_from(nets))
        ln = draw(st.sampled_from(w.network_lines[net]))
        entry_stop = draw(st.sampled_from(ln.stops))
        if kind == "exit_only":
            out.append((_place(reg, ln, entry_stop), int(TapType.EXIT), board))
            anchors.append(board)
            cursor = board
            continue
        out.append((_place(reg, ln, entry_stop), int(TapType.ENTRY), board))
        anchors.append(board)
        cursor = board
        if kind == "entry_only":
            continue
        if kind == "cross_network":
            other = draw(st.sampled_from([n for n in w.network_lines
                                          if w.network_lines[n] and n != net]))
            exit_line = draw(st.sampled_from(w.network_lines[other]))
            exit_stop = draw(st.sampled_from(exit_line.stops))
        else:
            exit_line = draw(st.sampled_from(w.network_lines[net]))
            same = draw(st.integers(0, 5)) == 0 and entry_stop in exit_line.stops
            exit_stop = entry_stop if same else draw(st.sampled_from(exit_line.stops))
        limit = _journey_ms(version, net)
        duration = draw(st.one_of(
            st.integers(0, 90 * MINUTE_MS),
            st.sampled_from((0, limit, limit + 1, limit - 1)),  # SPEC §5.3: inclusive limit
            st.integers(limit + 1, limit + 3 * HOUR_MS),  # overtime
        ))
        leave = clamp(board + duration)
        out.append((_place(reg, exit_line, exit_stop), int(TapType.EXIT), leave))
        anchors.append(leave)
        cursor = leave
    return out


@st.composite
def _card_taps(draw: st.DrawFn, tariffs: TariffSet, start: int, end: int, *,
               issuer: int | None, product: int | None, media: int | None,
               card_id: int | None, area: int | None, max_events: int) -> list[dict[str, Any]]:
    """One card's taps over [start, end) as TAP_SCHEMA rows (device_seq not yet unique)."""
    w = world(tariffs.registry)
    # Wuhan (bus, metro, ferry) often; every area sometimes.
    home: int = area if area is not None else draw(st.sampled_from((w.areas[0],) * 3 + w.areas))
    issuer = issuer if issuer is not None else draw(st.sampled_from(w.issuers))
    product = product if product is not None else int(draw(st.sampled_from(Product)))
    media = media if media is not None else int(draw(st.sampled_from(Media)))
    card_id = card_id if card_id is not None else draw(card_ids())
    mode = draw(st.sampled_from(_DEBIT_MODES))
    if media == Media.QR_CODE and draw(st.integers(0, 3)):
        mode = "account"  # QR codes are account-based, mostly
    events = draw(_events(tariffs, start, end, home, max_events))
    n = len(events)
    # card_seq: increasing in tap order (a card's counter) or a permutation (QR nonces, or a
    # counter that disagrees with the clock): SPEC §5 orders by (ts_ms, card_seq).
    seq0 = draw(st.integers(0, INT32_MAX - 4 * n - 1))
    steps = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    seqs = list(np.cumsum(steps) + seq0)
    if draw(st.integers(0, 3)) == 0:
        seqs = draw(st.permutations(seqs))
    rows = []
    for (place, tap_type, ts), seq in zip(events, seqs, strict=True):
        if mode == "account":
            debit = ACCOUNT_BASED
        elif mode == "stored":
            debit = draw(debits())
        else:
            debit = draw(st.one_of(st.just(ACCOUNT_BASED), debits()))
        if debit >= 0:  # SPEC v1.2 §4: no accepted debit exceeds the most one leg can cost
            cap = int(day_rules(tariffs, service_day_of(ts)).max_leg(np.array([place.operator]))[0])
            debit = min(debit, cap) if cap >= 0 else debit
        rows.append({
            "operator": place.operator,
            "device_id": draw(st.integers(1, 2000)),
            "device_seq": 0,  # made unique by the caller
            "card_id": card_id,
            "card_seq": int(seq),
            "issuer": issuer,
            "product": product,
            "media": media,
            "ts_ms": ts,
            "city": place.city,
            "line": place.line,
            "stop": place.stop,
            "tap_type": tap_type,
            "debited_fen": debit,
        })
    return rows


def _table(rows: list[dict[str, Any]], device_seq0: int) -> pa.Table:
    """Rows as a TAP_SCHEMA table with unique device keys (SPEC §4: no duplicates)."""
    for i, row in enumerate(rows):
        row["device_seq"] = device_seq0 + i
    return pa.Table.from_pylist(rows, schema=TAP_SCHEMA)


@st.composite
def card_days(draw: st.DrawFn, tariffs: TariffSet | None = None, day: dt.date | None = None, *,
              issuer: int | None = None, product: int | None = None, media: int | None = None,
              card_id: int | None = None, area: int | None = None,
              max_events: int = 8) -> pa.Table:
    """One card's taps on one service day, in the order they were generated (not time order).

    ``area`` pins the card's home area (most of its taps happen there); ``issuer``,
    ``product``, ``media`` and ``card_id`` pin the card. An event is a FLAT boarding, a
    journey (ENTRY and EXIT, possibly same-station, overtime, at the journey limit or on
    another network), a lone ENTRY or a lone EXIT; up to ``max_events`` of them.
    """
    ts = tariffs or load_tariff_set()
    day = day if day is not None else draw(service_days(ts))
    start, end = day_bounds_ms(day)
    rows = draw(_card_taps(ts, start, end, issuer=issuer, product=product, media=media,
                           card_id=card_id, area=area, max_events=max_events))
    return _table(rows, draw(st.integers(0, 2**40)))


@st.composite
def days(draw: st.DrawFn, tariffs: TariffSet | None = None, day: dt.date | None = None, *,
         max_cards: int = 6, max_events: int = 8, straddle: bool | None = None) -> pa.Table:
    """A batch of accepted taps of several cards: one service day, or two when it straddles.

    A straddling day covers the day before and the first day of a version change
    (``VERSION_EDGE`` by default, or ``day`` and the day after), with cards whose taps run
    across the 04:00 boundary between them. Some cards share a ``card_id`` with another
    issuer (a card is the pair (issuer, card_id)). Device keys and card keys are unique.
    """
    ts = tariffs or load_tariff_set()
    straddle = straddle if straddle is not None else draw(st.integers(0, 4)) == 0
    if day is None:
        day = (VERSION_EDGE - dt.timedelta(days=1)) if straddle and draw(st.booleans()) \
            else draw(service_days(ts))
    start, end = day_bounds_ms(day)
    if straddle:
        end += DAY_MS
    n_cards = draw(st.integers(1, max_cards))
    rows: list[dict[str, Any]] = []
    cards: set[tuple[int, int]] = set()
    for _ in range(n_cards):
        card_id = None
        if cards and draw(st.integers(0, 5)) == 0:  # same card_id, another issuer
            card_id = draw(st.sampled_from(sorted(cards)))[1]
        lo = start
        if straddle and draw(st.booleans()):
            lo = max(start, end - DAY_MS - 3 * HOUR_MS)  # begins late on the first day
        card_rows = draw(_card_taps(ts, lo, end, issuer=None, product=None, media=None,
                                    card_id=card_id, area=None, max_events=max_events))
        key = (card_rows[0]["issuer"], card_rows[0]["card_id"])
        if key in cards:
            continue  # the same card drawn twice would repeat card keys; skip it
        cards.add(key)
        rows.extend(card_rows)
    return _table(rows, draw(st.integers(0, 2**40)))


def taps(tariffs: TariffSet | None = None, day: dt.date | None = None) -> st.SearchStrategy[dict]:
    """A single valid canonical tap as a ``TapRecord``-shaped dict (SPEC §3)."""
    return card_days(tariffs, day, max_events=1).map(lambda t: t.slice(0, 1).to_pylist()[0])


def recard(table: pa.Table, *, issuer: int | None = None, product: int | None = None,
           media: int | None = None, card_id: int | None = None) -> pa.Table:
    """The same taps presented by another card: replace issuer, product, medium or card id.

    For the SPEC §9 "same card, same discount" property: the journey stays, the card changes.
    """
    out = table
    for name, value in (("issuer", issuer), ("product", product), ("media", media),
                        ("card_id", card_id)):
        if value is not None:
            i = out.schema.get_field_index(name)
            out = out.set_column(i, out.schema.field(i),
                                 pa.array([value] * out.num_rows, type=out.schema.field(i).type))
    return out


# ---------------------------------------------------------------------------------------------
# Batches and shuffles


@st.composite
def shuffled(draw: st.DrawFn, table: pa.Table) -> pa.Table:
    """The same rows in another order."""
    order = draw(st.permutations(range(table.num_rows)))
    return table.take(pa.array(order, type=pa.int64()))


@st.composite
def batches(draw: st.DrawFn, table: pa.Table, max_batches: int = 5) -> list[pa.Table]:
    """A split of a day's rows into 1..``max_batches`` batches (some may be empty), in any order.

    Each batch is a set of rows in any order; concatenated in the returned order they hold
    every row exactly once.
    """
    n = table.num_rows
    k = draw(st.integers(1, max_batches))
    owner = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    out = []
    for b in draw(st.permutations(range(k))):
        idx = [i for i in range(n) if owner[i] == b]
        idx = draw(st.permutations(idx))
        out.append(table.take(pa.array(idx, type=pa.int64())))
    return out


# ---------------------------------------------------------------------------------------------
# Tariff sets: valid variations of a base set


@st.composite
def tariff_sets(draw: st.DrawFn, base: TariffSet | None = None, *,
                add_versions: bool = True) -> TariffSet:
    """A valid variation of ``base`` (the default set): other fares, rates, windows, steps, caps.

    Each area's versions are varied or kept; with ``add_versions`` an area may get a new
    version on ``VERSION_EDGE`` (a varied copy of the one in force then), so straddling days
    meet version changes in many areas. Band break points are moved onto real track
    distances of the network (and one metre below them), so "exactly at the edge" and "one
    metre past it" happen. The result passes the same load checks as a tariff directory.
    """
    base = base or load_tariff_set()
    reg = base.registry
    out: dict[int, Tariff] = {}
    for area, tariff in sorted(base.tariffs.items()):
        data = tariff.model_dump()
        versions = data["versions"]
        for v in versions:
            if draw(st.integers(0, 2)):
                _vary_version(draw, v, area, reg)
        if add_versions and versions[-1]["valid_from"] < VERSION_EDGE and draw(st.booleans()):
            new = _copy(versions[-1])
            new["valid_from"] = VERSION_EDGE
            new["note"] = "generated version"
            _vary_version(draw, new, area, reg)
            versions.append(new)
        t = Tariff.model_validate(data)
        problems = check_tariff(f"generated-{area}.toml", t, reg)
        if problems:  # a bug of this strategy, not of the engine
            raise AssertionError(f"tariff_sets drew an invalid tariff: {problems}")
        out[area] = t
    return TariffSet(reg, out, base.contracts)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


_MODE_NAMES = tuple(m.name.lower() for m in Mode)
_PRODUCT_NAMES = tuple(p.name.lower() for p in Product)

# Strategies built once: hypothesis validates each new strategy object, and a tariff set has
# hundreds of values to draw.
_APPORTIONMENT = st.sampled_from(("later_leg", "pro_rata"))
_RATE_BP = st.sampled_from((0, 0, 1000, 2000, 5000, 10000)) | st.integers(0, 10_000)
_FLAT_FARE = st.sampled_from((100, 150, 200, 300)) | st.integers(0, 1000)
_PRICE = st.one_of(
    st.builds(lambda bp: {"rate_bp": bp, "fixed_fen": None}, _RATE_BP),
    st.builds(lambda fen: {"rate_bp": None, "fixed_fen": fen},
              st.sampled_from((50, 70, 100)) | st.integers(0, 400)),
)
_MAYBE_PRICE = st.one_of(st.none(), _PRICE)  # None: no price, the ORDINARY one applies
_STEP = st.one_of(
    st.just({"kind": "free", "fen": None, "bp": None}),
    st.builds(lambda f: {"kind": "off_fen", "fen": f, "bp": None}, st.integers(0, 300)),
    st.builds(lambda b: {"kind": "pay_rate", "fen": None, "bp": b}, _RATE_BP),
    st.just({"kind": "difference", "fen": None, "bp": None}),
)
_STEPS = st.lists(_STEP, min_size=1, max_size=4)
_WINDOW_MINUTES = st.sampled_from((30, 45, 60, 90)) | st.integers(1, 180)
_WINDOW_FROM = st.sampled_from(("first_boarding", "previous_last_tap"))
_CAPS = st.dictionaries(st.sampled_from(_PRODUCT_NAMES), st.integers(0, 1500), max_size=3)
_JOURNEY_MINUTES = st.sampled_from((30, 60, 180, 240)) | st.integers(1, 300)
_NET_FARE = st.integers(0, 1500)
_SAME_STATION = st.integers(0, 600)
_HEADROOM = st.sampled_from((0, 0, 100))
_STRATEGY_CACHE: dict[tuple, st.SearchStrategy] = {}


def _cached(key: tuple, make: Any) -> st.SearchStrategy:
    strategy = _STRATEGY_CACHE.get(key)
    if strategy is None:
        strategy = _STRATEGY_CACHE[key] = make()
    return strategy


def _vary_version(draw: st.DrawFn, v: dict[str, Any], area: int, reg: Registry) -> None:
    """Vary one version dict in place, keeping it valid (see ``tariffs.validate``)."""
    w = world(reg)
    own = sorted(reg.own_issuers(area))
    others = tuple(i for i in w.issuers if i not in own)
    v["apportionment"] = draw(_APPORTIONMENT)
    v["visitor_rate_bp"] = draw(_RATE_BP)
    # Own issuers always honour concessions (SPEC §6.2: a city's own welfare); others may.
    accepted = sorted(own + draw(_cached(("subset", others), lambda: st.lists(
        st.sampled_from(others), unique=True))))
    v["accepted_issuers"] = accepted
    extra = tuple(i for i in accepted if i not in own)
    v["concession_issuers"] = sorted(own + draw(_cached(("subset2", extra), lambda: st.lists(
        st.sampled_from(extra), unique=True, max_size=2)))) if extra else own
    for lf in v["line_fares"]:
        lf["fare_fen"] = draw(_FLAT_FARE)
    for nf in v["networks"]:
        _vary_network(draw, nf, reg)
    area_modes = _cached(("modes", id(reg), area), lambda: st.just(tuple(sorted(
        {ln.mode.name.lower() for ln in reg.lines.values()
         if reg.line_area(ln.operator, ln.line) == area}))))
    modes: tuple[str, ...] = draw(area_modes)
    prices = []
    for mode in modes:
        for product in _PRODUCT_NAMES:
            price = draw(_PRICE if product == "ordinary" else _MAYBE_PRICE)
            if price is not None:
                prices.append({"mode": mode, "product": product, "source": "", **price})
    v["prices"] = prices
    if draw(st.integers(0, 4)) == 0:
        v["transfer"] = None
    else:
        pairs = tuple((a, b) for a in modes for b in modes)
        allowed = draw(_cached(("pairs", pairs), lambda: st.lists(
            st.sampled_from(pairs), min_size=1, unique=True)))
        v["transfer"] = {
            "window_minutes": draw(_WINDOW_MINUTES),
            "window_from": draw(_WINDOW_FROM),
            "allowed_modes": [list(p) for p in allowed],
            "steps": draw(_STEPS),
            "source": "",
        }
    v["caps"] = [{"product": p, "cap_fen": c} for p, c in sorted(draw(_CAPS).items())]


def _vary_network(draw: st.DrawFn, nf: dict[str, Any], reg: Registry) -> None:
    nf["max_journey_minutes"] = draw(_JOURNEY_MINUTES)
    if nf["bands"] is not None:
        # Break points on real track distances, or one metre below them (SPEC §6.1: d <= upper_m).
        real = _cached(("edges", id(reg), nf["network"]), lambda: st.lists(
            st.builds(lambda d, k: d - k,
                      st.sampled_from(sorted({int(d) for d in
                                              np.unique(reg.distances(nf["network"])) if d > 1})),
                      st.sampled_from((0, 1))),
            max_size=6, unique=True))
        uppers = sorted(draw(real))
        fares = [draw(_NET_FARE) for _ in range(len(uppers) + 1)]
        nf["bands"] = [{"upper_m": u, "fare_fen": f} for u, f in zip(uppers, fares, strict=False)]
        nf["bands"].append({"upper_m": None, "fare_fen": fares[-1]})
        top = max(fares)
    else:
        for row in nf["matrix"]:
            row[2] = draw(_NET_FARE)
        top = max(row[2] for row in nf["matrix"])
    nf["same_station_fare"] = draw(_SAME_STATION)
    # SPEC §6.1: max_fare is at least every base fare of the network (checked at load).
    nf["max_fare"] = max(top, nf["same_station_fare"]) + draw(_HEADROOM)


@st.composite
def tariffs_and_days(draw: st.DrawFn, *, max_cards: int = 6,
                     max_events: int = 8) -> tuple[TariffSet, pa.Table]:
    """A varied tariff set (sometimes the default one) and a day of taps drawn against it."""
    ts = draw(st.one_of(st.just(load_tariff_set()), tariff_sets()))
    return ts, draw(days(ts, max_cards=max_cards, max_events=max_events))
