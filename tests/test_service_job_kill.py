"""A settlement job whose server is SIGKILLed mid-settlement: nothing is half-posted, after a
restart the job shows failed (JOB_INTERRUPTED), settling again succeeds, and the ledger equals
that of an uninterrupted run of the same input.

The server is a real process (``tongka serve`` on 127.0.0.1), driven over HTTP; the day is big
enough (60,000 generated taps) that its settling step usually lasts long enough to be caught. The
server is killed at two points (``KILL_AT``): when the job reports settling, and when it reports
writing the payment file. Exactly where the kill lands is not under the test's control (the
worker thread races the poll), so the test records it (``kill_landed``) and asserts what must
hold wherever it lands: the ledger after the kill is either untouched or the whole settlement,
and verifies; a job with nothing committed shows JOB_INTERRUPTED; the final ledger equals the
uninterrupted run's.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearing.db import make_engine
from settlement.ledger import ledger_balances
from tongka.testing.served import ServedTongka, clean_env, tongka_script

DAY = "2026-11-24"
TAPS = 60_000
CLI_TIMEOUT_S = 600  # bounds on waiting, never assertions about speed
START_TIMEOUT_S = 120
JOB_TIMEOUT_S = 300
POLL_S = 0.01
WORKER_DIED = "Exception in thread tongka-jobs"  # Python's report of an uncaught exception


def _tongka() -> str:
    found = tongka_script()
    if found is None:
        pytest.skip("the tongka console script is not installed (pip install -e .)")
    return found


def cli(home: Path, db: str, *args: str) -> str:
    """Run ``tongka`` as a user would; its stdout (fails with both streams if it fails)."""
    done = subprocess.run(
        [_tongka(), "--data-dir", str(home), "--db", db, *args], env=clean_env(home),
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )
    assert done.returncode == 0, f"tongka {' '.join(args[:3])} ...: {done.stdout}\n{done.stderr}"
    return done.stdout


def sqlite_url(home: Path) -> str:
    return f"sqlite:///{home / 'tongka.sqlite'}"


def server(home: Path, db: str, log: Path) -> ServedTongka:
    return ServedTongka(_tongka(), home, db, log, START_TIMEOUT_S)


@pytest.fixture
def servers() -> Iterator[list[ServedTongka]]:
    """Every server a test starts is killed afterwards, whatever happened."""
    started: list[ServedTongka] = []
    try:
        yield started
    finally:
        for server in started:
            server.kill()


@pytest.fixture(scope="module")
def batch_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """One generated day, one canonical batch per operator (shared by every run below)."""
    out = tmp_path_factory.mktemp("batches")
    home = tmp_path_factory.mktemp("generate-home")
    cli(home, sqlite_url(home), "generate", "--date", DAY, "--taps", str(TAPS), "--out", str(out))
    files = sorted(out.glob("*.parquet"))
    assert files
    return files


@pytest.fixture(scope="module")
def uninterrupted(batch_files: list[Path], tmp_path_factory: pytest.TempPathFactory
                  ) -> dict[str, int]:
    """The ledger balances of the same input settled without interruption (its own data
    directory and SQLite database; balances do not depend on the database kind)."""
    home = tmp_path_factory.mktemp("uninterrupted")
    db = sqlite_url(home)
    cli(home, db, "ingest", *map(str, batch_files))
    cli(home, db, "clear", "--date", DAY)
    cli(home, db, "settle", "--date", DAY)
    engine = make_engine(db)
    try:
        balances = ledger_balances(engine)
    finally:
        engine.dispose()
    assert balances and sum(balances.values()) == 0
    return balances


def wait_for(http: httpx.Client, server: ServedTongka, job_id: int, done: Any) -> dict[str, Any]:
    """Poll the job until ``done(job)``; bounded, and cut short if the worker thread died."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    next_look = time.monotonic() + 1
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if done(job):
            return job
        if time.monotonic() > next_look:
            next_look = time.monotonic() + 1
            log = server.tail(200_000)
            if WORKER_DIED in log:
                pytest.fail(f"the job worker died; job {job_id} stays {job['state']}:\n{log}")
        time.sleep(POLL_S)
    pytest.fail(f"job {job_id} did not get there within {JOB_TIMEOUT_S} s")


