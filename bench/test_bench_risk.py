"""Risk signals (SPEC v1.2 §10) on the generated days of bench/test_bench_clear.py (20 000, 1M,
10M taps): each registry case of ``tongka.testing.kernel_registry.RISK_KERNELS``, fast and (where it
can finish) its twin, and the whole ``day_signals`` as ``tongka clear`` runs it after pricing.

Target (issue #16, never asserted): the signals add at most 15 % to ``tongka clear``, i.e.
``risk_day_signals/fast`` at most 0.15 x ``match_and_price/fast`` in ``make bench``'s summary
(which prints every stage's ratio to match_and_price). Smoke runs check the twins agree.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from clearing.fast import match_and_price_fast
from clearing.risk import day_signals, warm_up
from tariffs.load import load_tariff_set
from tongka.testing.kernel_registry import RISK_KERNELS, KernelCase

TARIFFS = load_tariff_set()


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


def test_bench_risk_day_signals(benchmark, clear_size: int, clear_taps: pa.Table,  # type: ignore[no-untyped-def]
                                bench_day, record_timing) -> None:
    """All five signals of a day from its taps and legs, as clearing runs them (no earlier
    stored days: replay keys stream from disk, timed by the registry case above)."""
    warm_up()
    legs = match_and_price_fast(clear_taps, TARIFFS)
    benchmark.group = f"clear {size_label(clear_size)}: risk_day_signals"
    out = benchmark.pedantic(day_signals, args=(bench_day, clear_taps, legs),
                             rounds=_rounds(benchmark, clear_size), iterations=1)
    assert out.num_rows >= 0
    if not benchmark.disabled:
        record_timing("risk_day_signals/fast", clear_size, benchmark.stats.stats.min)
