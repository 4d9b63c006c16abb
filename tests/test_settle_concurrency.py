"""SPEC §8: only one settlement of a day runs at a time, shown with real processes on both
databases: a settler that finds the day locked says so (StateError SETTLEMENT_RUNNING), and of
several racing settlers exactly one posts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from test_settle_builders import DAY, TARIFFS, leg

from clearing.legs import legs_table
from settlement.ledger import entry_sums
from settlement.settle import settle_day

WORKER = r"""
import datetime as dt, sys
import pyarrow.parquet as pq
from clearing.db import make_engine
from clearing.errors import StateError
from settlement.settle import settle_day
from tariffs.load import load_tariff_set

url, day, path = sys.argv[1], dt.date.fromisoformat(sys.argv[2]), sys.argv[3]
engine = make_engine(url)
try:
    result = settle_day(engine, day, pq.read_table(path), load_tariff_set())
except StateError as exc:
    print(f"refused {exc.code}: {exc}")
    sys.exit(exc.exit_code)
print("posted" if result.entry_id is not None else "unchanged")
"""

LEGS = [leg(card_id=i, charged_fen=100 + i) for i in range(1, 30)]
ROOT = Path(__file__).resolve().parents[1]


def _legs_file(tmp_path: Path) -> Path:
    path = tmp_path / "legs.parquet"
    pq.write_table(legs_table(LEGS), path)
    return path


def _start(db_url: str, legs: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, db_url, DAY.isoformat(), str(legs)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_settler_that_finds_the_day_locked_says_so(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    legs = _legs_file(tmp_path)
    seen: list[tuple[int, str]] = []

    def while_locked(_: Session) -> None:
        # Another process tries to settle the same day while this one holds the lock.
        proc = _start(db_url, legs)
        out, err = proc.communicate(timeout=120)
        seen.append((proc.returncode, out + err))

    result = settle_day(engine, DAY, legs_table(LEGS), TARIFFS, on_locked=while_locked)
    [(code, output)] = seen
    assert code == 3, output
    assert "refused SETTLEMENT_RUNNING" in output
    assert f"a settlement of day {DAY} is running" in output
    assert result.entry_id is not None
    assert len(entry_sums(engine)) == 1


def test_of_racing_settlers_exactly_one_posts(engine: Engine, db_url: str, tmp_path: Path) -> None:
    legs = _legs_file(tmp_path)
    procs = [_start(db_url, legs) for _ in range(3)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        outputs.append((proc.returncode, out.strip(), err))
    posted = [o for o in outputs if o[1] == "posted"]
    assert len(posted) == 1, outputs
    for code, out, err in outputs:
        # Every other settler either found the day locked or found nothing left to post.
        assert (code, out) in {(0, "posted"), (0, "unchanged")} or (
            code == 3 and out.startswith("refused SETTLEMENT_RUNNING")
        ), (code, out, err)
    entries = entry_sums(engine)
    assert len(entries) == 1 and entries[0][5] == 0
