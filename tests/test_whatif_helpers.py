"""Helpers of the what-if tests: stored generated days, tariff files written back as TOML.

(A module of helpers named like a test file so it stays unique to the what-if task; it holds
one sanity test of the TOML writer the no-op proposals rely on.)
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy import Engine, inspect, select, table, text

from clearing.fast import match_and_price_fast
from clearing.ingest import ingest_file
from tariffs.gtfs import tariff_toml  # the one TOML writer of tariff models
from tariffs.load import DEFAULT_TARIFF_DIR, load_tariff_set
from tongka.testing.generate import generate, write_day

TARIFFS = load_tariff_set()


def accepted_day(day: dt.date, n_taps: int, seed: int) -> pa.Table:
    """A generated day's taps that ingestion would accept (SPEC §4), without a database."""
    gen = generate(day, n_taps, seed, TARIFFS, price=match_and_price_fast)
    return gen.table.filter(pa.array(gen.accepted_mask))


def store_days(engine: Engine, home: Path, incoming: Path, days: list[dt.date], n_taps: int,
               seed: int) -> None:
    """Generate and ingest each day through the real ingestion (one batch per operator)."""
    for k, day in enumerate(days):
        gen = generate(day, n_taps, seed + k, TARIFFS, price=match_and_price_fast)
        for path in write_day(incoming / day.isoformat(), gen.table, day):
            ingest_file(engine, home, path, TARIFFS.registry, tariffs=TARIFFS)


def tree_hashes(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under the roots (names included: a new file shows)."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def dump_tables(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted, plus the PostgreSQL sequences' positions."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for name in sorted(inspect(conn).get_table_names()):
            rows = conn.execute(select(text("*")).select_from(table(name))).all()
            out[name] = sorted(tuple(map(repr, r)) for r in rows)
        if conn.dialect.name == "postgresql":
            seqs = conn.execute(text(
                "SELECT sequencename, last_value FROM pg_sequences "
                "WHERE schemaname = current_schema()")).all()
            out["_sequences"] = sorted(tuple(map(repr, r)) for r in seqs)
    return out


def area_file(area: int) -> Path:
    (path,) = DEFAULT_TARIFF_DIR.glob(f"{area}-*.toml")
    return path


def test_every_current_tariff_file_writes_back_to_an_equal_model(tmp_path: Path) -> None:
    for area, tariff in TARIFFS.tariffs.items():
        (tmp_path / area_file(area).name).write_text(tariff_toml(tariff), encoding="utf-8")
    (tmp_path / "contracts.toml").write_bytes((DEFAULT_TARIFF_DIR / "contracts.toml").read_bytes())
    again = load_tariff_set(tmp_path, TARIFFS.registry)
    assert again.tariffs == TARIFFS.tariffs
