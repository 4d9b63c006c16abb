"""The fare rule primitives (tariffs.rules) give one answer from Python and from numba, and it is
the SPEC's (§1 apply_rate, §6 version in force, §6.4 transfer steps, §6.5 daily cap)."""

from __future__ import annotations

import bisect
import datetime as dt
import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from clearing import kernels
from tariffs import compile as tariff_compile
from tariffs import fares, rules
from tariffs.model import ProductPrice, TransferStep
from tariffs.rules import (
    NO_CAP,
    PRICE_FIXED,
    PRICE_RATE,
    STEP_DIFFERENCE,
    STEP_FREE,
    STEP_OFF_FEN,
    STEP_PAY_RATE,
    apply_rate,
    capped_fare,
    product_price_fare,
    transfer_step_fare,
    version_in_force,
)

FEN = st.integers(0, 10_000_000)  # the tariff bound of any amount (tariffs.model.Fen)
BP = st.integers(0, 10_000)  # SPEC §1
# rates whose results often land on half a fen (an odd amount at 5000 bp), where rounding shows
HALVING_BP = st.one_of(st.sampled_from([0, 2500, 5000, 7500, 10_000]), BP)
SPENT = st.integers(0, 1_000_000_000)  # a card's computed fares of one day in one area
CAPS = st.one_of(st.just(NO_CAP), FEN)
EPOCH = dt.date(1970, 1, 1)
i64 = np.int64


# Tiny jitted callers: numba compiles each primitive into them, as it does into the kernels, on
# int64 arguments (the compiled version table is int32, as tariffs.compile makes it).
@njit
def apply_rate_jit(amount, bp):  # type: ignore[no-untyped-def]
    return apply_rate(amount, bp)


@njit
def transfer_step_fare_jit(kind, value, f, base, previous_f):  # type: ignore[no-untyped-def]
    return transfer_step_fare(kind, value, f, base, previous_f)


@njit
def capped_fare_jit(fare, cap, spent):  # type: ignore[no-untyped-def]
    return capped_fare(fare, cap, spent)


@njit
def product_price_fare_jit(kind, value, base):  # type: ignore[no-untyped-def]
    return product_price_fare(kind, value, base)


@njit
def version_in_force_jit(valid_from, start, stop, day):  # type: ignore[no-untyped-def]
    return version_in_force(valid_from, start, stop, day)


@st.composite
def transfer_steps(draw: st.DrawFn) -> tuple[int, int]:
    """(kind, value) as a compiled step holds it: off_fen's fen, pay_rate's bp, else 0."""
    kind = draw(st.sampled_from([STEP_FREE, STEP_OFF_FEN, STEP_PAY_RATE, STEP_DIFFERENCE]))
    value = draw(FEN) if kind == STEP_OFF_FEN else draw(BP) if kind == STEP_PAY_RATE else 0
    return kind, value


def half_up(x: Fraction) -> int:
    """An exact amount rounded half up to the fen."""
    return math.floor(x + Fraction(1, 2))


def day(text: str) -> int:
    return (dt.date.fromisoformat(text) - EPOCH).days


# -- apply_rate (SPEC §1) -------------------------------------------------------------------------


@settings(deadline=None)
@given(amount=FEN, bp=HALVING_BP)
def test_apply_rate_is_the_discounted_amount_rounded_half_up(amount: int, bp: int) -> None:
    got = apply_rate(amount, bp)
    assert got == half_up(Fraction(amount * (10_000 - bp), 10_000))
    assert 0 <= got <= amount
    assert apply_rate_jit(i64(amount), i64(bp)) == got


def test_apply_rate_worked_cases() -> None:
    assert apply_rate(200, 2000) == 160  # SPEC §6.3: Wuhan Tong on Wuhan buses, 200 -> 160
    assert apply_rate(3, 5000) == 2  # 1.5 fen: a half rounds up
    assert apply_rate(1, 5001) == 0  # 0.4999 fen rounds down
    assert apply_rate(777, 0) == 777 and apply_rate(777, 10_000) == 0
    assert apply_rate_jit(i64(3), i64(5000)) == 2


# -- transfer steps (SPEC §6.4) --------------------------------------------------------------------


@settings(deadline=None)
@given(step=transfer_steps(), f=FEN, base=FEN, previous_f=FEN)
def test_a_transfer_step_gives_one_fare_in_both_tiers(step: tuple[int, int], f: int, base: int,
                                                      previous_f: int) -> None:
    kind, value = step
    got = transfer_step_fare(kind, value, f, base, previous_f)
    assert 0 <= got <= f  # a transfer never costs more than the leg alone
    assert transfer_step_fare_jit(i64(kind), i64(value), i64(f), i64(base), i64(previous_f)) == got


