"""Compiled lookup tables price exactly as the tariff models (tariffs.fares) do, for any tariff.

The compiled side reads the tables as the kernels do, with ``tariffs.rules``' primitives; the
expected side is ``tariffs.fares`` (and ``TariffSet.version_for``) on the pydantic models.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.legs import Apportionment
from tariffs import rules
from tariffs.compile import (
    NO_CAP,
    NO_INDEX,
    CompiledTariffs,
    PriceKind,
    compile_tariffs,
    network_fare_matrix,
)
from tariffs.fares import (
    base_fare_flat,
    base_fare_network,
    cap_for,
    capped_fare,
    network_fare,
    product_fare,
    transfer_fare,
)
from tariffs.load import TariffSet, load_tariff_set
from tariffs.model import NetworkFare, Tariff
from tariffs.registry import FLAT, Registry
from tariffs.validate import check_tariff
from tariffs.vocab import Mode, Product

DEFAULT = load_tariff_set()
REG = DEFAULT.registry
EPOCH = dt.date(1970, 1, 1)
MODES = [m.name.lower() for m in Mode]
PRODUCTS = [p.name.lower() for p in Product]
NETWORK_LINES = sorted(k for k, ln in REG.lines.items() if ln.network != FLAT)
NETWORK_AREAS = sorted({REG.line_area(*k) for k in NETWORK_LINES})
NEAR = 6  # queries favour each network's first NEAR stops; band edges sit at their distances
fen = st.integers(0, 5_000)
bp = st.integers(0, 10_000)


def _area_lines(area: int) -> list:
    return [ln for ln in REG.lines.values() if REG.operators[ln.operator].city == area]


@st.composite
def version_dicts(draw: st.DrawFn, area: int, valid_from: dt.date) -> dict[str, Any]:
    """A random valid tariff version of ``area``, as the dict a TOML file would give."""
    lines = _area_lines(area)
    flat_ops = sorted({ln.operator for ln in lines if ln.network == FLAT})
    line_fares = []
    for op in flat_ops:
        mine = sorted(ln.line for ln in lines if ln.operator == op and ln.network == FLAT)
        if draw(st.booleans()):
            line_fares.append({"operator": op, "fare_fen": draw(fen)})
        else:  # split the operator's lines between two fares
            cut = draw(st.integers(1, len(mine)))
            line_fares.append({"operator": op, "lines": mine[:cut], "fare_fen": draw(fen)})
            if mine[cut:]:
                line_fares.append({"operator": op, "lines": mine[cut:], "fare_fen": draw(fen)})
    networks = []
    for nid in sorted({ln.network for ln in lines if ln.network != FLAT}):
        stops = REG.networks[nid].stops
        entry: dict[str, Any] = {"network": nid, "max_journey_minutes": draw(st.integers(1, 300)),
                                 "same_station_fare": draw(fen)}
        if len(stops) <= 8 and draw(st.booleans()):
            entry["matrix"] = [[a, b, draw(fen)] for a in stops for b in stops if a != b]
            fares = [row[2] for row in entry["matrix"]]
        else:
            metres = sorted({int(d) for d in REG.distances(nid)[:NEAR, :NEAR].ravel() if d > 0})
            # Uppers often equal a real distance, so that band edges (d == upper_m) are hit.
            uppers = sorted(draw(st.sets(st.one_of(st.integers(1, 90_000),
                                                   st.sampled_from(metres)), max_size=6)))
            band_fares = draw(st.lists(fen, min_size=len(uppers) + 1,
                                       max_size=len(uppers) + 1))
            entry["bands"] = [{"upper_m": u, "fare_fen": f}
                              for u, f in zip(uppers, band_fares, strict=False)]
            entry["bands"].append({"fare_fen": band_fares[-1]})
            fares = band_fares
        entry["max_fare"] = max(fares + [entry["same_station_fare"]]) + draw(st.integers(0, 300))
        networks.append(entry)
    issuers = sorted(REG.issuers)
    accepted = draw(st.lists(st.sampled_from(issuers), unique=True))
    concession = draw(st.lists(st.sampled_from(accepted), unique=True)) if accepted else []
    prices = []
    keys = {(m.name.lower(), "ordinary") for m in {ln.mode for ln in lines}}
    keys |= draw(st.sets(st.tuples(st.sampled_from(MODES), st.sampled_from(PRODUCTS)),
                         max_size=8))
    for mode, product in sorted(keys):
        if draw(st.booleans()):
            prices.append({"mode": mode, "product": product, "rate_bp": draw(bp)})
        else:
            prices.append({"mode": mode, "product": product, "fixed_fen": draw(fen)})
    version: dict[str, Any] = {
        "valid_from": valid_from,
        "apportionment": draw(st.sampled_from(["later_leg", "pro_rata"])),
        "visitor_rate_bp": draw(bp),
        "accepted_issuers": accepted,
        "concession_issuers": concession,
        "line_fares": line_fares,
        "networks": networks,
        "prices": prices,
        "caps": [{"product": p, "cap_fen": draw(fen)}
                 for p in draw(st.sets(st.sampled_from(PRODUCTS)))],
        "funders": {
            "card": {p: draw(st.sampled_from(["operator", "government"]))
                     for p in draw(st.sets(st.sampled_from(PRODUCTS)))},
            "transfer": draw(st.sampled_from(["operator", "government"])),
            "cap": draw(st.sampled_from(["operator", "government"])),
        },
    }
    if draw(st.booleans()):
        steps = draw(st.lists(st.one_of(
            st.just({"kind": "free"}), st.just({"kind": "difference"}),
            st.builds(lambda f: {"kind": "off_fen", "fen": f}, fen),
            st.builds(lambda b: {"kind": "pay_rate", "bp": b}, bp)), min_size=1, max_size=4))
        version["transfer"] = {
            "window_minutes": draw(st.integers(1, 240)),
            "window_from": draw(st.sampled_from(["first_boarding", "previous_last_tap"])),
            "allowed_modes": [list(p) for p in draw(st.sets(
                st.tuples(st.sampled_from(MODES), st.sampled_from(MODES)), min_size=1))],
            "steps": steps,
        }
    rebates = []
    for entry in networks:
        if draw(st.booleans()):
            spends = sorted(draw(st.sets(st.integers(1, 50_000), min_size=1, max_size=4)))
            rebates.append({
                "network": entry["network"],
                "operator": REG.networks[entry["network"]].lines[0][0],
                "tiers": [{"spend_fen": s, "rebate_fen": draw(st.integers(0, s))} for s in spends],
            })
    version["rebates"] = rebates
    return version


@st.composite
def tariff_sets(draw: st.DrawFn) -> TariffSet:
    """The default set with one or two areas' tariffs replaced by random ones."""
    tariffs = dict(DEFAULT.tariffs)
    areas = st.one_of(st.sampled_from(NETWORK_AREAS), st.sampled_from(sorted(tariffs)))
    for area in draw(st.sets(areas, min_size=1, max_size=2)):
        days = sorted(draw(st.sets(st.dates(dt.date(2015, 1, 1), dt.date(2024, 12, 31)),
                                   min_size=1, max_size=3)))
        tariff = Tariff.model_validate({"area": area, "name": f"random {area}",
                                        "versions": [draw(version_dicts(area, d)) for d in days]})
        assert check_tariff("random.toml", tariff, REG) == []  # the generator makes valid tariffs
        tariffs[area] = tariff
    return TariffSet(REG, tariffs, DEFAULT.contracts)


