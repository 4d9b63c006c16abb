"""Partial sums of a day's settlement per card partition: what a partitioned clear hands on.

Everything settlement takes from a day's legs is a sum over legs grouped by a few small keys
(SPEC §7-§8): allocated revenue per (issuer, operator) pair, the discount components per
(area, tariff version, operator, issuer, honoured product), and the per-city totals.
Apportionment shares a chain's charge among its legs and a chain never leaves its card, so
each card partition allocates its own legs, and the partitions' sums add up to the day's.
What must not be summed is anything rounded or looked up: fees round once per pair on the
day's total (SPEC §8) and funders come from the tariff version, so the partials keep the raw
sums and ``partial_figures`` finishes them with the very functions ``compute_day`` uses
(``obligations_from``, ``discount_lines_from``, ``day_figures``). Their size is O(parties x
areas x products), a few kilobytes, whatever the size of the day.

A partitioned clear (``clearing.partition``) computes them in each partition task through
``SETTLEMENT_SUMS`` (clearing cannot import settlement, so settlement hands the function in),
adds them up and stores them beside the legs; ``read_day_partials`` reads them back for
``settlement.settle.settle_from_partials``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from clearing.legs import LEG_SCHEMA
from clearing.legs_store import REVISION_KEY, legs_metadata
from settlement.apportion import allocate
from settlement.figures import CitySummary, DayFigures, city_summary, day_figures
from settlement.obligations import (
    discount_groups,
    discount_lines_from,
    obligations_from,
    revenue_by_pair,
)
from tariffs.load import TariffSet

PARTIALS_KEY = b"tongka.settlement_partials"  # where a partitioned clear stores them
FORMAT = 1  # of the stored JSON; a change of meaning gets a new number
_K = TypeVar("_K")  # the key a merge adds values under


@dataclass(frozen=True, slots=True)
class DayPartials:
    """One day's (or one card partition's) partial settlement sums; all integer fen."""

    day: dt.date
    legs: int
    revenue: tuple[tuple[int, int, int], ...]  # (issuer, operator, allocated fen), one per pair
    # ``obligations.discount_groups`` rows: (area, version, operator, issuer, honoured
    # product, card, transfer, cap discount fen), one per key
    discounts: tuple[tuple[int, ...], ...]
    cities: tuple[CitySummary, ...]  # one per tariff area


def day_partials(legs: pa.Table, day: dt.date) -> DayPartials:
    """The partial sums of some of a day's legs: whole cards (a chain must not be split)."""
    allocated = allocate(legs)
    return DayPartials(
        day=day,
        legs=legs.num_rows,
        revenue=tuple(revenue_by_pair(legs, allocated, day)),  # checks the legs' service day
        discounts=tuple(tuple(g) for g in discount_groups(legs)),
        cities=tuple(city_summary(legs, allocated)),
    )


# The leg columns ``day_partials`` reads (apportionment, revenue pairs, discount groups, city
# totals): 18 of the 32, about 98 of a leg's 151 bytes.
SETTLEMENT_COLUMNS: tuple[str, ...] = (
    "service_day", "card_id", "issuer", "operator", "area", "version", "honoured_product",
    "chain", "board_ts_ms", "board_card_seq", "apportionment", "base_fen", "computed_fen",
    "charged_fen", "mismatch_fen", "card_discount_fen", "transfer_discount_fen",
    "cap_discount_fen",
)


def legs_file_partials(path: Path, day: dt.date) -> DayPartials | None:
    """``day_partials`` of all the legs in one legs Parquet file, read a row group at a time.

    Settling a day from its whole leg table held every column of every leg at once (3.9 GB
    at 15M taps, issue 13); the sums need 18 columns and whole cards only, and a stored
    day's legs are in card order (``LEG_SORT_KEYS``). So each row group is summed on its
    own, less its last card, whose legs go on with the next group (a card, and so a chain,
    is never split), and the sums are merged: ``merge_partials`` of disjoint cards equals
    the sums of all the legs (tests/test_scaleout_identity.py). Returns None when the file
    does not hold the legs that way (another schema, or cards out of order): the caller
    reads the whole table instead.
    """
    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    if any(schema.field(name).type != LEG_SCHEMA.field(name).type if name in schema.names
           else True for name in SETTLEMENT_COLUMNS):
        return None
    parts: list[DayPartials] = []
    carry: pa.Table | None = None
    last = source.num_row_groups - 1
    for i, group in enumerate(_row_groups(source, list(SETTLEMENT_COLUMNS))):
        if carry is not None and carry.num_rows:
            group = pa.concat_tables([carry, group]).combine_chunks()
        if group.num_rows == 0:
            continue
        card = group.column("card_id").to_numpy()
        issuer = group.column("issuer").to_numpy()
        if not _in_card_order(card, issuer):
            return None
        cut = group.num_rows if i == last else _last_card_start(card, issuer)
        if cut:
            parts.append(day_partials(group.slice(0, cut), day))
        carry = group.slice(cut)
    return merge_partials(parts, day)


def _row_groups(source: pq.ParquetFile, columns: list[str]) -> Iterator[pa.Table]:
    """The file's row groups in order, the next one read on a thread while the caller sums
    this one (reading is a third of the work, and pyarrow releases the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = [pool.submit(source.read_row_group, i, columns=columns)
                 for i in range(min(1, source.num_row_groups))]
        for i in range(source.num_row_groups):
            group = ahead.pop().result()
            if i + 1 < source.num_row_groups:
                ahead.append(pool.submit(source.read_row_group, i + 1, columns=columns))
            yield group


def _in_card_order(card: np.ndarray, issuer: np.ndarray) -> bool:
    """(card_id, issuer) never goes down: each card's legs are consecutive."""
    if card.size < 2:
        return True
    up = card[1:] > card[:-1]
    same = card[1:] == card[:-1]
    return bool(np.all(up | (same & (issuer[1:] >= issuer[:-1]))))


