"""Tariff models (SPEC §6) as strict, frozen pydantic values, in GTFS-Fares v2 vocabulary.

A tariff file describes one tariff area (a city) as a list of versions, each in force from
its ``valid_from`` service day until the next version's. Models check what one value can check
alone; checks that need the registry or the whole file live in ``tariffs.validate``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Fen = Annotated[int, Field(ge=0, le=10_000_000)]
Bp = Annotated[int, Field(ge=0, le=10_000)]  # SPEC §1: rates are 0..10000 bp
ModeName = Literal["bus", "metro", "ferry", "intercity"]
ProductName = Literal["ordinary", "student", "senior", "disabled", "other"]
Funder = Literal["operator", "government"]


class _Frozen(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")


class LineFare(_Frozen):
    """Flat fare of one operator's lines (GTFS-Fares v2: a leg rule on a flat network)."""

    operator: int
    lines: list[int] | None = None  # None: every flat line of the operator
    fare_fen: Fen
    source: str = ""


class DistanceBand(_Frozen):
    upper_m: int | None = None  # None only on the last band: unbounded
    fare_fen: Fen


class NetworkFare(_Frozen):
    """Fares of an entry-exit network: distance bands or a stop-to-stop matrix."""

    network: int
    max_journey_minutes: Annotated[int, Field(gt=0, le=24 * 60)]  # GTFS v2: duration limit
    max_fare: Fen
    same_station_fare: Fen
    bands: list[DistanceBand] | None = None
    matrix: list[list[int]] | None = None  # rows of [from_stop, to_stop, fare_fen]
    source: str = ""

    @model_validator(mode="after")
    def _one_fare_source(self) -> NetworkFare:
        if (self.bands is None) == (self.matrix is None):
            raise ValueError("give exactly one of 'bands' or 'matrix'")
        if self.bands is not None:
            if not self.bands or self.bands[-1].upper_m is not None:
                raise ValueError("the last distance band must have no upper_m (unbounded)")
            uppers = [b.upper_m for b in self.bands[:-1]]
            if any(u is None for u in uppers) or uppers != sorted(set(uppers)):  # type: ignore[type-var]
                raise ValueError("distance bands must have strictly ascending upper_m")
        return self


class ProductPrice(_Frozen):
    """What a rider category pays on a mode: a rate off the base fare or a fixed fare."""

    mode: ModeName
    product: ProductName
    rate_bp: Bp | None = None  # apply_rate(base, rate_bp)
    fixed_fen: Fen | None = None  # min(base, fixed_fen)
    source: str = ""

    @model_validator(mode="after")
    def _one_price(self) -> ProductPrice:
        if (self.rate_bp is None) == (self.fixed_fen is None):
            raise ValueError("give exactly one of 'rate_bp' or 'fixed_fen'")
        return self


class TransferStep(_Frozen):
    """How the k-th transfer of a chain is priced (SPEC §6.4)."""

    kind: Literal["free", "off_fen", "pay_rate", "difference"]
    fen: Fen | None = None  # off_fen only
    bp: Bp | None = None  # pay_rate only: the share of the base fare that is paid

    @model_validator(mode="after")
    def _arguments(self) -> TransferStep:
        if (self.kind == "off_fen") != (self.fen is not None):
            raise ValueError("'fen' is given with kind 'off_fen' and only then")
        if (self.kind == "pay_rate") != (self.bp is not None):
            raise ValueError("'bp' is given with kind 'pay_rate' and only then")
        return self


class TransferRule(_Frozen):
    """GTFS-Fares v2 transfer rule: a duration limit, allowed mode pairs, a count of steps."""

    window_minutes: Annotated[int, Field(gt=0, le=24 * 60)]
    window_from: Literal["first_boarding", "previous_last_tap"]
    allowed_modes: list[Annotated[list[ModeName], Field(min_length=2, max_length=2)]]  # [from, to]
    steps: list[TransferStep]
    source: str = ""


class DailyCap(_Frozen):
    product: ProductName
    cap_fen: Fen
    source: str = ""


class Funders(_Frozen):
    """Who bears each discount component (SPEC §8); 'government' is the area's government."""

    card: dict[ProductName, Funder] = Field(default_factory=dict)  # by honoured product
    transfer: Funder = "operator"
    cap: Funder = "operator"
    source: str = ""


class RebateTier(_Frozen):
    spend_fen: Fen
    rebate_fen: Fen


class MonthlyRebate(_Frozen):
    """Monthly spend rebate on a network (SPEC §6): the highest tier reached is paid.

    SPEC §6 (v1.2): a rule is in force from its ``valid_from`` service day, within its tariff
    version, and a month uses the rule in force on its last service day for all its spend.
    """

    network: int
    operator: int  # owes the rebate to the card's issuer
    # First service day in force; None: its version's valid_from (tariffs.fares.rebate_valid_from)
    valid_from: dt.date | None = None
    tiers: list[RebateTier]
    source: str = ""


class TariffVersion(_Frozen):
    valid_from: dt.date
    note: str = ""
    apportionment: Literal["later_leg", "pro_rata"] = "later_leg"
    visitor_rate_bp: Bp = 0
    accepted_issuers: list[int]
    concession_issuers: list[int]
    line_fares: list[LineFare] = Field(default_factory=list)
    networks: list[NetworkFare] = Field(default_factory=list)
    prices: list[ProductPrice]
    transfer: TransferRule | None = None
    caps: list[DailyCap] = Field(default_factory=list)
    funders: Funders = Field(default_factory=Funders)
    rebates: list[MonthlyRebate] = Field(default_factory=list)


class Tariff(_Frozen):
    """One tariff area's tariff: its versions in ascending ``valid_from``."""

    area: int  # GB/T 2260 code of the city
    name: str
    illustrative: bool = False  # True when the values are plausible, not sourced
    versions: list[TariffVersion]


class FeeContract(_Frozen):
    """An operator's clearing-fee rate for rides on the listed issuers' cards (SPEC §8)."""

    operator: int
    issuers: list[int]
    fee_bp: Bp
    source: str = ""


class ContractBook(_Frozen):
    contracts: list[FeeContract]
