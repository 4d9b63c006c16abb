"""The clearing centre under load (issue 11): thirty operator uploads at once over loopback while
finance polls, then finance settles the day and reads statements, against a real ``tongka serve``.

A generated day (``tongka generate``: one canonical Parquet batch per operator, resent and invalid
rows included) is split by rows into 30 parts, two or three per operator (the registry has 14),
each a valid canonical batch carrying its operator's metadata. Each operator has its own key and
uploads its parts from threads, all at once, with httpx; meanwhile finance polls the calendar,
the day's batches and the jobs. When the uploads are in, finance starts the settlement, polls
the job until it ends, then reads statements (JSON for every operator and issuer, CSV and HTML
for a few). Measured: upload throughput (MB/s and taps/s over the wall time of the uploads),
p50/p99 latency of finance's GETs by kind, the server's peak RSS (its own ``VmHWM``; psutil for
any children), and errors, which must be 0 (correctness, not time: nothing here fails on a time).

Sizes: 300 000 taps with ``--benchmark-enable`` (``make bench``), 3 000 000 with
``TONGKA_BENCH_FULL=1``. Unlike the other benchmarks it has no smoke size in the normal suite
(``--benchmark-disable``): a server process, its imports and JIT, and thirty uploads cost about
twenty CPU seconds even on a tiny day, so it is skipped there. The database is
the embedded SQLite file unless ``TONGKA_BENCH_DATABASE_URL`` names another (an empty one).
Requests go to 127.0.0.1 only and are bounded in number (``MAX_POLLS``) and time (timeouts).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from cache_keys import generator_tag  # bench/cache_keys.py

from tongka.testing import served

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
BENCH_DAY = dt.date(2026, 11, 24)
SEED = 20261124
FULL_ENV = "TONGKA_BENCH_FULL"
DB_ENV = "TONGKA_BENCH_DATABASE_URL"
DEFAULT, FULL = 300_000, 3_000_000
PARTS = 30  # uploads at once: the thirty operators
START_TIMEOUT_S = 120  # bounds on waiting, never assertions about speed
UPLOAD_TIMEOUT_S = 900
JOB_TIMEOUT_S = 1800
POLL_INTERVAL_S = 0.05  # finance's pace: at most 20 GETs a second
MAX_POLLS = 20_000  # and never more than this many in all
RENDERED = 3  # parties whose statement finance also reads as CSV and HTML (each is a rendering)
PARQUET = "application/vnd.apache.parquet"


def service_size(config: pytest.Config) -> int | None:
    """3M with TONGKA_BENCH_FULL=1, 300k with ``--benchmark-enable``, else None (skipped)."""
    if os.environ.get(FULL_ENV, "") == "1":
        return FULL
    return DEFAULT if config.getoption("benchmark_enable", default=False) else None


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


# ---------------------------------------------------------------- the day and its parts


def tongka_script() -> str:
    found = served.tongka_script()
    if found is None:
        pytest.skip("the tongka console script is not installed (pip install -e .)")
    return found


def day_batches(n: int) -> list[Path]:
    """The cached batch files of a generated day of ``n`` taps (``tongka generate`` once)."""
    out = CACHE / f"service-{n}-{SEED}-{generator_tag()}"
    if not out.exists():
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # xdist workers may race
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        subprocess.run([tongka_script(), "generate", "--date", BENCH_DAY.isoformat(), "--taps",
                        str(n), "--seed", str(SEED), "--out", str(tmp / "batches")],
                       check=True, capture_output=True, cwd=tmp, env=served.clean_env(tmp / "home"))
        shutil.rmtree(tmp / "home", ignore_errors=True)
        try:
            (tmp / "batches").rename(out)  # a complete directory or none
        except OSError:  # another worker finished first
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out.glob("*.parquet"))


@dataclass(frozen=True)
class Part:
    operator: int
    path: Path
    rows: int
    size: int


def split_day(batches: list[Path], out: Path, parts: int = PARTS) -> list[Part]:
    """Each operator's file cut by rows into two parts, three for the largest, ``parts`` in all;
    every part keeps the file's schema metadata (service day and operator)."""
    by_op = {int(p.stem.rsplit("op", 1)[1]): p for p in batches}
    rows = {op: pq.read_metadata(p).num_rows for op, p in by_op.items()}
    pieces = dict.fromkeys(by_op, 2)
    for op in sorted(by_op, key=lambda o: -rows[o])[: max(parts - 2 * len(by_op), 0)]:
        pieces[op] = 3
    out.mkdir(parents=True, exist_ok=True)
    made = []
    for op, path in sorted(by_op.items()):
        table = pq.read_table(path)
        k = pieces[op]
        for i in range(k):
            start, stop = i * table.num_rows // k, (i + 1) * table.num_rows // k
            part = out / f"{path.stem}-part{i + 1}.parquet"
            pq.write_table(table.slice(start, stop - start), part)
            made.append(Part(op, part, stop - start, part.stat().st_size))
    return made


