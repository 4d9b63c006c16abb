"""SPEC v1.2 §10 DEBIT_MISMATCH and penalty legs: counted among a device's legs, never among its
mismatching ones.

SPEC §10 raises the signal for a boarding device when ``m >= 20`` of its legs mismatch
(stored-value, charged differs from computed) and ``100 * m > n`` over all ``n`` legs boarded at
it, "penalty legs included". The owner's reading, adopted here for both twins: penalty legs
(INCOMPLETE, OVERTIME, ORPHAN_EXIT; SPEC §5) count in ``n`` but never in ``m``. A penalty is
the rider's missing tap (a stored-value INCOMPLETE leg is charged its entry's 0 and computes
``max_fare``), not a reader charging unlike the tariff, which is what the signal looks for.
Before this reading, clean generated days raised DEBIT_MISMATCH on busy entry gates.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from clearing import risk_reference
from clearing.fast import match_and_price_fast, match_and_price_sorted
from clearing.legs import LEG_SCHEMA, PENALTY_STATUSES, DebitKind, LegStatus, legs_from_table
from clearing.risk import EarlierKeys, RiskKind, day_signals, mismatch_devices
from clearing.taps import TapType
from clearing.tapstore import KEY_COLUMNS
from tariffs.load import load_tariff_set
from tongka.testing.generate import generate
from tongka.testing.generate_risk import STALE_DEVICE_ID, STALE_READER_LEGS, plant, truth_of

T = load_tariff_set()
DAY = dt.date(2026, 11, 24)
OP, DEV = 101, 5
PENALTIES = sorted(PENALTY_STATUSES)


def legs_of(groups: list[tuple[int, LegStatus, bool]], *, kind: DebitKind = DebitKind.STORED_VALUE
            ) -> pa.Table:
    """A full LEG_SCHEMA table of one device's legs: ``(count, status, mismatching)`` groups;
    a mismatching leg is charged 150 against 200 computed (a penalty leg: 0 against 1200)."""
    rows: list[tuple[int, bool]] = []
    for count, status, bad in groups:
        rows += [(int(status), bad)] * count
    n = len(rows)
    penalty = [s in PENALTY_STATUSES for s, _ in rows]
    computed = [1200 if p else 200 for p in penalty]
    charged = [(0 if p else 150) if bad else c
               for (_, bad), p, c in zip(rows, penalty, computed, strict=True)]
    cols = {f.name: pa.array(np.zeros(n, f.type.to_pandas_dtype()), f.type) for f in LEG_SCHEMA}
    cols.update(
        card_id=pa.array(np.arange(1, n + 1), pa.uint64()),
        operator=pa.array([OP] * n, pa.uint16()),
        board_device_id=pa.array([DEV] * n, pa.int64()),
        status=pa.array([s for s, _ in rows], pa.uint8()),
        debit_kind=pa.array([int(kind)] * n, pa.uint8()),
        computed_fen=pa.array(computed, pa.int32()),
        charged_fen=pa.array(charged, pa.int32()),
        mismatch_fen=pa.array([a - b for a, b in zip(charged, computed, strict=True)],
                              pa.int32()))
    return pa.table(cols, schema=LEG_SCHEMA)


def both(legs: pa.Table) -> list[tuple[int, int, int, int]]:
    """The fast count and the reference twin, which must agree."""
    fast = mismatch_devices(legs)
    assert fast == risk_reference.mismatch_devices(legs_from_table(legs))
    return fast


C, F = LegStatus.COMPLETE, LegStatus.FLAT


@pytest.mark.parametrize("status", PENALTIES, ids=[s.name for s in PENALTIES])
def test_penalty_legs_never_count_as_mismatching(status: LegStatus) -> None:
    # 30 of 100 legs are unfinished journeys, charged unlike their penalty: no stale tariff
    assert both(legs_of([(30, status, True), (70, C, False)])) == []
    # even 19 real mismatches plus penalties stay below the 20 (m = 19, not 49)
    assert both(legs_of([(30, status, True), (19, F, True), (51, F, False)])) == []


@pytest.mark.parametrize(("groups", "want"), [
    # 100 * 20 > 1999: raised; 100 * 20 = 2000: not "more than 1 %"
    ([(20, C, True), (1979, C, False)], (20, 1999)),
    ([(20, C, True), (1980, C, False)], None),
    # a penalty leg counts in n: 20 of 1999 legs, and one INCOMPLETE leg more, are 20 of 2000
    ([(20, F, True), (1979, F, False), (1, LegStatus.INCOMPLETE, True)], None),
    ([(20, F, True), (1978, F, False), (1, LegStatus.OVERTIME, False)], (20, 1999)),
    # m counts only the non-penalty mismatches, n every leg
    ([(20, C, True), (5, LegStatus.ORPHAN_EXIT, True), (975, C, False)], (20, 1000)),
    ([(19, C, True), (1, C, False)], None),
    ([(20, C, True)], (20, 20)),
])
def test_debit_mismatch_threshold_with_penalty_legs(
        groups: list[tuple[int, LegStatus, bool]], want: tuple[int, int] | None) -> None:
    assert both(legs_of(groups)) == ([(OP, DEV, *want)] if want else [])


def test_account_based_and_mixed_legs_never_mismatch() -> None:
    for kind in (DebitKind.ACCOUNT, DebitKind.MIXED):
        assert both(legs_of([(25, C, True)], kind=kind)) == []


# ---------------------------------------------------------------------------------------------
# A clean day big enough that busy gates have 20+ unfinished journeys

BIG = 600_000  # measured: the fewest taps (seeds 7, 11, 23) at which penalty legs alone put a
BIG_SEED = 11  # device over both thresholds (20 k-400 k taps: at most 17 on any device)


def without_stale_readers(taps: pa.Table) -> pa.Table:
    """The generated day with every reader on the current tariff: the debit of each tap that
    a stale reader (``generate``: ~0.5 % of legs) got wrong is set back by the leg's mismatch.
    The debiting tap is a FLAT or ORPHAN_EXIT leg's boarding tap, a trip's EXIT; INCOMPLETE
    legs keep their entry's 0, as SPEC §6 says they are charged."""
    legs = match_and_price_fast(taps, T)
    status = legs.column("status").to_numpy()
    off = ((legs.column("mismatch_fen").to_numpy() != 0) & (status != LegStatus.INCOMPLETE)
           & (legs.column("debit_kind").to_numpy() == DebitKind.STORED_VALUE))
    closes = (status == LegStatus.COMPLETE) | (status == LegStatus.OVERTIME)
    by_exit = closes | (status == LegStatus.ORPHAN_EXIT)  # the debiting tap is an EXIT
    fix = pa.table({
        "issuer": legs.column("issuer").filter(off),
        "card_id": legs.column("card_id").filter(off),
        "ts_ms": pa.array(np.where(closes, legs.column("last_ts_ms").to_numpy(),
                                   legs.column("board_ts_ms").to_numpy())[off]),
        "exit": pa.array(by_exit[off]), "by": legs.column("mismatch_fen").filter(off)})
    rows = taps.select(["issuer", "card_id", "ts_ms", "tap_type"]).append_column(
        "row", pa.array(np.arange(taps.num_rows)))
    rows = rows.append_column("exit", pc.equal(rows.column("tap_type"), int(TapType.EXIT)))
    hit = fix.join(rows, ["issuer", "card_id", "ts_ms", "exit"], join_type="inner")
    assert hit.num_rows == fix.num_rows  # one debiting tap per leg
    debit = taps.column("debited_fen").to_numpy().copy()
    debit[hit.column("row").to_numpy()] -= hit.column("by").to_numpy()
    return taps.set_column(taps.column_names.index("debited_fen"), "debited_fen",
                           pa.array(debit, pa.int32()))


