"""Scale-out (issue 20): a partitioned clear and settlement beside the single-process run.

Each step is a fresh process, as in ``test_bench_pipeline``: for the single process
``tongka clear`` then ``tongka settle``; for the partitioned run a coordinator process that
clears on a local dask cluster (2 workers, one thread and a 3 GB memory limit each, started
once by this test and restarted before each run so their peak memory is the run's), then
``tongka settle``, which settles a partitioned day from its stored partial sums. The
coordinator's peak RSS is each child's own ``VmHWM``; the workers report theirs. Both runs
start from a copy of the same ingested data directory (``tongka ingest`` of ``tongka
generate``'s 14 batch files, cached), and their ledgers and payment files are checked equal.

Sizes: 20 000 taps as a smoke test in the normal suite; 1M with ``--benchmark-enable``
(``make bench``); 1M, 5M, 15M and 30M with ``TONGKA_BENCH_FULL=1``, or the sizes listed in
``TONGKA_BENCH_SCALEOUT_SIZES`` (e.g. ``5000000,15000000``). Partitions: about one per 1M
taps, a multiple of the workers, so a partition stays well inside a worker's 3 GB. The
figures go to the summary and, with ``TONGKA_BENCH_SCALEOUT_JSON=path``, to a JSON file
(docs/scale-out.md's tables).
Benchmarks report; they never fail on a time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from cache_keys import generator_tag  # bench/cache_keys.py
from test_bench_pipeline import (  # bench/test_bench_pipeline.py: one way to run a step
    BENCH_DAY,
    CACHE,
    FULL_ENV,
    HWM_ENV,
    SEED,
    StepRun,
    day_batches,
    run_step,
    size_label,
)

SMOKE = 20_000
DEFAULT = (1_000_000,)
FULL = (1_000_000, 5_000_000, 15_000_000, 30_000_000)
SIZES_ENV = "TONGKA_BENCH_SCALEOUT_SIZES"
JSON_ENV = "TONGKA_BENCH_SCALEOUT_JSON"
TAPS_PER_PARTITION = 1_000_000
WORKERS = 2
WORKER_MEMORY = "3GB"


def scaleout_sizes(config: pytest.Config) -> tuple[int, ...]:
    listed = os.environ.get(SIZES_ENV, "")
    if listed:
        return tuple(int(n) for n in listed.split(","))
    if os.environ.get(FULL_ENV, "") == "1":
        return FULL
    return DEFAULT if config.getoption("benchmark_enable", default=False) else (SMOKE,)


def partitions_for(n: int) -> int:
    """About ``TAPS_PER_PARTITION`` taps each, a multiple of the workers (no idle last round)."""
    return WORKERS * max(1, -(-n // (TAPS_PER_PARTITION * WORKERS)))


# The partitioned clear as a fresh process that writes its own peak RSS at exit: the call
# `tongka clear --partitions N --scheduler ADDR` makes, keeping the per-partition and per-split
# figures the command prints only in sum. The partitioned day is then settled by `tongka
# settle` itself, which settles it from the stored partial sums.
_COORDINATOR = """
import atexit, json, os
def _hwm():
    with open("/proc/self/status") as f:
        kb = next((line.split()[1] for line in f if line.startswith("VmHWM:")), "")
    with open(os.environ["{env}"], "w") as out:
        out.write(kb)
atexit.register(_hwm)
import datetime as dt
from dataclasses import asdict
from pathlib import Path
from clearing.day import clear_day
from clearing.db import make_engine
from settlement.partials import SETTLEMENT_SUMS
from tariffs.load import load_tariff_set
args = json.loads(os.environ["TONGKA_BENCH_ARGS"])
home, day = Path(args["home"]), dt.date.fromisoformat(args["day"])
engine = make_engine("sqlite:///" + str(home / "tongka.sqlite"))
tariffs = load_tariff_set()
r = clear_day(home, day, tariffs, engine=engine, partitions=args["partitions"],
              scheduler=args["scheduler"], summary=SETTLEMENT_SUMS)
out = {{"taps": r.taps, "legs": r.legs, "parts": [asdict(p) for p in r.parts],
       "splits": [{{**asdict(s), "rows": sum(s.group_rows)}} for s in r.splits],
       "stages": dict(r.stages)}}