def balances(http: httpx.Client) -> dict[str, int]:
    got = http.get("/v1/ledger/balances")
    assert got.status_code == 200, got.text
    return {a["account"]: a["balance_fen"] for a in got.json()["accounts"]}


def verified(http: httpx.Client) -> dict[str, Any]:
    got = http.post("/v1/ledger/verify")
    assert got.status_code == 200, got.text
    return got.json()  # type: ignore[no-any-return]


# Where the server is killed: as soon as the job reports its settling step (computing the
# obligations, then posting them in one transaction), or as soon as it reports writing the
# payment file (the entry is committed by then; the job may even finish before the kill).
KILL_AT = ("settling", "writing")


@pytest.mark.parametrize("kill_at", KILL_AT)
def test_a_job_killed_mid_settlement_restarts_to_the_uninterrupted_ledger(
    db_url: str, tmp_path: Path, batch_files: list[Path], uninterrupted: dict[str, int],
    servers: list[ServedTongka], record_property: Any, kill_at: str,
) -> None:
    home = tmp_path / "home"
    cli(home, db_url, "ingest", *map(str, batch_files))
    key = cli(home, db_url, "keys", "create", "--role", "finance").split()[-1]
    auth = {"Authorization": f"Bearer {key}"}

    first = server(home, db_url, tmp_path / "server-1.log")
    servers.append(first)
    first.start()
    with httpx.Client(base_url=first.url, headers=auth, timeout=60) as http:
        posted = http.post(f"/v1/days/{DAY}/settlement")
        assert posted.status_code == 202, posted.text
        job_id = posted.json()["id"]
        seen = wait_for(http, first, job_id, lambda j: j["progress"].startswith(kill_at)
                        or j["state"] in ("succeeded", "failed"))
        first.kill()
    assert seen["state"] != "failed", seen

    second = server(home, db_url, tmp_path / "server-2.log")
    servers.append(second)
    second.start()
    with httpx.Client(base_url=second.url, headers=auth, timeout=300) as http:
        job = http.get(f"/v1/jobs/{job_id}").json()
        day = http.get("/v1/days", params={"first": DAY, "last": DAY}).json()["days"][0]
        after_kill = balances(http)
        # never half-posted: the kill left the ledger untouched or the whole settlement in it
        assert after_kill in ({}, uninterrupted), "the ledger holds part of a settlement"
        assert (day["runs"] > 0) == bool(after_kill)
        assert verified(http) == {"verified": True, "problems": []}
        interrupted = (job["state"], job["error_code"]) == ("failed", "JOB_INTERRUPTED")
        if not day["runs"]:  # nothing committed: the job cannot have finished
            assert interrupted, job
        else:  # committed: killed before the job recorded it, or just after
            assert interrupted or job["state"] == "succeeded", job
        landed = (f"seen {seen['state']}/{seen['progress'].split(':')[0]}; "
                  f"{'run committed' if day['runs'] else 'nothing committed'}; job {job['state']}")
        record_property("kill_landed", landed)
        print(f"kill at {kill_at}: {landed}")

        again = http.post(f"/v1/days/{DAY}/settlement")
        assert again.status_code == 202, again.text
        final = wait_for(http, second, again.json()["id"],
                         lambda j: j["state"] in ("succeeded", "failed"))
        assert final["state"] == "succeeded", (final["error_code"], final["error"], second.tail())
        assert final["result"]["positions_sum_fen"] == 0

        assert balances(http) == uninterrupted
        assert verified(http) == {"verified": True, "problems": []}
        lines = http.get(f"/v1/days/{DAY}/payments").text.splitlines()
        assert len(lines) > 1  # the header and the first run's instructions
    assert (home / "payments" / DAY / "run-001.csv").is_file()