@st.composite
def queries(draw: st.DrawFn) -> dict[str, Any]:
    """One leg's pricing inputs: (area, day, line, stops, issuer, product, and step inputs)."""
    line = draw(st.one_of(st.sampled_from(sorted(REG.lines)), st.sampled_from(NETWORK_LINES)))
    ln = REG.lines[line]
    stops = REG.networks[ln.network].stops if ln.network != FLAT else (0,)
    # Half the time among the first NEAR stops, whose distances the random bands' edges use.
    some_stop = st.one_of(st.sampled_from(stops), st.sampled_from(stops[:NEAR]))
    entry = draw(some_stop)
    exit_ = draw(st.one_of(st.just(entry), some_stop))
    issuer = draw(st.sampled_from(sorted(REG.issuers) + [999]))  # 999: not in the registry
    return {
        "line": line, "day": draw(st.dates(dt.date(2014, 6, 1), dt.date(2025, 6, 1))),
        "entry": entry, "exit": exit_, "issuer": issuer,
        "product": draw(st.sampled_from(list(Product))), "f": draw(fen),
        "previous_f": draw(fen), "spent": draw(st.integers(0, 6_000)),
        "spend": draw(st.integers(0, 60_000)), "k": draw(st.integers(1, 4)),
    }


def _dense_issuer(ct: CompiledTariffs, issuer: int) -> int:
    return int(ct.issuer_index[issuer]) if issuer < len(ct.issuer_index) else NO_INDEX