# ---------------------------------------------------------------- the server


class Server(served.ServedTongka):
    """``tongka serve`` (tongka.testing.served), its memory sampled while it runs."""

    def __init__(self, home: Path, db: str, log: Path) -> None:
        super().__init__(tongka_script(), home, db, log, START_TIMEOUT_S)
        self.peak_sampled = 0  # bytes: server and children, as sampled
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def started(self) -> None:
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        try:
            import psutil
        except ImportError:  # VmHWM below still gives the server's own peak
            return
        assert self.proc is not None
        try:
            me = psutil.Process(self.proc.pid)
            while not self._stop.wait(0.1):
                procs = [me, *me.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_sampled = max(self.peak_sampled, total)
        except psutil.Error:
            return

    def peak_rss(self) -> int:
        """The server process's own high-water mark of resident memory, in bytes."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) * 1024 if match else 0

    def stop(self) -> None:
        self._stop.set()
        super().stop()


@pytest.fixture
def server_slot() -> Iterator[list[Server]]:
    """The server a run starts is stopped afterwards, whatever happened."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for s in started:
            s.stop()


# ---------------------------------------------------------------- the load


@dataclass
class Tally:
    """Everything the run measured; ``errors`` names every request that went wrong."""

    upload_s: list[float] = field(default_factory=list)
    upload_wall_s: float = 0.0
    upload_bytes: int = 0
    upload_taps: int = 0
    gets: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    polls: int = 0
    job_s: float = 0.0
    started: float = 0.0  # perf_counter when the uploads began
    slowest: tuple[float, float] = (0.0, 0.0)  # (seconds, began after ``started``) of the reads
    lock: threading.Lock = field(default_factory=threading.Lock)

    def error(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)

    def got(self, kind: str, seconds: float, began: float) -> None:
        with self.lock:
            self.gets.setdefault(kind, []).append(seconds)
            self.polls += 1
            if seconds > self.slowest[0]:
                self.slowest = (seconds, began - self.started)


def timed_get(http: httpx.Client, tally: Tally, kind: str, url: str,
              headers: dict[str, str] | None = None) -> httpx.Response | None:
    if tally.polls >= MAX_POLLS:
        return None
    start = time.perf_counter()
    try:
        got = http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        tally.error(f"GET {url}: {type(exc).__name__}: {exc}")
        return None
    tally.got(kind, time.perf_counter() - start, start)
    if got.status_code != 200:
        tally.error(f"GET {url}: {got.status_code} {got.text[:300]}")
        return None
    return got


def upload(url: str, key: str, part: Part, tally: Tally, go: threading.Barrier) -> None:
    with httpx.Client(base_url=url, timeout=UPLOAD_TIMEOUT_S,
                      headers={"Authorization": f"Bearer {key}"}) as http:
        go.wait()
        start = time.perf_counter()
        try:
            with part.path.open("rb") as body:  # streamed from the file, never read whole
                got = http.post("/v1/batches", content=body,
                                params={"name": part.path.name},
                                headers={"Content-Type": PARQUET,
                                         "Content-Length": str(part.size)})
        except httpx.HTTPError as exc:
            tally.error(f"upload {part.path.name}: {type(exc).__name__}: {exc}")
            return
        seconds = time.perf_counter() - start
        if got.status_code != 201:
            tally.error(f"upload {part.path.name}: {got.status_code} {got.text[:300]}")
            return
        report = got.json()
        if report["received"] != part.rows or report["operator"] != part.operator:
            tally.error(f"upload {part.path.name}: {report['received']} rows of "
                        f"{report['operator']} stored, {part.rows} of {part.operator} sent")
        with tally.lock:
            tally.upload_s.append(seconds)


WATCHED = (("calendar", f"/v1/days?first={BENCH_DAY}&last={BENCH_DAY}"),
           ("batches list", f"/v1/batches?day={BENCH_DAY}&limit=100"),
           ("jobs list", "/v1/jobs?limit=10"))


def poll_while(http: httpx.Client, tally: Tally, busy: threading.Event, kind: str, url: str
               ) -> None:
    """Finance watches the day fill (one watcher per kind of read, each at its own pace, so
    a slow answer delays only its own kind)."""
    while busy.is_set() and tally.polls < MAX_POLLS:
        timed_get(http, tally, f"{kind} (during uploads)", url)
        time.sleep(POLL_INTERVAL_S)


def settle_and_read(http: httpx.Client, tally: Tally, parties: list[str]) -> None:
    """Finance settles the day, polls the job to its end, then reads the statements."""
    start = time.perf_counter()
    posted = http.post(f"/v1/days/{BENCH_DAY}/settlement")
    if posted.status_code != 202:
        tally.error(f"POST settlement: {posted.status_code} {posted.text[:300]}")
        return
    job_id = posted.json()["id"]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    state = "queued"
    while time.monotonic() < deadline and state in ("queued", "running"):
        got = timed_get(http, tally, "job status", f"/v1/jobs/{job_id}")
        if got is None:
            return
        job = got.json()
        state = job["state"]
        if state == "failed":
            tally.error(f"settlement job {job_id} failed: {job['error_code']} {job['error']}")
            return
        time.sleep(POLL_INTERVAL_S * 4)
    tally.job_s = time.perf_counter() - start
    if state != "succeeded":
        tally.error(f"settlement job {job_id} still {state} after {JOB_TIMEOUT_S} s")
        return
    for party in parties:
        timed_get(http, tally, "statement JSON", f"/v1/days/{BENCH_DAY}/statements/{party}",
                  {"Accept": "application/json"})
    for party in parties[:RENDERED]:
        for media in ("text/csv", "text/html"):
            timed_get(http, tally, "statement CSV/HTML (rendered)",
                      f"/v1/days/{BENCH_DAY}/statements/{party}", {"Accept": media})
    timed_get(http, tally, "payments CSV", f"/v1/days/{BENCH_DAY}/payments")


def run_load(server: Server, keys: dict[int, str], finance: str, parts: list[Part],
             parties: list[str]) -> Tally:
    tally = Tally(upload_bytes=sum(p.size for p in parts),
                  upload_taps=sum(p.rows for p in parts))
    go = threading.Barrier(len(parts) + 1)
    uploaders = [threading.Thread(target=upload, args=(server.url, keys[p.operator], p, tally, go))
                 for p in parts]
    busy = threading.Event()
    busy.set()
    with httpx.Client(base_url=server.url, timeout=UPLOAD_TIMEOUT_S,
                      headers={"Authorization": f"Bearer {finance}"}) as http:
        pollers = [threading.Thread(target=poll_while, args=(http, tally, busy, kind, url))
                   for kind, url in WATCHED]
        for t in uploaders:
            t.start()
        go.wait()  # every uploader connected and ready: they start together
        start = tally.started = time.perf_counter()
        for t in pollers:
            t.start()
        for t in uploaders:
            t.join()
        tally.upload_wall_s = time.perf_counter() - start
        busy.clear()
        for t in pollers:
            t.join()
        settle_and_read(http, tally, parties)
    return tally


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def test_bench_service_load(request: pytest.FixtureRequest, tmp_path: Path,
                            server_slot: list[Server], benchmark, record_note) -> None:  # type: ignore[no-untyped-def]
    from clearing.db import make_engine
    from tariffs.load import load_tariff_set
    from tongka.access import Role, create_key
    from tongka.schema import upgrade

    n = service_size(request.config)
    if n is None:
        pytest.skip("a load test: runs with --benchmark-enable (make bench) or "
                    f"{FULL_ENV}=1")
    parts = split_day(day_batches(n), tmp_path / "parts")
    assert len(parts) == PARTS and sum(p.rows for p in parts) > 0
    home = tmp_path / "home"
    home.mkdir()
    db = os.environ.get(DB_ENV) or f"sqlite:///{home / 'tongka.sqlite'}"
    engine = make_engine(db)
    upgrade(engine)
    try:
        operators = sorted({p.operator for p in parts})
        keys = {op: create_key(engine, Role.OPERATOR, party=op).key for op in operators}
        finance = create_key(engine, Role.FINANCE).key
    finally:
        engine.dispose()
    registry = load_tariff_set().registry
    parties = [f"OPR-{op}" for op in sorted(keys)] + [f"ISS-{i}" for i in sorted(registry.issuers)]

    server = Server(home, db, tmp_path / "server.log")
    server_slot.append(server.start())
    idle_rss = server.peak_rss()  # after start-up and one /healthz: the floor
    runs: list[Tally] = []
    benchmark.group = f"service {size_label(n)}: 30 uploads, settle, statements"
    benchmark.pedantic(lambda: runs.append(run_load(server, keys, finance, parts, parties)),
                       rounds=1, iterations=1)
    (tally,) = runs
    peak_own = server.peak_rss()
    server.stop()

    log = server.log.read_text(errors="replace")
    secrets_in_log = [k for k in [*keys.values(), finance] if k in log or k.split("_", 2)[2] in log]
    assert secrets_in_log == [], "a key reached the server's log"
    assert tally.errors == [], "\n".join(tally.errors[:20])
    assert len(tally.upload_s) == PARTS

    mb = tally.upload_bytes / 1e6
    database = f"database of {DB_ENV}" if os.environ.get(DB_ENV) else "SQLite"
    lines = [
        f"service {size_label(n)} taps: {PARTS} uploads at once ({mb:.1f} MB, "
        f"{tally.upload_taps:,} taps; {database})",
        f"  uploads: {tally.upload_wall_s:.2f} s wall, {mb / tally.upload_wall_s:.2f} MB/s, "
        f"{tally.upload_taps / tally.upload_wall_s:,.0f} taps/s; one upload p50 "
        f"{statistics.median(tally.upload_s):.2f} s, max {max(tally.upload_s):.2f} s",
        f"  settlement job (clear + settle + payment file): {tally.job_s:.2f} s",
        f"  {'finance GET':38} {'n':>5} {'p50 ms':>9} {'p99 ms':>9}",
    ]
    for kind, values in sorted(tally.gets.items()):
        lines.append(f"  {kind:38} {len(values):5d} {pct(values, 0.5) * 1e3:9.1f} "
                     f"{pct(values, 0.99) * 1e3:9.1f}")
    slow, began = tally.slowest
    lines.append(f"  slowest read: {slow:.2f} s, sent {began:.2f} s after the uploads began")
    lines.append(f"  server peak RSS: {peak_own / 2**20:.0f} MB (VmHWM; "
                 f"{idle_rss / 2**20:.0f} MB after start-up)"
                 + (f", {server.peak_sampled / 2**20:.0f} MB sampled with children"
                    if server.peak_sampled else ""))
    lines.append(f"  errors: {len(tally.errors)}")
    benchmark.extra_info.update(
        taps=tally.upload_taps, upload_mb_per_s=round(mb / tally.upload_wall_s, 2),
        upload_taps_per_s=round(tally.upload_taps / tally.upload_wall_s),
        job_s=round(tally.job_s, 2), peak_rss_mb=round(peak_own / 2**20),
        errors=len(tally.errors),
    )
    for line in lines:
        record_note(line)
    print("\n" + "\n".join(lines))
