"""SPEC §8 netting: positions sum to 0, hub-and-spoke payments through the centre's account."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from hypothesis import given, settings
from test_settle_builders import DAY, TARIFFS, day_legs

from clearing.legs import Leg, legs_table
from settlement.apportion import allocate
from settlement.ledger import Reason, Run, Scope
from settlement.netting import (
    Direction,
    Instruction,
    Payment,
    net_positions,
    payment_instructions,
)
from settlement.obligations import Obligation, ObligationKind, day_obligations
from settlement.parties import CENTRE, government, issuer, operator
from settlement.payments import SETTLEMENT_ACCOUNT, cny, read_payments_csv, write_run_file

REV, FEE, SUB = ObligationKind.REVENUE, ObligationKind.FEE, ObligationKind.SUBSIDY


def _run_file(home: Path, pays: list[Payment]) -> Path:
    """The payments as the first settlement run of DAY, written as the bank file."""
    instructions = tuple(
        Instruction(f"{DAY.isoformat()}/1/{n}", n, p.direction, p.party, p.amount_fen, DAY)
        for n, p in enumerate(pays, start=1)
    )
    return write_run_file(home, Run(Scope.DAY, DAY, 1, None, Reason.INITIAL, instructions))


def test_positions_and_payments_by_hand(tmp_path: Path) -> None:
    obs = [
        Obligation(issuer(1), operator(201), REV, 1000),
        Obligation(issuer(2), operator(101), REV, 300),
        Obligation(operator(201), CENTRE, FEE, 8),
        Obligation(government(420100), operator(101), SUB, 50),
    ]
    pos = net_positions(obs)
    assert pos == {
        issuer(1): -1000,
        issuer(2): -300,
        operator(101): 350,
        operator(201): 992,
        government(420100): -50,
        CENTRE: 8,
    }
    pays = payment_instructions(pos, DAY)
    assert [(p.direction, p.party, p.amount_fen) for p in pays] == [
        (Direction.PAY_IN, issuer(1), 1000),
        (Direction.PAY_IN, issuer(2), 300),
        (Direction.PAY_IN, government(420100), 50),
        (Direction.PAY_OUT, operator(101), 350),
        (Direction.PAY_OUT, operator(201), 992),
    ]
    # The centre's fee stays in the settlement account: 1350 in, 1342 out.
    path = _run_file(tmp_path, pays)
    rows = read_payments_csv(path)
    assert [r["amount_cny"] for r in rows] == ["10.00", "3.00", "0.50", "3.50", "9.92"]
    assert all(r["value_date"] == DAY.isoformat() for r in rows)
    assert rows[0]["credit_account"] == SETTLEMENT_ACCOUNT
    assert rows[3]["debit_account"] == SETTLEMENT_ACCOUNT
    assert len({r["instruction_id"] for r in rows}) == len(rows)


def test_a_party_that_nets_to_zero_is_listed_but_not_paid() -> None:
    obs = [
        Obligation(issuer(1), operator(101), REV, 5),
        Obligation(operator(101), issuer(1), ObligationKind.REBATE, 5),
    ]
    pos = net_positions(obs)
    assert pos == {issuer(1): 0, operator(101): 0}
    assert payment_instructions(pos) == []


def test_cny_is_exact() -> None:
    assert [cny(x) for x in (0, 1, 99, 100, 123456789, -5)] == [
        "0.00",
        "0.01",
        "0.99",
        "1.00",
        "1234567.89",
        "-0.05",
    ]


@given(day_legs(max_cards=8))
@settings(max_examples=100, deadline=None)
def test_positions_sum_to_zero_and_payments_clear(legs: list[Leg]) -> None:
    table = legs_table(legs)
    pos = net_positions(day_obligations(table, allocate(table), TARIFFS, DAY))
    assert sum(pos.values()) == 0
    pays = payment_instructions(pos, DAY)
    assert all(p.amount_fen > 0 and p.party != CENTRE for p in pays)
    pay_in = sum(p.amount_fen for p in pays if p.direction == Direction.PAY_IN)
    pay_out = sum(p.amount_fen for p in pays if p.direction == Direction.PAY_OUT)
    assert pay_in - pay_out == pos.get(CENTRE, 0)
    for p in pays:
        assert pos[p.party] == (-p.amount_fen if p.direction == Direction.PAY_IN else p.amount_fen)


def test_payment_file_amounts_agree(tmp_path: Path) -> None:
    pays = [
        Payment(Direction.PAY_IN, issuer(1), 123_45, DAY),
        Payment(Direction.PAY_OUT, operator(101), 7, DAY),
    ]
    rows = read_payments_csv(_run_file(tmp_path / "x", pays))
    for r in rows:
        assert Decimal(r["amount_cny"]) * 100 == int(r["amount_fen"])
    assert not [p for p in (tmp_path / "x").rglob("*") if p.name.endswith(".tmp")]
