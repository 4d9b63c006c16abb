"""Ingesting batch files: each file its own committed unit, canonical Parquet or a raw format."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine

from clearing.errors import InputError
from clearing.ingest import BatchReport, ingest_file, ingest_taps
from clearing.input_files import read_input_bytes
from clearing.tapstore import KeyIndex
from readers.config import ReaderConfig
from readers.registry import detect_format_bytes, get_adapter
from tariffs.error_codes import ErrorCode
from tariffs.load import TariffSet

CANONICAL_FORMATS = ("canonical", "parquet")


@dataclass(frozen=True, slots=True)
class RefusedFile:
    """A file that could not be stored at all: its outcome beside the stored ones."""

    source_name: str
    code: str
    message: str


Outcome = BatchReport | RefusedFile


def ingest_files(
    engine: Engine,
    home: Path,
    files: Sequence[Path],
    tariffs: TariffSet,
    reader_config: ReaderConfig,
    *,
    fmt: str | None = None,
    day: dt.date | None = None,
    operator: int | None = None,
    input_dir: Path | None = None,
    seal_key: bytes | None = None,
    on_file: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Ingest each file as its own committed unit; a refused file is reported and the rest go
    on (one bad file must not leave an operator guessing which of seventy were stored).

    The files share one key index (``clearing.tapstore.KeyIndex``): the stored keys of the days
    they touch are read once for the call, not once per file."""
    outcomes: list[Outcome] = []
    keys = KeyIndex(home, expect_rows=_footer_rows(files, fmt))
    for path in files:
        outcome: Outcome
        try:
            if fmt in (None, *CANONICAL_FORMATS) and (fmt or path.suffix == ".parquet"):
                outcome = ingest_file(
                    engine, home, path, tariffs.registry, service_day=day, operator=operator,
                    input_dir=input_dir, tariffs=tariffs, seal_key=seal_key, keys=keys,
                )
            else:
                outcome = ingest_raw(
                    engine, home, path, tariffs, reader_config, fmt=fmt, day=day,
                    operator=operator, input_dir=input_dir, seal_key=seal_key, keys=keys,
                )
        except InputError as exc:
            outcome = RefusedFile(path.name, exc.code, str(exc.args[0]))
        outcomes.append(outcome)
        if on_file is not None:
            on_file(outcome)
    return outcomes


def _footer_rows(files: Sequence[Path], fmt: str | None) -> int:
    """The rows the call's canonical batches declare in their Parquet footers: the key index
    is sized for them up front, so it never grows midway (a hint only: a file that cannot be
    read here is refused, or counted, when its turn comes)."""
    rows = 0
    for path in files:
        if fmt in (None, *CANONICAL_FORMATS) and (fmt or path.suffix == ".parquet"):
            try:
                rows += pq.read_metadata(path).num_rows
            except (OSError, ValueError, pa.ArrowException):
                continue
    return rows


def ingest_raw(
    engine: Engine,
    home: Path,
    path: Path,
    tariffs: TariffSet,
    reader_config: ReaderConfig,
    *,
    fmt: str | None = None,
    day: dt.date | None = None,
    operator: int | None = None,
    input_dir: Path | None = None,
    seal_key: bytes | None = None,
    keys: KeyIndex | None = None,
) -> BatchReport:
    """A raw reader export: read once (the bytes hashed for the batch's identity are the bytes
    detected and parsed), parsed by its adapter, then accepted like any batch."""
    data = read_input_bytes(path, input_dir=input_dir)
    digest = hashlib.sha256(data).hexdigest()
    name = fmt or detect_format_bytes(data, name=path.name)
    result = get_adapter(name).parse_bytes(data, reader_config, name=path.name)
    day = day or result.service_day
    operator = operator if operator is not None else result.operator
    if day is None or operator is None:
        raise InputError(
            f"{path}: no row could be read, so the batch's service day and operator are unknown: "
            "pass --date and --operator",
            code=ErrorCode.INPUT_METADATA,
        )
    return ingest_taps(
        engine, home, result.taps_with_source_rows(), result.errors, file_sha256=digest,
        source_format=name, source_name=path.name, service_day=day, operator=operator,
        registry=tariffs.registry, tariffs=tariffs, seal_key=seal_key,
        raw_records=result.raw_records if result.lines is not None else None, keys=keys,
    )
