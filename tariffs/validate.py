"""Checks of a parsed tariff against the registry and against itself (SPEC §6 load-time rules)."""

from __future__ import annotations

from tariffs.errors import TariffProblem
from tariffs.model import Tariff, TariffVersion
from tariffs.registry import FLAT, Registry
from tariffs.vocab import Mode


def check_tariff(file: str, tariff: Tariff, registry: Registry) -> list[TariffProblem]:
    """Every problem of one tariff file; an empty list means it may price."""
    problems: list[TariffProblem] = []

    def bad(code: str, version: str, field: str, message: str) -> None:
        problems.append(TariffProblem(code, file, version, field, message))

    if tariff.area not in registry.cities:
        bad("TARIFF_UNKNOWN_AREA", "-", "area", f"city {tariff.area} is not in the registry")
        return problems
    if not tariff.versions:
        bad("TARIFF_NO_VERSIONS", "-", "versions", "a tariff needs at least one version")
    days = [v.valid_from for v in tariff.versions]
    for i in range(1, len(days)):
        if days[i] <= days[i - 1]:
            bad("TARIFF_VERSION_OVERLAP", str(days[i]), f"versions[{i}].valid_from",
                f"takes effect on {days[i]}, not after the previous version's {days[i - 1]}: "
                "versions must be in strictly ascending valid_from order")
    area_lines = [ln for ln in registry.lines.values()
                  if registry.operators[ln.operator].city == tariff.area]
    area_modes = {ln.mode for ln in area_lines}
    for i, version in enumerate(tariff.versions):
        for p in _check_version(version, f"versions[{i}]", tariff.area, area_lines, area_modes,
                                registry):
            bad(p[0], str(version.valid_from), p[1], p[2])
    return problems


