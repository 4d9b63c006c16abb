"""A day's settlement figures, however they were summed: obligations netted into positions
and payments (SPEC §8), and the per-city totals, from a day's legs (``settlement.settle``) or
from the partial sums of a partitioned clear (``settlement.partials``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from settlement.netting import Payment, net_positions, payment_instructions
from settlement.obligations import DiscountLine, Obligation
from settlement.parties import Party


@dataclass(frozen=True, slots=True, order=True)
class CitySummary:
    """One tariff area's totals of the day, straight from its legs (the demo's per-city table)."""

    city: int  # the tariff area
    legs: int
    base_fen: int
    computed_fen: int
    charged_fen: int
    allocated_fen: int
    discount_fen: int  # card + transfer + cap discounts
    mismatch_fen: int  # sum of charged - computed


@dataclass(frozen=True, slots=True)
class DayFigures:
    """What posting a day needs, however it was summed: from the day's legs (``compute_day``)
    or from the partial sums of a partitioned clear (``settlement.partials``)."""

    obligations: tuple[Obligation, ...]
    positions: dict[Party, int]
    payments: tuple[Payment, ...]
    city_summary: tuple[CitySummary, ...]
    discounts: tuple[DiscountLine, ...]


def day_figures(obligations: Iterable[Obligation], city: Iterable[CitySummary],
                discounts: Iterable[DiscountLine], day: dt.date) -> DayFigures:
    """Net a day's obligations into positions and its hub-and-spoke payments (SPEC §8)."""
    obligations = tuple(obligations)
    positions = net_positions(obligations)
    return DayFigures(obligations, positions, tuple(payment_instructions(positions, day)),
                      tuple(city), tuple(discounts))


def city_summary(legs: pa.Table, allocated: np.ndarray) -> list[CitySummary]:
    """Per tariff area: number of legs and their base, computed, charged, allocated, discount and
    mismatch totals (vectorised; the inputs of the demo summary and the statements)."""
    if legs.num_rows == 0:
        return []
    t = pa.table(
        {
            "area": legs.column("area").cast(pa.int64()),
            "base": legs.column("base_fen"),
            "computed": legs.column("computed_fen"),
            "charged": legs.column("charged_fen"),
            "allocated": pa.array(np.asarray(allocated, dtype=np.int64)),
            "discount": pa.array(
                legs.column("card_discount_fen").to_numpy()
                + legs.column("transfer_discount_fen").to_numpy()
                + legs.column("cap_discount_fen").to_numpy()
            ),
            "mismatch": legs.column("mismatch_fen"),
        }
    )
    values = ["base", "computed", "charged", "allocated", "discount", "mismatch"]
    out = t.group_by("area").aggregate([("area", "count"), *[(v, "sum") for v in values]])
    rows = zip(
        out.column("area").to_pylist(),
        out.column("area_count").to_pylist(),
        *[out.column(f"{v}_sum").to_pylist() for v in values],
        strict=True,
    )
    return sorted(CitySummary(*map(int, row)) for row in rows)
