"""The synthetic day generator: exact, deterministic, well-formed where meant to be, realistic."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearing.legs import LEG_SCHEMA, LegStatus
from clearing.reference import match_and_price
from clearing.service_day import CST_OFFSET_MS, day_bounds_ms
from clearing.taps import TAP_SCHEMA, TapType
from tariffs.load import TariffSet, load_tariff_set
from tariffs.registry import FLAT, Registry
from tariffs.vocab import Media, Product
from tongka.testing.generate import (
    OPERATOR_KEY,
    SERVICE_DAY_KEY,
    GeneratedDay,
    Invalid,
    generate,
    generate_day,
    write_day,
)

DAY = dt.date(2024, 5, 14)
BIG = 200_000
HOUR_MS = 3_600_000


def no_price(taps: pa.Table, tariffs: TariffSet) -> pa.Table:
    """A pricer that finds no legs: every stored-value debit stays 0 (fast, for shape tests)."""
    return LEG_SCHEMA.empty_table()


@pytest.fixture(scope="module")
def tariffs() -> TariffSet:
    return load_tariff_set()


@pytest.fixture(scope="module")
def big(tariffs: TariffSet) -> GeneratedDay:
    """A demo-sized day, debited by the reference pricer."""
    return generate(DAY, BIG, 7, tariffs)


@pytest.fixture(scope="module")
def big_legs(big: GeneratedDay, tariffs: TariffSet) -> pa.Table:
    return match_and_price(big.table.filter(pa.array(big.accepted_mask)), tariffs)


def col(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy()


# ---------------------------------------------------------------------------------------------
# SPEC §4 acceptance, written independently of the generator


CHECKS = ("operator", "issuer", "city", "line", "stop", "tap_type", "product", "media", "ts",
          "on_line", "debit", "city_of_stop", "tap_kind")
EXPECTED_CHECK = {
    Invalid.UNKNOWN_ISSUER: "issuer", Invalid.UNKNOWN_CITY: "city", Invalid.UNKNOWN_LINE: "line",
    Invalid.UNKNOWN_STOP: "stop", Invalid.BAD_TAP_TYPE: "tap_type",
    Invalid.BAD_PRODUCT: "product", Invalid.BAD_MEDIA: "media", Invalid.OUTSIDE_SERVICE_DAY: "ts",
    Invalid.STOP_NOT_ON_LINE: "on_line", Invalid.STOP_ZERO_ON_NETWORK: "on_line",
    Invalid.BAD_DEBIT: "debit", Invalid.CITY_MISMATCH: "city_of_stop",
    Invalid.TAP_TYPE_LINE_MISMATCH: "tap_kind",
}


def first_failure(table: pa.Table, reg: Registry, day: dt.date) -> np.ndarray:
    """Index into CHECKS of the first SPEC §4 check each row fails; -1 when it passes all."""
    op, line, stop = col(table, "operator").astype(np.int64), col(table, "line"), col(table, "stop")
    line_key = op * (1 << 32) + line
    lines = {k: ln for k, ln in reg.lines.items()}
    known_lines = np.array([o * (1 << 32) + n for o, n in lines], dtype=np.int64)
    flat_lines = np.array([o * (1 << 32) + n for (o, n), ln in lines.items()
                           if ln.network == FLAT], dtype=np.int64)
    on_line_keys = {(o, n, s) for (o, n), ln in lines.items() for s in ln.stops}
    is_flat = np.isin(line_key, flat_lines)
    on_line = np.array([(int(o), int(n), int(s)) in on_line_keys if s else bool(f)
                        for o, n, s, f in zip(op, line, stop, is_flat, strict=True)])
    stop_city = np.array([reg.stops[int(s)].city if int(s) in reg.stops else -1 for s in stop])
    op_city = np.array([reg.operators[int(o)].city if int(o) in reg.operators else -1 for o in op])
    start, end = day_bounds_ms(day)
    ts, tap_type = col(table, "ts_ms"), col(table, "tap_type")
    city = col(table, "city")
    passes = [
        np.isin(op, list(reg.operators)),
        np.isin(col(table, "issuer"), list(reg.issuers)),
        np.isin(city, list(reg.cities)),
        np.isin(line_key, known_lines),
        (stop == 0) | np.isin(stop, list(reg.stops)),
        tap_type <= max(TapType),
        col(table, "product") <= max(Product),
        col(table, "media") <= max(Media),
        (ts >= start) & (ts < end),
        on_line,
        col(table, "debited_fen") >= -1,
        city == np.where(stop == 0, op_city, stop_city),
        (tap_type == TapType.FLAT) == is_flat,
    ]
    fails = ~np.column_stack(passes)
    return np.where(fails.any(axis=1), np.argmax(fails, axis=1), -1)


# ---------------------------------------------------------------------------------------------
# Shape, exactness, determinism


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 3000), seed=st.integers(0, 2**63))
def test_exactly_n_canonical_taps(n: int, seed: int) -> None:
    table = generate_day(DAY, n, seed, load_tariff_set(), price=no_price)
    assert table.schema.equals(TAP_SCHEMA)
    assert table.num_rows == n


def test_same_inputs_same_day_other_inputs_other_day(tariffs: TariffSet) -> None:
    a = generate_day(DAY, 5000, 3, tariffs)
    assert a.equals(generate_day(DAY, 5000, 3, tariffs))
    assert not a.equals(generate_day(DAY, 5000, 4, tariffs))
    assert not a.equals(generate_day(DAY + dt.timedelta(days=1), 5000, 3, tariffs))


def test_a_card_is_the_same_card_every_day(tariffs: TariffSet) -> None:
    """One seed is one card population: issuer, product and medium of a card never change."""
    def cards(day: dt.date) -> dict[int, tuple[int, int, int]]:
        t = generate(day, 20_000, 5, tariffs, price=no_price)
        t = t.table.filter(pa.array(t.accepted_mask))
        return {c: (i, p, m) for c, i, p, m in zip(*(col(t, k).tolist() for k in (
            "card_id", "issuer", "product", "media")), strict=True)}
    monday, tuesday = cards(DAY), cards(DAY + dt.timedelta(days=1))
    both = monday.keys() & tuesday.keys()
    assert len(both) > 1000
    assert all(monday[c] == tuesday[c] for c in both)


def test_keys_never_repeat_across_days(tariffs: TariffSet) -> None:
    """SPEC §4 de-duplicates across days: consecutive days share no device key or card key."""
    days = [generate(DAY + dt.timedelta(days=d), 10_000, 5, tariffs, price=no_price)
            for d in range(2)]
    device, card = Counter(), Counter()
    for g in days:
        t = g.table.filter(pa.array(g.accepted_mask))
        device.update(zip(*(col(t, k).tolist() for k in ("operator", "device_id", "device_seq")),
                          strict=True))
        card.update(zip(*(col(t, k).tolist() for k in ("issuer", "card_id", "card_seq")),
                        strict=True))
    assert max(device.values()) == 1
    assert max(card.values()) == 1


def test_write_day_one_file_per_operator(tariffs: TariffSet, tmp_path: Path) -> None:
    table = generate_day(DAY, 20_000, 2, tariffs, price=no_price)
    paths = write_day(tmp_path / "out", table, DAY)
    operators = sorted(set(col(table, "operator").tolist()))
    assert [p.name for p in paths] == [f"{DAY.isoformat()}-op{o}.parquet" for o in operators]
    total = 0
    for path, op in zip(paths, operators, strict=True):
        part = pq.read_table(path)
        meta = part.schema.metadata
        assert meta[SERVICE_DAY_KEY] == DAY.isoformat().encode()
        assert meta[OPERATOR_KEY] == str(op).encode()
        assert part.schema.remove_metadata().equals(TAP_SCHEMA)
        assert set(col(part, "operator").tolist()) == {op}
        order = np.lexsort((col(part, "device_seq"), col(part, "device_id")))
        assert (order == np.arange(part.num_rows)).all()  # file order: by device, device_seq
        total += part.num_rows
    assert total == table.num_rows
    # Any row order in, the same files out.
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))
    again = write_day(tmp_path / "again", shuffled, DAY)
    assert all(pq.read_table(a).equals(pq.read_table(b)) for a, b in zip(paths, again, strict=True))
    both = pa.concat_tables([pq.read_table(p).replace_schema_metadata(None) for p in paths])
    key = ["operator", "device_id", "device_seq", "card_id", "card_seq", "ts_ms", "stop"]
    assert both.sort_by([(k, "ascending") for k in key]).equals(
        table.sort_by([(k, "ascending") for k in key]))


# ---------------------------------------------------------------------------------------------
# Well-formed where it means to be (SPEC §4)


def test_well_formed_rows_pass_and_invalid_rows_fail_where_intended(
        big: GeneratedDay, tariffs: TariffSet) -> None:
    first = first_failure(big.table, tariffs.registry, DAY)
    good = big.row_invalid < 0
    assert (first[good] == -1).all()
    for kind in Invalid:
        rows = big.row_invalid == kind
        assert rows.sum() == big.invalid[kind.name]
        assert rows.any(), f"no {kind.name} row at {BIG} taps"
        assert (first[rows] == CHECKS.index(EXPECTED_CHECK[kind])).all(), kind.name


def test_ingestion_checks_reject_exactly_the_invalid_rows(
        big: GeneratedDay, tariffs: TariffSet) -> None:
    """clearing.accept agrees row by row: the code it reports is the corruption injected."""
    from clearing.accept import check_taps

    accepted, errors = check_taps(big.table, tariffs.registry, DAY)
    assert (accepted == (big.row_invalid < 0)).all()
    assert {e.row: e.code for e in errors} == {
        int(r): Invalid(big.row_invalid[r]).name for r in np.flatnonzero(big.row_invalid >= 0)}


def test_keys_unique_counters_increase(big: GeneratedDay) -> None:
    t = big.table.filter(pa.array(big.accepted_mask))
    for key in (("operator", "device_id", "device_seq"), ("issuer", "card_id", "card_seq")):
        assert len(set(zip(*(col(t, k).tolist() for k in key), strict=True))) == t.num_rows
    # A reader counts in time order; a card too (SPEC §3).
    counters = ((("operator", "device_id"), "device_seq"), (("issuer", "card_id"), "card_seq"))
    for group, seq in counters:
        order = np.lexsort((col(t, seq),) + tuple(col(t, k) for k in reversed(group)))
        same = np.ones(t.num_rows - 1, dtype=bool)
        for k in group:
            v = col(t, k)[order]
            same &= v[1:] == v[:-1]
        ts = col(t, "ts_ms")[order]
        assert (ts[1:][same] >= ts[:-1][same]).all()


def test_resent_rows_are_exact_copies(big: GeneratedDay) -> None:
    rows = big.table.to_pydict()
    records = list(zip(*rows.values(), strict=True))
    count = Counter(records)
    resent = [records[i] for i in np.flatnonzero(big.row_resent)]
    assert len(resent) == big.duplicates > 0
    assert all(count[r] == 2 for r in resent)
    assert sum(c - 1 for c in count.values()) == big.duplicates


# ---------------------------------------------------------------------------------------------
# Realistic structure


def test_every_issuer_product_and_medium_rides(big: GeneratedDay, tariffs: TariffSet) -> None:
    t = big.table.filter(pa.array(big.accepted_mask))
    issuers = Counter(col(t, "issuer").tolist())
    assert set(issuers) == set(tariffs.registry.issuers)
    assert issuers[1] > 0.5 * t.num_rows  # Wuhan Tong dominates
    assert 0 < issuers[30] < 0.03 * t.num_rows  # a few closed-loop visitor cards
    assert set(col(t, "product").tolist()) == {int(p) for p in Product}
    assert Counter(col(t, "product").tolist()).most_common(1)[0][0] == Product.ORDINARY
    assert set(col(t, "media").tolist()) == {int(m) for m in Media}
    assert set(col(t, "operator").tolist()) == set(tariffs.registry.operators)
    assert set(col(t, "city").tolist()) == set(tariffs.registry.cities)


def test_account_based_only_for_qr_codes(big: GeneratedDay) -> None:
    t = big.table.filter(pa.array(big.accepted_mask))
    qr = col(t, "media") == Media.QR_CODE
    debit = col(t, "debited_fen")
    assert (debit[qr] == -1).all()
    assert (debit[~qr] >= 0).all()
    assert qr.any() and (debit[~qr] > 0).any()


def test_cards_ride_away_from_home(big: GeneratedDay, tariffs: TariffSet) -> None:
    t = big.table.filter(pa.array(big.accepted_mask))
    issuer, city = col(t, "issuer"), col(t, "city")
    home = {i.code: i.home_city for i in tariffs.registry.issuers.values()}
    wuhan = 420100
    assert ((issuer == 1) & (city != wuhan)).sum() > 100  # Wuhan Tong in partner cities
    partner = np.isin(issuer, [c for c, h in home.items() if h not in (0, wuhan)
                               and h in tariffs.registry.cities])
    assert (partner & (city == wuhan)).sum() > 100  # local cards in Wuhan
    own = np.array([home[int(i)] == int(c) for i, c in zip(issuer, city, strict=True)])
    assert own[partner].mean() > 0.6  # most ride at home


def test_gediannan_is_a_line_11_station_in_ezhou(big: GeneratedDay) -> None:
    t = big.table.filter(pa.array(big.accepted_mask))
    at = (col(t, "operator") == 102) & (col(t, "line") == 11) & (col(t, "city") == 420700)
    assert at.sum() > 10
    assert set(col(t, "stop")[at].tolist()) == {100144}


def test_morning_and_evening_peaks(big: GeneratedDay) -> None:
    t = big.table.filter(pa.array(big.accepted_mask))
    boarding = col(t, "tap_type") != TapType.EXIT
    hour = ((col(t, "ts_ms")[boarding] + CST_OFFSET_MS) // HOUR_MS) % 24
    per_hour = np.bincount(hour, minlength=24)
    morning, evening = per_hour[7:9].mean(), per_hour[17:19].mean()
    midday, night = per_hour[10:16].mean(), per_hour[[23, 0, 1, 2, 3]].mean()
    assert morning > 1.3 * midday and evening > 1.3 * midday
    assert midday > 3 * night
    assert per_hour[4] == 0  # nothing before 05:00 — the day starts at 04:00 and ends quietly


def test_metro_trips_take_plausible_time(big_legs: pa.Table) -> None:
    metro = (col(big_legs, "status") == LegStatus.COMPLETE) & (col(big_legs, "operator") == 102)
    minutes = (col(big_legs, "last_ts_ms") - col(big_legs, "board_ts_ms"))[metro] / 60_000
    assert 8 < np.median(minutes) < 60
    assert minutes.max() < 240


def test_chains_inside_transfer_windows(big_legs: pa.Table) -> None:
    """Bus–metro–bus chains happen: Wuhan legs joined as second and third legs of a chain."""
    wuhan = col(big_legs, "area") == 420100
    transfer_no = col(big_legs, "transfer_no")
    mode = col(big_legs, "mode")
    assert ((transfer_no == 1) & wuhan).sum() > 1000
    assert ((transfer_no == 2) & wuhan).sum() > 100
    assert len(set(mode[(transfer_no > 0) & wuhan].tolist())) >= 2
    ezhou = col(big_legs, "area") == 420700
    assert ((transfer_no == 1) & ezhou).sum() > 50


# ---------------------------------------------------------------------------------------------
# Anomalies and debits, checked by the reference matcher


def test_anomalies_are_a_few_percent(big: GeneratedDay) -> None:
    for count in (big.missing_exits, big.orphan_exits, big.duplicates, big.invalid_rows):
        assert 0.001 * BIG < count < 0.03 * BIG
    assert big.overtime > 0
    assert 0.01 * BIG < big.missing_exits + big.orphan_exits + big.overtime + big.duplicates + (
        big.invalid_rows) < 0.06 * BIG


def test_matching_finds_what_was_injected(big: GeneratedDay, big_legs: pa.Table) -> None:
    status = Counter(col(big_legs, "status").tolist())
    assert status[LegStatus.INCOMPLETE] == big.expected_incomplete
    assert status[LegStatus.ORPHAN_EXIT] == big.expected_orphan_exits
    assert status[LegStatus.OVERTIME] == big.overtime


def test_readers_debit_the_fare_except_stale_ones(big: GeneratedDay, big_legs: pa.Table) -> None:
    status = col(big_legs, "status")
    stored = col(big_legs, "debit_kind") == 0
    incomplete = status == LegStatus.INCOMPLETE
    # A stored-value INCOMPLETE leg is charged only its entry's 0 (SPEC §6).
    assert (col(big_legs, "charged_fen")[incomplete & stored] == 0).all()
    off = (col(big_legs, "mismatch_fen") != 0) & ~incomplete
    assert off.sum() == big.stale_legs
    assert not (off & ~stored).any()  # account-based legs are charged what they compute
    assert 0.002 < big.stale_legs / big_legs.num_rows < 0.01  # ~0.5 %
    # Every mismatch was debited by a stale reader: the FLAT tap's, or the trip's EXIT's.
    t = big.table.filter(pa.array(big.accepted_mask))
    device_of = {(i, c, ts): (o, d) for i, c, ts, o, d in zip(*(col(t, c).tolist() for c in (
        "issuer", "card_id", "ts_ms", "operator", "device_id")), strict=True)}
    closes = (status == LegStatus.COMPLETE) | (status == LegStatus.OVERTIME)
    debit_ts = np.where(closes, col(big_legs, "last_ts_ms"), col(big_legs, "board_ts_ms"))
    debited_by = {device_of[(i, c, ts)] for i, c, ts in zip(
        col(big_legs, "issuer")[off].tolist(), col(big_legs, "card_id")[off].tolist(),
        debit_ts[off].tolist(), strict=True)}
    assert debited_by <= set(big.stale_devices)
    assert len(big.stale_devices) >= 2


def test_prices_once_over_the_accepted_taps(tariffs: TariffSet) -> None:
    calls: list[int] = []

    def counting(taps: pa.Table, ts: TariffSet) -> pa.Table:
        calls.append(taps.num_rows)
        return match_and_price(taps, ts)

    g = generate(DAY, 3000, 11, tariffs, price=counting)
    assert calls == [int(g.accepted_mask.sum())]
