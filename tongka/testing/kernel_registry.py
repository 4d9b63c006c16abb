"""Fast-path kernels and their readable twins in one registry, for equality tests and benchmarks.

Each ``KernelCase`` names a stage of the fast path, how to prepare its input from a day of taps
and a tariff set (untimed), the fast function, its plain twin, and how to compare their
outputs. ``tests/test_kernel_equality.py`` runs every case on hypothesis-generated days and
asserts equality; ``bench/test_bench_clear.py`` times every case's fast side (and its twin where
the twin can finish) on the same generated days. Adding a kernel means adding a case here, and
both the tests and the benchmarks pick it up (as numbagg's ``COMPARISONS`` and stumpy's
``tests/naive.py`` do).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa

from clearing import reference
from clearing.fast import (
    match_and_price_chunks,
    match_and_price_fast,
    match_records,
    tap_arrays,
    tap_chunks,
)
from clearing.kernel_tables import kernel_tables
from clearing.legs import Leg, legs_from_table
from clearing.service_day import day_from_number
from clearing.sorting import W_ROW, sort_tap_records, sort_taps, sort_taps_naive
from tariffs.load import TariffSet

# A matched leg as both twins report it: (LegStatus, boarding row, exit row or -1).
MatchedRow = tuple[int, int, int]


@dataclass(frozen=True)
class KernelCase:
    """A fast stage and its reference twin, fed the same prepared input."""

    name: str
    spec: str  # the SPEC sections the stage implements
    prepare: Callable[[pa.Table, TariffSet], Any]  # untimed: the input both sides take
    fast: Callable[[Any], Any]
    reference: Callable[[Any], Any]
    assert_equal: Callable[[Any, Any], None]  # (fast output, reference output); raises if not
    reference_max_taps: int | None  # the largest day a benchmark times the twin on (None: any)


# ---------------------------------------------------------------------------------------------
# sort: (card_id, issuer, ts_ms, card_seq) order


def _sort_input(taps: pa.Table, tariffs: TariffSet) -> tuple[np.ndarray, ...]:
    cols = tap_arrays(taps)
    return cols["card_id"], cols["issuer"], cols["ts_ms"], cols["card_seq"]


def _assert_same_order(fast: np.ndarray, ref: np.ndarray) -> None:
    if not np.array_equal(fast, ref):
        at = int(np.flatnonzero(fast != ref)[0]) if len(fast) == len(ref) else -1
        raise AssertionError(f"sort orders differ (first at position {at}; "
                             f"lengths {len(fast)} and {len(ref)})")


# ---------------------------------------------------------------------------------------------
# match: SPEC §5 pairing, as (status, boarding row, exit row)


@dataclass(frozen=True)
class MatchInput:
    taps: pa.Table
    tariffs: TariffSet
    cols: dict[str, np.ndarray]
    records: np.ndarray  # the taps in card order (the sort is a case of its own)


def _match_input(taps: pa.Table, tariffs: TariffSet) -> MatchInput:
    cols = tap_arrays(taps)
    kernel_tables(tariffs)
    return MatchInput(taps, tariffs, cols, sort_tap_records([cols]))


def match_fast(inp: MatchInput) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``kernels.match_legs`` on records in card order: (LegStatus, boarding rows, exit rows)."""
    _n, board, exit_, status = match_records(inp.records, kernel_tables(inp.tariffs), [inp.cols])
    rows = inp.records[:, W_ROW].astype(np.int64)
    return status, rows[board], np.where(exit_ >= 0, rows[exit_], -1)


def match_reference(inp: MatchInput) -> list[MatchedRow]:
    """``reference.match_card_day`` over the reference's own card-days, taps mapped to rows."""
    cols = inp.cols
    row_of = {key: i for i, key in enumerate(zip(cols["issuer"].tolist(),
                                                 cols["card_id"].tolist(),
                                                 cols["card_seq"].tolist(), strict=True))}
    out: list[MatchedRow] = []
    for day_no, card_taps in reference._card_days(inp.taps):
        for m in reference.match_card_day(card_taps, day_from_number(day_no), inp.tariffs):
            b = row_of[(m.boarding.issuer, m.boarding.card_id, m.boarding.card_seq)]
            x = -1 if m.exit is None else row_of[(m.exit.issuer, m.exit.card_id,
                                                    m.exit.card_seq)]
            out.append((int(m.status), b, x))
    return out


