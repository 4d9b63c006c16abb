"""Month close (SPEC §6 monthly rebate, §8): spend per card and network, highest tier reached,
operator owes issuer, one month_close entry, re-close posts only the difference."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from test_settle_builders import TARIFFS, leg

from clearing.errors import StateError
from clearing.legs import Leg, LegStatus, legs_table
from clearing.service_day import day_number
from settlement.ledger import (
    EntryKind,
    Scope,
    entry_sums,
    period_balances,
    target_balances,
    verify_ledger,
)
from settlement.month_close import (
    Rebate,
    card_load_delta,
    close_month,
    month_obligations,
    month_rebates,
    parse_month,
    read_card_loads,
    write_card_loads,
)
from settlement.netting import Direction
from settlement.obligations import Obligation, ObligationKind
from settlement.parties import issuer, operator

MONTH = dt.date(2024, 5, 1)
METRO = dict(operator=102, mode=1, network=1, status=int(LegStatus.COMPLETE))


def _metro(card: int, fen: int, day: int = 3, iss: int = 1, **kw: int) -> Leg:
    d = MONTH.replace(day=day)
    fields = {
        "service_day": day_number(d),
        "version": day_number(TARIFFS.version_for(420100, d).valid_from),
        **METRO,
        **kw,
    }
    return leg(card_id=card, issuer=iss, computed_fen=fen, charged_fen=fen, **fields)


def _spend(card: int, total: int, iss: int = 1) -> list[Leg]:
    """A month of metro legs of one card adding up to ``total`` (spread over the month)."""
    legs, left, day = [], total, 1
    while left > 0:
        fen = min(left, 600)
        legs.append(_metro(card, fen, day=day % 28 + 1, iss=iss, board_card_seq=day))
        left -= fen
        day += 1
    return legs


MONTH_LEGS = (
    _spend(1, 19_999)  # just short of the first tier
    + _spend(2, 20_000)  # reaches 20000 -> 1000
    + _spend(3, 35_000, iss=3)  # an Ezhou Tong card: 30000 -> 3000
    + _spend(4, 50_000)  # beyond the top tier: 6000 only (the highest tier reached, no sum)
    + _spend(5, 19_000)
    + [
        _metro(5, 1200, status=int(LegStatus.INCOMPLETE), chain=-1)
    ]  # penalties count toward nothing
    + [leg(card_id=5, computed_fen=2000, charged_fen=2000, service_day=day_number(MONTH))]  # a bus
    + [_metro(6, 20_000, day=1, service_day=day_number(MONTH) - 1)]  # April's last day
)


def test_rebates_by_hand() -> None:
    got = month_rebates(legs_table(MONTH_LEGS), TARIFFS, "2024-05")
    assert [(r.issuer, r.card_id, r.spend_fen, r.rebate_fen, r.operator) for r in got] == [
        (1, 2, 20_000, 1_000, 102),
        (1, 4, 50_000, 6_000, 102),
        (3, 3, 35_000, 3_000, 102),
    ]
    assert month_obligations(legs_table(MONTH_LEGS), TARIFFS, MONTH) == [
        Obligation(operator(102), issuer(1), ObligationKind.REBATE, 7_000),
        Obligation(operator(102), issuer(3), ObligationKind.REBATE, 3_000),
    ]


def test_parse_month() -> None:
    assert parse_month("2024-05") == MONTH == parse_month(dt.date(2024, 5, 17))
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_month("May 2024")


def test_close_posts_once_and_nets_on_its_own(engine: Engine) -> None:
    result = close_month(engine, "2024-05", legs_table(MONTH_LEGS), TARIFFS)
    assert result.entry_kind == EntryKind.MONTH_CLOSE and result.entry_balance == 0
    assert result.positions == {operator(102): -10_000, issuer(1): 7_000, issuer(3): 3_000}
    assert [(p.direction, p.party, p.amount_fen) for p in result.payments] == [
        (Direction.PAY_IN, operator(102), 10_000),
        (Direction.PAY_OUT, issuer(1), 7_000),
        (Direction.PAY_OUT, issuer(3), 3_000),
    ]
    again = close_month(engine, "2024-05", legs_table(MONTH_LEGS), TARIFFS)
    assert again.entry_id is None
    assert period_balances(engine, Scope.MONTH) == {MONTH: target_balances(result.obligations)}
    assert period_balances(engine, Scope.DAY) == {}  # months and days are separate periods
    fresh = legs_table(MONTH_LEGS)
    assert verify_ledger(engine, lambda d: [], lambda m: month_obligations(fresh, TARIFFS, m)) == []


def test_reclose_posts_the_difference_and_card_loads_the_change(
    engine: Engine, tmp_path: Path
) -> None:
    first = close_month(engine, MONTH, legs_table(MONTH_LEGS), TARIFFS)
    late = MONTH_LEGS + [_metro(1, 1, day=20)]  # a late tap lifts card 1 to 20000
    with pytest.raises(StateError) as err:
        close_month(engine, MONTH, legs_table(late), TARIFFS)
    assert err.value.code == "SETTLEMENT_REASON_REQUIRED"
    second = close_month(engine, MONTH, legs_table(late), TARIFFS, reason="late_batch")
    assert second.entry_kind == EntryKind.MONTH_CLOSE
    assert second.posted == {"OPR-102:REBATE": 1_000, "ISS-1:REBATE": -1_000}
    assert [e[2:4] for e in entry_sums(engine)] == [
        ("month_close", "initial"),
        ("month_close", "late_batch"),
    ]
    delta = card_load_delta(first.rebates, second.rebates)
    assert delta == [Rebate(1, 1, 1, 102, 20_000, 1_000)]
    [path] = write_card_loads(tmp_path, MONTH, delta, suffix="-delta")
    assert path.name == "card-loads-2024-05-ISS-1-delta.csv"
    assert read_card_loads(path) == delta
    paths = write_card_loads(tmp_path, MONTH, second.rebates)
    assert sorted(p.name for p in paths) == [
        "card-loads-2024-05-ISS-1.csv",
        "card-loads-2024-05-ISS-3.csv",
    ]
    assert sum(r.rebate_fen for p in paths for r in read_card_loads(p)) == 11_000


def test_a_month_with_an_unsettled_day_does_not_close(engine: Engine) -> None:
    from clearing.days import mark_needs_settlement

    with Session(engine) as s, s.begin():
        mark_needs_settlement(s, MONTH.replace(day=9))
    with pytest.raises(StateError, match="2024-05-09") as err:
        close_month(engine, MONTH, legs_table(MONTH_LEGS), TARIFFS)
    assert err.value.code == "MONTH_NOT_SETTLED"
    assert entry_sums(engine) == []