Path(args["out"]).write_text(json.dumps(out))
"""


def run_coordinator(step: str, home: Path, out: Path, **args: Any) -> StepRun:
    """One step of the partitioned run as a fresh process; its wall time and peak RSS."""
    hwm = home.parent / f".hwm-scaleout-{step}-{os.getpid()}"
    env = {**os.environ, HWM_ENV: str(hwm), "TONGKA_BENCH_ARGS": json.dumps(
        {"step": step, "home": str(home), "day": BENCH_DAY.isoformat(), "out": str(out),
         **args})}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.run([sys.executable, "-c", _COORDINATOR.format(env=HWM_ENV)],
                              stdout=subprocess.DEVNULL, stderr=err, cwd=home.parent, env=env)
        seconds = time.perf_counter() - start
        err.seek(0)
        message = err.read().decode(errors="replace")
    if proc.returncode != 0:
        raise AssertionError(f"partitioned {step} exited {proc.returncode}: {message[-3000:]}")
    peak_kb = int(hwm.read_text() or 0)
    hwm.unlink(missing_ok=True)
    return StepRun(step, seconds, peak_kb / 1024)


def ingested_home(n: int) -> Path:
    """A data directory holding the generated day of ``n`` taps, ingested (cached)."""
    home = CACHE / f"scaleout-home-{n}-{SEED}-{generator_tag()}"
    if not home.exists():
        batches = day_batches(n)
        tmp = home.with_name(f"{home.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        run_step("ingest", [str(p) for p in batches], tmp)
        tmp.rename(home)
    return home


def copy_home(source: Path, target: Path) -> Path:
    """A copy to clear and settle in: the database copied, the immutable tap files linked."""
    def place(src: str, dst: str) -> None:
        if Path(src).name.startswith("tongka.sqlite"):
            shutil.copy2(src, dst)
        else:
            os.link(src, dst)
    shutil.copytree(source, target, copy_function=place)
    return target


def _warm_worker(taps: Any) -> None:
    import settlement.partials  # noqa: F401
    from clearing.fast import match_and_price_fast
    from clearing.taps import TAP_COLUMNS
    from tariffs.load import load_tariff_set

    match_and_price_fast(taps.select(list(TAP_COLUMNS)), load_tariff_set())


def _worker_hwm_mb() -> float:
    with open("/proc/self/status") as f:
        kb = next((line.split()[1] for line in f if line.startswith("VmHWM:")), "0")
    return int(kb) / 1024


@dataclass(frozen=True, slots=True)
class SizeRun:
    """Everything one size's runs measured (the JSON rows of docs/scale-out.md)."""

    taps: int
    legs: int
    partitions: int
    single: list[dict[str, float]]
    scaled: list[dict[str, float]]
    worker_peak_mb: float
    parts: list[dict[str, Any]]
    splits: list[dict[str, Any]]
    stages: dict[str, float]  # the partitioned clear's coordinator, per stage
    read_day_legs_s: float  # the single path's legs read, as settle does it
    read_table_s: float  # the same file read bare (what read_day_legs did before issue 20)
    footer_s: float  # what read_day_legs added to the single path: one footer read


def _measure(n: int, client: Any, scheduler: str, work: Path) -> SizeRun:
    from clearing.day import legs_path, read_day_legs
    from clearing.legs import LEG_SCHEMA
    from settlement.ledger import account_balances

    source = ingested_home(n)
    single_home = copy_home(source, work / f"single-{n}")
    single = [run_step("clear", ["--date", BENCH_DAY.isoformat()], single_home),
              run_step("settle", ["--date", BENCH_DAY.isoformat()], single_home)]
    legs_file = legs_path(single_home, BENCH_DAY)
    bare, full, footer = [], [], []
    for _ in range(3):  # the single path's one change: read_day_legs reads the footer first
        start = time.perf_counter()
        pq.read_schema(legs_file)
        footer.append(time.perf_counter() - start)
        start = time.perf_counter()
        pq.read_table(legs_file, schema=LEG_SCHEMA)
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        read_day_legs(single_home, BENCH_DAY)
        full.append(time.perf_counter() - start)

    client.restart()  # fresh workers: their peak memory is this run's
    # warm, as a long-running cluster is: modules imported, kernels loaded from numba's cache
    stored = next((source / "taps").rglob("*.parquet"))  # accepted taps: they price
    client.run(_warm_worker, pq.ParquetFile(stored).read_row_group(0).slice(0, 2000))
    scaled_home = copy_home(source, work / f"scaled-{n}")
    out = work / f"scaled-{n}.json"
    partitions = partitions_for(n)
    scaled = [run_coordinator("clear", scaled_home, out, partitions=partitions,
                              scheduler=scheduler)]
    cleared = json.loads(out.read_text())
    scaled.append(run_step("settle", ["--date", BENCH_DAY.isoformat()], scaled_home))
    worker_peak = max(client.run(_worker_hwm_mb).values())

    # the same money: ledger and payment files of both runs
    from clearing.db import make_engine

    balances = []
    for home in (single_home, scaled_home):
        engine = make_engine(f"sqlite:///{home / 'tongka.sqlite'}")
        balances.append(account_balances(engine))
        engine.dispose()
    assert balances[0] == balances[1]
    files = [{p.name: p.read_bytes() for p in (h / "payments").rglob("*.csv")}
             for h in (single_home, scaled_home)]
    assert files[0] == files[1] and files[0]
    legs = pq.read_metadata(legs_file).num_rows
    assert cleared["legs"] == legs
    shutil.rmtree(single_home)
    shutil.rmtree(scaled_home)
    return SizeRun(n, legs, partitions, [asdict(s) for s in single],
                   [asdict(s) for s in scaled], worker_peak, cleared["parts"],
                   cleared["splits"], cleared["stages"], min(full), min(bare), min(footer))


