"""The plain-Python reference of matching and pricing (SPEC §5-§6), written to be read.

This is the executable form of the SPEC: one card-day at a time, one tap at a time, one
pricing step at a time. It is deliberately slow; the numba kernels are the fast path and are
tested equal to this, field by field. ``tongka clear --reference`` runs it for audits.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import pyarrow as pa

from clearing.legs import (
    NO_CHAIN,
    PENALTY_STATUSES,
    Apportionment,
    DebitKind,
    Leg,
    LegStatus,
    legs_table,
    sort_legs,
)
from clearing.service_day import MINUTE_MS, day_from_number, service_day_number
from clearing.taps import ACCOUNT_BASED, TapType
from tariffs.fares import base_fare_network, cap_for, capped_fare, product_fare, transfer_fare
from tariffs.load import TariffSet
from tariffs.model import NetworkFare, TariffVersion, TransferStep
from tariffs.registry import FLAT, Registry
from tariffs.vocab import Mode


@dataclass(frozen=True, slots=True)
class Tap:
    """One accepted tap, as the reference reads it (the fields of SPEC §3 it needs)."""

    operator: int
    device_id: int
    card_id: int
    card_seq: int
    issuer: int
    product: int
    media: int
    ts_ms: int
    line: int
    stop: int
    tap_type: int
    debited_fen: int


@dataclass(frozen=True, slots=True)
class MatchedLeg:
    """SPEC §5's output before pricing: a status and the taps that made the leg."""

    status: LegStatus
    boarding: Tap  # the ENTRY or FLAT tap; the EXIT for an ORPHAN_EXIT
    exit: Tap | None  # the EXIT of a COMPLETE or OVERTIME leg


def match_and_price(taps: pa.Table, tariffs: TariffSet) -> pa.Table:
    """Match and price accepted, de-duplicated taps of any service days; one row per leg."""
    legs: list[Leg] = []
    for day_no, card_taps in _card_days(taps):
        legs.extend(price_card_day(day_no, card_taps, tariffs))
    return sort_legs(legs_table(legs))


def _card_days(taps: pa.Table) -> Iterable[tuple[int, list[Tap]]]:
    """Group taps by (service day, card), each card-day in order of (ts_ms, card_seq)."""
    columns = {name: taps.column(name).to_pylist() for name in Tap.__slots__}
    rows = [Tap(*values) for values in zip(*(columns[n] for n in Tap.__slots__), strict=True)]
    groups: dict[tuple[int, int, int], list[Tap]] = {}
    for tap in rows:
        key = (
            int(service_day_number(tap.ts_ms)),
            tap.issuer,
            tap.card_id,
        )  # a card is (issuer, card_id)
        groups.setdefault(key, []).append(tap)
    for (day_no, _issuer, _card), group in sorted(groups.items()):
        group.sort(key=lambda t: (t.ts_ms, t.card_seq))  # SPEC §5: order of (ts_ms, card_seq)
        yield day_no, group


# ---------------------------------------------------------------------------------------------
# SPEC §5: matching


def match_card_day(taps: list[Tap], day: dt.date, tariffs: TariffSet) -> list[MatchedLeg]:
    """Pair one card-day's taps into legs, holding at most one open entry."""
    reg = tariffs.registry
    legs: list[MatchedLeg] = []
    open_entry: Tap | None = None
    for tap in taps:
        if tap.tap_type == TapType.FLAT:  # rule 1
            if open_entry is not None:
                legs.append(MatchedLeg(LegStatus.INCOMPLETE, open_entry, None))
                open_entry = None
            legs.append(MatchedLeg(LegStatus.FLAT, tap, None))
        elif tap.tap_type == TapType.ENTRY:  # rule 2
            if open_entry is not None:
                legs.append(MatchedLeg(LegStatus.INCOMPLETE, open_entry, None))
            open_entry = tap
        elif open_entry is not None and _network(reg, open_entry) == _network(reg, tap):  # rule 3
            fare = _network_fare(tariffs, day, open_entry)
            within = tap.ts_ms - open_entry.ts_ms <= fare.max_journey_minutes * MINUTE_MS
            status = LegStatus.COMPLETE if within else LegStatus.OVERTIME
            legs.append(MatchedLeg(status, open_entry, tap))
            open_entry = None
        else:  # rule 4: an exit with no open entry on its network
            if open_entry is not None:
                legs.append(MatchedLeg(LegStatus.INCOMPLETE, open_entry, None))
                open_entry = None
            legs.append(MatchedLeg(LegStatus.ORPHAN_EXIT, tap, None))
    if open_entry is not None:  # rule 5
        legs.append(MatchedLeg(LegStatus.INCOMPLETE, open_entry, None))
    return legs