@settings(deadline=None)
@given(f=FEN, base=FEN, previous_f=FEN, x=FEN, bp=BP)
def test_each_step_kind_is_the_spec_wording(f: int, base: int, previous_f: int, x: int,
                                           bp: int) -> None:
    assert transfer_step_fare(STEP_FREE, 0, f, base, previous_f) == 0
    assert transfer_step_fare(STEP_OFF_FEN, x, f, base, previous_f) == max(0, f - x)
    # pay_rate(bp) pays bp of its base fare, rounded half up, never more than f
    assert transfer_step_fare(STEP_PAY_RATE, bp, f, base, previous_f) == min(
        f, half_up(Fraction(base * bp, 10_000)))
    # difference (扣高免低): the two-leg chain pays the higher of the two step-3 fares
    assert previous_f + transfer_step_fare(STEP_DIFFERENCE, 0, f, base, previous_f) == max(
        f, previous_f)


def test_transfer_step_worked_cases() -> None:
    # Wuhan 2016 rule, second transfer: pay_rate 6000 bp of base 200, f = 160 -> 120
    assert transfer_step_fare(STEP_PAY_RATE, 6000, 160, 200, 0) == 120
    assert transfer_step_fare(STEP_PAY_RATE, 9000, 320, 400, 0) == 320  # 360 > f: pays f
    assert transfer_step_fare(STEP_OFF_FEN, 100, 150, 200, 0) == 50
    assert transfer_step_fare(STEP_OFF_FEN, 200, 150, 200, 0) == 0
    assert transfer_step_fare(STEP_DIFFERENCE, 0, 300, 300, 200) == 100  # the pair pays 300
    assert transfer_step_fare(STEP_DIFFERENCE, 0, 150, 150, 200) == 0  # the pair pays 200
    assert transfer_step_fare(STEP_FREE, 0, 300, 300, 200) == 0
    assert transfer_step_fare_jit(i64(STEP_PAY_RATE), i64(6000), i64(160), i64(200), i64(0)) == 120


def test_the_model_tier_maps_each_step_onto_the_rule() -> None:
    """tariffs.fares.transfer_fare prices a TransferStep model (the reference's path)."""
    assert fares.transfer_fare(TransferStep(kind="free"), 160, 200, 0) == 0
    assert fares.transfer_fare(TransferStep(kind="off_fen", fen=100), 150, 200, 0) == 50
    assert fares.transfer_fare(TransferStep(kind="pay_rate", bp=6000), 160, 200, 0) == 120
    assert fares.transfer_fare(TransferStep(kind="difference"), 300, 300, 200) == 100
    assert fares.transfer_step_args(TransferStep(kind="off_fen", fen=0)) == (STEP_OFF_FEN, 0)
    assert set(fares.STEP_KINDS) == {"free", "off_fen", "pay_rate", "difference"}
    assert {k.name: int(k) for k in tariff_compile.StepKind} == {
        "FREE": STEP_FREE, "OFF_FEN": STEP_OFF_FEN, "PAY_RATE": STEP_PAY_RATE,
        "DIFFERENCE": STEP_DIFFERENCE}


# -- product price (SPEC §6.3) --------------------------------------------------------------------


@settings(deadline=None)
@given(kind=st.sampled_from([PRICE_RATE, PRICE_FIXED]), value=FEN, base=FEN, bp=BP)
def test_a_product_price_gives_one_fare_in_both_tiers(kind: int, value: int, base: int,
                                                      bp: int) -> None:
    value = bp if kind == PRICE_RATE else value
    want = apply_rate(base, value) if kind == PRICE_RATE else min(base, value)  # SPEC §6.3
    assert product_price_fare(kind, value, base) == want
    assert product_price_fare_jit(i64(kind), i64(value), i64(base)) == want


def test_the_model_tier_maps_each_price_onto_the_rule() -> None:
    """tariffs.fares.price_fare prices a ProductPrice model (fares, gtfs and show use it)."""
    rate = ProductPrice(mode="bus", product="student", rate_bp=5000)
    fixed = ProductPrice(mode="bus", product="senior", fixed_fen=100)
    assert fares.price_args(rate) == (PRICE_RATE, 5000)
    assert fares.price_args(fixed) == (PRICE_FIXED, 100)
    assert fares.price_fare(rate, 201) == 101  # 100.5 rounds half up
    assert fares.price_fare(fixed, 200) == 100 and fares.price_fare(fixed, 80) == 80
    assert {k.name: int(k) for k in tariff_compile.PriceKind} == {
        "NONE": rules.PRICE_NONE, "RATE": PRICE_RATE, "FIXED": PRICE_FIXED}


# -- daily cap (SPEC §6.5) -------------------------------------------------------------------------


@settings(deadline=None)
@given(fare=FEN, cap=CAPS, spent=SPENT)
def test_the_cap_gives_one_fare_in_both_tiers(fare: int, cap: int, spent: int) -> None:
    got = capped_fare(fare, cap, spent)
    assert got == (fare if cap == NO_CAP else min(fare, max(0, cap - spent)))
    assert capped_fare_jit(i64(fare), i64(cap), i64(spent)) == got


