"""Crash-safe Parquet files, through the engine's one atomic writer (``clearing.files``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from clearing.files import TMP_SUFFIX, atomic_file

__all__ = ["ROW_GROUP_ROWS", "TMP_SUFFIX", "write_atomic", "write_atomic_stream"]

ROW_GROUP_ROWS = 1024 * 1024  # pq.write_table's default: the most rows in a row group

_DEFAULTS: dict[str, Any] = {"compression": "zstd", "compression_level": 1}


def write_atomic(table: pa.Table, path: Path, **options: Any) -> Path:
    """Write ``table`` to ``path`` wholly or not at all; ``options`` go to ``pq.write_table``.

    zstd level 1 by default: it writes several times faster than the default level for a few
    percent more bytes, and the day's legs are rewritten on every clear.
    """
    options = {**_DEFAULTS, **options}
    with atomic_file(path, "wb") as fh:
        pq.write_table(table, fh, **options)
    return path


def write_atomic_stream(tables: Iterable[pa.Table], schema: pa.Schema, path: Path,
                        **options: Any) -> Path:
    """``write_atomic`` of the tables put end to end, each dropped once written.

    The row groups are those ``write_atomic`` gives the whole table (``ROW_GROUP_ROWS`` rows
    each, the last one shorter): rows left over from one table wait for the next, as slices
    (no copy). The file goes to a temporary name and replaces ``path`` only once every table
    is written and fsynced: an error or a crash meanwhile leaves ``path`` as it was.
    ``schema`` (with its metadata) is the file's; every table must have its fields.
    """
    options = {**_DEFAULTS, **options}
    with atomic_file(path, "wb") as fh, pq.ParquetWriter(fh, schema, **options) as writer:
        pending: list[pa.Table] = []
        rows = 0
        wrote = False
        for table in tables:
            pending.append(table.replace_schema_metadata(schema.metadata))
            rows += table.num_rows
            if rows < ROW_GROUP_ROWS:
                continue
            ready = pa.concat_tables(pending)  # chunks side by side: no copy
            whole = rows - rows % ROW_GROUP_ROWS
            writer.write_table(ready.slice(0, whole), row_group_size=ROW_GROUP_ROWS)
            pending, rows, wrote = [ready.slice(whole)], rows - whole, True
        if rows or not wrote:  # the rest; or an empty table, as write_atomic writes no rows
            writer.write_table(pa.concat_tables(pending) if rows else schema.empty_table(),
                               row_group_size=ROW_GROUP_ROWS)
    return path
