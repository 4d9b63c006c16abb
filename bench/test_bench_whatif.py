"""What-if re-pricing (SPEC v1.2 §11): a range of stored days priced under two tariff sets.

Target of issue #17 (never asserted, timed by ``make bench`` or ``TONGKA_BENCH_FULL=1``): a
30-day range of 1M-tap days in at most 60 s, memory bounded by one day. Each "day" of the range
is the cached generated day of ``bench/conftest.py`` read again from its Parquet file, so the
range costs 30 days of reading, pricing twice, settling twice in memory and comparing, without
30 generated days on disk. The smoke run (normal suite) does 2 days of 20 000 taps and checks
that a no-op proposal reports zero difference.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from settlement.whatif import WhatIf, load_proposed_set
from tariffs.load import DEFAULT_TARIFF_DIR, load_tariff_set

TARIFFS = load_tariff_set()
FULL_DAYS, SMOKE_DAYS = 30, 2
FULL_ENV = "TONGKA_BENCH_FULL"  # as bench/conftest.py: full sizes without --benchmark-enable
WHATIF_SIZE = 1_000_000  # the day size; other sizes of the clear benches are skipped


def _proposal(tmp: Path, noop: bool) -> Path:
    """Xiaogan's card discount 10 % -> 20 % and transfer window 60 -> 90 min, or a no-op."""
    (src,) = DEFAULT_TARIFF_DIR.glob("420900-*.toml")
    text = src.read_text(encoding="utf-8")
    if not noop:
        text = text.replace("rate_bp = 1000\n", "rate_bp = 2000\n", 1).replace(
            "window_minutes = 60", "window_minutes = 90", 1)
    (tmp / src.name).write_text(text, encoding="utf-8")
    return tmp


def test_bench_whatif_range(benchmark, clear_size: int, bench_day, request,  # type: ignore[no-untyped-def]
                            record_timing, record_note) -> None:
    full = os.environ.get(FULL_ENV, "") == "1" or not benchmark.disabled
    if not full:
        days = SMOKE_DAYS
    elif clear_size != WHATIF_SIZE:
        pytest.skip(f"the what-if range is timed on {WHATIF_SIZE:,}-tap days only")
    else:
        days = FULL_DAYS
    clear_file: Path = request.getfixturevalue("clear_file")  # after the skip: no 10M day made
    with tempfile.TemporaryDirectory() as tmp:
        proposed = load_proposed_set(_proposal(Path(tmp), noop=not full))

    def run() -> object:
        whatif = WhatIf(TARIFFS, proposed, bench_day, bench_day, days_expected=days)
        for _ in range(days):
            whatif.add_day(bench_day, pq.read_table(clear_file))
        return whatif.result()

    whatif_warm = WhatIf(TARIFFS, proposed, bench_day, bench_day)  # JIT and tables, not timed
    whatif_warm.add_day(bench_day, pq.read_table(clear_file).slice(0, 1000))
    benchmark.group = f"whatif {days} days x {clear_size:,} taps"
    start = time.perf_counter()
    result = benchmark.pedantic(run, rounds=1, iterations=1)
    seconds = time.perf_counter() - start
    if not full:  # smoke: the no-op proposal differs nowhere
        assert result.is_zero and result.days == days  # type: ignore[attr-defined]
        return
    record_timing(f"whatif/{days} days", clear_size, seconds)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    record_note(f"whatif: {days} days x {clear_size:,} taps in {seconds:.1f} s "
                f"(target 60 s); peak RSS of the bench process {peak_mb:,} MB; "
                f"{result.changed_legs:,} legs changed fare")  # type: ignore[attr-defined]