def _version_in_force(ct: CompiledTariffs, area: int, day_no: int) -> int:
    """The compiled version of dense ``area`` in force on day ``day_no``, as a kernel finds it."""
    return rules.version_in_force(ct.version_valid_from, int(ct.area_version_start[area]),
                                  int(ct.area_version_stop[area]), day_no)


def _compiled_product_fare(ct: CompiledTariffs, v: int, issuer: int, product: int, mode: int,
                           base: int) -> tuple[int, int]:
    """Steps 2-3 read off the tables as ``clearing.kernels.price_legs`` reads them."""
    if issuer < 0 or not ct.accepted[v, issuer]:  # visitor rate, priced as ORDINARY
        return int(Product.ORDINARY), rules.apply_rate(base, int(ct.visitor_rate_bp[v]))
    honoured = product if ct.concession[v, issuer] else int(Product.ORDINARY)
    kind, value = int(ct.price_kind[v, mode, honoured]), int(ct.price_value[v, mode, honoured])
    assert kind != PriceKind.NONE  # every mode a tariff runs has an ORDINARY price
    return honoured, rules.product_price_fare(kind, value, base)


def check_query(tariffs: TariffSet, ct: CompiledTariffs, q: dict[str, Any]) -> None:
    """Price one query both ways and compare every step."""
    reg: Registry = tariffs.registry
    op, line_no = q["line"]
    ln = reg.lines[q["line"]]
    area = reg.line_area(op, line_no)
    a = int(np.searchsorted(ct.area_codes, area))
    o = int(ct.operator_index[op])
    lix = int(ct.line_index[o, line_no])
    assert ct.line_area[lix] == a and ct.line_mode[lix] == ln.mode
    day_no = (q["day"] - EPOCH).days
    v = _version_in_force(ct, a, day_no)
    try:
        version = tariffs.version_for(area, q["day"])
    except LookupError:
        assert v == NO_INDEX
        return
    assert ct.version_valid_from[v] == (version.valid_from - EPOCH).days
    later = [x.valid_from for x in tariffs.tariffs[area].versions
             if x.valid_from > version.valid_from]
    assert version.valid_from <= q["day"] and (not later or q["day"] < min(later))

    if ln.network == FLAT:
        base = base_fare_flat(version, reg, op, line_no)
        assert ct.line_fare[v, lix] == base
    else:
        nf = network_fare(version, ln.network)
        n = sorted(reg.networks).index(ln.network)  # dense networks: the registry's, in order
        assert ct.line_network[lix] == n and ct.network_codes[n] == ln.network
        s_in, s_out = int(ct.stop_index[q["entry"]]), int(ct.stop_index[q["exit"]])
        base = base_fare_network(nf, reg, q["entry"], q["exit"])
        t = ct.fare_table[v, n]
        assert t >= 0
        pos = ct.network_stop_pos[n]
        assert ct.fare_matrix[t, pos[s_in], pos[s_out]] == base
        assert ct.fare_max[t] == nf.max_fare  # a penalty leg's fare
        assert ct.fare_max_journey_ms[t] == nf.max_journey_minutes * 60_000

    i = _dense_issuer(ct, q["issuer"])
    honoured, f = product_fare(version, q["issuer"], int(q["product"]), int(ln.mode), base)
    assert _compiled_product_fare(ct, v, i, int(q["product"]), int(ln.mode), base) == (honoured, f)

    rule = version.transfer
    assert ct.transfer_steps[v] == (len(rule.steps) if rule else 0)
    if rule is not None:
        assert ct.transfer_window_ms[v] == rule.window_minutes * 60_000
        assert bool(ct.transfer_from_first[v]) == (rule.window_from == "first_boarding")
        pairs = {(Mode[x.upper()], Mode[y.upper()]) for x, y in rule.allowed_modes}
        for x in Mode:
            for y in Mode:
                assert bool(ct.transfer_allowed[v, x, y]) == ((x, y) in pairs)
        k = min(q["k"], len(rule.steps))
        kind, value = int(ct.step_kind[v, k - 1]), int(ct.step_value[v, k - 1])
        assert rules.transfer_step_fare(kind, value, f, base, q["previous_f"]) == transfer_fare(
            rule.steps[k - 1], f, base, q["previous_f"])

    cap = cap_for(version, honoured)
    assert ct.cap_fen[v, honoured] == (NO_CAP if cap is None else cap)
    assert rules.capped_fare(f, int(ct.cap_fen[v, honoured]), q["spent"]) == capped_fare(
        f, cap, q["spent"])
    assert ct.apportionment[v] == Apportionment[version.apportionment.upper()]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tariffs=tariff_sets(), qs=st.lists(queries(), min_size=1, max_size=25))
