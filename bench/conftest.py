"""Benchmark fixtures: generated days of taps cached under bench/.cache, sizes by run mode, ratios.

Benchmarks run twice over: once in the normal test suite with ``--benchmark-disable`` as smoke
tests on a small day, and in full with ``make bench`` (``--benchmark-enable``) or with
``TONGKA_BENCH_FULL=1`` on days of 20 000, 1M and 10M taps. A day is generated once per size
by ``tongka.testing.generate`` (vectorised; the generator's version is part of the file name),
filtered to the rows ingestion accepts (SPEC §4), and cached as Parquet. Timings recorded with
``record_timing`` are printed side by side at the end of the run, with their ratios.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cache_keys import generator_tag  # bench/cache_keys.py

CACHE = Path(__file__).resolve().parent / ".cache"
BENCH_DAY = dt.date(2026, 11, 24)
SEED = 20261124
FULL_SIZES = (20_000, 1_000_000, 10_000_000)
SMOKE_SIZES = (20_000,)
FULL_ENV = "TONGKA_BENCH_FULL"

# (stage, size) -> best seconds, filled by record_timing, printed by pytest_terminal_summary
TIMINGS: dict[tuple[str, int], float] = {}
NOTES: list[str] = []


def full_run(config: pytest.Config) -> bool:
    """Full sizes with ``--benchmark-enable`` (``make bench``) or ``TONGKA_BENCH_FULL=1``."""
    return os.environ.get(FULL_ENV, "") == "1" or bool(config.getoption("benchmark_enable",
                                                                        default=False))


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "clear_size" in metafunc.fixturenames:
        sizes = FULL_SIZES if full_run(metafunc.config) else SMOKE_SIZES
        metafunc.parametrize("clear_size", sizes, ids=[size_label(n) for n in sizes],
                             scope="session")


def clear_day_file(n: int) -> Path:
    """The cached Parquet day of ``n`` accepted taps (generated on first use)."""
    path = CACHE / f"clear-{n}-{SEED}-{generator_tag()}.parquet"
    if not path.exists():
        from clearing.fast import match_and_price_fast
        from tariffs.load import load_tariff_set
        from tongka.testing.generate import generate

        day = generate(BENCH_DAY, n, SEED, load_tariff_set(), price=match_and_price_fast)
        taps = day.table.filter(pa.array(day.accepted_mask))
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # xdist workers may race
        pq.write_table(taps, tmp, compression="zstd")
        tmp.replace(path)
    return path


@pytest.fixture(scope="session")
def bench_day() -> dt.date:
    return BENCH_DAY


@pytest.fixture(scope="session")
def clear_file(clear_size: int) -> Path:
    return clear_day_file(clear_size)


@pytest.fixture(scope="session")
def clear_taps(clear_file: Path) -> Iterator[pa.Table]:
    yield pq.read_table(clear_file)


@pytest.fixture
def record_timing(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """``record_timing(stage, n, seconds)``: keep the best time of a stage for the summary."""
    def record(stage: str, n: int, seconds: float) -> None:
        key = (stage, n)
        TIMINGS[key] = min(seconds, TIMINGS.get(key, seconds))
    return record


@pytest.fixture
def record_note():  # type: ignore[no-untyped-def]
    """``record_note(text)``: a line for the summary (memory, JIT, agreement of the peers)."""
    return NOTES.append


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    if not TIMINGS and not NOTES:
        return
    tr = terminalreporter
    tr.section("Tongka clearing benchmark")
    for note in NOTES:
        tr.write_line(note)
    if not TIMINGS:
        return
    sizes = sorted({n for _, n in TIMINGS})
    stages = sorted({s for s, _ in TIMINGS}, key=lambda s: (s != "match_and_price/fast", s))
    tr.write_line(f"{'stage':36}" + "".join(f"{size_label(n):>12}" for n in sizes)
                  + "   x fast (match_and_price)")
    for stage in stages:
        cells, ratios = [], []
        for n in sizes:
            t = TIMINGS.get((stage, n))
            cells.append(f"{t:11.3f}s" if t is not None else f"{'-':>12}")
            base = TIMINGS.get(("match_and_price/fast", n))
            if t is not None and base:
                ratios.append(f"{size_label(n)} {t / base:.2f}")
        tr.write_line(f"{stage:36}" + "".join(cells) + "   " + ", ".join(ratios))
