"""Crash safety (issue 6): SIGKILL an ingesting process at 100+ points, on SQLite and PostgreSQL.

After every kill the batch is recorded wholly or not at all, and re-running the ingestion
leaves exactly the state of a run that never crashed: the same batches, quarantined rows,
service days and tap files, byte for byte.

Killing needs a real process. Starting Python with pyarrow, SQLAlchemy and numba takes
longer than a whole ingestion of the test batch, so a warm "zygote" process imports
everything once and forks one child per kill point; the child ingests and the zygote
SIGKILLs it, either after a delay spread evenly over a clean ingestion's duration, or at a
named step boundary (``clearing.ingest._checkpoint``) so every boundary is hit for sure.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from sqlalchemy import Engine, select

from clearing.batches import Batch, QuarantinedRow
from clearing.days import ServiceDay
from clearing.ingest import ingest_file
from clearing.service_day import local_ms
from clearing.taps import TapType, taps_table
from tariffs.registry import FLAT, load_registry
from tests.store_support import reset_store

REG = load_registry()
DAY = dt.date(2026, 11, 24)
BUS = next(ln for ln in REG.lines.values() if ln.network == FLAT)
TIMED_POINTS = 93  # per database, spread over a clean ingestion; + 7 step boundaries = 100
CHECKPOINTS = ("locked", "cleaned", "batch_row", "file_renamed", "quarantined",
               "before_commit", "committed")

ZYGOTE = r"""
import json, os, signal, sys, time, traceback
from pathlib import Path
import clearing.ingest as ingest
from clearing.db import make_engine
from tariffs.registry import load_registry

url, data_dir, batch = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
reg = load_registry()
engine = make_engine(url)
# Warm every cache (compiled kernel, SQL statements) with one ingestion that the test throws
# away, then close the connections: each child opens its own, on the warm engine.
ingest.ingest_file(engine, data_dir, batch, reg)
engine.dispose()
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            target = cmd.get("checkpoint")
            if target:
                def hook(step, target=target):
                    if step == target:
                        os.kill(os.getpid(), signal.SIGKILL)
                ingest._checkpoint = hook
            engine.dispose(close=False)  # never touch the zygote's connections
            ingest.ingest_file(engine, data_dir, batch, reg)
        except BaseException:
            traceback.print_exc()
            code = 3
        os._exit(code)
    if cmd.get("delay") is not None:
        time.sleep(cmd["delay"])
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
                      "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                      "elapsed": time.perf_counter() - start}), flush=True)
