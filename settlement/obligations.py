"""Obligations (SPEC §8): who owes whom for a day's priced legs, summed per ordered pair and kind.

Revenue follows the money actually charged (allocated revenue, SPEC §7); fees are the
operators' contract rates on each (issuer, operator) pair's day total; subsidies follow the
computed discount components that a tariff says the government funds. ``fee_fen`` is the one
rounding function for fees.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from clearing.errors import StateError
from clearing.service_day import day_from_number, day_number
from settlement.parties import CENTRE, Party, government, issuer, operator
from tariffs.error_codes import ErrorCode
from tariffs.load import TariffSet
from tariffs.model import ProductName, TariffVersion
from tariffs.vocab import Product


class ObligationKind(enum.IntEnum):
    """Why money is owed (SPEC §6, §8); each kind has its own ledger accounts."""

    REVENUE = 0  # issuer owes operator the allocated revenue of its cards' legs
    FEE = 1  # operator owes the clearing centre its contract fee
    SUBSIDY = 2  # government owes operator a discount component it funds
    REBATE = 3  # operator owes issuer a monthly rebate for its cards (month close)


class Component(enum.IntEnum):
    """The three discount components of a leg (SPEC §6)."""

    CARD = 0  # base - step-3 fare
    TRANSFER = 1  # step-3 fare - step-4 fare
    CAP = 2  # step-4 fare - computed fare


COMPONENT_COLUMNS: dict[Component, str] = {
    Component.CARD: "card_discount_fen",
    Component.TRANSFER: "transfer_discount_fen",
    Component.CAP: "cap_discount_fen",
}


@dataclass(frozen=True, slots=True, order=True)
class Obligation:
    """``debtor`` owes ``creditor`` ``amount_fen`` (> 0) of ``kind``."""

    debtor: Party
    creditor: Party
    kind: ObligationKind
    amount_fen: int


@dataclass(frozen=True, slots=True, order=True)
class DiscountLine:
    """One summed discount component of a day: who gave it, and who bears it (SPEC §8 funders)."""

    area: int
    operator: int
    issuer: int  # whose cards got the discount
    component: Component
    honoured_product: int  # for the card component; ORDINARY for the others
    funder: str  # "operator" | "government"
    amount_fen: int


def fee_fen(amount_fen: int, fee_bp: int) -> int:
    """SPEC §8: ``floor((A * fee_bp + 5000) / 10000)``, the fee rounded half up to the fen."""
    return (int(amount_fen) * int(fee_bp) + 5_000) // 10_000


def day_obligations(
    legs: pa.Table,
    allocated: np.ndarray,
    tariffs: TariffSet,
    day: dt.date,
    *,
    discounts: Iterable[DiscountLine] | None = None,
) -> list[Obligation]:
    """Every obligation of one service day's legs, summed per (debtor, creditor, kind), sorted.

    ``allocated`` is ``settlement.apportion.allocate(legs)``. Legs of other days are a broken
    contract (the caller passes one day), so they raise ValueError rather than being mixed in.
    ``discounts`` is ``discount_lines(legs, tariffs, day)`` when the caller already has it
    (``compute_day`` needs both: grouping the day's legs twice cost a pass over every leg).
    """
    pairs = revenue_by_pair(legs, allocated, day)
    if discounts is None:
        discounts = discount_lines(legs, tariffs, day)
    return obligations_from(pairs, discounts, tariffs)


def revenue_by_pair(legs: pa.Table, allocated: np.ndarray, day: dt.date
                    ) -> list[tuple[int, int, int]]:
    """``(issuer, operator, allocated fen)`` per pair, sorted: the sums fees are rounded on.

    Card partitions of a day add up to the day's pairs (``settlement.partials``); fees cannot
    be summed that way, since they round once per pair on the day's total (SPEC §8).
    """
    _check_day(legs, day)
    if len(allocated) != legs.num_rows:
        raise ValueError(f"allocated has {len(allocated)} values for {legs.num_rows} legs")
    rows = _group_sum(
        pa.table(
            {
                "issuer": legs.column("issuer"),
                "operator": legs.column("operator"),
                "allocated": pa.array(np.asarray(allocated, dtype=np.int64)),
            }
        ),
        ["issuer", "operator"],
        ["allocated"],
    )
    return [(issuer, operator, fen) for issuer, operator, fen in rows]


def obligations_from(
    revenue: Iterable[tuple[int, int, int]], discounts: Iterable[DiscountLine], tariffs: TariffSet
) -> list[Obligation]:
    """The day's obligations from its revenue per pair (one row per pair: the whole day's, as
    ``revenue_by_pair`` gives) and its discount lines; shared by settling from legs and from
    the partial sums of a partitioned clear, so both build obligations the same way."""
    sums: dict[tuple[Party, Party, ObligationKind], int] = defaultdict(int)
    # SPEC §8: the issuer owes the operator the allocated revenue, summed per pair.
    for iss, opr, amount in revenue:
        sums[(issuer(iss), operator(opr), ObligationKind.REVENUE)] += amount
        # SPEC §8: the fee is rounded once per (issuer, operator) pair on the day's total.
        fee = fee_fen(amount, tariffs.fee_bp(opr, iss))
        sums[(operator(opr), CENTRE, ObligationKind.FEE)] += fee
    for line in discounts:
        if line.funder == "government":
            sums[(government(line.area), operator(line.operator), ObligationKind.SUBSIDY)] += (
                line.amount_fen
            )
    return _obligations(sums)


def obligations_reference(
    legs: pa.Table, allocated: np.ndarray, tariffs: TariffSet, day: dt.date
) -> list[Obligation]:
    """The plain twin of ``day_obligations``: SPEC §8 read leg by leg, in Python dicts.

    Slow (a Python object per leg); tests hold the vectorised form equal to it to the fen.
    """
    _check_day(legs, day)
    rows = legs.select(["issuer", "operator", "area", "version", "honoured_product",
                        *COMPONENT_COLUMNS.values()]).to_pylist()
    revenue: dict[tuple[int, int], int] = defaultdict(int)
    sums: dict[tuple[Party, Party, ObligationKind], int] = defaultdict(int)
    for row, amount in zip(rows, np.asarray(allocated).tolist(), strict=True):
        revenue[(row["issuer"], row["operator"])] += amount
        version = _version(tariffs, row["area"], row["version"], day)
        for component, column in COMPONENT_COLUMNS.items():
            if funder_of(version, component, row["honoured_product"]) == "government":
                sums[(government(row["area"]), operator(row["operator"]),
                      ObligationKind.SUBSIDY)] += row[column]
    for (iss, opr), amount in revenue.items():
        sums[(issuer(iss), operator(opr), ObligationKind.REVENUE)] += amount
        sums[(operator(opr), CENTRE, ObligationKind.FEE)] += fee_fen(amount,
                                                                     tariffs.fee_bp(opr, iss))
    return _obligations(sums)


DISCOUNT_KEYS: tuple[str, ...] = ("area", "version", "operator", "issuer", "honoured_product")


def discount_lines(legs: pa.Table, tariffs: TariffSet, day: dt.date) -> list[DiscountLine]:
    """The day's discount components per (area, operator, issuer, component, product), with
    the funder the tariff version that priced them names."""
    return discount_lines_from(discount_groups(legs), tariffs, day)


def discount_groups(legs: pa.Table) -> list[tuple[int, ...]]:
    """Rows ``(*DISCOUNT_KEYS, card, transfer, cap)``: the discount components summed per key,
    sorted. What discount lines are made of; card partitions of a day add up to the day's."""
    keys = list(DISCOUNT_KEYS)
    return _group_sum(
        legs.select([*keys, *COMPONENT_COLUMNS.values()]), keys, list(COMPONENT_COLUMNS.values())
    )