def _lines(r: SizeRun) -> list[str]:
    one = {s["step"]: s for s in r.single}
    many = {s["step"]: s for s in r.scaled}
    parts = r.parts
    secs = sorted(p["seconds"] for p in parts)
    split_s = sorted(s["seconds"] for s in r.splits)
    mb = 1024 * 1024
    return [
        f"scale-out {size_label(r.taps)} taps ({r.legs:,} legs), {r.partitions} partitions on "
        f"{WORKERS} workers ({WORKER_MEMORY} each): wall / coordinator peak RSS",
        f"  single    clear {one['clear']['seconds']:7.2f} s {one['clear']['peak_rss_mb']:7.0f} MB"
        f"   settle {one['settle']['seconds']:6.2f} s {one['settle']['peak_rss_mb']:6.0f} MB"
        f"   total {one['clear']['seconds'] + one['settle']['seconds']:7.2f} s",
        f"  scaled    clear {many['clear']['seconds']:7.2f} s"
        f" {many['clear']['peak_rss_mb']:7.0f} MB"
        f"   settle {many['settle']['seconds']:6.2f} s {many['settle']['peak_rss_mb']:6.0f} MB"
        f"   total {many['clear']['seconds'] + many['settle']['seconds']:7.2f} s;"
        f" worker peak {r.worker_peak_mb:.0f} MB",
        f"  split: {len(r.splits)} pieces of {len({s['rel'] for s in r.splits})} batch files,"
        f" {sum(s['bytes_read'] for s in r.splits) / mb:.1f}"
        f" MB read, {sum(s['bytes_written'] for s in r.splits) / mb:.1f} MB written, task"
        f" {split_s[0]:.2f}-{split_s[-1]:.2f} s" if split_s else "  split: no batch files",
        f"  partition: {sum(p['taps'] for p in parts) / len(parts):,.0f} taps, task"
        f" {secs[0]:.2f}-{secs[-1]:.2f} s (sum {sum(secs):.1f} s),"
        f" {sum(p['bytes_read'] for p in parts) / len(parts) / mb:.1f} MB read,"
        f" {sum(p['bytes_written'] for p in parts) / len(parts) / mb:.1f} MB written each",
        "  coordinator: start-up {:.2f} s, ".format(
            many["clear"]["seconds"] - sum(r.stages.values()))
        + ", ".join(f"{k} {v:.2f} s" for k, v in r.stages.items()),
        f"  single path's read_day_legs {r.read_day_legs_s:.3f} s vs bare read "
        f"{r.read_table_s:.3f} s; the footer read it adds {r.footer_s * 1000:.2f} ms",
    ]


def test_bench_scaleout(request: pytest.FixtureRequest, tmp_path: Path, record_note) -> None:  # type: ignore[no-untyped-def]
    """Single process vs partitioned, per size; the JSON of every figure if asked for."""
    from dask.distributed import Client, LocalCluster

    runs = []
    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                      memory_limit=WORKER_MEMORY, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0",
                      env={"TONGKA_THREADS": "1"}) as cluster, Client(cluster) as client:
        for n in scaleout_sizes(request.config):
            r = _measure(n, client, cluster.scheduler_address, tmp_path)
            runs.append(r)
            for line in _lines(r):
                record_note(line)
            print("\n" + "\n".join(_lines(r)), flush=True)
    target = os.environ.get(JSON_ENV, "")
    if target:
        Path(target).write_text(json.dumps({
            "measured": dt.datetime.now().isoformat(timespec="seconds"),
            "load_average": os.getloadavg(), "cpus": os.cpu_count(),
            "runs": [asdict(r) for r in runs]}, indent=1))