def test_compiled_tables_price_as_the_models_do(tariffs: TariffSet, qs: list[dict]) -> None:
    ct = compile_tariffs(tariffs)
    for q in qs:
        check_query(tariffs, ct, q)


@settings(max_examples=200, deadline=None)
@given(q=queries())
def test_the_default_tables_price_as_the_default_models_do(q: dict[str, Any]) -> None:
    check_query(DEFAULT, compile_tariffs(DEFAULT), q)


def test_every_metro_pair_is_priced_as_the_models_do() -> None:
    """Exhaustively, for Wuhan Metro's 144 x 144 pairs in both Wuhan versions."""
    ct = compile_tariffs(DEFAULT)
    n = sorted(REG.networks).index(1)
    stops = REG.networks[1].stops
    for version in DEFAULT.tariffs[420100].versions:
        v = _version_in_force(ct, int(np.searchsorted(ct.area_codes, 420100)),
                              (version.valid_from - EPOCH).days)
        nf = network_fare(version, 1)
        expected = [[base_fare_network(nf, REG, a, b) for b in stops] for a in stops]
        got = ct.fare_matrix[ct.fare_table[v, n], :len(stops), :len(stops)]
        assert got.tolist() == expected


def test_tables_are_read_only_and_ids_round_trip() -> None:
    ct = compile_tariffs(DEFAULT)
    with pytest.raises(ValueError):
        ct.line_fare[0, 0] = 1
    # Dense ids are positions in the registry's sorted codes; every other raw code is -1.
    for codes, index in ((REG.operators, ct.operator_index), (REG.issuers, ct.issuer_index),
                         (REG.stops, ct.stop_index)):
        dense = sorted(codes)
        assert [int(index[code]) for code in dense] == list(range(len(dense)))
        assert int((index != NO_INDEX).sum()) == len(dense)
    lines = sorted(REG.lines)
    for lix, (op, line) in enumerate(lines):
        assert ct.line_index[ct.operator_index[op], line] == lix
        network = REG.lines[(op, line)].network
        assert ct.line_network[lix] == (NO_INDEX if network == FLAT
                                        else sorted(REG.networks).index(network))
    assert int((ct.line_index != NO_INDEX).sum()) == len(lines)
    assert compile_tariffs(DEFAULT) is ct  # cached per set


def test_the_legs_and_the_tariffs_share_one_apportionment_enum() -> None:
    import tariffs.vocab

    assert Apportionment is tariffs.vocab.Apportionment


@settings(max_examples=150, deadline=None)
@given(data=st.data(), nid=st.sampled_from(sorted(REG.networks)))
def test_band_edges_compile_as_the_models_price_them(data: st.DataObject, nid: int) -> None:
    """Bands whose upper_m equal real distances: d == upper_m is the lower band (SPEC §6.1)."""
    stops = REG.networks[nid].stops[:NEAR]
    metres = sorted({int(d) for d in REG.distances(nid)[:NEAR, :NEAR].ravel() if d > 0})
    uppers = sorted(data.draw(st.sets(st.one_of(st.sampled_from(metres),
                                                st.sampled_from(metres).map(lambda m: m - 1)),
                                      min_size=1, max_size=5)))
    fares = data.draw(st.lists(fen, min_size=len(uppers) + 1, max_size=len(uppers) + 1))
    nf = NetworkFare.model_validate({
        "network": nid, "max_journey_minutes": 90, "same_station_fare": 7,
        "max_fare": max(fares + [7]),
        "bands": [{"upper_m": u, "fare_fen": f} for u, f in zip(uppers, fares, strict=False)]
        + [{"fare_fen": fares[-1]}],
    })
    matrix = network_fare_matrix(REG, nf)
    for i, a in enumerate(stops):
        for j, b in enumerate(stops):
            assert matrix[i, j] == base_fare_network(nf, REG, a, b)