def discount_lines_from(groups: Iterable[Sequence[int]], tariffs: TariffSet, day: dt.date
                        ) -> list[DiscountLine]:
    """Discount lines from ``discount_groups`` rows (one row per key), funders resolved by the
    tariff version that priced each group (SETTLEMENT_STALE_LEGS when the set lacks it)."""
    sums: dict[tuple[int, int, int, Component, int, str], int] = defaultdict(int)
    for area, version_no, opr, iss, product, *amounts in groups:
        version = _version(tariffs, area, version_no, day)
        for component, amount in zip(Component, amounts, strict=True):
            if amount == 0:
                continue
            prod = product if component == Component.CARD else int(Product.ORDINARY)
            funder = funder_of(version, component, product)
            sums[(area, opr, iss, component, prod, funder)] += amount
    return [DiscountLine(*key, amount) for key, amount in sorted(sums.items()) if amount]


def funder_of(version: TariffVersion, component: Component, honoured_product: int) -> str:
    """SPEC §8: the tariff's funder of a component; a product the tariff does not name is the
    operator's. A visitor-rate discount is priced as ORDINARY, so ORDINARY's funder bears it."""
    funders = version.funders
    if component == Component.TRANSFER:
        return funders.transfer
    if component == Component.CAP:
        return funders.cap
    name = cast(ProductName, Product(honoured_product).name.lower())  # Product's names, lowered
    return funders.card.get(name, "operator")


def merge_obligations(parts: Iterable[Iterable[Obligation]]) -> list[Obligation]:
    """Sum partial obligation lists (partitions of a day, or several days) per pair and kind."""
    sums: dict[tuple[Party, Party, ObligationKind], int] = defaultdict(int)
    for part in parts:
        for ob in part:
            sums[(ob.debtor, ob.creditor, ob.kind)] += ob.amount_fen
    return _obligations(sums)


def _obligations(sums: dict[tuple[Party, Party, ObligationKind], int]) -> list[Obligation]:
    return sorted(Obligation(d, c, k, amount) for (d, c, k), amount in sums.items() if amount != 0)


def _version(tariffs: TariffSet, area: int, version_no: int, day: dt.date) -> TariffVersion:
    """The version that priced the legs (their ``version`` is its valid_from day number)."""
    for version in tariffs.tariffs[area].versions:
        if day_number(version.valid_from) == version_no:
            return version
    raise StateError(
        f"legs of area {area} were priced by a tariff version valid from "
        f"{day_from_number(version_no)}, which the tariff set does not have; clear {day} again",
        code=ErrorCode.SETTLEMENT_STALE_LEGS,
    )


def _check_day(legs: pa.Table, day: dt.date) -> None:
    if legs.num_rows == 0:
        return
    days = pc.unique(legs.column("service_day")).to_pylist()
    if days != [day_number(day)]:
        shown = ", ".join(str(day_from_number(d)) for d in sorted(days))
        raise ValueError(f"legs for settling {day} include other service days: {shown}")


def _group_sum(table: pa.Table, keys: list[str], values: list[str]) -> list[tuple[int, ...]]:
    """Rows (keys..., sums...) of a vectorised group-by; plain Python ints, sorted by key."""
    if table.num_rows == 0:
        return []
    casted = table.select(keys + values).cast(
        pa.schema([pa.field(k, pa.int64()) for k in keys + values])
    )
    out = casted.group_by(keys).aggregate([(v, "sum") for v in values])
    cols = [out.column(k).to_pylist() for k in keys] + [
        out.column(f"{v}_sum").to_pylist() for v in values
    ]
    return sorted(zip(*cols, strict=True))