def _assert_same_matches(fast: tuple[np.ndarray, np.ndarray, np.ndarray],
                         ref: list[MatchedRow]) -> None:
    # The reference walks card-days by (day, issuer, card); the kernel by (card, issuer, day).
    # A leg is identified by its boarding row, so compare in boarding-row order.
    status, board, exit_ = fast
    rows = zip(status.tolist(), board.tolist(), exit_.tolist(), strict=True)
    f, r = sorted(rows, key=lambda m: m[1]), sorted(ref, key=lambda m: m[1])
    if f != r:
        diff = [(a, b) for a, b in zip(f, r, strict=False) if a != b][:3]
        raise AssertionError(f"matched legs differ: {len(f)} fast, {len(r)} reference; "
                             f"first (fast, reference) differences {diff}")


# ---------------------------------------------------------------------------------------------
# match_and_price: the whole stage, LEG_SCHEMA tables field by field


def _stage_input(taps: pa.Table, tariffs: TariffSet) -> tuple[pa.Table, TariffSet]:
    kernel_tables(tariffs)  # compile the tables outside the timing, as a warm process has
    return taps, tariffs


def assert_legs_equal(fast: pa.Table, ref: pa.Table) -> None:
    """Leg tables equal in schema, order and every field; the message names the first field."""
    if fast.schema != ref.schema:
        raise AssertionError(f"leg schemas differ:\n{fast.schema}\nvs\n{ref.schema}")
    if fast.num_rows != ref.num_rows:
        raise AssertionError(f"{fast.num_rows} fast legs, {ref.num_rows} reference legs")
    if fast.equals(ref):
        return
    f_legs, r_legs = legs_from_table(fast), legs_from_table(ref)
    for i, (a, b) in enumerate(zip(f_legs, r_legs, strict=True)):
        if a != b:
            raise AssertionError(f"leg {i} differs: {_field_diff(a, b)}\nfast {a}\nref  {b}")
    raise AssertionError("leg tables differ in a way the Leg values do not show")


def _field_diff(a: Leg, b: Leg) -> str:
    return ", ".join(f"{f.name}: {getattr(a, f.name)} != {getattr(b, f.name)}"
                     for f in fields(Leg) if getattr(a, f.name) != getattr(b, f.name))


def _run_stage_fast(inp: tuple[pa.Table, TariffSet]) -> pa.Table:
    return match_and_price_fast(*inp)


def _run_stage_serial(inp: tuple[pa.Table, TariffSet]) -> pa.Table:
    taps, tariffs = inp
    return match_and_price_chunks(tap_chunks(taps), kernel_tables(tariffs), threads=1)


def _run_stage_reference(inp: tuple[pa.Table, TariffSet]) -> pa.Table:
    return reference.match_and_price(*inp)


KERNELS: tuple[KernelCase, ...] = (
    KernelCase(
        name="sort", spec="SPEC §5 order; LEG_SORT_KEYS",
        prepare=_sort_input,
        fast=lambda keys: sort_taps(*keys),
        reference=lambda keys: sort_taps_naive(*keys),
        assert_equal=_assert_same_order,
        reference_max_taps=None,  # np.lexsort finishes at any size: the baseline to beat
    ),
    KernelCase(
        name="match", spec="SPEC §5",
        prepare=_match_input, fast=match_fast, reference=match_reference,
        assert_equal=_assert_same_matches, reference_max_taps=20_000,
    ),
    KernelCase(
        name="match_and_price", spec="SPEC §5-§6",
        prepare=_stage_input, fast=_run_stage_fast, reference=_run_stage_reference,
        assert_equal=assert_legs_equal, reference_max_taps=20_000,
    ),
    KernelCase(  # the same on one thread: what one core does (the default uses every CPU)
        name="match_and_price_1thread", spec="SPEC §5-§6",
        prepare=_stage_input, fast=_run_stage_serial, reference=_run_stage_reference,
        assert_equal=assert_legs_equal, reference_max_taps=0,  # the twin is timed above
    ),
)
KERNELS_BY_NAME: dict[str, KernelCase] = {case.name: case for case in KERNELS}
assert len(KERNELS_BY_NAME) == len(KERNELS), "kernel case names must be unique"


# ---------------------------------------------------------------------------------------------
# risk signals (SPEC v1.2 §10): kept apart from KERNELS until tests/test_kernel_equality.py
# gives them example counts; tests/test_risk_kernels.py and bench/test_bench_risk.py run them.


