"""Settlement jobs: settling a day off the request path, with a state anyone can poll.

A job is a row (queued → running → succeeded | failed) and a worker thread in the server process
runs the queued ones, one at a time, through the same use case as ``tongka settle``. A job
survives its client going away (it is the server's, not the request's). A server killed mid-job
leaves nothing half-posted (the settlement is one transaction); at the next start
``fail_interrupted`` marks such a job failed with ``JOB_INTERRUPTED``, and finance starts it
again. One server runs jobs per database (docs/service.md).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, Engine, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from clearing.db import Base, transaction
from clearing.errors import StateError, TongkaError

log = logging.getLogger("tongka.jobs")
ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only


class JobState:
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


ACTIVE = (JobState.QUEUED, JobState.RUNNING)
FINISH_ATTEMPTS = 10
SETTLE = "settle_day"


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(ID, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(24))
    day: Mapped[dt.date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32), default="")
    progress: Mapped[str] = mapped_column(String(200), default="")
    result: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(48), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    key_id: Mapped[str | None] = mapped_column(String(24), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as the API shows it."""

    id: int
    kind: str
    day: dt.date
    state: str
    reason: str
    progress: str
    result: dict[str, Any] | None
    error_code: str | None
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class JobRunning(StateError):
    """A settlement job for the day is already queued or running (409, with its id)."""

    code = "SETTLEMENT_RUNNING"

    def __init__(self, job_id: int, day: dt.date) -> None:
        super().__init__(f"settlement job {job_id} for {day} is already queued or running",
                         code="SETTLEMENT_RUNNING")
        self.job_id = job_id


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _view(j: Job) -> JobView:
    return JobView(j.id, j.kind, j.day, j.state, j.reason, j.progress,
                   json.loads(j.result) if j.result else None, j.error_code, j.error,
                   j.created_at, j.started_at, j.finished_at)


def submit(engine: Engine, day: dt.date, *, reason: str = "", key_id: str | None = None) -> JobView:
    """Queue a settlement of ``day``; JobRunning if one for the day is queued or running."""
    with transaction(engine, immediate=True) as s:
        running = s.scalar(select(Job).where(Job.day == day, Job.state.in_(ACTIVE)))
        if running is not None:
            raise JobRunning(running.id, day)
        job = Job(kind=SETTLE, day=day, state=JobState.QUEUED, reason=reason, key_id=key_id,
                  created_at=_now(), progress="queued")
        s.add(job)
        s.flush()
        return _view(job)


def get(engine: Engine, job_id: int) -> JobView | None:
    with transaction(engine) as s:
        job = s.get(Job, job_id)
        return _view(job) if job is not None else None


def recent(engine: Engine, *, limit: int = 50) -> list[JobView]:
    with transaction(engine) as s:
        return [_view(j) for j in s.scalars(select(Job).order_by(Job.id.desc()).limit(limit))]


def fail_interrupted(engine: Engine) -> int:
    """Mark the jobs a stopped server left queued or running as failed; returns how many."""
    with transaction(engine) as s:
        result = s.execute(
            update(Job).where(Job.state.in_(ACTIVE)).values(
                state=JobState.FAILED, error_code="JOB_INTERRUPTED", finished_at=_now(),
                error="the server stopped before the job finished; nothing of it was posted "
                      "unless the ledger shows its run; start the settlement again",
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)


def _claim(engine: Engine) -> JobView | None:
    with transaction(engine, immediate=True) as s:
        job = s.scalar(select(Job).where(Job.state == JobState.QUEUED).order_by(Job.id).limit(1))
        if job is None:
            return None
        job.state, job.started_at, job.progress = JobState.RUNNING, _now(), "running"
        return _view(job)


def _finish(engine: Engine, job_id: int, *, result: dict[str, Any] | None = None,
            error: TongkaError | Exception | None = None) -> None:
    # immediate: a read-then-write unit on SQLite must hold the write lock from its start, or
    # any commit in between (an audit row) fails it at once with "database is locked"
    with transaction(engine, immediate=True) as s:
        job = s.get(Job, job_id)
        assert job is not None
        job.finished_at = _now()
        if error is None:
            job.state, job.progress = JobState.SUCCEEDED, "done"
            job.result = json.dumps(result, sort_keys=True, default=str)
        else:
            job.state, job.progress = JobState.FAILED, "failed"
            job.error_code = str(error.code) if isinstance(error, TongkaError) else "INTERNAL_ERROR"
            job.error = str(error.args[0]) if error.args else type(error).__name__


def set_progress(engine: Engine, job_id: int, text: str) -> None:
    with transaction(engine, immediate=True) as s:
        job = s.get(Job, job_id)
        if job is not None:
            job.progress = text[:200]


Runner = Callable[[JobView, Callable[[str], None]], dict[str, Any]]


class Worker:
    """The server's job worker: a daemon thread that runs queued jobs one at a time."""

    def __init__(self, engine: Engine, run: Runner, *, poll_s: float = 0.2,
                 on_done: Callable[[JobView, float], None] | None = None) -> None:
        self._engine, self._run, self._poll_s, self._on_done = engine, run, poll_s, on_done
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tongka-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                job = _claim(self._engine)
            except Exception:  # noqa: BLE001 - a database hiccup must not kill the worker
                job = None
            if job is None:
                self._wake.wait(self._poll_s)
                self._wake.clear()
                continue
            started = time.perf_counter()
            outcome: dict[str, Any] = {}
            try:
                outcome["result"] = self._run(
                    job, functools.partial(set_progress, self._engine, job.id))
            except Exception as exc:  # noqa: BLE001 - recorded on the job, coded when known
                log.warning("job %d (%s %s) failed: %s", job.id, job.kind, job.day, exc)
                outcome = {"error": exc}
            self._record(job, outcome, time.perf_counter() - started)

    def _record(self, job: JobView, outcome: dict[str, Any], seconds: float) -> None:
        """Write the job's end, retrying a database hiccup: the worker must outlive it (a job
        left "running" would block the day until a restart)."""
        for attempt in range(FINISH_ATTEMPTS):
            try:
                _finish(self._engine, job.id, **outcome)
                break
            except Exception:  # noqa: BLE001 - logged, retried, never kills the worker
                log.exception("could not record the end of job %d (attempt %d)", job.id,
                              attempt + 1)
                if self._stop.wait(min(2.0**attempt * 0.1, 5.0)):
                    return
        if self._on_done is not None:
            try:
                self._on_done(job, seconds)
            except Exception:  # noqa: BLE001 - metrics must not stop the worker
                log.exception("job %d: on_done failed", job.id)
