"""Clearing one service day: read its accepted taps, match and price them, store the legs.

The fast path prices by default; the reference is for audits and tests (``--reference``).
Legs are an immutable Parquet file per day, replaced whole when a day is cleared again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from clearing.errors import StateError
from clearing.legs import LEG_SCHEMA
from clearing.parquet_io import write_atomic
from tariffs.load import TariffSet


@dataclass(frozen=True, slots=True)
class ClearResult:
    day: dt.date
    taps: int
    legs: int
    path: Path
    revision: int  # the day's revision (clearing.days) whose taps these legs price


REVISION_KEY = b"tongka.day_revision"


def day_revision_of(engine: Engine | None, day: dt.date) -> int:
    """The day's current revision; every stored batch that changes the day's taps bumps it."""
    if engine is None:
        return 0
    from clearing.days import day_revision
    from clearing.db import session_factory

    with session_factory(engine)() as session:
        return day_revision(session, day)


def legs_revision(data_dir: Path, day: dt.date) -> int | None:
    """The day revision the stored legs were priced at; None if the day was never cleared."""
    path = legs_path(data_dir, day)
    if not path.exists():
        return None
    metadata = pq.read_schema(path).metadata or {}
    return int(metadata.get(REVISION_KEY, b"-1"))


def legs_path(data_dir: Path, day: dt.date) -> Path:
    return data_dir / "legs" / f"day={day.isoformat()}" / "legs.parquet"


def price_taps(taps: pa.Table, tariffs: TariffSet, *, reference: bool = False) -> pa.Table:
    """Match and price a table of accepted taps with the fast path or the reference."""
    if reference:
        from clearing.reference import match_and_price
    else:
        from clearing.fast import match_and_price_fast as match_and_price
    return match_and_price(taps, tariffs)


def clear_day(
    data_dir: Path,
    day: dt.date,
    tariffs: TariffSet,
    *,
    reference: bool = False,
    engine: Engine | None = None,
    partitions: int = 0,
    scheduler: str | None = None,
) -> ClearResult:
    """Price every accepted tap of ``day`` and store the day's legs.

    ``partitions > 0`` prices that many card partitions on dask.distributed: on the cluster at
    ``scheduler`` (an address such as ``tcp://10.0.0.5:8786``), or on local worker processes.
    """
    from clearing.tapstore import read_day_taps

    revision = day_revision_of(engine, day)  # read before the taps: a later batch bumps it
    taps = read_day_taps(data_dir, day, engine)
    if partitions > 0 and not reference:
        legs = _price_partitioned(taps, tariffs, partitions, scheduler)
    else:
        legs = price_taps(taps, tariffs, reference=reference)
    legs = legs.replace_schema_metadata({REVISION_KEY: str(revision).encode()})
    path = write_atomic(legs, legs_path(data_dir, day))
    return ClearResult(day, taps.num_rows, legs.num_rows, path, revision)


def _price_partitioned(
    taps: pa.Table, tariffs: TariffSet, partitions: int, scheduler: str | None
) -> pa.Table:
    from dask.distributed import Client

    from clearing.partition import local_client, match_and_price_partitioned

    with Client(scheduler) if scheduler else local_client(min(partitions, 4)) as client:
        return match_and_price_partitioned(taps, tariffs, client, partitions)


def read_day_legs(data_dir: Path, day: dt.date) -> pa.Table:
    """The stored legs of a cleared day; a day never cleared is a StateError naming the fix."""
    path = legs_path(data_dir, day)
    if not path.exists():
        raise StateError(
            f"service day {day} has not been cleared: run `tongka clear --date {day}`",
            code="DAY_NOT_CLEARED",
        )
    return pq.read_table(path, schema=LEG_SCHEMA)
