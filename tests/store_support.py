"""An empty store between hypothesis examples: what the ingest property tests start each from."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import Engine, delete

from clearing.batches import Batch, QuarantinedRow
from clearing.days import ServiceDay
from clearing.db import transaction


def reset_store(engine: Engine, data_dir: Path) -> None:
    """No batch, quarantined row or service day in the database, and an empty data directory."""
    with transaction(engine) as s:
        s.execute(delete(QuarantinedRow))
        s.execute(delete(Batch))
        s.execute(delete(ServiceDay))
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