@settings(deadline=None)
@given(fares_=st.lists(st.integers(0, 2_000), max_size=12), cap=CAPS)
def test_a_day_under_a_cap_pays_at_most_the_cap(fares_: list[int], cap: int) -> None:
    """S runs over the day's legs: together they pay min(their fares, C), none more than its own."""
    spent = 0
    for fare in fares_:
        computed = capped_fare(fare, cap, spent)
        assert 0 <= computed <= fare
        spent += computed
    assert spent == (sum(fares_) if cap == NO_CAP else min(sum(fares_), cap))


def test_cap_worked_cases() -> None:
    assert capped_fare(200, 600, 500) == 100  # the cap's last 100 fen
    assert capped_fare(200, 600, 700) == 0  # S may exceed C (legs of other products): 0
    assert capped_fare(200, NO_CAP, 10_000) == 200  # uncapped
    assert fares.capped_fare(200, None, 10_000) == 200  # the model tier's None is NO_CAP
    assert fares.capped_fare(200, 600, 500) == 100
    assert tariff_compile.NO_CAP == NO_CAP
    assert capped_fare_jit(i64(200), i64(600), i64(500)) == 100


# -- version in force (SPEC §6) -----------------------------------------------------------------


@st.composite
def version_ranges(draw: st.DrawFn) -> tuple[np.ndarray, int, int, int]:
    """int32 valid_from days of several areas' versions back to back, one area's [start, stop)
    (each area ascending, as tariffs.compile lays them out), and a day to look up."""
    areas = draw(st.lists(st.lists(st.integers(16_000, 21_000), unique=True, max_size=4)
                          .map(sorted), min_size=1, max_size=3))
    valid_from = np.array([d for area in areas for d in area], dtype=np.int32)
    a = draw(st.integers(0, len(areas) - 1))
    start = sum(len(area) for area in areas[:a])
    stop = start + len(areas[a])
    near = [d + delta for d in areas[a] for delta in (-1, 0, 1)]  # edges: the day before, on, after
    return valid_from, start, stop, draw(st.one_of(st.sampled_from(near or [0]),
                                                  st.integers(15_000, 22_000)))


@settings(deadline=None)
@given(case=version_ranges())
def test_the_version_in_force_is_the_last_started_one(case: tuple[np.ndarray, int, int, int]
                                                      ) -> None:
    valid_from, start, stop, d = case
    got = version_in_force(valid_from, start, stop, d)
    started = bisect.bisect_right(valid_from[start:stop].tolist(), d)  # versions with from <= d
    assert got == (start + started - 1 if started else -1)
    assert version_in_force_jit(valid_from, i64(start), i64(stop), i64(d)) == got


def test_version_in_force_worked_cases() -> None:
    # Two areas back to back: area 0 has versions from 2016-01-01 and 2020-07-01, area 1 one.
    valid_from = np.array([day("2016-01-01"), day("2020-07-01"), day("2018-03-01")], np.int32)
    assert version_in_force(valid_from, 0, 2, day("2015-12-31")) == -1  # nothing yet
    assert version_in_force(valid_from, 0, 2, day("2016-01-01")) == 0  # valid_from is inclusive
    assert version_in_force(valid_from, 0, 2, day("2020-06-30")) == 0
    assert version_in_force(valid_from, 0, 2, day("2020-07-01")) == 1  # until the next one's
    assert version_in_force(valid_from, 0, 2, day("2030-01-01")) == 1
    assert version_in_force(valid_from, 2, 3, day("2019-01-01")) == 2  # area 1's own range
    assert version_in_force(valid_from, 2, 2, day("2019-01-01")) == -1  # an area with none
    assert version_in_force([10, 20], 0, 2, 15) == 0  # plain Python sequences too
    assert version_in_force_jit(valid_from, i64(0), i64(2), i64(day("2020-07-01"))) == 1


# -- one implementation --------------------------------------------------------------------------


def test_the_kernels_and_the_models_call_the_same_functions() -> None:
    """The fast path and the model tier hold no copy of a rule: their names are the rules'."""
    assert kernels.apply_rate is rules.apply_rate is fares.apply_rate
    assert kernels.product_price_fare is rules.product_price_fare
    assert kernels.transfer_step_fare is rules.transfer_step_fare
    assert kernels.capped_fare is rules.capped_fare
    assert kernels.version_in_force is rules.version_in_force
    for retired in ("transfer_fare", "version_of"):
        assert not hasattr(kernels, retired)


def test_the_tariff_package_imports_no_numba() -> None:
    """The rules are plain Python; only clearing.kernels registers them with numba, so a tariff
    command does not pay numba's import (about 0.6 s)."""
    modules = ("tariffs.load", "tariffs.rules", "tariffs.fares", "tariffs.compile",
               "tariffs.show", "tariffs.gtfs", "tariffs.diff", "tariffs.cli")
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(sorted(m for m in sys.modules if m.split('.')[0] == 'numba'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
