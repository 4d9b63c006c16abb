"""Risk signals (SPEC v1.2 §10) on the generated days of bench/test_bench_clear.py (20 000, 1M,
10M taps): each registry case of ``tongka.testing.kernel_registry.RISK_KERNELS``, fast and (where it
can finish) its twin; the whole ``day_signals`` as ``tongka clear`` runs it after pricing, fed
three ways (sorting the taps itself, given pricing's order, given pricing's sorted records);
and the replay lookback over earlier days' stored keys, per stored day.

Target (issue #16, never asserted): the signals add at most 15 % to ``tongka clear``. The
summary of ``make bench`` prints every stage's ratio to ``match_and_price/fast``; the whole
clear (reading, pricing, writing) is timed in fresh processes by bench/test_bench_pipeline.py,
and docs/performance.md ("Risk signals") keeps both. Smoke runs check the twins agree and the
three feeds give the same table.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from clearing.fast import match_and_price_fast, tap_chunks
from clearing.risk import _DayTaps, _replay_evidence, day_signals, warm_up
from clearing.risk_store import earlier_keys
from clearing.sorting import W_ROW, sort_tap_records
from clearing.tapstore import META_DAY_SEQ, batch_relpath, write_batch_taps
from tariffs.load import load_tariff_set
from tongka.testing.kernel_registry import RISK_KERNELS, KernelCase

TARIFFS = load_tariff_set()
LOOKBACK_DAYS = 2  # earlier days stored for the lookback; its time is reported per day


def size_label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def _rounds(benchmark, n: int) -> int:  # type: ignore[no-untyped-def]
    return 1 if benchmark.disabled else (5 if n <= 1_000_000 else 3)


@pytest.mark.parametrize("side", ["fast", "reference"])
@pytest.mark.parametrize("case", RISK_KERNELS, ids=[c.name for c in RISK_KERNELS])
def test_bench_risk_stage(benchmark, case: KernelCase, side: str, clear_size: int,  # type: ignore[no-untyped-def]
                          clear_taps: pa.Table, record_timing) -> None:
    """One risk stage, fast or reference; smoke runs also check it equals its twin."""
    if side == "reference" and case.reference_max_taps is not None \
            and clear_size > case.reference_max_taps:
        pytest.skip(f"the reference twin of {case.name} is not timed on {clear_size:,} taps")
    warm_up()
    inp = case.prepare(clear_taps, TARIFFS)
    run = case.fast if side == "fast" else case.reference
    benchmark.group = f"clear {size_label(clear_size)}: {case.name}"
    rounds = _rounds(benchmark, clear_size) if side == "fast" else 1
    out = benchmark.pedantic(run, args=(inp,), rounds=rounds, iterations=1,
                             warmup_rounds=0 if benchmark.disabled or side != "fast" else 1)
    if benchmark.disabled and side == "fast":
        case.assert_equal(out, case.reference(inp))
    if not benchmark.disabled:
        record_timing(f"{case.name}/{side}", clear_size, benchmark.stats.stats.min)


@pytest.mark.parametrize("feed", ["sorts", "order", "records"])
def test_bench_risk_day_signals(benchmark, feed: str, clear_size: int, clear_taps: pa.Table,  # type: ignore[no-untyped-def]
                                bench_day, record_timing) -> None:
    """All five signals of a day from its taps and legs, as clearing runs them (no earlier
    stored days: the lookback is timed below). ``sorts``: the signals sort the taps
    themselves; ``order`` / ``records``: given what pricing's sort made (``clearing.fast``
    builds the records anyway; here they are built once outside the timing)."""
    warm_up()
    legs = match_and_price_fast(clear_taps, TARIFFS)
    records = sort_tap_records(tap_chunks(clear_taps), threads=2)
    given = {"sorts": {}, "order": {"order": records[:, W_ROW].astype(np.int64)},
             "records": {"records": records}}[feed]
    benchmark.group = f"clear {size_label(clear_size)}: risk_day_signals"
    out = benchmark.pedantic(day_signals, args=(bench_day, clear_taps, legs), kwargs=given,
                             rounds=_rounds(benchmark, clear_size), iterations=1)
    if benchmark.disabled:
        assert out.equals(day_signals(bench_day, clear_taps, legs, reference=True))
    if not benchmark.disabled:
        record_timing(f"risk_day_signals/{feed}", clear_size, benchmark.stats.stats.min)


def test_bench_risk_replay_lookback(benchmark, clear_size: int, clear_taps: pa.Table,  # type: ignore[no-untyped-def]
                                   bench_day, tmp_path_factory, record_timing) -> None:
    """CARD_SEQ_REPLAY's lookback: the day's card keys against ``LOOKBACK_DAYS`` earlier days
    of as many stored taps (the same cards, counters moved on, so nothing replays), read
    from their Parquet files as clearing does; reported per earlier day. Clearing reads
    ``REPLAY_REACH_DAYS - 1`` such days once the history is that long."""
    root = tmp_path_factory.mktemp("lookback")
    ops = np.asarray(clear_taps.column("operator").to_numpy())
    for back in range(2, 2 + LOOKBACK_DAYS):
        when = bench_day - dt.timedelta(days=back)
        moved = clear_taps.set_column(
            clear_taps.column_names.index("card_seq"), "card_seq",
            pc.subtract(clear_taps.column("card_seq"), pa.scalar(50 * back, pa.int32())))
        for k, op in enumerate(np.unique(ops)):
            write_batch_taps(root, batch_relpath(when, int(op), f"{back:02d}{k:062d}"),
                             moved.filter(pa.array(ops == op)), {META_DAY_SEQ: str(k).encode()})
    warm_up()

    def lookback() -> dict[int, list[dict]]:  # the day's key columns converted each time
        return _replay_evidence(_DayTaps(clear_taps, None), earlier_keys(Path(root), bench_day),
                                False)

    benchmark.group = f"clear {size_label(clear_size)}: risk_replay_lookback"
    out = benchmark.pedantic(lookback, rounds=_rounds(benchmark, clear_size), iterations=1)
    assert out == {}  # counters moved on: nothing replays
    if not benchmark.disabled:
        record_timing("risk_replay_lookback/per_day", clear_size,
                      benchmark.stats.stats.min / LOOKBACK_DAYS)
