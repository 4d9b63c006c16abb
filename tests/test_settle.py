"""Settling days into the ledger (SPEC §8-§9): one balanced entry, idempotence, late taps,
adjustments that name their reason, and the per-city summary, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from test_settle_builders import DAY, TARIFFS, day_legs, leg

from clearing.errors import StateError
from clearing.legs import Leg, legs_table
from clearing.service_day import day_number
from settlement.ledger import (
    EntryKind,
    JournalEntry,
    Posting,
    Scope,
    account_balances,
    entry_sums,
    period_balances,
    positions_from_balances,
    target_balances,
)
from settlement.settle import compute_day, settle_day

LEGS = [
    leg(card_id=1),
    leg(card_id=2, issuer=3, charged_fen=200, mismatch_fen=40),
    leg(card_id=3, product=1, honoured_product=1, card_discount_fen=40),
    leg(
        card_id=4,
        area=420200,
        operator=201,
        issuer=1,
        version=day_number(TARIFFS.version_for(420200, DAY).valid_from),
        apportionment=0,
        base_fen=200,
        charged_fen=160,
    ),
]


def _entries(engine: Engine) -> list[tuple[int, dt.date, str, str, int, int]]:
    return entry_sums(engine)


def _day_balances(engine: Engine, day: dt.date) -> dict:  # type: ignore[type-arg]
    return period_balances(engine, Scope.DAY).get(day, {})


def test_first_settlement_posts_one_balanced_entry(engine: Engine) -> None:
    result = settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    assert result.entry_id is not None and result.entry_kind == EntryKind.SETTLEMENT
    assert result.entry_balance == 0
    assert sum(result.positions.values()) == 0
    [(entry_id, day, kind, reason, n, total)] = _entries(engine)
    assert (entry_id, day, kind, reason, total) == (
        result.entry_id,
        DAY,
        "settlement",
        "initial",
        0,
    )
    assert n == len(result.posted)
    # Settling once posts exactly the day's target balances.
    assert _day_balances(engine, DAY) == target_balances(result.obligations)
    # The ledger's positions are the settlement's positions.
    assert positions_from_balances(account_balances(engine)) == {
        p: v for p, v in result.positions.items() if v
    }
    assert result.settled


def test_settling_an_unchanged_day_again_posts_nothing(engine: Engine) -> None:
    first = settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    again = settle_day(engine, DAY, legs_table(list(reversed(LEGS))), TARIFFS)
    assert again.entry_id is None and again.posted == {}
    assert again.positions == first.positions
    assert len(_entries(engine)) == 1


def test_a_changed_day_needs_a_reason(engine: Engine) -> None:
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    more = LEGS + [leg(card_id=5, charged_fen=300)]
    with pytest.raises(StateError) as err:
        settle_day(engine, DAY, legs_table(more), TARIFFS)
    assert err.value.code == "SETTLEMENT_REASON_REQUIRED"
    assert len(_entries(engine)) == 1  # nothing half-written
    with pytest.raises(StateError, match="unknown settlement reason"):
        settle_day(engine, DAY, legs_table(more), TARIFFS, reason="because")


def test_a_late_batch_posts_only_the_difference(engine: Engine) -> None:
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    late = LEGS + [leg(card_id=5, charged_fen=300), leg(card_id=6, issuer=20, charged_fen=170)]
    result = settle_day(engine, DAY, legs_table(late), TARIFFS, reason="late_batch")
    assert result.entry_kind == EntryKind.ADJUSTMENT
    entries = _entries(engine)
    assert [(k, r) for _, _, k, r, _, _ in entries] == [
        ("settlement", "initial"),
        ("adjustment", "late_batch"),
    ]
    # The adjustment is the change alone: Wuhan Tong and T-Union revenue to the bus company.
    assert result.posted["ISS-1:REVENUE"] == 300
    assert result.posted["ISS-20:REVENUE"] == 170
    assert "ISS-3:REVENUE" not in result.posted
    assert _day_balances(engine, DAY) == target_balances(result.obligations)


def test_a_tariff_correction_can_also_take_money_back(engine: Engine) -> None:
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    fewer = LEGS[1:]
    result = settle_day(engine, DAY, legs_table(fewer), TARIFFS, reason="tariff_correction")
    assert result.posted["ISS-1:REVENUE"] == -160
    assert _day_balances(engine, DAY) == target_balances(result.obligations)


def test_days_are_settled_independently(engine: Engine) -> None:
    nxt = DAY + dt.timedelta(days=1)
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    other = [leg(service_day=day_number(nxt), charged_fen=999)]
    settle_day(engine, nxt, legs_table(other), TARIFFS)
    assert settle_day(engine, DAY, legs_table(LEGS), TARIFFS).entry_id is None
    by_day = period_balances(engine, Scope.DAY)
    assert sorted(by_day) == [DAY, nxt]
    assert by_day[nxt] == target_balances(compute_day(legs_table(other), TARIFFS, nxt).obligations)


def test_an_empty_day_posts_nothing_but_is_settled(engine: Engine) -> None:
    result = settle_day(engine, DAY, legs_table([]), TARIFFS)
    assert result.entry_id is None and result.obligations == () and result.settled
    from clearing.days import is_settled

    assert is_settled(engine, DAY)


def test_dry_run_touches_nothing(engine: Engine) -> None:
    result = settle_day(engine, DAY, legs_table(LEGS), TARIFFS, dry_run=True)
    assert result.entry_id is None and result.obligations
    assert _entries(engine) == []


def test_city_summary_comes_from_the_legs(engine: Engine) -> None:
    result = settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    by_city = {c.city: c for c in result.city_summary}
    assert sorted(by_city) == [420100, 420200]
    wuhan = by_city[420100]
    assert wuhan.legs == 3
    assert wuhan.charged_fen == 160 + 200 + 160
    assert wuhan.base_fen == 600
    assert wuhan.discount_fen == 40 + 40 + 40
    assert wuhan.mismatch_fen == 40
    assert sum(c.allocated_fen for c in result.city_summary) == sum(x.charged_fen for x in LEGS)


def test_a_stale_revision_leaves_the_day_needing_settlement(engine: Engine) -> None:
    from clearing.days import DayStatus, day_status, mark_needs_settlement

    with Session(engine) as s, s.begin():
        mark_needs_settlement(s, DAY)  # revision 1: a batch arrived
    with Session(engine) as s, s.begin():
        mark_needs_settlement(s, DAY)  # revision 2: another batch, after our legs were read
    result = settle_day(engine, DAY, legs_table(LEGS), TARIFFS, revision=1)
    assert result.entry_id is not None and not result.settled
    with Session(engine) as s:
        assert day_status(s, DAY) == DayStatus.NEEDS_SETTLEMENT


_days = itertools.count()


@given(data=st.data())
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_late_taps_give_the_balances_of_settling_once(engine: Engine, data: st.DataObject) -> None:
    # SPEC §9: settle D, add late taps (the re-priced day may differ anywhere), settle again:
    # the balances are those of settling the final day once. Each example uses its own day.
    day = dt.date(2024, 1, 1) + dt.timedelta(days=next(_days))
    versions: list[list[Leg]] = data.draw(
        st.lists(day_legs(day=day, max_cards=4), min_size=1, max_size=3)
    )
    reasons = ["initial", "late_batch", "tariff_correction"]
    for i, legs in enumerate(versions):
        settle_day(engine, day, legs_table(legs), TARIFFS, reason=reasons[min(i, 2)])
    final = compute_day(legs_table(versions[-1]), TARIFFS, day)
    assert _day_balances(engine, day) == target_balances(final.obligations)
    # settling the final day once more posts nothing
    assert (
        settle_day(engine, day, legs_table(versions[-1]), TARIFFS, reason="late_batch").entry_id
        is None
    )
    with Session(engine) as s:
        sums = s.execute(
            select(Posting.entry_id, func.sum(Posting.amount_fen))
            .join(JournalEntry)
            .where(JournalEntry.day == day)
            .group_by(Posting.entry_id)
        ).all()
    assert all(int(total) == 0 for _, total in sums)