def _network(reg: Registry, tap: Tap) -> int:
    return reg.lines[(tap.operator, tap.line)].network


def _network_fare(tariffs: TariffSet, day: dt.date, tap: Tap) -> NetworkFare:
    reg = tariffs.registry
    area = reg.line_area(tap.operator, tap.line)
    return _rules(tariffs, area, day).networks[_network(reg, tap)]


# ---------------------------------------------------------------------------------------------
# SPEC §6: pricing


@dataclass(frozen=True)
class _Rules:
    """The lookups of one tariff version that the steps need by key; the steps' arithmetic
    itself is ``tariffs.fares``, the model-based twin of the compiled tables."""

    version: TariffVersion
    line_fares: dict[tuple[int, int], int]
    networks: dict[int, NetworkFare]
    allowed: frozenset[tuple[int, int]]
    steps: tuple[TransferStep, ...]


@lru_cache(maxsize=64)  # bounded: property tests build many tariff sets
def _rules_cached(tariffs: TariffSet, area: int, day: dt.date) -> _Rules:
    v = tariffs.version_for(area, day)
    reg = tariffs.registry
    line_fares: dict[tuple[int, int], int] = {}
    for lf in v.line_fares:
        lines = (
            lf.lines
            if lf.lines is not None
            else [k[1] for k, ln in reg.lines.items() if k[0] == lf.operator and ln.network == FLAT]
        )
        for n in lines:
            line_fares[(lf.operator, n)] = lf.fare_fen
    transfer = v.transfer
    return _Rules(
        version=v,
        line_fares=line_fares,
        networks={nf.network: nf for nf in v.networks},
        allowed=frozenset(
            (int(Mode[a.upper()]), int(Mode[b.upper()])) for a, b in transfer.allowed_modes
        )
        if transfer
        else frozenset(),
        steps=tuple(transfer.steps) if transfer else (),
    )


def _rules(tariffs: TariffSet, area: int, day: dt.date) -> _Rules:
    return _rules_cached(tariffs, area, day)


def base_fare(tariffs: TariffSet, rules: _Rules, leg: MatchedLeg) -> int:
    """Step 1: the full adult cash fare of a non-penalty leg."""
    b = leg.boarding
    if leg.status == LegStatus.FLAT:
        return rules.line_fares[(b.operator, b.line)]
    assert leg.exit is not None
    fare = rules.networks[_network(tariffs.registry, b)]
    return base_fare_network(fare, tariffs.registry, b.stop, leg.exit.stop)


@dataclass
class _Chain:
    ordinal: int
    area: int
    first_boarding_ms: int
    legs: int


