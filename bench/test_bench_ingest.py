"""Batch ingestion, 10M canonical taps from one Parquet file into a fresh store (issue 6).

``make bench`` runs it in full: the day is generated once, vectorised with numpy, and cached
under ``bench/.cache/``; each round ingests it into a fresh SQLite database and data
directory: read and hash the file, run every SPEC §4 check, de-duplicate (1 % of the rows
are resent copies), quarantine the invalid rows (0.05 %), write the accepted taps and
commit. A separate child process does one more ingestion to measure peak memory (RSS of a
process that does nothing else). Target: at most 20 s and 4 GB. In the normal test run
(benchmarks disabled) it runs once on 200,000 taps as a smoke test.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from clearing.accept import day_rules
from clearing.db import make_engine
from clearing.ingest import ingest_file
from clearing.service_day import day_bounds_ms
from clearing.taps import TAP_SCHEMA, TapType
from tariffs.load import load_tariff_set
from tariffs.registry import FLAT, Registry, load_registry
from tongka.schema import upgrade

CACHE = Path(__file__).resolve().parent / ".cache"
FULL = 10_000_000
SMOKE = 200_000
DAY = dt.date(2026, 11, 24)
OPERATOR = 102
RESENT = 0.01  # share of rows that are exact copies of earlier rows
INVALID = 0.0005  # share of rows with a product out of its domain


def synthetic_day(n: int, registry: Registry, seed: int = 20261124) -> pa.Table:
    """``n`` taps (copies and invalid rows included) on real lines and stops, vectorised."""
    rng = np.random.default_rng(seed)
    lines = sorted(registry.lines.values(), key=lambda ln: ln.key)
    pair_line = np.array([i for i, ln in enumerate(lines) for _ in ln.stops], dtype=np.int64)
    pair_stop = np.array([s for ln in lines for s in ln.stops], dtype=np.uint32)
    line_op = np.array([ln.operator for ln in lines], dtype=np.uint16)
    line_id = np.array([ln.line for ln in lines], dtype=np.uint32)
    line_flat = np.array([ln.network == FLAT for ln in lines])
    stop_city = {s.stop: s.city for s in registry.stops.values()}
    pair_city = np.array([stop_city[int(s)] for s in pair_stop], dtype=np.uint32)
    issuers = np.array(sorted(registry.issuers), dtype=np.uint16)

    unique = n - int(n * RESENT)
    pair = rng.integers(0, len(pair_line), unique)
    li = pair_line[pair]
    media = rng.integers(0, 6, unique).astype(np.uint8)
    start, end = day_bounds_ms(DAY)
    entry_or_exit = 1 + rng.integers(0, 2, unique)
    tap_type = np.where(line_flat[li], TapType.FLAT, entry_or_exit).astype(np.uint8)
    cards = rng.integers(0, unique // 3 + 1, unique).astype(np.uint64)
    cols = {
        "operator": line_op[li],
        "device_id": rng.integers(0, 20_000, unique).astype(np.int64),
        "device_seq": np.arange(unique, dtype=np.int64),  # unique device keys
        "card_id": cards * np.uint64(2654435761),  # a third as many cards as taps
        "card_seq": np.arange(unique, dtype=np.int32),  # unique card keys
        "issuer": issuers[rng.integers(0, len(issuers), unique)],
        "product": rng.integers(0, 5, unique).astype(np.uint8),
        "media": media,
        "ts_ms": rng.integers(start, end, unique).astype(np.int64),
        "city": pair_city[pair],
        "line": line_id[li],
        "stop": pair_stop[pair],
        "tap_type": tap_type,
        # a plausible stored-value debit: never above the most one leg costs there (SPEC §4)
        "debited_fen": np.where(media == 5, -1, np.minimum(
            rng.integers(0, 600, unique), day_rules(load_tariff_set(), DAY).max_leg(line_op[li])
        )).astype(np.int32),
    }
    bad = rng.random(unique) < INVALID
    cols["product"][bad] = 9
    # resent copies, interleaved after their originals
    copies = np.sort(rng.integers(0, unique, n - unique))
    order = np.concatenate([np.arange(unique), copies])
    order = order[np.argsort(np.concatenate([np.arange(unique) * 2, copies * 2 + 1]),
                             kind="stable")]
    table = pa.table({k: pa.array(v[order]) for k, v in cols.items()}, schema=TAP_SCHEMA)
    return table.replace_schema_metadata({b"tongka.service_day": DAY.isoformat().encode(),
                                          b"tongka.operator": str(OPERATOR).encode()})


def batch_file(n: int, registry: Registry) -> Path:
    path = CACHE / f"ingest-v2-{n}.parquet"  # v2: debits within the SPEC v1.2 §4 bound
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        pq.write_table(synthetic_day(n, registry), tmp, compression="zstd")
        tmp.replace(path)
    return path


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from clearing.accept import day_rules
from clearing.db import make_engine
from tongka.schema import upgrade
from clearing.ingest import ingest_file
from tariffs.registry import load_registry
path, work = Path(sys.argv[1]), Path(sys.argv[2])
reg = load_registry()
engine = make_engine(f"sqlite:///{work / 'tongka.sqlite'}")
upgrade(engine)
start = time.perf_counter()
r = ingest_file(engine, work / "data", path, reg)
print(json.dumps({"seconds": time.perf_counter() - start, "accepted": r.accepted,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_bench_ingest(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    n = SMOKE if benchmark.disabled else FULL
    registry = load_registry()
    path = batch_file(n, registry)
    benchmark.group = "ingest: 10M canonical taps"
    stores: list[Path] = []

    def fresh_store() -> tuple[tuple, dict]:
        work = Path(tempfile.mkdtemp(dir=tmp_path))
        stores.append(work)
        engine = make_engine(f"sqlite:///{work / 'tongka.sqlite'}")
        upgrade(engine)
        return (engine, work / "data", path, registry), {}

    rounds = 1 if benchmark.disabled else 3
    report = benchmark.pedantic(ingest_file, setup=fresh_store, rounds=rounds, iterations=1)
    assert report.status == "accepted"
    assert report.received == n
    assert report.duplicates > 0 and report.quarantined > 0
    assert report.accepted + report.duplicates + report.quarantined == n
    assert report.errors == {"BAD_PRODUCT": report.quarantined}
    if not benchmark.disabled:
        child = subprocess.run([sys.executable, "-c", CHILD, str(path), str(tmp_path)],
                               capture_output=True, text=True, check=True)
        measured = json.loads(child.stdout)
        assert measured["accepted"] == report.accepted
        best = benchmark.stats.stats.min
        benchmark.extra_info.update(taps=n, taps_per_s=round(n / best),
                                    peak_rss_mb=round(measured["peak_rss_mb"]))
        print(f"\ningest {n:,} taps: best {best:.2f} s ({n / best:,.0f} taps/s), peak RSS "
              f"{measured['peak_rss_mb']:,.0f} MB, file {path.stat().st_size / 1e6:.0f} MB")


@pytest.mark.parametrize("n", [SMOKE])
def test_synthetic_day_is_what_it_claims(n: int) -> None:
    """The generator itself: valid rows but for the planted ones, copies where planted."""
    from clearing.accept import check_taps

    table = synthetic_day(n, load_registry())
    ok, errors = check_taps(table, load_registry(), DAY)
    assert {e.code for e in errors} == {"BAD_PRODUCT"}
    assert 0 < len(errors) < 3 * INVALID * n
    keys = np.stack([table.column(c).to_numpy().astype(np.int64)
                     for c in ("device_id", "device_seq")], axis=1)
    assert len(np.unique(keys, axis=0)) == n - int(n * RESENT)


# --------------------------------------------------------------------------- a fresh process

# Issue 13: `tongka ingest` of a generated day (one batch per operator, 14 files) as an
# operator runs it, a fresh process, onto a store that already holds both neighbouring days
# (their keys are read into the de-duplication index: SPEC §4 reaches a day either side).
BENCH_SEEDS = {DAY - dt.timedelta(days=1): 11, DAY: 12, DAY + dt.timedelta(days=1): 13}
PROCESS_FULL = 1_000_000  # make bench: start-up (imports, numba's cache) is half of it
PROCESS_LARGE = 10_000_000  # TONGKA_BENCH_FULL=1: the throughput, start-up amortised
PROCESS_SMOKE = 3_000


def _generated(day: dt.date, n: int, seed: int) -> list[Path]:
    """The cached batch files of one generated day (``tongka generate`` once)."""
    from cache_keys import generator_tag  # bench/cache_keys.py
    from test_bench_pipeline import tongka_command

    out = CACHE / f"ingest-day-{day.isoformat()}-{n}-{seed}-{generator_tag()}"
    if not out.exists():
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*tongka_command(), "generate", "--date", day.isoformat(), "--taps",
                        str(n), "--seed", str(seed), "--out", str(tmp)],
                       check=True, capture_output=True, cwd=tmp.parent)
        try:
            tmp.rename(out)
        except OSError:  # another worker finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return sorted(out.glob("*.parquet"))


def _neighbours_store(n: int) -> Path:
    """A cached data directory holding both neighbouring days' ``n`` taps, ingested once."""
    from cache_keys import generator_tag  # bench/cache_keys.py
    from test_bench_pipeline import run_step

    out = CACHE / f"ingest-neighbours-{n}-{generator_tag()}"
    if not out.exists():
        tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        files = [p for day, seed in BENCH_SEEDS.items() if day != DAY
                 for p in _generated(day, n, seed)]
        run_step("ingest", [str(p) for p in files], tmp / "data")
        try:
            tmp.rename(out)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return out / "data"