def _check_version(v: TariffVersion, at: str, area: int, area_lines: list,
                   area_modes: set[Mode], reg: Registry) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    for j, issuer in enumerate(v.accepted_issuers):
        if issuer not in reg.issuers:
            out.append(("TARIFF_UNKNOWN_ISSUER", f"{at}.accepted_issuers[{j}]",
                        f"issuer {issuer} is not in the registry"))
    for j, issuer in enumerate(v.concession_issuers):
        if issuer not in v.accepted_issuers:
            out.append(("TARIFF_CONCESSION_NOT_ACCEPTED", f"{at}.concession_issuers[{j}]",
                        f"issuer {issuer} honours concessions but is not in accepted_issuers"))

    flat_lines = {ln.key for ln in area_lines if ln.network == FLAT}
    priced: set[tuple[int, int]] = set()
    for j, lf in enumerate(v.line_fares):
        where = f"{at}.line_fares[{j}]"
        if lf.operator not in reg.operators:
            out.append(("TARIFF_UNKNOWN_OPERATOR", f"{where}.operator",
                        f"operator {lf.operator} is not in the registry"))
            continue
        if reg.operators[lf.operator].city != area:
            out.append(("TARIFF_FOREIGN_OPERATOR", f"{where}.operator",
                        f"operator {lf.operator} belongs to city "
                        f"{reg.operators[lf.operator].city}, not to this area {area}"))
            continue
        keys = ([(lf.operator, n) for n in lf.lines] if lf.lines is not None
                else [k for k in flat_lines if k[0] == lf.operator])
        for k, key in enumerate(keys):
            if key not in flat_lines:
                out.append(("TARIFF_UNKNOWN_LINE", f"{where}.lines[{k}]",
                            f"line {key[1]} of operator {key[0]} is not a flat line of this area"))
            priced.add(key)
    for key in sorted(flat_lines - priced):
        out.append(("TARIFF_UNPRICED_LINE", f"{at}.line_fares",
                    f"flat line {key[1]} of operator {key[0]} has no fare"))

    area_networks = {ln.network for ln in area_lines if ln.network != FLAT}
    seen_networks = set()
    for j, nf in enumerate(v.networks):
        where = f"{at}.networks[{j}]"
        if nf.network not in reg.networks or nf.network not in area_networks:
            out.append(("TARIFF_UNKNOWN_NETWORK", f"{where}.network",
                        f"network {nf.network} is not an entry-exit network of this area"))
            continue
        seen_networks.add(nf.network)
        net = reg.networks[nf.network]
        cities = {reg.operators[op].city for op, _ in net.lines}
        if len(cities) > 1:
            out.append(("TARIFF_NETWORK_SPANS_CITIES", f"{where}.network",
                        f"network {nf.network} has lines run by operators of cities "
                        f"{sorted(cities)}; one network belongs to one city"))
        if (reg.distances(nf.network) < 0).any():
            out.append(("TARIFF_NETWORK_DISCONNECTED", f"{where}.network",
                        f"network {nf.network}'s track graph is not connected"))
        fares = [nf.same_station_fare]
        if nf.bands is not None:
            fares += [b.fare_fen for b in nf.bands]
        if nf.matrix is not None:
            stops = set(net.stops)
            pairs = set()
            for k, row in enumerate(nf.matrix):
                if len(row) != 3 or row[0] not in stops or row[1] not in stops:
                    out.append(("TARIFF_UNKNOWN_STOP", f"{where}.matrix[{k}]",
                                f"row {row} must be [from_stop, to_stop, fare_fen] with "
                                "stops of the network"))
                    continue
                pairs.add((row[0], row[1]))
                fares.append(row[2])
            missing = len(stops) * (len(stops) - 1) - len({p for p in pairs if p[0] != p[1]})
            if missing:
                out.append(("TARIFF_MATRIX_INCOMPLETE", f"{where}.matrix",
                            f"{missing} ordered pairs of distinct stops have no fare"))
        if max(fares) > nf.max_fare:
            out.append(("TARIFF_MAX_FARE_TOO_LOW", f"{where}.max_fare",
                        f"max_fare {nf.max_fare} is below the network's fare {max(fares)}"))
    for nid in sorted(area_networks - seen_networks):
        out.append(("TARIFF_UNPRICED_NETWORK", f"{at}.networks",
                    f"network {nid} runs in this area but has no fares"))

    priced_modes = {p.mode for p in v.prices if p.product == "ordinary"}
    for mode in sorted(area_modes):
        if mode.name.lower() not in priced_modes:
            out.append(("TARIFF_NO_ORDINARY_PRICE", f"{at}.prices",
                        f"the area runs {mode.name.lower()} lines but has no ordinary price "
                        "for that mode"))
    seen_prices = set()
    for j, p in enumerate(v.prices):
        if (p.mode, p.product) in seen_prices:
            out.append(("TARIFF_DUPLICATE_PRICE", f"{at}.prices[{j}]",
                        f"a second price for ({p.mode}, {p.product})"))
        seen_prices.add((p.mode, p.product))

    if v.transfer is not None and not v.transfer.steps:
        out.append(("TARIFF_TRANSFER_NO_STEPS", f"{at}.transfer.steps",
                    "a transfer rule needs at least one step"))
    for j, rebate in enumerate(v.rebates):
        if rebate.network not in area_networks:
            out.append(("TARIFF_UNKNOWN_NETWORK", f"{at}.rebates[{j}].network",
                        f"network {rebate.network} is not an entry-exit network of this area"))
        if rebate.operator not in reg.operators:
            out.append(("TARIFF_UNKNOWN_OPERATOR", f"{at}.rebates[{j}].operator",
                        f"operator {rebate.operator} is not in the registry"))
        spends = [t.spend_fen for t in rebate.tiers]
        if spends != sorted(set(spends)):
            out.append(("TARIFF_REBATE_TIERS", f"{at}.rebates[{j}].tiers",
                        "rebate tiers must have strictly ascending spend_fen"))
    return out