def price_card_day(day_no: int, taps: list[Tap], tariffs: TariffSet) -> list[Leg]:
    """Match one card-day's taps (in SPEC §5 order) and price each leg by SPEC §6."""
    day = day_from_number(day_no)
    reg = tariffs.registry
    out: list[Leg] = []
    chain: _Chain | None = None
    chains_started = 0
    previous: Leg | None = None
    spent_by_area: dict[int, int] = {}  # step 5: S, computed fares of earlier non-penalty legs
    for m in match_card_day(taps, day, tariffs):
        b = m.boarding
        line = reg.lines[(b.operator, b.line)]
        area = reg.line_area(b.operator, b.line)
        rules = _rules(tariffs, area, day)
        last_ts = m.exit.ts_ms if m.exit is not None else b.ts_ms
        leg_taps = [b] if m.exit is None else [b, m.exit]
        common = dict(
            service_day=day_no,
            card_id=b.card_id,
            issuer=b.issuer,
            product=b.product,
            media=b.media,
            operator=b.operator,
            line=b.line,
            mode=int(line.mode),
            area=area,
            network=line.network,
            status=int(m.status),
            board_stop=b.stop,
            exit_stop=m.exit.stop if m.exit is not None else 0,
            board_ts_ms=b.ts_ms,
            last_ts_ms=last_ts,
            board_card_seq=b.card_seq,
            board_device_id=b.device_id,
            version=(rules.version.valid_from - dt.date(1970, 1, 1)).days,
            apportionment=int(
                Apportionment.PRO_RATA
                if rules.version.apportionment == "pro_rata"
                else Apportionment.LATER_LEG
            ),
        )
        if m.status in PENALTY_STATUSES:
            # Step 1: a penalty leg computes exactly max_fare; nothing below applies, and it
            # neither starts nor joins a chain nor counts toward a cap.
            fare = rules.networks[line.network].max_fare
            leg = Leg(
                **common,
                honoured_product=b.product,
                chain=NO_CHAIN,
                transfer_no=0,
                base_fen=fare,
                product_fare_fen=fare,
                transfer_fare_fen=fare,
                computed_fen=fare,
                card_discount_fen=0,
                transfer_discount_fen=0,
                cap_discount_fen=0,
                **_charge(leg_taps, fare),
            )
            out.append(leg)
            previous, chain = leg, None
            continue

        base = base_fare(tariffs, rules, m)
        honoured, f = product_fare(rules.version, b.issuer, b.product, int(line.mode), base)

        # Step 4: does this leg join the previous leg's chain?
        t, transfer_no = f, 0
        if _is_transfer(rules, previous, chain, area, int(line.mode), b.ts_ms):
            assert chain is not None and previous is not None
            transfer_no = chain.legs
            t = transfer_fare(rules.steps[transfer_no - 1], f, base, previous.product_fare_fen)
            chain.legs += 1
        else:
            chain = _Chain(chains_started, area, b.ts_ms, 1)
            chains_started += 1

        # Step 5: daily cap by honoured product, over earlier legs of the area, any product.
        spent = spent_by_area.get(area, 0)
        computed = capped_fare(t, cap_for(rules.version, honoured), spent)
        spent_by_area[area] = spent + computed

        leg = Leg(
            **common,
            honoured_product=honoured,
            chain=chain.ordinal,
            transfer_no=transfer_no,
            base_fen=base,
            product_fare_fen=f,
            transfer_fare_fen=t,
            computed_fen=computed,
            card_discount_fen=base - f,
            transfer_discount_fen=f - t,
            cap_discount_fen=t - computed,
            **_charge(leg_taps, computed),
        )
        out.append(leg)
        previous = leg
    return out


def _is_transfer(
    rules: _Rules,
    previous: Leg | None,
    chain: _Chain | None,
    area: int,
    mode: int,
    boarding_ms: int,
) -> bool:
    """SPEC §6.4: the conditions under which a leg joins the previous leg's chain."""
    transfer = rules.version.transfer
    if transfer is None or previous is None or chain is None:
        return False  # no rule, first leg of the day, or previous leg was a penalty leg
    if previous.area != area or (previous.mode, mode) not in rules.allowed:
        return False
    if transfer.window_from == "first_boarding":
        window_start = chain.first_boarding_ms
    else:  # previous_last_tap
        window_start = previous.last_ts_ms
    if boarding_ms - window_start > transfer.window_minutes * MINUTE_MS:  # inclusive limit
        return False
    return chain.legs < 1 + len(rules.steps)  # a full chain is followed by a new one


def _charge(taps: list[Tap], computed: int) -> dict[str, int]:
    """Stored value vs account-based: what the leg is charged and how it differs."""
    debits = [t.debited_fen for t in taps]
    if all(d >= 0 for d in debits):
        charged, kind = sum(debits), DebitKind.STORED_VALUE
    elif all(d == ACCOUNT_BASED for d in debits):
        charged, kind = computed, DebitKind.ACCOUNT
    else:  # MIXED_DEBIT: charged the non-negative debits, reported as an error
        charged, kind = sum(d for d in debits if d >= 0), DebitKind.MIXED
    return {"charged_fen": charged, "mismatch_fen": charged - computed, "debit_kind": int(kind)}