def test_bench_ingest_process(request: pytest.FixtureRequest, tmp_path: Path,  # type: ignore[no-untyped-def]
                              record_note) -> None:
    """A fresh ``tongka ingest`` of 14 files onto a store with both neighbouring days: wall,
    taps/s and the child's peak RSS (its VmHWM at exit; wait4's rusage as a fallback). 3 000
    taps a day in the suite, 1M with ``make bench``, 10M with ``TONGKA_BENCH_FULL=1``."""
    from test_bench_pipeline import run_step

    large = os.environ.get("TONGKA_BENCH_FULL", "") == "1"
    full = bool(request.config.getoption("benchmark_enable", default=False)) or large
    n = PROCESS_LARGE if large else PROCESS_FULL if full else PROCESS_SMOKE
    files = _generated(DAY, n, BENCH_SEEDS[DAY])
    template = _neighbours_store(n)
    rounds = 2 if large else 3 if full else 1
    runs = []
    for r in range(rounds):
        data_dir = tmp_path / f"round{r}" / "data"
        shutil.copytree(template, data_dir)
        runs.append(run_step("ingest", [str(p) for p in files], data_dir))
        with sqlite3.connect(data_dir / "tongka.sqlite") as db:
            received, accepted, dups, quarantined = db.execute(
                "select sum(received), sum(accepted), sum(duplicates), sum(quarantined) "
                "from batches where service_day = ?", (DAY.isoformat(),)).fetchone()
        assert received == n and accepted + dups + quarantined == n
        assert accepted > 0 and dups > 0 and quarantined > 0
        if r < rounds - 1:
            shutil.rmtree(data_dir.parent)
    best = min(run.seconds for run in runs)
    line = (f"tongka ingest {n:,} taps ({len(files)} files) onto both neighbouring days, fresh "
            f"process, {rounds} round(s): best {best:.2f} s ({n / best:,.0f} taps/s), median "
            f"{statistics.median(run.seconds for run in runs):.2f} s, peak RSS "
            f"{max(run.peak_rss_mb for run in runs):,.0f} MB; {accepted:,} accepted, "
            f"{dups:,} duplicates, {quarantined:,} quarantined")
    record_note(line)
    print("\n" + line)
