"""Fare arithmetic read straight off the tariff models (SPEC §1, §6): the slow, obvious twin.

Each function is one pricing step as the SPEC words it, reading the pydantic models with no
cache or index, so that the compiled tables (``tariffs.compile``) and the kernels built on
them can be tested against something a person can check by eye. The arithmetic of a step that
the kernels share (``apply_rate``, the product price, the transfer step, the daily cap) lives in
``tariffs.rules``; this module maps the models onto its integers. The monthly rebate rules
(``rebate_rule``, ``rebate_for``, ``monthly_rebate``) have no compiled twin: month close calls
them directly, so each rule of SPEC §6's monthly rebate is written once, here.
"""

from __future__ import annotations

import datetime as dt

from tariffs import rules
from tariffs.model import MonthlyRebate, NetworkFare, ProductPrice, TariffVersion, TransferStep
from tariffs.registry import FLAT, Registry
from tariffs.rules import apply_rate as apply_rate  # SPEC §1, re-exported: fares.apply_rate
from tariffs.vocab import Mode, Product

# SPEC §6.4: a TransferStep's kind as the integer ``tariffs.rules.transfer_step_fare`` reads
STEP_KINDS: dict[str, int] = {
    "free": rules.STEP_FREE, "off_fen": rules.STEP_OFF_FEN,
    "pay_rate": rules.STEP_PAY_RATE, "difference": rules.STEP_DIFFERENCE,
}


def base_fare_flat(version: TariffVersion, registry: Registry, operator: int, line: int) -> int:
    """SPEC §6.1, FLAT leg: the line's flat fare in this version."""
    for lf in version.line_fares:
        if lf.operator != operator:
            continue
        if lf.lines is None:
            ln = registry.lines.get((operator, line))
            if ln is not None and ln.network == FLAT:
                return lf.fare_fen
        elif line in lf.lines:
            return lf.fare_fen
    raise LookupError(f"line {line} of operator {operator} has no flat fare")


def network_fare(version: TariffVersion, network: int) -> NetworkFare:
    for nf in version.networks:
        if nf.network == network:
            return nf
    raise LookupError(f"network {network} has no fares in version {version.valid_from}")


def base_fare_network(fare: NetworkFare, registry: Registry, entry_stop: int,
                      exit_stop: int) -> int:
    """SPEC §6.1, COMPLETE leg: matrix or distance-band fare; same_station_fare for a → a."""
    if entry_stop == exit_stop:
        return fare.same_station_fare
    if fare.matrix is not None:
        for a, b, fen in fare.matrix:
            if a == entry_stop and b == exit_stop:
                return fen
        raise LookupError(f"no matrix fare from {entry_stop} to {exit_stop}")
    index = registry.stop_index(fare.network)
    metres = int(registry.distances(fare.network)[index[entry_stop], index[exit_stop]])
    assert fare.bands is not None
    for band in fare.bands:  # the first band with d <= upper_m; the last one is unbounded
        if band.upper_m is None or metres <= band.upper_m:
            return band.fare_fen
    raise AssertionError("the last distance band is unbounded")


def honoured_product(version: TariffVersion, issuer: int, product: int) -> int:
    """SPEC §6.2-3: the card's product if its issuer's concessions are honoured, else ORDINARY."""
    if issuer in version.accepted_issuers and issuer in version.concession_issuers:
        return product
    return int(Product.ORDINARY)


def price_for(version: TariffVersion, mode: int, product: int) -> ProductPrice:
    """SPEC §6.3: the product price of (mode, product), else that of (mode, ORDINARY)."""
    mode_name = Mode(mode).name.lower()
    fallback = None
    for p in version.prices:
        if p.mode == mode_name and p.product == Product(product).name.lower():
            return p
        if p.mode == mode_name and p.product == "ordinary":
            fallback = p
    if fallback is None:
        raise LookupError(f"no ordinary price for {mode_name} in version {version.valid_from}")
    return fallback


def product_fare(version: TariffVersion, issuer: int, product: int, mode: int,
                 base: int) -> tuple[int, int]:
    """SPEC §6 steps 2-3: (honoured product, step-3 fare) of a non-penalty leg."""
    if issuer not in version.accepted_issuers:  # a visitor: the visitor rate, as ORDINARY
        return int(Product.ORDINARY), visitor_fare(version, base)
    honoured = honoured_product(version, issuer, product)
    return honoured, price_fare(price_for(version, mode, honoured), base)


