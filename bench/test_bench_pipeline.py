"""The whole day (issue 13): `tongka ingest`, `clear` and `settle`, each a fresh process.

An operator and finance never call the kernels warm and in process: they run the README's
commands, each a new Python process that imports, reads, computes and writes. This benchmark
times exactly that on a generated day (``tongka generate``: one canonical Parquet batch per
operator, resent and invalid rows included), with the wall time and the peak RSS of each child
(its own ``VmHWM`` at exit, see ``_CHILD``), and in the same run the DuckDB peer computing the
day's obligations from the legs Parquet (``bench/peers.py``), checked equal to Tongka's.

Sizes: 20 000 taps as a smoke test in the normal suite (``--benchmark-disable``), 1M with
``make bench``, 15M with ``TONGKA_BENCH_FULL=1``. Generated days are cached under
``bench/.cache/`` (the name carries the generator's and tariffs' hash). Benchmarks report; they
never fail on a time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import peers  # bench/peers.py (pytest puts this directory on sys.path)
import pyarrow.parquet as pq
import pytest
from cache_keys import generator_tag  # bench/cache_keys.py

# As bench/conftest.py (not imported: tests/ has a conftest module of the same name).
ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
BENCH_DAY = dt.date(2026, 11, 24)
SEED = 20261124
FULL_ENV = "TONGKA_BENCH_FULL"
SMOKE = 20_000
DEFAULT = 1_000_000
FULL = 15_000_000
STEPS = ("ingest", "clear", "settle")


def pipeline_size(config: pytest.Config) -> int:
    """20k in the normal suite, 1M with ``--benchmark-enable``, 15M with TONGKA_BENCH_FULL=1."""
    if os.environ.get(FULL_ENV, "") == "1":
        return FULL
    return DEFAULT if config.getoption("benchmark_enable", default=False) else SMOKE


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


HWM_ENV = "TONGKA_BENCH_HWM_FILE"
# The child writes its own peak RSS (VmHWM of its address space) at exit. Not the rusage of
# wait4: Linux carries the pre-exec high-water mark of the forked parent into the child's
# ru_maxrss, so a child of a big pytest process would report at least the parent's size.
_CHILD = """
import atexit, os
def _hwm():
    with open("/proc/self/status") as f:
        kb = next((line.split()[1] for line in f if line.startswith("VmHWM:")), "")
    with open(os.environ["{env}"], "w") as out:
        out.write(kb)
atexit.register(_hwm)
from {module} import run
run()
"""


def tongka_command() -> list[str]:
    """What the ``tongka`` script runs, in a fresh interpreter that reports its peak RSS."""
    return [sys.executable, "-c", _CHILD.format(env=HWM_ENV, module="tongka.cli")]


def day_batches(n: int) -> list[Path]:
    """The cached batch files of a generated day of ``n`` taps (``tongka generate`` once)."""
    out = CACHE / f"pipeline-{n}-{SEED}-{generator_tag()}"
    if not out.exists():
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # xdist workers may race
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*tongka_command(), "generate", "--date", BENCH_DAY.isoformat(),
                        "--taps", str(n), "--seed", str(SEED), "--out", str(tmp)],
                       check=True, capture_output=True, cwd=tmp.parent)
        try:
            tmp.rename(out)  # a complete directory or none
        except OSError:  # another worker finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out.glob("*.parquet"))


@dataclass(frozen=True, slots=True)
class StepRun:
    """One fresh process: its wall time and the peak resident memory of that child alone."""

    step: str
    seconds: float
    peak_rss_mb: float


def run_step(step: str, args: list[str], data_dir: Path) -> StepRun:
    """Run ``tongka --data-dir D STEP ARGS`` as a child and measure it (raises if it fails)."""
    cmd = [*tongka_command(), "--data-dir", str(data_dir), step, *args]
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    hwm = data_dir.parent / f".hwm-{step}-{os.getpid()}"
    env = {**os.environ, HWM_ENV: str(hwm)}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty child cannot block
        # cwd: the data directory's parent, so that ``-c``'s sys.path[0] is not a source tree.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=data_dir.parent,
                                env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        message = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {message[-2000:]}")
    peak_kb = int(hwm.read_text() or 0) if hwm.exists() else usage.ru_maxrss
    hwm.unlink(missing_ok=True)
    return StepRun(step, seconds, peak_kb / 1024)


def run_day(batches: list[Path], data_dir: Path, day: dt.date) -> list[StepRun]:
    """The README's three commands on a fresh data directory, in order."""
    return [
        run_step("ingest", [str(p) for p in batches], data_dir),
        run_step("clear", ["--date", day.isoformat()], data_dir),
        run_step("settle", ["--date", day.isoformat()], data_dir),
    ]


def duckdb_obligations_run(legs_path: Path) -> tuple[float, list[tuple[int, int, int, int]]]:
    """The peer's seconds (fresh connection, reading the legs file) and its obligations."""
    from tariffs.load import load_tariff_set

    fees, funders = peers.obligation_tables(load_tariff_set())
    start = time.perf_counter()
    rows = peers.duckdb_obligations(str(legs_path), fees, funders)
    return time.perf_counter() - start, rows


