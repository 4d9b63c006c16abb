"""SPEC v1.2 §10 risk signals: each rule on a short tap script, the kernels against their twin,
and precision and recall on generated days with planted cases (tongka.testing.generate_risk)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing import risk, risk_reference
from clearing.errors import InputError
from clearing.fast import match_and_price_fast, match_and_price_sorted, tap_chunks
from clearing.legs import DebitKind, LegStatus, legs_from_table
from clearing.risk import (
    EarlierKeys,
    RiskKind,
    card_signals,
    day_signals,
    mismatch_devices,
    record_signals,
    replay_hits,
    stop_coordinates,
)
from clearing.risk_reference import haversine_metres
from clearing.service_day import local_ms
from clearing.sorting import W_CARD, W_ROW, rec_card_seq, rec_issuer, sort_tap_records
from clearing.taps import TAP_COLUMNS
from clearing.tapstore import KEY_COLUMNS
from tariffs.load import load_tariff_set
from tongka.testing.generate import generate
from tongka.testing.generate_risk import plant, truth_of, with_balances
from tongka.testing.kernel_registry import RISK_KERNELS, RISK_KERNELS_BY_NAME, KernelCase, RiskInput
from tongka.testing.strategies import days

T = load_tariff_set()
DAY = dt.date(2026, 11, 24)
COORDS = stop_coordinates()
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]


def cols(rows: list[dict]) -> dict[str, np.ndarray]:
    """Signal columns of a tap script: (card, ts, seq, debit, balance) per tap."""
    return {
        "card_id": np.array([r.get("card", 1) for r in rows], np.uint64),
        "issuer": np.array([r.get("issuer", 1) for r in rows], np.uint16),
        "ts_ms": np.array([r["ts"] for r in rows], np.int64),
        "card_seq": np.array([r["seq"] for r in rows], np.int32),
        "debited_fen": np.array([r.get("debit", 200) for r in rows], np.int32),
        "balance_fen": np.array([r.get("bal", -1) for r in rows], np.int64),
    }


def signals(rows: list[dict], lat: list[float] | None = None,
            lon: list[float] | None = None) -> list[tuple[int, int, int]]:
    """Both twins on the script; they must agree, and the rows are returned."""
    n = len(rows)
    la = np.array(lat if lat is not None else [np.nan] * n, dtype=np.float64)
    lo = np.array(lon if lon is not None else [np.nan] * n, dtype=np.float64)
    c = cols(rows)
    fast, ref = card_signals(c, la, lo), risk_reference.card_signals(c, la, lo)
    assert fast.tolist() == ref.tolist()
    return [tuple(x) for x in fast.tolist()]


B, BR, T_, RE = (int(RiskKind.CARD_SEQ_BACKWARDS), int(RiskKind.BALANCE_BREAK),
                 int(RiskKind.IMPOSSIBLE_TRAVEL), int(RiskKind.CARD_SEQ_REPLAY))


# ---------------------------------------------------------------------------------------------
# CARD_SEQ_BACKWARDS


def test_a_counter_going_back_is_one_signal_per_backward_tap() -> None:
    rows = [{"ts": 0, "seq": 10}, {"ts": 1, "seq": 12}, {"ts": 2, "seq": 11}, {"ts": 3, "seq": 5}]
    assert signals(rows) == [(B, 1, 2), (B, 2, 3)]


def test_account_based_taps_are_not_compared_for_counters() -> None:
    # the QR nonce of an account-based tap is not a purse counter (SPEC §10: stored-value only)
    rows = [{"ts": 0, "seq": 10}, {"ts": 1, "seq": 3, "debit": -1}, {"ts": 2, "seq": 11}]
    assert signals(rows) == []


def test_two_cards_never_compare_counters() -> None:
    rows = [{"ts": 0, "seq": 10, "card": 1}, {"ts": 1, "seq": 3, "card": 2},
            {"ts": 2, "seq": 4, "card": 1, "issuer": 2}]
    assert signals(rows) == []


# ---------------------------------------------------------------------------------------------
# BALANCE_BREAK


def test_consecutive_counters_must_be_the_debit_apart() -> None:
    ok = [{"ts": 0, "seq": 7, "bal": 1000}, {"ts": 1, "seq": 8, "debit": 200, "bal": 800}]
    raised = [{"ts": 0, "seq": 7, "bal": 1000}, {"ts": 1, "seq": 8, "debit": 200, "bal": 900}]
    assert signals(ok) == []
    assert signals(raised) == [(BR, 0, 1)]


def test_a_counter_gap_leaves_room_for_a_top_up() -> None:
    rows = [{"ts": 0, "seq": 7, "bal": 1000}, {"ts": 1, "seq": 9, "bal": 5000}]
    assert signals(rows) == []


def test_consecutive_counters_pair_in_any_time_order() -> None:
    # n+1 tapped first (time order); n later: still compared, evidence (n, n+1)
    rows = [{"ts": 0, "seq": 8, "debit": 200, "bal": 900}, {"ts": 5, "seq": 7, "bal": 1000}]
    assert signals(rows) == [(B, 0, 1), (BR, 1, 0)]


def test_unknown_balances_and_account_taps_raise_no_break() -> None:
    unknown = [{"ts": 0, "seq": 7, "bal": -1}, {"ts": 1, "seq": 8, "bal": 5}]
    account = [{"ts": 0, "seq": 7, "bal": 1000}, {"ts": 1, "seq": 8, "debit": -1, "bal": 5}]
    assert signals(unknown) == []
    assert signals(account) == []


# ---------------------------------------------------------------------------------------------
# IMPOSSIBLE_TRAVEL


def test_haversine_is_whole_metres() -> None:
    # one degree of latitude on the SPEC's sphere: pi * R / 180 = 111,195.08 m
    assert haversine_metres(30.0, 114.0, 31.0, 114.0) == 111_195
    assert haversine_metres(30.0, 114.0, 30.0, 114.0) == 0


def test_faster_than_150_kmh_is_impossible_and_the_bound_is_allowed() -> None:
    lat, lon = [30.0, 30.0], [114.0, 114.1]
    d = haversine_metres(30.0, 114.0, 30.0, 114.1)
    at = [{"ts": 0, "seq": 1, "debit": -1}, {"ts": 24 * d, "seq": 2, "debit": -1}]
    just = [{"ts": 0, "seq": 1, "debit": -1}, {"ts": 24 * d - 1, "seq": 2, "debit": -1}]
    assert signals(at, lat, lon) == []  # exactly 150 km/h
    assert signals(just, lat, lon) == [(T_, 0, 1)]


def test_same_millisecond_at_the_same_stop_is_impossible_too() -> None:
    # t = 0 is included (SPEC §10): d = 0 gives 0 > 0, false; so only a real distance raises
    rows = [{"ts": 0, "seq": 1, "debit": -1}, {"ts": 0, "seq": 2, "debit": -1}]
    assert signals(rows, [30.0, 30.0], [114.0, 114.0]) == []
    assert signals(rows, [30.0, 30.0], [114.0, 114.00002]) == [(T_, 0, 1)]


def test_a_tap_without_coordinates_breaks_the_pairing() -> None:
    rows = [{"ts": 0, "seq": 1, "debit": -1}, {"ts": 1, "seq": 2, "debit": -1},
            {"ts": 2, "seq": 3, "debit": -1}]
    assert signals(rows, [30.0, np.nan, 30.5], [114.0, np.nan, 114.0]) == []
    assert signals(rows, [30.0, 30.0, 30.5], [114.0, 114.0, 114.0]) == [(T_, 1, 2)]


# ---------------------------------------------------------------------------------------------
# DEBIT_MISMATCH: at least 20 mismatching legs and more than 1 % of the device's legs


def legs_of(m: int, n: int, *, account: int = 0) -> pa.Table:
    kind = [int(DebitKind.STORED_VALUE)] * (n - account) + [int(DebitKind.ACCOUNT)] * account
    charged = [150] * m + [200] * (n - m)
    return pa.table({"operator": pa.array([101] * n, pa.uint16()),
                     "board_device_id": pa.array([5] * n, pa.int64()),
                     "status": pa.array([int(LegStatus.FLAT)] * n, pa.uint8()),
                     "debit_kind": pa.array(kind, pa.uint8()),
                     "charged_fen": pa.array(charged, pa.int32()),
                     "computed_fen": pa.array([200] * n, pa.int32())})


@pytest.mark.parametrize(("m", "n", "raised"), [
    (20, 1999, True), (20, 2000, False), (19, 20, False), (20, 20, True), (0, 0, False)])
def test_debit_mismatch_thresholds(m: int, n: int, raised: bool) -> None:
    got = mismatch_devices(legs_of(m, n))
    assert got == ([(101, 5, m, n)] if raised else [])


def test_account_legs_never_mismatch() -> None:
    # account-based legs are charged the computed fare by construction; never "stale"
    assert mismatch_devices(legs_of(25, 25, account=25)) == []


# ---------------------------------------------------------------------------------------------
# CARD_SEQ_REPLAY


def test_a_card_key_seen_days_earlier_is_a_replay_with_all_earlier_taps_as_evidence() -> None:
    taps = generate(DAY, 2000, 3, T, price=match_and_price_fast)
    today = taps.table.filter(taps.accepted_mask)
    first = today.slice(0, 1).to_pylist()[0]
    keys = {c: np.array([first[c], first[c]], dtype=np.asarray(today.column(c).to_numpy()).dtype)
            for c in KEY_COLUMNS}
    keys["device_seq"] = np.array([10**9, 10**9 + 1], np.int64)
    earlier = [EarlierKeys(DAY - dt.timedelta(days=5), keys)]
    got = day_signals(DAY, today, None, earlier=earlier)
    [replay] = got.filter(pa.compute.equal(got.column("kind"), "CARD_SEQ_REPLAY")).to_pylist()
    assert (replay["issuer"], replay["card_id"]) == (first["issuer"], first["card_id"])
    assert [e["device_seq"] for e in replay["evidence"]] == [10**9, 10**9 + 1,
                                                             first["device_seq"]]
    assert replay["evidence"][0]["service_day"] == DAY - dt.timedelta(days=5)


# ---------------------------------------------------------------------------------------------
# the kernels equal their twins (kernel registry), on QA's adversarial days


@pytest.mark.parametrize("case", RISK_KERNELS, ids=[c.name for c in RISK_KERNELS])
def test_risk_kernel_equals_its_reference_twin(case: KernelCase) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=HEALTH)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        taps = data.draw(days(T, max_cards=4))
        inp = case.prepare(taps, T)
        case.assert_equal(case.fast(inp), case.reference(inp))

    check()


def test_risk_kernels_equal_their_twins_on_a_generated_day() -> None:
    g = generate(DAY, 20_000, 5, T, price=match_and_price_fast)
    taps = g.table.filter(g.accepted_mask)
    for case in RISK_KERNELS:
        inp = case.prepare(taps, T)
        case.assert_equal(case.fast(inp), case.reference(inp))


# ---------------------------------------------------------------------------------------------
# precision and recall on generated days


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_a_clean_generated_day_raises_nothing(seed: int) -> None:
    g = generate(DAY, 20_000, seed, T, price=match_and_price_fast)
    taps = with_balances(g.table.filter(g.accepted_mask), seed)
    legs = match_and_price_fast(taps, T)
    assert day_signals(DAY, taps, legs).num_rows == 0


@pytest.mark.parametrize("seed", [7, 11, 23])
def test_every_planted_case_is_found_and_nothing_else(seed: int) -> None:
    g = generate(DAY, 20_000, seed, T, price=match_and_price_fast)
    p = plant(DAY, g.table.filter(g.accepted_mask), seed)
    assert {k for k, _, _ in p.truth} == {k.name for k in RiskKind}  # every kind planted
    legs = match_and_price_fast(p.taps, T)
    earlier = [EarlierKeys(p.earlier_day, {c: p.earlier.column(c).to_numpy()
                                           for c in KEY_COLUMNS})]
    fast = day_signals(DAY, p.taps, legs, earlier=earlier)
    assert truth_of(fast) == set(p.truth)  # recall and precision both 100 %
    assert fast.equals(day_signals(DAY, p.taps, legs, earlier=earlier, reference=True))


def test_the_clone_really_is_far_away() -> None:
    g = generate(DAY, 20_000, 7, T, price=match_and_price_fast)
    p = plant(DAY, g.table.filter(g.accepted_mask), 7)
    legs = match_and_price_fast(p.taps, T)
    travel = day_signals(DAY, p.taps, legs).filter(
        pa.compute.equal(pa.compute.field("kind"), "IMPOSSIBLE_TRAVEL"))
    assert travel.num_rows == 3
    for s in travel.to_pylist():
        assert len(s["evidence"]) == 2
        assert s["ts_ms"] >= local_ms(DAY, 4)


# ---------------------------------------------------------------------------------------------
# pricing has sorted the taps already: its order or its records give the same signals


def sorted_by_pricing(taps: pa.Table) -> np.ndarray:
    """The records pricing sorts the taps into (clearing.fast), one thread."""
    return sort_tap_records(tap_chunks(taps), threads=1)


def risk_input(taps: pa.Table) -> RiskInput:
    """The registry's input: signal columns (synthetic balances when the day has none, so
    BALANCE_BREAK is exercised), coordinates, earlier keys."""
    inp: RiskInput = RISK_KERNELS_BY_NAME["risk_signals"].prepare(taps, T)
    return inp


def reference_of(inp: RiskInput) -> list[tuple[int, int, int]]:
    return risk_reference.card_signals(inp.cols, inp.lat, inp.lon).tolist()


def test_pricing_order_and_records_give_the_reference_signals() -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=HEALTH)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        taps = data.draw(days(T, max_cards=4))
        inp = risk_input(taps)
        records = sorted_by_pricing(taps)
        want = reference_of(inp)
        order = records[:, W_ROW].astype(np.int64)
        assert card_signals(inp.cols, inp.lat, inp.lon, order=order).tolist() == want
        assert record_signals(records, inp.cols["balance_fen"], COORDS).tolist() == want
        _, priced = match_and_price_sorted(taps, T)  # the records pricing itself returns
        assert np.array_equal(priced, records)

    check()


@pytest.mark.parametrize("threads", [1, 2])
def test_small_blocks_on_threads_give_the_reference_signals(
        monkeypatch: pytest.MonkeyPatch, threads: int) -> None:
    # blocks of a few taps: many cuts, cards at every block edge, some longer than a block
    monkeypatch.setattr(risk, "CARD_BLOCK", 5)
    g = generate(DAY, 20_000, 13, T, price=match_and_price_fast)
    taps = plant(DAY, g.table.filter(g.accepted_mask), 13).taps
    inp = risk_input(taps)
    records = sorted_by_pricing(taps)
    want = reference_of(inp)
    assert {k for k, _, _ in want} == {B, BR, T_}  # the day has every per-card kind
    assert card_signals(inp.cols, inp.lat, inp.lon, threads=threads).tolist() == want
    assert record_signals(records, inp.cols["balance_fen"], COORDS,
                          threads=threads).tolist() == want


def test_day_signals_are_the_same_from_a_sort_an_order_or_records() -> None:
    g = generate(DAY, 20_000, 29, T, price=match_and_price_fast)
    p = plant(DAY, g.table.filter(g.accepted_mask), 29)
    # a day read from several files comes in chunks: record rows count across them
    n = p.taps.num_rows
    taps = pa.concat_tables([p.taps.slice(0, n // 3), p.taps.slice(n // 3, n // 3),
                             p.taps.slice(2 * (n // 3))])
    assert taps.column("card_id").num_chunks >= 3
    legs = match_and_price_fast(taps, T)
    earlier = [EarlierKeys(p.earlier_day, {c: p.earlier.column(c).to_numpy()
                                           for c in KEY_COLUMNS})]
    records = sorted_by_pricing(taps)
    alone = day_signals(DAY, taps, legs, earlier=earlier)
    assert truth_of(alone) == set(p.truth)
    assert alone.equals(day_signals(DAY, taps, legs, earlier=earlier, records=records))
    assert alone.equals(day_signals(DAY, taps, legs, earlier=earlier,
                                    order=records[:, W_ROW].astype(np.int64)))
    no_balance = taps.drop_columns(["balance_fen"])  # records path without balances
    assert day_signals(DAY, no_balance, legs, records=records).equals(
        day_signals(DAY, no_balance, legs))


def test_an_order_that_is_not_the_taps_card_order_is_refused() -> None:
    g = generate(DAY, 2000, 3, T, price=match_and_price_fast)
    taps = g.table.filter(g.accepted_mask)
    inp = risk_input(taps)
    records = sorted_by_pricing(taps)
    order = records[:, W_ROW].astype(np.int64)
    twice = order.copy()
    twice[-1] = twice[0]  # one row twice, another never
    swapped = records.copy()
    swapped[[10, 500]] = swapped[[500, 10]]
    wrong_rows = records.copy()
    wrong_rows[:, W_ROW] = 0
    bad_orders = [order[::-1].copy(), twice, order[:-1], order + 1]
    for bad in bad_orders:
        with pytest.raises(InputError) as err:
            card_signals(inp.cols, inp.lat, inp.lon, order=bad)
        assert err.value.code == "RISK_BAD_ORDER"
    for bad_records, balance in [(swapped, None), (wrong_rows, None), (records[:, :4], None),
                                 (records, inp.cols["balance_fen"][:-1])]:
        with pytest.raises(InputError) as err:
            record_signals(bad_records, balance, COORDS)
        assert err.value.code == "RISK_BAD_ORDER"


# ---------------------------------------------------------------------------------------------
# DEBIT_MISMATCH counted per device without sorting the legs; replays behind the filter


def test_mismatch_devices_count_many_devices_like_the_reference() -> None:
    # more devices than the counting table's first size (4096): it must grow and recount
    g = generate(DAY, 20_000, 17, T, price=match_and_price_fast)
    legs = match_and_price_fast(g.table.filter(g.accepted_mask), T)
    n = legs.num_rows
    rng = np.random.default_rng(17)
    # a few busy readers (enough legs to raise it or not) among thousands of quiet ones
    busy = np.arange(n) < 4000
    device = np.where(busy, np.arange(n) % 12, rng.integers(100, 6100, n)) * 7 + 10**12
    stored = np.asarray(legs.column("debit_kind").to_numpy()) == int(DebitKind.STORED_VALUE)
    computed = np.asarray(legs.column("computed_fen").to_numpy())
    share = np.where(busy, (device // 7 % 12) / 60, 0.5)  # busy readers from 0 to 18 %
    charged = np.where(stored & (rng.random(n) < share), computed + 1, computed)
    legs = legs.set_column(legs.column_names.index("board_device_id"), "board_device_id",
                           pa.array(device, pa.int64()))
    legs = legs.set_column(legs.column_names.index("charged_fen"), "charged_fen",
                           pa.array(charged, pa.int32()))
    want = risk_reference.mismatch_devices(legs_from_table(legs))
    assert len({(o, d) for o, d in zip(legs.column("operator").to_pylist(), device.tolist(),
                                       strict=True)}) > 4096
    assert 0 < len(want) < 12  # some busy readers raise it, not all
    assert mismatch_devices(legs) == want


def test_replays_behind_the_filter_equal_the_reference_with_repeated_keys() -> None:
    rng = np.random.default_rng(5)
    n = 5000
    today = {"issuer": rng.integers(1, 4, n).astype(np.uint16),
             "card_id": rng.integers(1, 300, n).astype(np.uint64),
             "card_seq": rng.integers(0, 40, n).astype(np.int32)}  # many repeated keys
    chunks = [{c: rng.permutation(v)[:k] for c, v in today.items()} for k in (1, 700, 3000)]
    chunks.append({c: v + 1000 for c, v in today.items()})  # nothing in common
    assert replay_hits(today, chunks) == risk_reference.replay_hits(today, chunks)


def test_device_keys_of_earlier_days_are_read_only_for_chunks_with_replays() -> None:
    g = generate(DAY, 2000, 7, T, price=match_and_price_fast)
    today = g.table.filter(g.accepted_mask)
    first = today.slice(0, 1).to_pylist()[0]
    asked: list[int] = []

    def reader(tag: int):  # type: ignore[no-untyped-def]
        def read(rows: np.ndarray) -> dict[str, np.ndarray]:
            asked.append(tag)
            return {"operator": np.full(len(rows), 7), "device_id": np.full(len(rows), 8),
                    "device_seq": rows + 100}
        return read

    def chunk(card_seq: int, tag: int) -> EarlierKeys:
        keys = {"issuer": np.array([first["issuer"]], np.uint16),
                "card_id": np.array([first["card_id"]], np.uint64),
                "card_seq": np.array([card_seq], np.int32)}
        return EarlierKeys(DAY - dt.timedelta(days=4), keys, reader(tag))

    got = day_signals(DAY, today, None, earlier=[chunk(first["card_seq"] - 10**6, 1),
                                                 chunk(first["card_seq"], 2)])
    assert asked == [2]
    [replay] = got.filter(pa.compute.equal(got.column("kind"), "CARD_SEQ_REPLAY")).to_pylist()
    assert (replay["evidence"][0]["operator"], replay["evidence"][0]["device_id"]) == (7, 8)


# ---------------------------------------------------------------------------------------------
# clear_day's hand-over: pricing returns its sorted records, the signals read them


def chunked(table: pa.Table, cuts: list[int], balance_cuts: list[int]) -> pa.Table:
    """The table as a day read from several files: its tap columns in pieces at ``cuts``,
    ``balance_fen`` at other cuts (columns of one table need not share their chunks)."""
    def pieces(column: pa.ChunkedArray, at: list[int]) -> pa.ChunkedArray:
        whole = column.combine_chunks()
        bounds = [0, *at, len(whole)]
        return pa.chunked_array([whole[a:b] for a, b in zip(bounds, bounds[1:], strict=False)],
                                type=column.type)

    return pa.table({name: pieces(table.column(name), balance_cuts if name == "balance_fen"
                                  else cuts) for name in table.column_names},
                    schema=table.schema)


def record_rows_name_their_taps(records: np.ndarray, full: pa.Table) -> bool:
    """Each record's W_ROW is the row of ``full`` holding the record's card key."""
    rows = records[:, W_ROW].astype(np.int64)
    n = len(rows)
    keys = {"card_id": records[:, W_CARD],
            "issuer": np.array([rec_issuer(records, i) for i in range(n)]),
            "card_seq": np.array([rec_card_seq(records, i) for i in range(n)])}
    return sorted(rows.tolist()) == list(range(full.num_rows)) and all(
        np.array_equal(np.asarray(full.column(c).to_numpy())[rows].astype(np.int64),
                       keys[c].astype(np.int64)) for c in keys)


@pytest.mark.parametrize("seed", [29, 31])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_clear_day_hands_pricing_records_to_the_signals(
        monkeypatch: pytest.MonkeyPatch, seed: int, threads: str) -> None:
    # as clear_day: the day's taps with balance_fen (several files), pricing's view of them
    monkeypatch.setenv("TONGKA_THREADS", threads)  # pricing's sort and cuts on 1 or 2 threads
    g = generate(DAY, 20_000, seed, T, price=match_and_price_fast)
    p = plant(DAY, g.table.filter(g.accepted_mask), seed)
    n = p.taps.num_rows
    full = chunked(p.taps, [0, n // 3, n // 3, 2 * n // 3 + 7], [n // 2])
    assert full.column("card_id").num_chunks >= 4  # an empty piece among them
    taps = full.select(list(TAP_COLUMNS))  # pricing never sees balance_fen
    legs, records = match_and_price_sorted(taps, T)
    assert legs.equals(match_and_price_fast(taps, T))  # the same legs
    assert np.array_equal(records, sorted_by_pricing(taps))  # sort_tap_records' layout
    assert record_rows_name_their_taps(records, full)  # rows count across the chunks
    earlier = [EarlierKeys(p.earlier_day, {c: p.earlier.column(c).to_numpy()
                                           for c in KEY_COLUMNS})]
    given = day_signals(DAY, full, legs, earlier=earlier, records=records)
    assert truth_of(given) == set(p.truth)
    assert given.equals(day_signals(DAY, full, legs, earlier=earlier))
    assert given.equals(day_signals(DAY, full, legs, earlier=earlier, reference=True))


def test_records_of_another_row_order_are_refused() -> None:
    # records line up with the table pricing was given: the same rows reordered are not it
    g = generate(DAY, 2000, 3, T, price=match_and_price_fast)
    full = with_balances(g.table.filter(g.accepted_mask), 3)
    legs, records = match_and_price_sorted(full.select(list(TAP_COLUMNS)), T)
    reordered = full.take(pa.array(np.arange(full.num_rows)[::-1]))
    with pytest.raises(InputError) as err:
        day_signals(DAY, reordered, legs, records=records)
    assert err.value.code == "RISK_BAD_ORDER"
