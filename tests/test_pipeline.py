"""The whole pipeline through the real ``tongka`` command, on SQLite and on PostgreSQL.

A small generated day goes generate → ingest → clear → settle → report, and the SPEC §9
conservation invariants are checked on what the commands stored: allocations sum to the
money charged, net positions sum to 0, every journal entry balances, and the ledger equals
a fresh recomputation. Bad input exits with its documented code and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import func, select

from clearing.batches import Batch
from clearing.day import read_day_legs
from clearing.db import make_engine, session_factory
from clearing.tapstore import read_day_taps
from settlement.apportion import allocate
from settlement.ledger import JournalEntry, Posting, account_balances, positions_from_balances

DAY = dt.date(2026, 11, 24)
TONGKA = [sys.executable, "-c", "from tongka.cli import run; run()"]


def tongka(home: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TONGKA_HOME": str(home), "TONGKA_DATABASE_URL": url}
    return subprocess.run([*TONGKA, *args], env=env, capture_output=True, text=True, timeout=600)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_a_generated_day_clears_settles_and_conserves_money(db_url: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    incoming = tmp_path / "incoming"
    ok(
        tongka(
            home,
            db_url,
            "generate",
            "--date",
            str(DAY),
            "--taps",
            "4000",
            "--seed",
            "7",
            "--out",
            str(incoming),
        )
    )
    files = sorted(str(p) for p in incoming.glob("*.parquet"))
    assert len(files) == 14  # one batch per operator
    ok(tongka(home, db_url, "ingest", *files))
    ok(tongka(home, db_url, "clear", "--date", str(DAY)))
    settled = ok(tongka(home, db_url, "settle", "--date", str(DAY)))
    assert "net positions sum: 0 fen" in settled
    assert "entry balance: 0 fen" in settled

    legs = read_day_legs(home, DAY)
    assert legs.num_rows > 0
    allocated = allocate(legs)
    assert int(allocated.sum()) == int(np.asarray(legs.column("charged_fen")).sum())

    engine = make_engine(db_url)
    with session_factory(engine)() as s:
        assert s.scalar(select(func.count()).select_from(JournalEntry)) == 1
        sums = s.execute(
            select(Posting.entry_id, func.sum(Posting.amount_fen)).group_by(Posting.entry_id)
        ).all()
        assert sums and all(total == 0 for _, total in sums)
        accepted = s.scalar(select(func.sum(Batch.accepted)))
    assert accepted == read_day_taps(home, DAY).num_rows
    balances = account_balances(engine)
    assert sum(positions_from_balances(balances).values()) == 0
    # Issuers pay what their cards were charged, no more, no less (SPEC §8 revenue).
    issuer_total = sum(v for p, v in positions_from_balances(balances).items() if int(p[0]) == 0)
    assert issuer_total == -int(np.asarray(legs.column("charged_fen")).sum())
    engine.dispose()

    assert "ledger verified" in ok(tongka(home, db_url, "ledger", "verify"))
    again = ok(tongka(home, db_url, "settle", "--date", str(DAY)))
    assert "nothing to post" in again  # SPEC §9 idempotence
    ok(tongka(home, db_url, "report", "--date", str(DAY), "--out", str(tmp_path / "reports")))
    assert list((tmp_path / "reports").glob("*.html"))


def _no_batches(url: str) -> None:
    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            assert s.scalar(select(func.count()).select_from(Batch)) == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda p: None, "INPUT_MISSING"),
        (lambda p: p.write_bytes(b"PAR1 this is not parquet PAR1"), "INPUT_CORRUPT"),
        (
            lambda p: pq.write_table(pa.table({"operator": [101], "when": ["08:00"]}), p),
            "INPUT_SCHEMA",
        ),
    ],
    ids=["missing", "corrupt", "wrong-schema"],
)
def test_bad_batch_files_exit_2_with_their_code_and_write_nothing(
    db_url: str,
    tmp_path: Path,
    make,
    code: str,  # type: ignore[no-untyped-def]
) -> None:
    path = tmp_path / "batch.parquet"
    make(path)
    home = tmp_path / "home"
    result = tongka(home, db_url, "ingest", "--date", str(DAY), "--operator", "101", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"[{code}]" in result.stderr
    _no_batches(db_url)
    assert not (home / "taps").exists() or not any((home / "taps").rglob("*.parquet"))


def test_settling_a_day_never_cleared_is_a_state_conflict(db_url: str, tmp_path: Path) -> None:
    result = tongka(tmp_path / "home", db_url, "settle", "--date", str(DAY))
    assert result.returncode == 3
    assert "[DAY_NOT_CLEARED]" in result.stderr


def test_a_late_batch_is_cleared_and_settled_as_if_it_had_come_on_time(
    db_url: str, tmp_path: Path
) -> None:
    """SPEC §9 late taps: settle D, add a late batch, settle again == settle all of D once."""
    incoming = tmp_path / "incoming"
    first = tmp_path / "first"
    ok(
        tongka(
            first,
            db_url,
            "generate",
            "--date",
            str(DAY),
            "--taps",
            "3000",
            "--seed",
            "11",
            "--out",
            str(incoming),
        )
    )
    files = sorted(str(p) for p in incoming.glob("*.parquet"))
    late = next(f for f in files if f.endswith("op102.parquet"))  # the metro's batch is late
    on_time = [f for f in files if f != late]

    ok(tongka(first, db_url, "ingest", *on_time))
    ok(tongka(first, db_url, "clear", "--date", str(DAY)))
    ok(tongka(first, db_url, "settle", "--date", str(DAY)))
    ingested = ok(tongka(first, db_url, "ingest", late))
    assert "late" in ingested
    resettled = tongka(first, db_url, "settle", "--date", str(DAY))  # no explicit clear
    assert "cleared it again" in ok(resettled) + resettled.stderr
    engine = make_engine(db_url)
    after_late = account_balances(engine)
    with session_factory(engine)() as s:
        kinds = s.scalars(select(JournalEntry.reason).order_by(JournalEntry.id)).all()
    engine.dispose()
    assert kinds[-1] == "late_batch"

    # The same day settled once with every batch, in a database of its own.
    once_url = _second_database(db_url, tmp_path)
    try:
        once = tmp_path / "once"
        ok(tongka(once, once_url, "ingest", *files))
        ok(tongka(once, once_url, "clear", "--date", str(DAY)))
        ok(tongka(once, once_url, "settle", "--date", str(DAY)))
        engine = make_engine(once_url)
        assert account_balances(engine) == after_late
        engine.dispose()
    finally:
        _drop_second_database(once_url)


def _drop_second_database(url: str) -> None:
    if url.startswith("sqlite"):
        return
    base, _, options = url.partition("?")
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{options.split("%3D", 1)[1]}" CASCADE')
    admin.dispose()


def _second_database(db_url: str, tmp_path: Path) -> str:
    """An empty database of the same kind: a second SQLite file, or a second schema."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'once.sqlite'}"
    base, _, options = db_url.partition("?")
    schema = options.split("%3D", 1)[1] + "_once"
    admin = make_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    admin.dispose()
    return f"{base}?options=-csearch_path%3D{schema}"
