"""Checks of a parsed tariff against the registry and against itself (SPEC §6 load-time rules).

Every problem is a ``TariffProblem`` naming the file, the version (its ``valid_from``), the
field path and what is wrong, written for the person who maintains the fare notice, not for
the programmer. Each kind of problem has its own stable code (listed in docs/tariffs.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from tariffs.error_codes import ErrorCode
from tariffs.errors import TariffProblem
from tariffs.fares import rebate_valid_from
from tariffs.model import ContractBook, NetworkFare, Tariff, TariffVersion
from tariffs.registry import FLAT, Line, Registry
from tariffs.vocab import Mode

MAX_FEN = 10_000_000  # the upper bound of model.Fen: 100 000 yuan
MAX_BP = 10_000  # SPEC §1
RATE_FIELDS = frozenset({"rate_bp", "bp", "visitor_rate_bp", "fee_bp"})
FEN_FIELDS = frozenset({"fare_fen", "fixed_fen", "max_fare", "same_station_fare", "fen",
                        "cap_fen", "spend_fen", "rebate_fen"})
PARTIES_THAT_FUND = ("operator (the leg's operator bears it) or government (the area's "
                     "government pays it)")

Report = Callable[[ErrorCode, str, str], None]  # (code, field path, message)


# ---------------------------------------------------------------------------------------------
# Problems found while parsing: pydantic's errors in an operator's words


def describe_field_error(err: dict[str, Any]) -> tuple[ErrorCode, str]:
    """(code, message) for one pydantic error of a tariff or contract file."""
    kind = str(err["type"])
    loc = tuple(err["loc"])
    name = _field_name(loc)
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return ErrorCode.TARIFF_MISSING_FIELD, "is required but missing"
    if kind == "extra_forbidden":
        return ErrorCode.TARIFF_UNKNOWN_FIELD, "is not a known field (check its spelling)"
    if kind in {"less_than_equal", "greater_than_equal", "greater_than", "less_than"}:
        if name in RATE_FIELDS:
            return (ErrorCode.TARIFF_RATE_RANGE,
                    f"rate {value} bp is out of range: a rate is 0 to {MAX_BP} bp (0 to 100 %)")
        if name in FEN_FIELDS:
            return (ErrorCode.TARIFF_FARE_RANGE,
                    f"amount {value} fen is out of range: an amount is 0 to {MAX_FEN} fen")
        bound = {"less_than_equal": "at most", "greater_than_equal": "at least",
                 "greater_than": "more than", "less_than": "less than"}[kind]
        limit = next(iter(ctx.values()), "?")
        return (ErrorCode.TARIFF_VALUE_RANGE,
                f"{value} is out of range: it must be {bound} {limit}")
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "")
        if "funders" in loc and loc[-1] != "[key]":
            return (ErrorCode.TARIFF_UNKNOWN_FUNDER,
                    f"{value!r} is not a party that can fund a discount: use {PARTIES_THAT_FUND}")
        if name == "product" or loc[-1] == "[key]":
            return (ErrorCode.TARIFF_UNKNOWN_PRODUCT,
                    f"{value!r} is not a product: use one of {choices}")
        if name == "mode" or "allowed_modes" in loc:
            return ErrorCode.TARIFF_UNKNOWN_MODE, f"{value!r} is not a mode: use one of {choices}"
        if name == "kind":
            return (ErrorCode.TARIFF_UNKNOWN_STEP,
                    f"{value!r} is not a transfer step kind: use one of {choices}")
        return (ErrorCode.TARIFF_UNKNOWN_CHOICE,
                f"{value!r} is not allowed here: use one of {choices}")
    if kind in {"int_type", "int_from_float", "int_parsing"}:
        unit = " of bp" if name in RATE_FIELDS else " of fen" if name in FEN_FIELDS else ""
        return ErrorCode.TARIFF_FIELD, f"must be a whole number{unit}, not {value!r}"
    if kind in {"date_type", "date_parsing", "date_from_datetime_inexact"}:
        return (ErrorCode.TARIFF_FIELD,
                f"must be a TOML date such as 2016-01-01 (no quotes), not {value!r}")
    if kind in {"list_type", "too_short", "too_long"}:
        return (ErrorCode.TARIFF_FIELD,
                str(err["msg"]).replace("Input", "the list").replace("List", "list"))
    return ErrorCode.TARIFF_FIELD, str(err["msg"]).removeprefix("Value error, ")


def _field_name(loc: tuple[Any, ...]) -> str:
    for part in reversed(loc):
        if isinstance(part, str) and part != "[key]":
            return part
    return ""


# ---------------------------------------------------------------------------------------------
# Problems of a whole tariff file


def check_tariff(file: str, tariff: Tariff, registry: Registry) -> list[TariffProblem]:
    """Every problem of one tariff file; an empty list means it may price."""
    problems: list[TariffProblem] = []

    def bad(code: ErrorCode, version: str, field: str, message: str) -> None:
        problems.append(TariffProblem(code, file, version, field, message))

    if tariff.area not in registry.cities:
        bad(ErrorCode.TARIFF_UNKNOWN_AREA, "-", "area",
            f"city {tariff.area} is not in the registry: the area is a GB/T 2260 city code")
        return problems
    if not tariff.versions:
        bad(ErrorCode.TARIFF_NO_VERSIONS, "-", "versions", "a tariff needs at least one version")
    days = [v.valid_from for v in tariff.versions]
    for i in range(1, len(days)):
        if days[i] <= days[i - 1]:
            # SPEC §6: one service day of one area is always priced by one version.
            bad(ErrorCode.TARIFF_VERSION_OVERLAP, str(days[i]), f"versions[{i}].valid_from",
                f"takes effect on {days[i]}, which is not after the previous version's "
                f"{days[i - 1]}: list versions in strictly ascending valid_from so that every "
                "service day has exactly one version")
    area_lines = [ln for ln in registry.lines.values()
                  if registry.operators[ln.operator].city == tariff.area]
    for i, version in enumerate(tariff.versions):
        def report(code: ErrorCode, field: str, message: str,
                   _v: TariffVersion = version) -> None:
            bad(code, str(_v.valid_from), field, message)
        check_version(version, f"versions[{i}]", tariff.area, area_lines, registry, report)
    _check_rebate_ends(tariff, bad)
    return problems


def _check_rebate_ends(tariff: Tariff,
                       bad: Callable[[ErrorCode, str, str, str], None]) -> None:
    """A rebate rule starting on or after the next version's first day would never be in
    force (SPEC §6 v1.2: a month uses the rule of the version in force on its last day)."""
    for i, (v, after) in enumerate(zip(tariff.versions, tariff.versions[1:], strict=False)):
        for j, rebate in enumerate(v.rebates):
            if rebate.valid_from is not None and rebate.valid_from >= after.valid_from:
                bad(ErrorCode.TARIFF_REBATE_VALID_FROM, str(v.valid_from),
                    f"versions[{i}].rebates[{j}].valid_from",
                    f"takes effect on {rebate.valid_from}, when the next version (from "
                    f"{after.valid_from}) is already in force, so it would never apply: move the "
                    "rule into that version")


def check_version(v: TariffVersion, at: str, area: int, area_lines: Sequence[Line],
                  reg: Registry, report: Report) -> None:
    """Every problem of one version; ``area_lines`` are the lines whose operator is of ``area``."""
    _check_issuers(v, at, reg, report)
    _check_line_fares(v, at, area, area_lines, reg, report)
    area_networks = {ln.network for ln in area_lines if ln.network != FLAT}
    _check_networks(v, at, area, area_networks, reg, report)
    _check_prices(v, at, {ln.mode for ln in area_lines}, report)
    _check_transfer_caps(v, at, report)
    _check_rebates(v, at, area_networks, reg, report)


def _check_issuers(v: TariffVersion, at: str, reg: Registry, report: Report) -> None:
    for name in ("accepted_issuers", "concession_issuers"):
        seen: set[int] = set()
        for j, issuer in enumerate(getattr(v, name)):
            if issuer not in reg.issuers:
                report(ErrorCode.TARIFF_UNKNOWN_ISSUER, f"{at}.{name}[{j}]",
                       f"issuer {issuer} is not in the registry")
            elif issuer in seen:
                report(ErrorCode.TARIFF_DUPLICATE_ISSUER, f"{at}.{name}[{j}]",
                       f"issuer {issuer} is listed twice")
            seen.add(issuer)
    for j, issuer in enumerate(v.concession_issuers):
        if issuer in reg.issuers and issuer not in v.accepted_issuers:
            # SPEC §6.2: concession_issuers is a subset of accepted_issuers.
            report(ErrorCode.TARIFF_CONCESSION_NOT_ACCEPTED, f"{at}.concession_issuers[{j}]",
                   f"issuer {issuer} ({reg.issuers[issuer].name}) has its concessions honoured "
                   "but is not in accepted_issuers: add it there or remove it here")


def _check_line_fares(v: TariffVersion, at: str, area: int, area_lines: Sequence[Line],
                      reg: Registry, report: Report) -> None:
    flat_lines = {ln.key for ln in area_lines if ln.network == FLAT}
    priced: dict[tuple[int, int], str] = {}
    for j, lf in enumerate(v.line_fares):
        where = f"{at}.line_fares[{j}]"
        if lf.operator not in reg.operators:
            report(ErrorCode.TARIFF_UNKNOWN_OPERATOR, f"{where}.operator",
                   f"operator {lf.operator} is not in the registry")
            continue
        op = reg.operators[lf.operator]
        if op.city != area:
            report(ErrorCode.TARIFF_FOREIGN_OPERATOR, f"{where}.operator",
                   f"operator {lf.operator} ({op.name}) belongs to city {op.city}, not to this "
                   f"area {area}: a line is priced by its operator's city (SPEC §5)")
            continue
        if lf.lines is None:
            keys = [(lf.operator, n) for op_, n in sorted(flat_lines) if op_ == lf.operator]
            paths = [f"{where}.operator"] * len(keys)
        else:
            keys = [(lf.operator, n) for n in lf.lines]
            paths = [f"{where}.lines[{k}]" for k in range(len(keys))]
        for key, path in zip(keys, paths, strict=True):
            if key not in flat_lines:
                what = ("is an entry-exit line: its fares come from its network"
                        if key in reg.lines else "is not in the registry")
                report(ErrorCode.TARIFF_UNKNOWN_LINE, path,
                       f"line {key[1]} of operator {key[0]} {what}")
            elif key in priced:
                report(ErrorCode.TARIFF_DUPLICATE_LINE_FARE, path,
                       f"line {key[1]} of operator {key[0]} already has a fare in {priced[key]}")
            else:
                priced[key] = where
    for key in sorted(flat_lines - priced.keys()):
        report(ErrorCode.TARIFF_UNPRICED_LINE, f"{at}.line_fares",
               f"flat line {key[1]} of operator {key[0]} ({reg.lines[key].name}) has no fare")


def _check_networks(v: TariffVersion, at: str, area: int, area_networks: set[int],
                    reg: Registry, report: Report) -> None:
    seen: dict[int, str] = {}
    for j, nf in enumerate(v.networks):
        where = f"{at}.networks[{j}]"
        if nf.network not in reg.networks:
            report(ErrorCode.TARIFF_UNKNOWN_NETWORK, f"{where}.network",
                   f"network {nf.network} is not in the registry")
            continue
        if nf.network not in area_networks:
            report(ErrorCode.TARIFF_UNKNOWN_NETWORK, f"{where}.network",
                   f"network {nf.network} ({reg.networks[nf.network].name}) has no line run by "
                   f"an operator of this area {area}")
            continue
        if nf.network in seen:
            report(ErrorCode.TARIFF_DUPLICATE_NETWORK, f"{where}.network",
                   f"network {nf.network} already has fares in {seen[nf.network]}")
            continue
        seen[nf.network] = where
        _check_network(nf, where, reg, report)
    for nid in sorted(area_networks - seen.keys()):
        report(ErrorCode.TARIFF_UNPRICED_NETWORK, f"{at}.networks",
               f"network {nid} ({reg.networks[nid].name}) runs in this area but has no fares")


def _check_network(nf: NetworkFare, where: str, reg: Registry, report: Report) -> None:
    net = reg.networks[nf.network]
    by_city: dict[int, list[str]] = {}
    for op, line in net.lines:
        by_city.setdefault(reg.operators[op].city, []).append(f"{op}/{line}")
    if len(by_city) > 1:
        # SPEC §5: all lines of one network belong to operators of one city.
        parts = "; ".join(f"city {c}: lines {', '.join(ls)}" for c, ls in sorted(by_city.items()))
        report(ErrorCode.TARIFF_NETWORK_SPANS_CITIES, f"{where}.network",
               f"network {nf.network} has lines run by operators of different cities ({parts}): "
               "one network belongs to one tariff area")
    dist = reg.distances(nf.network)
    if len(net.stops) and (dist[0] < 0).any():
        cut = [net.stops[i] for i in range(len(net.stops)) if dist[0, i] < 0]
        shown = ", ".join(str(s) for s in cut[:5]) + (" ..." if len(cut) > 5 else "")
        report(ErrorCode.TARIFF_NETWORK_DISCONNECTED, f"{where}.network",
               f"network {nf.network}'s track graph is not connected: {len(cut)} stops "
               f"({shown}) cannot be reached from stop {net.stops[0]}, so no distance between "
               "them exists; check the registry's line_stops")
    fares: list[tuple[int, str]] = [(nf.same_station_fare, "same_station_fare")]
    if nf.bands is not None:
        for k, band in enumerate(nf.bands):
            fares.append((band.fare_fen, f"bands[{k}]"))
            if band.upper_m is not None and band.upper_m <= 0:
                report(ErrorCode.TARIFF_BAND_RANGE, f"{where}.bands[{k}].upper_m",
                       f"upper_m {band.upper_m} must be a positive number of metres")
    if nf.matrix is not None:
        fares.extend(_check_matrix(nf, where, reg, report))
    too_high = [(f, path) for f, path in fares if f > nf.max_fare]
    if too_high:
        fare = max(f for f, _ in too_high)
        path = next(p for f, p in too_high if f == fare)  # the first of the highest
        # SPEC §6.1: max_fare is at least every base fare of its network, every band included.
        report(ErrorCode.TARIFF_MAX_FARE_TOO_LOW, f"{where}.max_fare",
               f"max_fare {nf.max_fare} fen is below the fare {fare} fen of {path}: max_fare "
               "(what an incomplete journey pays) must be at least every fare of the network")


def _check_matrix(nf: NetworkFare, where: str, reg: Registry,
                  report: Report) -> list[tuple[int, str]]:
    assert nf.matrix is not None
    stops = set(reg.networks[nf.network].stops)
    seen: dict[tuple[int, int], int] = {}
    fares: list[tuple[int, str]] = []
    for k, row in enumerate(nf.matrix):
        path = f"{where}.matrix[{k}]"
        if len(row) != 3:
            report(ErrorCode.TARIFF_MATRIX_ROW, path,
                   f"row {row} must have three numbers: [from_stop, to_stop, fare_fen]")
            continue
        a, b, fen = row
        unknown = [s for s in (a, b) if s not in stops]
        if unknown:
            where_known = ("is not in the registry" if unknown[0] not in reg.stops
                           else f"is not a stop of network {nf.network}")
            report(ErrorCode.TARIFF_UNKNOWN_STOP, path, f"stop {unknown[0]} {where_known}")
            continue
        if a == b:
            report(ErrorCode.TARIFF_MATRIX_ROW, path,
                   f"row {row} prices stop {a} to itself: use same_station_fare for that")
            continue
        if not 0 <= fen <= MAX_FEN:
            report(ErrorCode.TARIFF_FARE_RANGE, path,
                   f"amount {fen} fen is out of range: an amount is 0 to {MAX_FEN} fen")
            continue
        if (a, b) in seen:
            report(ErrorCode.TARIFF_MATRIX_DUPLICATE, path,
                   f"stops {a} to {b} already have a fare in matrix[{seen[(a, b)]}]")
            continue
        seen[(a, b)] = k
        fares.append((fen, f"matrix[{k}]"))
    ordered = sorted(stops)
    missing = [(a, b) for a in ordered for b in ordered if a != b and (a, b) not in seen]
    if missing:
        shown = ", ".join(f"{a}->{b}" for a, b in missing[:3])
        shown += " ..." if len(missing) > 3 else ""
        report(ErrorCode.TARIFF_MATRIX_INCOMPLETE, f"{where}.matrix",
               f"{len(missing)} ordered pairs of distinct stops have no fare ({shown}); a matrix "
               "prices every ordered pair")
    return fares


def _check_prices(v: TariffVersion, at: str, area_modes: set[Mode], report: Report) -> None:
    priced_modes = {p.mode for p in v.prices if p.product == "ordinary"}
    for mode in sorted(area_modes):
        name = mode.name.lower()
        if name not in priced_modes:
            # SPEC §6.3: a tariff must price (mode, ORDINARY) for every mode it runs.
            report(ErrorCode.TARIFF_NO_ORDINARY_PRICE, f"{at}.prices",
                   f"the area runs {name} lines but has no ordinary price for {name}: add a "
                   f"price with mode = \"{name}\" and product = \"ordinary\"")
    seen: dict[tuple[str, str], int] = {}
    for j, p in enumerate(v.prices):
        if (p.mode, p.product) in seen:
            report(ErrorCode.TARIFF_DUPLICATE_PRICE, f"{at}.prices[{j}]",
                   f"{p.product} on {p.mode} already has a price in "
                   f"prices[{seen[(p.mode, p.product)]}]")
        else:
            seen[(p.mode, p.product)] = j


def _check_transfer_caps(v: TariffVersion, at: str, report: Report) -> None:
    if v.transfer is not None and not v.transfer.steps:
        report(ErrorCode.TARIFF_TRANSFER_NO_STEPS, f"{at}.transfer.steps",
               "a transfer rule needs at least one step (one per transfer allowed); remove "
               "the rule if there are no transfers")
    if v.transfer is not None and not v.transfer.allowed_modes:
        report(ErrorCode.TARIFF_TRANSFER_NO_MODES, f"{at}.transfer.allowed_modes",
               "a transfer rule needs at least one allowed [from, to] mode pair")
    seen: dict[str, int] = {}
    for j, cap in enumerate(v.caps):
        if cap.product in seen:
            report(ErrorCode.TARIFF_DUPLICATE_CAP, f"{at}.caps[{j}]",
                   f"{cap.product} already has a daily cap in caps[{seen[cap.product]}]")
        else:
            seen[cap.product] = j


def _check_rebates(v: TariffVersion, at: str, area_networks: set[int], reg: Registry,
                   report: Report) -> None:
    seen: set[tuple[int, dt.date]] = set()
    for j, rebate in enumerate(v.rebates):
        where = f"{at}.rebates[{j}]"
        start = rebate_valid_from(v, rebate)
        if rebate.network not in area_networks:
            report(ErrorCode.TARIFF_UNKNOWN_NETWORK, f"{where}.network",
                   f"network {rebate.network} is not an entry-exit network of this area")
        elif (rebate.network, start) in seen:
            # SPEC §6 (v1.2): one rule in force per network and day, as with versions.
            report(ErrorCode.TARIFF_DUPLICATE_REBATE, f"{where}.network",
                   f"network {rebate.network} already has a monthly rebate in force from {start}")
        seen.add((rebate.network, start))
        if start < v.valid_from:
            report(ErrorCode.TARIFF_REBATE_VALID_FROM, f"{where}.valid_from",
                   f"takes effect on {start}, before its version's {v.valid_from}: a rebate rule "
                   "is in force only while its version is; give a day on or after "
                   f"{v.valid_from}, or put the rule in the version in force on {start}")
        if rebate.operator not in reg.operators:
            report(ErrorCode.TARIFF_UNKNOWN_OPERATOR, f"{where}.operator",
                   f"operator {rebate.operator} is not in the registry")
        elif rebate.network in reg.networks and all(
                op != rebate.operator for op, _ in reg.networks[rebate.network].lines):
            report(ErrorCode.TARIFF_REBATE_OPERATOR, f"{where}.operator",
                   f"operator {rebate.operator} runs no line of network {rebate.network}, so it "
                   "cannot owe that network's rebate")
        spends = [t.spend_fen for t in rebate.tiers]
        if not spends:
            report(ErrorCode.TARIFF_REBATE_TIERS, f"{where}.tiers", "a monthly rebate needs tiers")
        elif spends != sorted(set(spends)):
            report(ErrorCode.TARIFF_REBATE_TIERS, f"{where}.tiers",
                   "rebate tiers must have strictly ascending spend_fen")
        for k, tier in enumerate(rebate.tiers):
            if tier.rebate_fen > tier.spend_fen:
                report(ErrorCode.TARIFF_REBATE_TIERS, f"{where}.tiers[{k}]",
                       f"a rebate of {tier.rebate_fen} fen exceeds the spend of "
                       f"{tier.spend_fen} fen that earns it")


# ---------------------------------------------------------------------------------------------
# Problems of the fee contracts


def check_contracts(file: str, book: ContractBook, registry: Registry) -> list[TariffProblem]:
    """Problems ``tariffs.load`` does not check itself: one rate per (operator, issuer)."""
    problems: list[TariffProblem] = []
    seen: dict[tuple[int, int], int] = {}
    for i, c in enumerate(book.contracts):
        for j, issuer in enumerate(c.issuers):
            if (c.operator, issuer) in seen:
                # SPEC §8: the fee is "the operator's contract rate for that issuer": just one.
                problems.append(TariffProblem(
                    ErrorCode.TARIFF_DUPLICATE_CONTRACT, file, "-", f"contracts[{i}].issuers[{j}]",
                    f"operator {c.operator} already has a fee for issuer {issuer} in "
                    f"contracts[{seen[(c.operator, issuer)]}]"))
            else:
                seen[(c.operator, issuer)] = i
    return problems