def _last_card_start(card: np.ndarray, issuer: np.ndarray) -> int:
    """The row where the legs of the last row's card begin (the rows are in card order)."""
    other = np.flatnonzero((card != card[-1]) | (issuer != issuer[-1]))
    return int(other[-1]) + 1 if other.size else 0


def merge_partials(parts: Iterable[DayPartials], day: dt.date) -> DayPartials:
    """The sums of disjoint sets of a day's cards, added per key: equal to ``day_partials``
    of all their legs at once (tests/test_scaleout_identity.py)."""
    legs = 0
    revenue: dict[tuple[int, ...], int] = defaultdict(int)
    discounts: dict[tuple[int, ...], list[int]] = {}
    cities: dict[int, list[int]] = {}
    for part in parts:
        if part.day != day:
            raise ValueError(f"partial sums of {part.day} cannot be merged into {day}")
        legs += part.legs
        for iss, opr, amount in part.revenue:
            revenue[(iss, opr)] += amount
        for row in part.discounts:
            _add(discounts, tuple(row[:5]), row[5:])
        for c in part.cities:
            _add(cities, c.city, (c.legs, c.base_fen, c.computed_fen, c.charged_fen,
                                  c.allocated_fen, c.discount_fen, c.mismatch_fen))
    return DayPartials(
        day=day,
        legs=legs,
        revenue=tuple((k[0], k[1], v) for k, v in sorted(revenue.items())),
        discounts=tuple((*k, *v) for k, v in sorted(discounts.items())),
        cities=tuple(CitySummary(city, *v) for city, v in sorted(cities.items())),
    )


def _add(sums: dict[_K, list[int]], key: _K, values: Sequence[int]) -> None:
    have = sums.setdefault(key, [0] * len(values))
    for i, v in enumerate(values):
        have[i] += int(v)


def partial_figures(partials: DayPartials, tariffs: TariffSet, day: dt.date) -> DayFigures:
    """Obligations, positions, payments and summaries from a whole day's merged partials,
    exactly as ``compute_day`` makes them from the legs."""
    if partials.day != day:
        raise ValueError(f"partial sums of {partials.day} cannot settle {day}")
    discounts = discount_lines_from(partials.discounts, tariffs, day)
    obligations = obligations_from(partials.revenue, discounts, tariffs)
    return day_figures(obligations, partials.cities, discounts, day)


def dumps(partials: DayPartials) -> bytes:
    """JSON of plain integers: Python ints never round, whatever the amounts."""
    return json.dumps({
        "format": FORMAT,
        "day": partials.day.isoformat(),
        "legs": partials.legs,
        "revenue": [list(r) for r in partials.revenue],
        "discounts": [list(r) for r in partials.discounts],
        "cities": [[c.city, c.legs, c.base_fen, c.computed_fen, c.charged_fen, c.allocated_fen,
                    c.discount_fen, c.mismatch_fen] for c in partials.cities],
    }, separators=(",", ":")).encode()


def loads(data: bytes) -> DayPartials:
    raw = json.loads(data)
    if raw.get("format") != FORMAT:
        raise ValueError(f"stored partial sums have format {raw.get('format')!r}, not {FORMAT}")
    return DayPartials(
        day=dt.date.fromisoformat(raw["day"]),
        legs=int(raw["legs"]),
        revenue=tuple((int(a), int(b), int(c)) for a, b, c in raw["revenue"]),
        discounts=tuple(tuple(int(v) for v in r) for r in raw["discounts"]),
        cities=tuple(CitySummary(*(int(v) for v in r)) for r in raw["cities"]),
    )


class SettlementSums:
    """The settlement sums a partitioned clear computes per partition, merges and stores
    (``clearing.partition.LegSummary``): handed to clearing by the application, since
    clearing must not import settlement (the rooms' direction, ARCHITECTURE)."""

    key = PARTIALS_KEY

    def of(self, legs: pa.Table, day: dt.date) -> DayPartials:
        return day_partials(legs, day)

    def merge(self, parts: Sequence[DayPartials], day: dt.date) -> DayPartials:
        return merge_partials(parts, day)

    def dumps(self, merged: DayPartials) -> bytes:
        return dumps(merged)


SETTLEMENT_SUMS = SettlementSums()


def read_day_partials(data_dir: Path, day: dt.date, *, revision: int | None = None
                      ) -> DayPartials | None:
    """The stored partial sums of a day cleared partitioned with ``SETTLEMENT_SUMS``; None for
    a day cleared otherwise (settle it from its legs). A day never cleared is
    ``DAY_NOT_CLEARED``. Their revision is the legs' (``clearing.day.legs_revision``): with
    ``revision``, sums stored at another day revision are None too (the day changed since it
    was cleared), checked on the same read of the legs file's footer as the sums themselves."""
    metadata = legs_metadata(data_dir, day)
    if revision is not None and int(metadata.get(REVISION_KEY, b"-1")) != revision:
        return None
    stored = metadata.get(PARTIALS_KEY)
    return loads(stored) if stored is not None else None