"""


def tap(i: int, **changes: int) -> dict:
    stop = BUS.stops[i % len(BUS.stops)]
    row = dict(operator=BUS.operator, device_id=i // 1000, device_seq=i, card_id=10**6 + i,
               card_seq=i % 5000, issuer=1 + i % 3, product=0, media=0,
               ts_ms=local_ms(DAY, 5) + i * 500, city=REG.stops[stop].city, line=BUS.line,
               stop=stop, tap_type=int(TapType.FLAT), debited_fen=160)
    row.update(changes)
    return row


def write(path: Path, rows: list[dict]) -> Path:
    meta = {b"tongka.service_day": DAY.isoformat().encode(),
            b"tongka.operator": str(BUS.operator).encode()}
    pq.write_table(taps_table(rows).replace_schema_metadata(meta), path)
    return path



def snapshot(engine: Engine, data_dir: Path) -> dict:
    """Everything ingestion stores, without surrogate ids and clock times."""
    # one consistent read: on PostgreSQL a killed client's COMMIT may land meanwhile
    iso = "REPEATABLE READ" if engine.dialect.name == "postgresql" else "SERIALIZABLE"
    with engine.connect().execution_options(isolation_level=iso) as c:
        sha = dict(c.execute(select(Batch.id, Batch.file_sha256)).all())
        batches = sorted(tuple(r) for r in c.execute(select(
            Batch.file_sha256, Batch.service_day, Batch.day_seq, Batch.operator,
            Batch.source_format, Batch.source_name, Batch.status, Batch.late, Batch.received,
            Batch.accepted, Batch.duplicates, Batch.quarantined, Batch.tap_path,
            Batch.errors_json)).all())
        quarantine = sorted((sha[r.batch_id], r.row, r.code, r.field, r.message, r.record,
                             r.status) for r in c.execute(select(QuarantinedRow)).all())
        days = sorted(tuple(r) for r in c.execute(select(
            ServiceDay.day, ServiceDay.status, ServiceDay.revision,
            ServiceDay.settled_revision)).all())
    files = {p.relative_to(data_dir).as_posix(): p.read_bytes()
             for p in sorted(data_dir.rglob("*")) if p.is_file()}
    return {"batches": batches, "quarantine": quarantine, "days": days, "files": files}


class Zygote:
    def __init__(self, url: str, data_dir: Path, batch: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, url, str(data_dir), str(batch)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        assert json.loads(self.ask(None)) == {"ready": True}

    def ask(self, cmd: dict | None) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if cmd is not None:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return line

    def run(self, **cmd: object) -> dict:
        return json.loads(self.ask(cmd))

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_sigkill_at_any_point_loses_nothing_and_counts_nothing_twice(
        engine: Engine, db_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "store"
    first = write(tmp_path / "a.parquet", [tap(i) for i in range(100)])
    rows = [tap(i) for i in range(50, 5_050)]  # overlaps the first batch: duplicates
    for i in range(0, len(rows), 97):
        rows[i] = dict(rows[i], product=9)  # quarantined
    rows += [dict(rows[i]) for i in range(1, 2000, 40)]  # resent within the batch
    second = write(tmp_path / "b.parquet", rows)

    reset_store(engine, data_dir)
    ingest_file(engine, data_dir, first, REG)
    before = snapshot(engine, data_dir)
    report = ingest_file(engine, data_dir, second, REG)
    assert report.accepted and report.duplicates and report.quarantined
    never_crashed = snapshot(engine, data_dir)

    reset_store(engine, data_dir)
    zygote = Zygote(db_url, data_dir, second)
    try:
        clean = []
        for _ in range(3):  # how long a clean ingestion in a forked child takes
            reset_store(engine, data_dir)
            ingest_file(engine, data_dir, first, REG)
            result = zygote.run(delay=None)
            assert (result["signal"], result["exit"]) == (0, 0)
            clean.append(result["elapsed"])
            assert snapshot(engine, data_dir) == never_crashed
        # past the slowest clean run: on a busy machine a run can take longer than any measured
        # one, and kills spread only over the fast runs' span would all land before the commit
        span = 1.5 * max(clean)
        plans = [{"checkpoint": c, "delay": None} for c in CHECKPOINTS] + [
            {"checkpoint": None, "delay": span * k / TIMED_POINTS} for k in range(TIMED_POINTS)]
        outcomes = {"committed": 0, "not_committed": 0}
        for plan in plans:
            reset_store(engine, data_dir)
            ingest_file(engine, data_dir, first, REG)
            result = zygote.run(**plan)
            assert result["exit"] in (None, 0), plan  # killed, or finished: never an error
            crashed = snapshot(engine, data_dir)
            # wholly or not at all
            if crashed["batches"] == never_crashed["batches"]:
                outcomes["committed"] += 1
                assert crashed == never_crashed, plan
            else:
                outcomes["not_committed"] += 1
                assert {k: crashed[k] for k in ("batches", "quarantine", "days")} == {
                    k: before[k] for k in ("batches", "quarantine", "days")}, plan
                assert set(before["files"]) <= set(crashed["files"])  # at most an orphan more
            again = ingest_file(engine, data_dir, second, REG)
            if crashed["batches"] == never_crashed["batches"]:
                assert again.status == "already_ingested", plan
            # else "accepted", or on PostgreSQL "already_ingested" when the dead client's
            # COMMIT reached the server and completed after the snapshot above
            assert snapshot(engine, data_dir) == never_crashed, plan
    finally:
        zygote.close()
    # both outcomes happened: the "committed" checkpoint guarantees one commit whatever the
    # machine's speed (timed kills add more on a quiet machine), the earlier checkpoints and
    # timed kills guarantee kills before the commit
    assert outcomes["committed"] >= 1 and outcomes["not_committed"] >= 5, outcomes
    assert sum(outcomes.values()) >= 100