def penalty_only_devices(legs: pa.Table) -> int:
    """Devices the former count (penalty legs as mismatching) would have raised."""
    bad = ((legs.column("debit_kind").to_numpy() == DebitKind.STORED_VALUE)
           & (legs.column("charged_fen").to_numpy() != legs.column("computed_fen").to_numpy()))
    key = (legs.column("operator").to_numpy().astype(np.int64) << 48) \
        | legs.column("board_device_id").to_numpy()
    _, device = np.unique(key, return_inverse=True)
    m, n = np.bincount(device, weights=bad), np.bincount(device)
    return int(((m >= 20) & (100 * m > n)).sum())


@pytest.fixture(scope="module")
def clean_big_day() -> pa.Table:
    g = generate(DAY, BIG, BIG_SEED, T, price=match_and_price_fast)
    assert g.stale_devices  # the generator's stale readers are there, and are taken out
    return without_stale_readers(g.table.filter(g.accepted_mask))


def test_a_clean_day_with_busy_gates_raises_no_debit_mismatch(clean_big_day: pa.Table) -> None:
    legs, records = match_and_price_sorted(clean_big_day, T)
    penalty = np.isin(legs.column("status").to_numpy(), [int(s) for s in PENALTIES])
    charged, computed = (legs.column(c).to_numpy() for c in ("charged_fen", "computed_fen"))
    assert (charged == computed)[~penalty].all()  # every reader charges the tariff
    assert penalty_only_devices(legs) > 0  # big enough: unfinished journeys alone would raise
    assert mismatch_devices(legs) == []
    signals = day_signals(DAY, clean_big_day, legs, records=records)
    assert signals.filter(pc.equal(signals.column("kind"),
                                   RiskKind.DEBIT_MISMATCH.name)).num_rows == 0


