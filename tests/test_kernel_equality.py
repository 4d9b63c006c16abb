"""The fast path equals the reference (SPEC §9): every kernel of the registry, field by field.

Days come from QA's adversarial strategies (``tongka.testing.strategies``: same-millisecond taps,
orphan exits, cross-network exits, overtime, same-station exits, window and journey edges,
every issuer, product and medium, stored-value / account / mixed debits, days straddling a
version change and the 04:00 boundary) and from ``bus_chains`` below (long chains at the
window edge, caps reached mid-chain). Tariffs are the default set, the kernel fixture set
(``tests/fixtures/tariffs_kernel``: every transfer-step kind, caps with every step, a matrix
network, visitors, several versions on consecutive days) and hypothesis-varied sets.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.errors import InputError
from clearing.fast import PricingError, match_and_price_chunks, match_and_price_fast, tap_chunks
from clearing.kernel_tables import kernel_tables
from clearing.legs import LEG_SCHEMA
from clearing.reference import match_and_price
from clearing.service_day import MINUTE_MS, day_bounds_ms
from clearing.taps import ACCOUNT_BASED, TAP_SCHEMA, TapType
from tariffs.load import TariffSet, load_tariff_set
from tariffs.registry import load_registry
from tariffs.vocab import Media, Product
from tongka.testing.kernel_registry import KERNELS, KERNELS_BY_NAME, KernelCase, assert_legs_equal
from tongka.testing.strategies import days, service_days, tariff_sets, world

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "tariffs_kernel"
DEFAULT = load_tariff_set()
KERNEL_SET = load_tariff_set(FIXTURE_DIR, load_registry())

# Examples per registry case; match_and_price is the SPEC §9 property "the fast path equals
# the reference", run on at least 2000 generated days.
# Examples per case in the default run; the deep profile (make test-deep) runs ten times as many.
EXAMPLES = {"sort": 300, "match": 250, "match_and_price": 600, "match_and_price_1thread": 200}
SCALE = 10 if os.environ.get("TONGKA_HYPOTHESIS_PROFILE") == "deep" else 1
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


def tariff_choices() -> st.SearchStrategy[TariffSet]:
    """The two fixed sets mostly; a hypothesis-varied one (slow to draw) every sixth day."""
    return st.sampled_from((0, 1, 1, 0, 1, 2)).flatmap(
        lambda k: (st.just(DEFAULT), st.just(KERNEL_SET),
                   st.one_of(tariff_sets(KERNEL_SET), tariff_sets(DEFAULT)))[k])


# ---------------------------------------------------------------------------------------------
# bus_chains: the transfer and cap edges, dense


@st.composite
def bus_chains(draw: st.DrawFn, tariffs: TariffSet) -> pa.Table:
    """One or two cards riding many flat lines of one area, boardings at the window edges."""
    w = world(tariffs.registry)
    area = draw(st.sampled_from([a for a in w.areas if w.flat_lines[a]]))
    day = draw(service_days(tariffs))
    start, end = day_bounds_ms(day)
    version = tariffs.version_for(area, day)
    window = (version.transfer.window_minutes if version.transfer else 60) * MINUTE_MS
    rows = []
    for card in range(draw(st.integers(1, 2))):
        issuer = draw(st.sampled_from(w.issuers))
        product = int(draw(st.sampled_from(Product)))
        media = int(draw(st.sampled_from(Media)))
        card_id = draw(st.sampled_from((7, 2**64 - 1, 1 << 40)))  # ids shared by the cards
        ts = draw(st.integers(start, start + 20 * 3600_000))
        first = ts
        debit_mode = draw(st.sampled_from(("account", "stored", "mixed")))
        for k in range(draw(st.integers(2, 9))):
            if k:
                anchor = draw(st.sampled_from((first, ts)))  # first boarding or previous tap
                gap = draw(st.sampled_from((0, 1, -1, window, window + 1, window - 1, 60_000)))
                ts = max(ts, min(end - 1, anchor + gap))
                if draw(st.integers(0, 4)) == 0:
                    first = ts  # a fresh chain start, as far as the drawing is concerned
            line = draw(st.sampled_from(w.flat_lines[area]))
            stop = draw(st.sampled_from(line.stops)) if line.stops else 0
            if debit_mode == "account":
                debit = ACCOUNT_BASED
            elif debit_mode == "stored":
                debit = draw(st.sampled_from((0, 100, 160, 200)))
            else:
                debit = draw(st.sampled_from((ACCOUNT_BASED, 0, 160)))
            rows.append({
                "operator": line.operator, "device_id": draw(st.integers(1, 50)),
                "device_seq": len(rows), "card_id": card_id, "card_seq": 10 * k + card,
                "issuer": issuer, "product": product, "media": media, "ts_ms": ts,
                "city": tariffs.registry.stops[stop].city if stop else area,
                "line": line.line, "stop": stop, "tap_type": int(TapType.FLAT),
                "debited_fen": debit,
            })
    table = pa.Table.from_pylist(rows, schema=TAP_SCHEMA)
    return _unique_card_keys(table)


def _unique_card_keys(table: pa.Table) -> pa.Table:
    """Keep the first tap of each card key (issuer, card_id, card_seq): SPEC §4 de-duplication."""
    keys = list(zip(table.column("issuer").to_pylist(), table.column("card_id").to_pylist(),
                    table.column("card_seq").to_pylist(), strict=True))
    seen: set[tuple[int, int, int]] = set()
    keep = []
    for i, key in enumerate(keys):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return table.take(pa.array(keep, type=pa.int64()))


@st.composite
def priced_days(draw: st.DrawFn) -> tuple[TariffSet, pa.Table]:
    """A tariff set and a day (or several concatenated days) of accepted taps for it."""
    tariffs = draw(tariff_choices())
    parts = [draw(st.one_of(days(tariffs, max_cards=3), days(tariffs, max_cards=3),
                            bus_chains(tariffs)))
             for _ in range(draw(st.sampled_from((1, 1, 1, 1, 1, 2, 3))))]
    return tariffs, _unique_card_keys(pa.concat_tables(parts))


def _check(case: KernelCase, tariffs: TariffSet, taps: pa.Table) -> None:
    inp = case.prepare(taps, tariffs)
    case.assert_equal(case.fast(inp), case.reference(inp))


@pytest.mark.parametrize("case", KERNELS, ids=[c.name for c in KERNELS])
def test_kernel_equals_its_reference_twin(case: KernelCase) -> None:
    @settings(max_examples=EXAMPLES[case.name] * SCALE, deadline=None,
              suppress_health_check=HEALTH)
    @given(priced_days())
    def check(drawn: tuple[TariffSet, pa.Table]) -> None:
        _check(case, *drawn)

    check()


@settings(max_examples=300, deadline=None, suppress_health_check=HEALTH)
@given(priced_days(), st.integers(2, 5))
def test_threaded_fast_path_equals_reference(drawn: tuple[TariffSet, pa.Table],
                                             threads: int) -> None:
    """Cut into parts at card-day boundaries, sorted and priced on threads: the same legs."""
    tariffs, taps = drawn
    fast = match_and_price_chunks(tap_chunks(taps), kernel_tables(tariffs), threads=threads)
    assert_legs_equal(fast, match_and_price(taps, tariffs))


def test_every_case_has_an_example_count() -> None:
    assert set(EXAMPLES) == set(KERNELS_BY_NAME)


# ---------------------------------------------------------------------------------------------
# Fixed days: nothing to draw, the shapes hypothesis might reach late


def test_empty_day_gives_an_empty_leg_table() -> None:
    empty = TAP_SCHEMA.empty_table()
    out = match_and_price_fast(empty, DEFAULT)
    assert out.schema == LEG_SCHEMA and out.num_rows == 0
    assert_legs_equal(out, match_and_price(empty, DEFAULT))


def _tap(**fields: int) -> dict[str, int]:
    base = {"operator": 101, "device_id": 1, "device_seq": 1, "card_id": 5, "card_seq": 1,
            "issuer": 1, "product": 0, "media": 0, "city": 420100, "line": 1, "stop": 0,
            "tap_type": int(TapType.FLAT), "debited_fen": ACCOUNT_BASED,
            "ts_ms": day_bounds_ms(dt.date(2021, 3, 1))[0] + 3600_000}
    base.update(fields)
    return base


def test_multi_chunk_input_and_extra_columns_are_fine() -> None:
    a = pa.Table.from_pylist([_tap(card_seq=1)], schema=TAP_SCHEMA)
    b = pa.Table.from_pylist([_tap(card_seq=2, ts_ms=_tap()["ts_ms"] + 60_000)], schema=TAP_SCHEMA)
    taps = pa.concat_tables([a, b])
    assert taps.column("card_id").num_chunks == 2
    taps = taps.append_column("note", pa.array(["x", "y"]))
    assert_legs_equal(match_and_price_fast(taps, DEFAULT),
                      match_and_price(taps.drop_columns(["note"]), DEFAULT))


@pytest.mark.parametrize(("tap", "code"), [
    ({"line": 9999}, "UNKNOWN_LINE"),  # a line the operator does not run
    ({"operator": 102, "line": 1, "stop": 100101}, "LINE_NOT_PRICED"),  # FLAT on the metro
    ({"tap_type": int(TapType.ENTRY)}, "NETWORK_NOT_PRICED"),  # ENTRY on a flat line
    ({"ts_ms": day_bounds_ms(dt.date(2000, 1, 1))[0]}, "NO_VERSION"),  # before any tariff
])
def test_unpriceable_taps_raise_in_both_twins(tap: dict[str, int], code: str) -> None:
    taps = pa.Table.from_pylist([_tap(**tap)], schema=TAP_SCHEMA)
    with pytest.raises(PricingError) as fast_error:
        match_and_price_fast(taps, DEFAULT)
    assert fast_error.value.code == code
    assert "row 0" in str(fast_error.value)
    with pytest.raises((KeyError, LookupError)):
        match_and_price(taps, DEFAULT)


def test_wrong_dtype_is_refused_with_a_cast_hint() -> None:
    taps = pa.Table.from_pylist([_tap()], schema=TAP_SCHEMA)
    bad = taps.set_column(taps.schema.get_field_index("issuer"), "issuer",
                          pa.array([1], type=pa.int64()))
    with pytest.raises(InputError, match=r"issuer.*int64.*uint16.*cast") as err:
        match_and_price_fast(bad, DEFAULT)
    assert err.value.code == "TAPS_WRONG_TYPE"


def test_missing_column_and_nulls_are_refused() -> None:
    taps = pa.Table.from_pylist([_tap()], schema=TAP_SCHEMA)
    with pytest.raises(InputError, match="no column 'stop'") as err:
        match_and_price_fast(taps.drop_columns(["stop"]), DEFAULT)
    assert err.value.code == "TAPS_MISSING_COLUMN"
    nullable = pa.schema([f.with_nullable(True) for f in TAP_SCHEMA])
    with_null = pa.Table.from_pylist([_tap(), {**_tap(card_seq=2), "stop": None}],
                                     schema=nullable)
    with pytest.raises(InputError, match="1 nulls") as err:
        match_and_price_fast(with_null, DEFAULT)
    assert err.value.code == "TAPS_NULL"
    with pytest.raises(InputError, match="pyarrow Table"):
        match_and_price_fast({"card_id": np.zeros(1)}, DEFAULT)  # type: ignore[arg-type]
