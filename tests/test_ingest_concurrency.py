"""Concurrent ingestion with real processes, on PostgreSQL and SQLite: the same file sent by
two processes at the same moment is one batch; overlapping batches of one day sent at the
same moment store every distinct tap exactly once."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from sqlalchemy import Engine, func, select

from clearing.batches import Batch
from clearing.db import make_engine
from clearing.service_day import local_ms
from clearing.taps import TapType, taps_table
from clearing.tapstore import read_day_taps
from tariffs.registry import FLAT, load_registry

REG = load_registry()
DAY = dt.date(2026, 11, 24)
BUS = next(ln for ln in REG.lines.values() if ln.network == FLAT)

WORKER = r"""
import json, os, sys, time
from pathlib import Path
from clearing import tapstore
from clearing.db import make_engine
from clearing.ingest import ingest_file
from tariffs.registry import load_registry

url, data_dir, path, go = sys.argv[1:5]
reg = load_registry()
engine = make_engine(url)
with engine.connect():
    pass
tapstore.warm_up()
keys = None
if len(sys.argv) > 5:  # one call of several files: its key index holds the day before the race
    keys = tapstore.KeyIndex(Path(data_dir))
    ingest_file(engine, Path(data_dir), Path(sys.argv[5]), reg, keys=keys)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.0005)
r = ingest_file(engine, Path(data_dir), Path(path), reg, keys=keys)
print(json.dumps({"status": r.status, "batch_id": r.batch_id, "accepted": r.accepted,
                  "duplicates": r.duplicates}), flush=True)
"""


def tap(i: int) -> dict:
    stop = BUS.stops[i % len(BUS.stops)]
    return dict(operator=BUS.operator, device_id=3, device_seq=i, card_id=5000 + i, card_seq=i,
                issuer=1, product=0, media=0, ts_ms=local_ms(DAY, 7) + i, city=REG.stops[stop].city,
                line=BUS.line, stop=stop, tap_type=int(TapType.FLAT), debited_fen=160)


def write(path: Path, rows: list[dict]) -> Path:
    meta = {b"tongka.service_day": DAY.isoformat().encode(),
            b"tongka.operator": str(BUS.operator).encode()}
    pq.write_table(taps_table(rows).replace_schema_metadata(meta), path)
    return path


def race(db_url: str, data_dir: Path, files: list[Path], go: Path,
         first: list[Path] | None = None) -> list[dict]:
    """Start one process per file, wait until all are warm, then release them at once.

    ``first``: each process's call ingests that file before the race, through a key index
    that the others' commits during the race then make out of date."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, db_url, str(data_dir), str(f),
                               str(go), *([str(first[i])] if first else [])],
                              stdout=subprocess.PIPE, text=True) for i, f in enumerate(files)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        time.sleep(0.05)
        go.touch()
        out = []
        for p in procs:
            stdout, _ = p.communicate(timeout=120)
            assert p.returncode == 0
            out.append(json.loads(stdout.strip().splitlines()[-1]))
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


def test_four_processes_at_once(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """Two processes send the same file X; two others send Y and Z, which overlap X and Y."""
    x = write(tmp_path / "x.parquet", [tap(i) for i in range(0, 2000)])
    y = write(tmp_path / "y.parquet", [tap(i) for i in range(1000, 3000)])
    z = write(tmp_path / "z.parquet", [tap(i) for i in range(2000, 4000)])
    store = tmp_path / "store"
    rx1, rx2, ry, rz = race(db_url, store, [x, x, y, z], tmp_path / "go")
    # the same bytes at the same moment: one batch
    assert sorted([rx1["status"], rx2["status"]]) == ["accepted", "already_ingested"]
    assert rx1["batch_id"] == rx2["batch_id"]
    # overlapping batches: every distinct tap stored once, whoever came first
    fresh = [r for r in (rx1, rx2, ry, rz) if r["status"] == "accepted"]
    assert len(fresh) == 3
    assert sum(r["accepted"] for r in fresh) == 4000
    assert sum(r["duplicates"] for r in fresh) == 2000
    stored = read_day_taps(store, DAY, engine)
    assert sorted(stored.column("device_seq").to_pylist()) == list(range(4000))
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(Batch)).scalar_one() == 3
        seqs = c.execute(select(Batch.day_seq).order_by(Batch.day_seq)).scalars().all()
    assert seqs == [1, 2, 3]
    # a batch all of whose taps came first in others stores no taps file; a batch with
    # duplicates keeps them beside (SPEC v1.2 §4: a withdrawal may make them acceptable)
    files = [p.name for p in store.rglob("*.parquet")]
    dups = [f for f in files if f.endswith(".dup.parquet")]
    assert len(files) - len(dups) == sum(1 for r in fresh if r["accepted"])
    assert len(dups) == sum(1 for r in fresh if r["duplicates"])


def test_calls_with_a_key_index_racing(engine: Engine, db_url: str, tmp_path: Path) -> None:
    """As above, each process one call of two files: its index, loaded by its first file
    before the race, must still see what the others commit during it (SPEC §4)."""
    x = write(tmp_path / "x.parquet", [tap(i) for i in range(0, 2000)])
    y = write(tmp_path / "y.parquet", [tap(i) for i in range(1000, 3000)])
    z = write(tmp_path / "z.parquet", [tap(i) for i in range(2000, 4000)])
    firsts = [write(tmp_path / f"first{k}.parquet", [tap(10_000 + 100 * k + i)
                                                      for i in range(100)]) for k in range(3)]
    store = tmp_path / "store"
    ry, rz, rx = race(db_url, store, [y, z, x], tmp_path / "go", first=firsts)
    assert sum(r["accepted"] for r in (rx, ry, rz)) == 4000
    assert sum(r["duplicates"] for r in (rx, ry, rz)) == 2000
    stored = read_day_taps(store, DAY, engine)
    assert sorted(stored.column("device_seq").to_pylist()) == [
        *range(4000), *range(10_000, 10_100), *range(10_100, 10_200), *range(10_200, 10_300)]


UPGRADER = r"""
import os, sys, time
from clearing.db import make_engine
from tongka.schema import current_revision, head_revision, upgrade

url, go = sys.argv[1:3]
engine = make_engine(url)
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.0005)
upgrade(engine)
assert current_revision(engine) == head_revision()
print("{}", flush=True)
"""


def test_processes_upgrading_a_fresh_database_at_once(db_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", UPGRADER, db_url, str(go)],
                              stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        go.touch()
        for p in procs:
            p.communicate(timeout=120)
            assert p.returncode == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    engine = make_engine(db_url)
    with engine.connect() as c:
        assert c.execute(select(func.count()).select_from(Batch)).scalar_one() == 0
    engine.dispose()
