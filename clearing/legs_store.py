"""Where a cleared day's legs live, and what their file says.

A day's ``legs.parquet`` is its one commit point: it is replaced whole by every clear. A
single-process clear writes the legs into it; a partitioned clear writes no rows, only the
manifest of its run's part files (legs, signals) and its partial sums, in the file's key-value
metadata. Readers of the legs (``clearing.day``), of the signals (``clearing.risk_store``) and of
the partial sums (``settlement.partials``) all start here, so they read from the same clear.
This module imports nothing above the file formats: the day and the risk store both need it.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from clearing.errors import ErrorCode, StateError

REVISION_KEY = b"tongka.day_revision"  # the day revision (clearing.days) the legs price
# A partitioned clear's legs.parquet holds no rows: it is the manifest of the run's part files
# (JSON: the storage URL and the parts' paths under it), replaced whole like the single file.
PARTS_KEY = b"tongka.legs_parts"
SIGNALS_FIELD = "signals"  # the manifest's list of the run's signal files (PARTS_KEY's JSON)


def legs_path(data_dir: Path, day: dt.date) -> Path:
    return Path(data_dir) / "legs" / f"day={day.isoformat()}" / "legs.parquet"


def legs_revision(data_dir: Path, day: dt.date) -> int | None:
    """The day revision the stored legs were priced at; None if the day was never cleared."""
    path = legs_path(data_dir, day)
    if not path.exists():
        return None
    metadata = pq.read_schema(path).metadata or {}
    return int(metadata.get(REVISION_KEY, b"-1"))


def legs_metadata(data_dir: Path, day: dt.date) -> dict[bytes, bytes]:
    """The key-value metadata of the day's stored legs (its revision, a partitioned clear's
    manifest and partial sums); a day never cleared is DAY_NOT_CLEARED."""
    path = legs_path(data_dir, day)
    if not path.exists():
        raise not_cleared(day)
    return dict(pq.read_schema(path).metadata or {})


def parts_manifest(data_dir: Path, day: dt.date, *, resolve: bool = True
                   ) -> dict[str, Any] | None:
    """A partitioned clear's manifest (storage URL, part files, signal files); None for a day
    cleared in one process or never cleared.

    A clear on the data directory itself records no storage (null), so a data directory that
    is moved, copied or named by a relative path still finds its parts: ``resolve`` puts the
    data directory in its place (False keeps the null, for clearing the day the same way).
    """
    path = legs_path(data_dir, day)
    if not path.is_file():
        return None
    parts = (pq.read_schema(path).metadata or {}).get(PARTS_KEY)
    if parts is None:
        return None
    manifest = dict(json.loads(parts))
    if resolve and not manifest.get("storage"):
        manifest["storage"] = str(data_dir)
    return manifest


def not_cleared(day: dt.date) -> StateError:
    return StateError(f"service day {day} has not been cleared: run `tongka clear --date {day}`",
                      code=ErrorCode.DAY_NOT_CLEARED)