def visitor_fare(version: TariffVersion, base: int) -> int:
    """SPEC §6.3: the step-3 fare of a card whose issuer the version does not accept."""
    return apply_rate(base, version.visitor_rate_bp)


def price_args(price: ProductPrice) -> tuple[int, int]:
    """A price as ``(kind, value)`` integers: ``rules.PRICE_RATE`` and its bp, or
    ``rules.PRICE_FIXED`` and its fen.

    The one mapping of the model onto the rule's integers: the compiled ``price_kind`` and
    ``price_value`` tables are filled with it too.
    """
    if price.rate_bp is not None:
        return rules.PRICE_RATE, price.rate_bp
    assert price.fixed_fen is not None  # the model gives exactly one of the two
    return rules.PRICE_FIXED, price.fixed_fen


def price_fare(price: ProductPrice, base: int) -> int:
    """SPEC §6.3: the step-3 fare of a leg of base fare ``base`` under ``price`` (``price_for``'s
    answer, the ORDINARY fallback already applied)."""
    kind, value = price_args(price)
    return rules.product_price_fare(kind, value, base)


def transfer_step_args(step: TransferStep) -> tuple[int, int]:
    """A step as ``(kind, value)`` integers: off_fen's fen, pay_rate's bp, else a value of 0.

    The one mapping of the model onto the rule's integers: the compiled ``step_kind`` and
    ``step_value`` tables are filled with it too.
    """
    value = step.fen if step.fen is not None else step.bp  # the model gives at most one
    return STEP_KINDS[step.kind], value if value is not None else 0


def transfer_fare(step: TransferStep, f: int, base: int, previous_f: int) -> int:
    """SPEC §6.4: the fare of a transfer priced by ``step`` from its step-3 fare ``f``."""
    kind, value = transfer_step_args(step)
    return rules.transfer_step_fare(kind, value, f, base, previous_f)


def cap_for(version: TariffVersion, product: int) -> int | None:
    """SPEC §6.5: the daily cap of an honoured product; None when it is uncapped."""
    for cap in version.caps:
        if cap.product == Product(product).name.lower():
            return cap.cap_fen
    return None


def capped_fare(fare: int, cap: int | None, spent: int) -> int:
    """SPEC §6.5: ``min(fare, max(0, C - S))``; S is the area's earlier computed fares today.

    ``cap`` is ``cap_for``'s answer: None (uncapped) is the rule's ``NO_CAP``.
    """
    return rules.capped_fare(fare, rules.NO_CAP if cap is None else cap, spent)


def rebate_for(rebate: MonthlyRebate, spend: int) -> int:
    """SPEC §6, monthly rebate: the rebate of the highest tier the month's spend reached.

    Tiers are taken as written (v1.2): the highest threshold reached pays its own amount, even
    where a lower tier's amount is larger; nothing is summed or maximised over amounts. This is
    the one implementation of the tier rule; month close calls it.
    """
    reached = [tier for tier in rebate.tiers if spend >= tier.spend_fen]
    return max(reached, key=lambda tier: tier.spend_fen).rebate_fen if reached else 0


def rebate_valid_from(version: TariffVersion, rebate: MonthlyRebate) -> dt.date:
    """The first service day a rebate rule is in force: its own, else its version's."""
    return rebate.valid_from if rebate.valid_from is not None else version.valid_from


def rebate_rule(version: TariffVersion, network: int, day: dt.date) -> MonthlyRebate | None:
    """SPEC §6 (v1.2): the network's rebate rule in force on ``day`` in ``version`` (the version
    in force that day), or None: of its rules for the network, the latest ``valid_from <= day``.

    Month close asks this for the month's last service day and applies the answer to the whole
    month's spend, so a rule that starts mid-month already covers the month's first days.
    """
    chosen: MonthlyRebate | None = None
    for rebate in version.rebates:
        start = rebate_valid_from(version, rebate)
        if rebate.network == network and start <= day and (
                chosen is None or start > rebate_valid_from(version, chosen)):
            chosen = rebate
    return chosen


def monthly_rebate(version: TariffVersion, rebate: MonthlyRebate, issuer: int, spend: int) -> int:
    """SPEC §6 (v1.2): what a card of ``issuer`` that spent ``spend`` earns under ``rebate``.

    ``version`` is the network's tariff version in force on the month's last service day: a
    rebate is paid only to an issuer it accepts (a closed-loop card no tariff accepts earns
    nothing, whatever it spent).
    """
    if issuer not in version.accepted_issuers:
        return 0
    return rebate_for(rebate, spend)