def charge_one_fen_more(taps: pa.Table, legs: pa.Table, device: tuple[int, int], m: int
                        ) -> pa.Table:
    """``m`` stored-value COMPLETE legs boarded at ``device`` (an entry gate) charged one fen
    more than the tariff: a stale gate debiting 1 fen on entry, where the tariff says 0."""
    sel = np.flatnonzero(
        (legs.column("operator").to_numpy() == device[0])
        & (legs.column("board_device_id").to_numpy() == device[1])
        & (legs.column("status").to_numpy() == LegStatus.COMPLETE)
        & (legs.column("debit_kind").to_numpy() == DebitKind.STORED_VALUE))[:m]
    assert len(sel) == m
    keys = legs.select(["issuer", "card_id", "board_card_seq"]).take(pa.array(sel)) \
        .rename_columns(["issuer", "card_id", "card_seq"])
    rows = taps.select(["issuer", "card_id", "card_seq"]).append_column(
        "row", pa.array(np.arange(taps.num_rows)))
    at = keys.join(rows, ["issuer", "card_id", "card_seq"], join_type="inner").column("row")
    assert len(at) == m  # a card key is one tap of the day (SPEC §4)
    debit = taps.column("debited_fen").to_numpy().copy()
    debit[at.to_numpy()] += 1
    return taps.set_column(taps.column_names.index("debited_fen"), "debited_fen",
                           pa.array(debit, pa.int32()))


