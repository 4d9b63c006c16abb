"""JSON Lines into columns: Arrow's reader on clean chunks, Python's ``json`` on the others.

Rows are lines (empty lines are skipped, every other line is one row). Each chunk of lines is
first handed to ``pyarrow.json`` with the format's schema; that only succeeds when every line
of the chunk is one well-typed JSON object, and then each line is one row. Any chunk it
refuses (a bad line, a wrong type, a duplicate key) is read again line by line, so a bad line
costs its chunk the slow path and never changes what the other lines mean.

The presence and type of every field are checked here, in field order (FIELD_MISSING,
FIELD_TYPE, FIELD_RANGE for integers beyond int64), after JSON_INVALID.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.json as pj

from readers.columns import Lines, RowChecks
from tariffs.error_codes import ErrorCode

CHUNK_ROWS = 1 << 16
INT = "int"
STR = "str"


@dataclass(frozen=True, slots=True)
class JsonField:
    name: str  # the JSON key
    kind: str  # INT (a JSON integer) or STR (a JSON string)


@dataclass(frozen=True, eq=False)
class JsonColumns:
    """Every field of every row: int64 arrays for INT fields, Arrow strings for STR fields."""

    ints: dict[str, np.ndarray]  # 0 where the value is absent or unusable
    strs: dict[str, pa.Array]  # null where the value is absent or unusable
    usable: dict[str, np.ndarray]  # bool: present and of the right type


def read_json_lines(lines: Lines, fields: Sequence[JsonField], checks: RowChecks) -> JsonColumns:
    """Columns of ``fields`` for every row of ``lines``; shape and type errors go to ``checks``."""
    n = len(lines)
    schema = pa.schema([(f.name, pa.int64() if f.kind == INT else pa.string()) for f in fields])
    ints = {f.name: np.zeros(n, dtype=np.int64) for f in fields if f.kind == INT}
    str_parts: dict[str, list[pa.Array]] = {f.name: [] for f in fields if f.kind == STR}
    invalid = np.zeros(n, dtype=bool)
    missing = {f.name: np.zeros(n, dtype=bool) for f in fields}
    bad_type = {f.name: np.zeros(n, dtype=bool) for f in fields}
    too_big = {f.name: np.zeros(n, dtype=bool) for f in fields}
    for lo in range(0, n, CHUNK_ROWS):
        hi = min(n, lo + CHUNK_ROWS)
        table = _fast_chunk(lines, lo, hi, schema)
        if table is not None:
            for f in fields:
                col = table.column(f.name)
                missing[f.name][lo:hi] = col.is_null().to_numpy(zero_copy_only=False)
                if f.kind == INT:
                    ints[f.name][lo:hi] = col.fill_null(0).to_numpy()
                else:
                    str_parts[f.name].append(col.combine_chunks())
            continue
        values: dict[str, list[object]] = {
            f.name: [None] * (hi - lo) for f in fields if f.kind == STR
        }
        for i in range(lo, hi):
            obj = _load(lines.raw(i))
            if obj is None:
                invalid[i] = True
                continue
            for f in fields:
                v = obj.get(f.name)
                if v is None:
                    missing[f.name][i] = True
                elif f.kind == INT:
                    if type(v) is not int:
                        bad_type[f.name][i] = True
                    elif -(2**63) <= v < 2**63:
                        ints[f.name][i] = v
                    else:
                        too_big[f.name][i] = True
                elif type(v) is not str or not _encodable(v):
                    bad_type[f.name][i] = True
                else:
                    values[f.name][i - lo] = v
        for name, vals in values.items():
            str_parts[name].append(pa.array(vals, type=pa.string()))
    checks.flag(invalid, ErrorCode.JSON_INVALID, "", "the line is not one JSON object")
    usable = {}
    for f in fields:
        want = "an integer" if f.kind == INT else "a string"
        checks.flag(
            missing[f.name] & ~invalid, ErrorCode.FIELD_MISSING, f.name, f"{f.name} is required"
        )
        checks.flag(bad_type[f.name], ErrorCode.FIELD_TYPE, f.name, f"{f.name} must be {want}")
        checks.flag(too_big[f.name], ErrorCode.FIELD_RANGE, f.name, f"{f.name} is out of range")
        usable[f.name] = ~(invalid | missing[f.name] | bad_type[f.name] | too_big[f.name])
    strs = {
        name: (pa.concat_arrays(parts) if parts else pa.array([], type=pa.string()))
        for name, parts in str_parts.items()
    }
    return JsonColumns(ints, strs, usable)


def _fast_chunk(lines: Lines, lo: int, hi: int, schema: pa.Schema) -> pa.Table | None:
    """Arrow's reading of rows [lo, hi), or None when it cannot be trusted to be row for row."""
    data = lines.data
    starts, ends = lines.starts[lo:hi], lines.ends[lo:hi]
    # Each row must be exactly one object: Arrow reads "{..}{..}" on one line as two rows and
    # skips blank-looking lines, so only a chunk whose every line is braced, and whose row
    # count then matches, maps row for row.
    if not (np.all(data[starts] == ord("{")) and np.all(data[ends - 1] == ord("}"))):
        return None
    chunk = data[int(starts[0]) : int(ends[-1])]
    if np.any(chunk >= 0x80):  # Arrow does not check UTF-8 inside strings; Python does
        try:
            codecs.utf_8_decode(chunk.tobytes(), "strict", True)
        except UnicodeDecodeError:
            return None
    buf = pa.py_buffer(chunk)
    try:
        table = pj.read_json(
            pa.BufferReader(buf),
            read_options=pj.ReadOptions(use_threads=False, block_size=1 << 22),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except Exception:  # any refusal means "read this chunk the slow, exact way"
        return None
    if table.num_rows != hi - lo:
        return None
    return table.select(schema.names)


def _load(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return obj if isinstance(obj, dict) else None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        return False
    return True


def load_object(raw: bytes) -> dict[str, Any] | None:
    """One row as Python (error records only), or None when it is not a JSON object."""
    return _load(raw)