def test_bench_pipeline(request: pytest.FixtureRequest, tmp_path: Path, record_note) -> None:  # type: ignore[no-untyped-def]
    """Each step a fresh process, rounds on fresh data directories; the DuckDB peer beside."""
    from clearing.day import legs_path, read_day_legs
    from settlement.settle import compute_day
    from tariffs.load import load_tariff_set

    n = pipeline_size(request.config)
    batches = day_batches(n)
    rounds = 1 if n == SMOKE else (3 if n <= DEFAULT else 2)
    runs: list[list[StepRun]] = []
    peer: list[float] = []
    for r in range(rounds):
        data_dir = tmp_path / f"round{r}"
        runs.append(run_day(batches, data_dir, BENCH_DAY))
        seconds, rows = duckdb_obligations_run(legs_path(data_dir, BENCH_DAY))
        peer.append(seconds)
        if r == 0:  # the peer must compute the very obligations settle computed
            comp = compute_day(read_day_legs(data_dir, BENCH_DAY), load_tariff_set(), BENCH_DAY)
            assert rows == peers.obligation_rows(comp.obligations)
            legs = pq.read_metadata(legs_path(data_dir, BENCH_DAY)).num_rows
        if r < rounds - 1:
            shutil.rmtree(data_dir)
    lines = [f"whole day {size_label(n)} taps ({legs:,} legs), each step a fresh process, "
             f"{rounds} round(s): best / median wall, max peak RSS"]
    total_best = 0.0
    for i, step in enumerate(STEPS):
        walls = [run[i].seconds for run in runs]
        rss = max(run[i].peak_rss_mb for run in runs)
        total_best += min(walls)
        lines.append(f"  tongka {step:7} {min(walls):7.2f} s / {statistics.median(walls):7.2f} s"
                     f"   {rss:7.0f} MB")
    lines.append(f"  total          {total_best:7.2f} s (sum of bests)")
    settle_best = min(run[2].seconds for run in runs)
    lines.append(f"  DuckDB obligations from the legs Parquet: {min(peer):.2f} s / "
                 f"{statistics.median(peer):.2f} s (equal to settle's); tongka settle is "
                 f"{settle_best / min(peer):.1f}x")
    for line in lines:
        record_note(line)
    print("\n" + "\n".join(lines))


# ---------------------------------------------------------------------------------------------
# `tongka clear` in a fresh process against clear_day warm in one (issue 13: within 2x; and the
# fresh process's first pricing within 1.5x of a warm one)

_WARM_CHILD = """
import datetime as dt, json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from clearing import day as clearing_day
from clearing.db import make_engine
from tariffs.load import load_tariff_set
data_dir, day, rounds = Path(sys.argv[1]), dt.date.fromisoformat(sys.argv[2]), int(sys.argv[3])
engine = make_engine(sys.argv[4])
tariffs = load_tariff_set()
started = time.perf_counter() - t0
priced = []
inner = clearing_day._price_and_write  # pricing and the legs write, the clear's largest part
def timed(*args, **kwargs):
    t = time.perf_counter()
    out = inner(*args, **kwargs)
    priced.append(time.perf_counter() - t)
    return out
clearing_day._price_and_write = timed
calls = []
for _ in range(rounds):
    t = time.perf_counter()
    clearing_day.clear_day(data_dir, day, tariffs, engine=engine)
    calls.append(time.perf_counter() - t)
print(json.dumps({"start": started, "calls": calls, "priced": priced}))
"""
WARM_CALLS = 3  # clear_day calls in one process: the first is the fresh one, the rest warm


def test_bench_clear_fresh_against_warm(request: pytest.FixtureRequest, tmp_path: Path,
                                        record_note) -> None:  # type: ignore[no-untyped-def]
    """`tongka clear` as a fresh process, and ``clear_day`` called again and again in one
    process: the fresh wall against the warm call, and the first call's pricing (with its
    legs write) against a warm one's. 20k in the suite, 1M with ``make bench``, 10M with
    ``TONGKA_BENCH_FULL=1`` (the issue's size)."""
    n = pipeline_size(request.config)
    n = 10_000_000 if n == FULL else n
    data_dir = tmp_path / "day"
    run_step("ingest", [str(p) for p in day_batches(n)], data_dir)
    fresh = [run_step("clear", ["--date", BENCH_DAY.isoformat()], data_dir)
             for _ in range(1 if n == SMOKE else 2)]
    url = f"sqlite:///{(data_dir / 'tongka.sqlite').resolve()}"
    out = subprocess.run([sys.executable, "-c", _WARM_CHILD, str(data_dir), BENCH_DAY.isoformat(),
                          str(WARM_CALLS), url], check=True, capture_output=True, text=True,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    got = json.loads(out.stdout.strip().splitlines()[-1])
    warm = min(got["calls"][1:])
    warm_priced = min(got["priced"][1:])
    best = min(r.seconds for r in fresh)
    lines = [
        f"tongka clear {size_label(n)}: fresh process {best:.2f} s best of {len(fresh)} "
        f"({max(r.peak_rss_mb for r in fresh):.0f} MB peak); clear_day in one process: first "
        f"call {got['calls'][0]:.2f} s, warm {warm:.2f} s best of {len(got['calls']) - 1} "
        f"(start-up {got['start']:.2f} s): fresh / warm {best / warm:.2f}x (goal <= 2)",
        f"  pricing and legs write: first call {got['priced'][0]:.2f} s, warm {warm_priced:.2f} s:"
        f" first / warm {got['priced'][0] / warm_priced:.2f}x (goal <= 1.5); load "
        f"{os.getloadavg()}",
    ]
    for line in lines:
        record_note(line)
    print("\n" + "\n".join(lines))
    assert len(got["calls"]) == WARM_CALLS and warm > 0