def test_stale_gates_among_unfinished_journeys_are_found_at_the_threshold(
        clean_big_day: pa.Table) -> None:
    # the two gates with the most penalty legs: the ones the former count raised
    legs = match_and_price_fast(clean_big_day, T)
    penalty = np.isin(legs.column("status").to_numpy(), [int(s) for s in PENALTIES])
    key = (legs.column("operator").to_numpy().astype(np.int64) << 48) \
        | legs.column("board_device_id").to_numpy()
    devices, device = np.unique(key, return_inverse=True)
    n, pen = np.bincount(device), np.bincount(device, weights=penalty)
    a, b = (int(devices[i]) for i in np.argsort(-pen, kind="stable")[:2])
    gate_a, gate_b = (a >> 48, a & (2**48 - 1)), (b >> 48, b & (2**48 - 1))
    n_a, n_b = (int(n[np.searchsorted(devices, k)]) for k in (a, b))
    m_a = max(20, n_a // 100 + 1)  # just over both thresholds, penalty legs in n
    m_b = max(20, n_b // 100) if n_b // 100 >= 20 else 19  # just under one
    taps = charge_one_fen_more(clean_big_day, legs, gate_a, m_a)
    taps = charge_one_fen_more(taps, legs, gate_b, m_b)
    stale_legs, records = match_and_price_sorted(taps, T)
    assert mismatch_devices(stale_legs) == [(*gate_a, m_a, n_a)]
    found = day_signals(DAY, taps, stale_legs, records=records)
    [signal] = found.filter(pc.equal(found.column("kind"), "DEBIT_MISMATCH")).to_pylist()
    assert (signal["operator"], signal["device_id"], len(signal["evidence"])) == (*gate_a, m_a)
    # gate b's penalty legs, counted as mismatching, would have raised it too
    assert pen[np.searchsorted(devices, b)] + m_b >= 20


def test_a_planted_stale_reader_is_found_on_a_planted_day() -> None:
    # generate_risk's stale reader, among every other planted kind (precision and recall)
    g = generate(DAY, 100_000, 3, T, price=match_and_price_fast)
    p = plant(DAY, without_stale_readers(g.table.filter(g.accepted_mask)), 3)
    legs, records = match_and_price_sorted(p.taps, T)
    earlier = [EarlierKeys(p.earlier_day, {c: p.earlier.column(c).to_numpy()
                                           for c in KEY_COLUMNS})]
    found = day_signals(DAY, p.taps, legs, earlier=earlier, records=records)
    assert truth_of(found) == set(p.truth)
    [stale] = found.filter(pc.equal(found.column("kind"), "DEBIT_MISMATCH")).to_pylist()
    assert (stale["device_id"], len(stale["evidence"])) == (STALE_DEVICE_ID, STALE_READER_LEGS)


def test_evidence_from_pricing_boarding_records_equals_the_probed_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """DEBIT_MISMATCH's evidence read from each leg's boarding record (``RangePricer.boards``)
    is the evidence found by probing every tap for the legs' card keys; boarding records that
    do not hold their legs' keys are not trusted (the probe decides), nor boards of other legs."""
    from clearing.fast import RangePricer
    from clearing.legs import SIGNAL_LEG_COLUMNS

    g = generate(DAY, 30_000, 5, T, price=match_and_price_fast)
    p = plant(DAY, g.table.filter(g.accepted_mask), 5)
    pricer = RangePricer(p.taps, T, keep=SIGNAL_LEG_COLUMNS, range_taps=997)
    for _ in pricer.legs():
        pass
    legs, boards = pricer.kept(), pricer.boards()
    assert len(boards) == legs.num_rows
    probed = day_signals(DAY, p.taps, legs, records=pricer.records)
    assert "DEBIT_MISMATCH" in set(probed.column("kind").to_pylist())
    from clearing import risk

    read: list[bool] = []  # whether the boarding records were trusted, call by call
    inner = risk._boarding_rows
    monkeypatch.setattr(risk, "_boarding_rows",
                        lambda *a: read.append((got := inner(*a)) is not None) or got)
    assert day_signals(DAY, p.taps, legs, records=pricer.records, boards=boards).equals(probed)
    assert read == [True]
    shifted = (boards + 1) % len(pricer.records)  # every leg pointing at a neighbour's tap
    assert day_signals(DAY, p.taps, legs, records=pricer.records,
                       boards=shifted.astype(boards.dtype)).equals(probed)
    assert day_signals(DAY, p.taps, legs, records=pricer.records,
                       boards=boards[:-1]).equals(probed)
    assert read == [True, False]  # the shifted ones refused; the short ones never read