@dataclass(frozen=True)
class RiskInput:
    cols: dict[str, np.ndarray]  # signal_columns, balance_fen filled in (see _risk_input)
    lat: np.ndarray
    lon: np.ndarray
    earlier: list[dict[str, np.ndarray]]  # stored card keys of "earlier days" (replays)


def _risk_input(taps: pa.Table, tariffs: TariffSet) -> RiskInput:
    """The day's signal columns and coordinates; a day without balances gets synthetic ones
    (some consistent, most not) so BALANCE_BREAK is exercised, and every third tap's card key
    reappears among the earlier keys, split over two chunks, so replays are too."""
    from clearing.risk import signal_columns, stop_coordinates, tap_coordinates

    cols = signal_columns(taps)
    if not (cols["balance_fen"] >= 0).any():
        seq = cols["card_seq"].astype(np.int64)
        synthetic = (cols["card_id"] % np.uint64(997)).astype(np.int64) * 1000 - 150 * seq
        cols["balance_fen"] = np.where(cols["debited_fen"] >= 0, synthetic, -1)
    lat, lon = tap_coordinates(np.asarray(taps.column("stop").to_numpy()), stop_coordinates())
    pick = np.arange(0, len(cols["card_id"]), 3)
    keys = {c: cols[c][pick] for c in ("issuer", "card_id", "card_seq")}
    half = len(pick) // 2
    earlier = [{c: v[:half] for c, v in keys.items()}, {c: v[half:] for c, v in keys.items()}]
    return RiskInput(cols, lat, lon, earlier)


def _risk_fast(inp: RiskInput) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    from clearing.risk import card_signals, replay_hits

    return card_signals(inp.cols, inp.lat, inp.lon), replay_hits(inp.cols, inp.earlier)


def _risk_reference(inp: RiskInput) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    from clearing import risk_reference

    return (risk_reference.card_signals(inp.cols, inp.lat, inp.lon),
            risk_reference.replay_hits(inp.cols, inp.earlier))


def _assert_same_signals(fast: tuple[np.ndarray, list[tuple[int, int, int]]],
                         ref: tuple[np.ndarray, list[tuple[int, int, int]]]) -> None:
    if not np.array_equal(fast[0], ref[0]):
        f, r = set(map(tuple, fast[0].tolist())), set(map(tuple, ref[0].tolist()))
        raise AssertionError(f"card signals differ: {len(fast[0])} fast, {len(ref[0])} "
                             f"reference; only fast {sorted(f - r)[:3]}, only reference "
                             f"{sorted(r - f)[:3]}")
    if fast[1] != ref[1]:
        raise AssertionError(f"replay hits differ: {len(fast[1])} fast, {len(ref[1])} reference")


def _mismatch_input(taps: pa.Table, tariffs: TariffSet) -> pa.Table:
    return match_and_price_fast(taps, tariffs)


def _mismatch_reference(legs: pa.Table) -> list[tuple[int, int, int, int]]:
    from clearing import risk_reference

    return risk_reference.mismatch_devices(legs_from_table(legs))


def _assert_same_devices(fast: list[tuple[int, int, int, int]],
                         ref: list[tuple[int, int, int, int]]) -> None:
    if fast != ref:
        raise AssertionError(f"DEBIT_MISMATCH devices differ: fast {fast[:3]}, ref {ref[:3]}")


def _mismatch_fast(legs: pa.Table) -> list[tuple[int, int, int, int]]:
    from clearing.risk import mismatch_devices

    return mismatch_devices(legs)


RISK_KERNELS: tuple[KernelCase, ...] = (
    KernelCase(
        name="risk_signals", spec="SPEC §10 (replay, backwards, balance, travel)",
        prepare=_risk_input, fast=_risk_fast, reference=_risk_reference,
        assert_equal=_assert_same_signals, reference_max_taps=1_000_000,
    ),
    KernelCase(
        name="risk_debit_mismatch", spec="SPEC §10 (DEBIT_MISMATCH)",
        prepare=_mismatch_input, fast=_mismatch_fast, reference=_mismatch_reference,
        assert_equal=_assert_same_devices, reference_max_taps=1_000_000,
    ),
)
RISK_KERNELS_BY_NAME: dict[str, KernelCase] = {case.name: case for case in RISK_KERNELS}
