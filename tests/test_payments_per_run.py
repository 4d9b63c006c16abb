"""SPEC v1.2 §8 "never pay twice": every settlement of a day is a run with instructions of its
own (the day's positions the first time, only their change later), stored with the run's
journal entry, written once to a file of its own that is never rewritten; on SQLite and
PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from test_settle_builders import REGISTRY, TARIFFS, day_legs
from test_settle_builders import leg as _leg

from clearing.errors import StateError
from clearing.legs import Leg, legs_table
from clearing.service_day import day_number
from settlement.ledger import (
    Reason,
    Scope,
    entry_sums,
    ledger_transaction,
    load_runs,
    post_run,
    target_balances,
)
from settlement.netting import (
    Direction,
    Instruction,
    payment_instructions,
    position_changes,
    run_instructions,
)
from settlement.obligations import Obligation, ObligationKind
from settlement.parties import CENTRE, Party, government, issuer, operator
from settlement.payments import (
    PaymentFileError,
    read_payments_csv,
    run_path,
    write_missing_run_files,
    write_run_file,
)
from settlement.settle import compute_day, settle_day

# A day of its own: settlement locks are per day across the whole PostgreSQL database, and
# other test modules settle the builders' DAY at the same time.
DAY = dt.date(2024, 3, 7)


def leg(**fields: int) -> Leg:
    return _leg(service_day=day_number(DAY), **fields)


LEGS = [
    leg(card_id=1),
    leg(card_id=2, issuer=3, charged_fen=200),
    leg(card_id=3, product=1, honoured_product=1, card_discount_fen=40),
]
LATE = [leg(card_id=5, charged_fen=300), leg(card_id=6, issuer=20, charged_fen=170)]


def _signed(instructions: tuple[Instruction, ...] | list[Instruction]) -> dict[Party, int]:
    return {i.party: i.signed_fen for i in instructions}


def _runs(engine: Engine, scope: Scope = Scope.DAY, period: dt.date = DAY):  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return load_runs(session, scope, period)


def _stamp(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def test_instructions_go_in_alphabetical_role_order_and_skip_the_centre() -> None:
    changes = {issuer(1): -10, operator(101): 8, government(420100): -3, CENTRE: 5, issuer(3): 0}
    got = run_instructions(changes, "2026-11-24", 2, dt.date(2026, 11, 24))
    # GOVERNMENT < ISSUER < OPERATOR by name (their enum numbers run ISSUER, OPERATOR, ...)
    assert [(i.instruction_id, i.party, i.direction, i.amount_fen) for i in got] == [
        ("2026-11-24/2/1", government(420100), Direction.PAY_IN, 3),
        ("2026-11-24/2/2", issuer(1), Direction.PAY_IN, 10),
        ("2026-11-24/2/3", operator(101), Direction.PAY_OUT, 8),
    ]
    assert position_changes({issuer(1): 5}, {issuer(1): 5, operator(2): 1}) == {operator(2): 1}


def test_the_first_settlement_issues_the_days_instructions(engine: Engine, tmp_path: Path) -> None:
    result = settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    assert result.run == 1
    whole_day = payment_instructions(result.positions, DAY)
    assert _signed(result.instructions) == {
        p.party: p.amount_fen if p.direction == Direction.PAY_OUT else -p.amount_fen
        for p in whole_day
    }
    ids = [i.instruction_id for i in result.instructions]
    assert ids == [f"2024-03-07/1/{n}" for n in range(1, len(ids) + 1)]
    [run] = _runs(engine)
    assert run.instructions == result.instructions and run.entry_id == result.entry_id
    path = write_run_file(tmp_path, run, REGISTRY)
    assert path == tmp_path / "payments" / "2024-03-07" / "run-001.csv"
    rows = read_payments_csv(path)
    assert [r["instruction_id"] for r in rows] == ids
    assert [int(r["amount_fen"]) for r in rows] == [i.amount_fen for i in result.instructions]
    assert all(r["value_date"] == "2024-03-07" for r in rows)


def test_a_resettlement_issues_only_the_difference_in_a_new_file(
    engine: Engine, tmp_path: Path
) -> None:
    first = settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    file1 = write_run_file(tmp_path, _runs(engine)[0], REGISTRY)
    before = _stamp(file1)
    second = settle_day(engine, DAY, legs_table(LEGS + LATE), TARIFFS, reason="late_batch")
    assert second.run == 2
    change = position_changes(first.positions, second.positions)
    assert _signed(second.instructions) == {p: v for p, v in change.items() if p != CENTRE}
    # The late legs: Wuhan Tong and a T-Union issuer pay in, the bus company is paid out.
    assert _signed(second.instructions)[issuer(1)] == -300
    assert issuer(3) not in _signed(second.instructions)  # unchanged: no instruction
    ids = [i.instruction_id for i in second.instructions]
    assert ids == [f"2024-03-07/2/{n}" for n in range(1, len(ids) + 1)]
    runs = _runs(engine)
    file2 = write_run_file(tmp_path, runs[1], REGISTRY)
    assert file2.name == "run-002.csv"
    assert [r["instruction_id"] for r in read_payments_csv(file2)] == ids
    assert _stamp(file1) == before
    # every instruction id ever issued is unique
    all_ids = [i.instruction_id for r in runs for i in r.instructions]
    assert len(all_ids) == len(set(all_ids))


def test_an_unchanged_resettlement_issues_an_empty_run(engine: Engine, tmp_path: Path) -> None:
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    again = settle_day(engine, DAY, legs_table(list(reversed(LEGS))), TARIFFS)
    assert again.entry_id is None and again.run == 2 and again.instructions == ()
    path = write_run_file(tmp_path, _runs(engine)[1], REGISTRY)
    assert path.name == "run-002.csv" and read_payments_csv(path) == []
    assert path.read_text(encoding="utf-8").startswith("instruction_id,")


def test_dry_runs_and_refused_settlements_are_no_runs(engine: Engine) -> None:
    assert settle_day(engine, DAY, legs_table(LEGS), TARIFFS, dry_run=True).run is None
    assert _runs(engine) == []
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    with pytest.raises(StateError):  # changed, but no reason given
        settle_day(engine, DAY, legs_table(LEGS + LATE), TARIFFS)
    assert settle_day(engine, DAY, legs_table(LEGS + LATE), TARIFFS, reason="late_batch").run == 2


def test_existing_files_are_never_touched(engine: Engine, tmp_path: Path) -> None:
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    settle_day(engine, DAY, legs_table(LEGS + LATE), TARIFFS, reason="late_batch")
    run1, run2 = _runs(engine)
    file1, file2 = write_run_file(tmp_path, run1, REGISTRY), write_run_file(tmp_path, run2)
    stamp1 = _stamp(file1)
    # Writing a run again is a no-op when the bytes agree ...
    assert write_run_file(tmp_path, run1, REGISTRY) == file1 and _stamp(file1) == stamp1
    # ... and refused when they do not (another database's data directory, a hand edit).
    edited = file2.read_bytes().replace(b"TONGKA", b"TAMPER")
    file2.write_bytes(edited)
    with pytest.raises(PaymentFileError) as err:
        write_run_file(tmp_path, run2)
    assert err.value.code == "PAYMENT_FILE_CONFLICT" and file2.read_bytes() == edited
    # The database is the truth: a file lost in a crash after the commit is written again,
    # the same bytes as before; existing files are left alone.
    file2.unlink()
    assert write_missing_run_files(engine, tmp_path) == [file2]
    assert file2.read_bytes() == edited.replace(b"TAMPER", b"TONGKA")
    assert _stamp(file1) == stamp1
    assert write_missing_run_files(engine, tmp_path, REGISTRY) == []
    assert sorted(p.name for p in file1.parent.iterdir()) == ["run-001.csv", "run-002.csv"]


def test_stored_runs_and_instructions_cannot_be_changed(engine: Engine) -> None:
    settle_day(engine, DAY, legs_table(LEGS), TARIFFS)
    for statement in [
        "UPDATE payment_instructions SET amount_fen = amount_fen + 1",
        "DELETE FROM payment_instructions",
        "UPDATE settlement_runs SET run = run + 1",
        "DELETE FROM settlement_runs",
    ]:
        with pytest.raises(DBAPIError, match="LEDGER_IMMUTABLE"), engine.begin() as conn:
            conn.execute(text(statement))
    assert len(_runs(engine)[0].instructions) > 0


def test_month_close_runs_use_the_same_mechanism(engine: Engine, tmp_path: Path) -> None:
    # What month close calls (settlement.month_close is another change): post_run at MONTH.
    first, last = dt.date(2024, 3, 1), dt.date(2024, 3, 31)
    rebate = ObligationKind.REBATE

    def close(amount: int, reason: Reason):  # type: ignore[no-untyped-def]
        obligations = [Obligation(operator(102), issuer(1), rebate, amount)]
        with ledger_transaction(engine, Scope.MONTH, first) as session:
            return post_run(
                session, first, Scope.MONTH, target_balances(obligations), reason, value_date=last
            )[1]

    run1 = close(1000, Reason.INITIAL)
    run2 = close(3000, Reason.LATE_BATCH)
    assert [(i.instruction_id, i.party, i.signed_fen) for i in run1.instructions] == [
        ("2024-03/1/1", issuer(1), 1000),
        ("2024-03/1/2", operator(102), -1000),
    ]
    assert [i.signed_fen for i in run2.instructions] == [2000, -2000]
    assert all(i.value_date == last for i in run1.instructions + run2.instructions)
    path = write_run_file(tmp_path, run2)
    assert path == run_path(tmp_path, Scope.MONTH, first, 2)
    assert path == tmp_path / "payments" / "2024-03" / "run-002.csv"
    assert "TONGKA MONTH CLOSE 2024-03/2/1" in path.read_text(encoding="utf-8")
    assert _runs(engine, Scope.MONTH, first) == [run1, run2]
    assert _runs(engine, Scope.DAY, first) == []


_days = itertools.count()


@given(data=st.data())
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_all_files_ever_issued_pay_what_settling_once_pays(
    engine: Engine, tmp_path: Path, data: st.DataObject
) -> None:
    # Any sequence of late legs and re-settlements: the instruction files, summed per party
    # and signed by direction, pay exactly what one settlement of the final legs pays; no
    # instruction id repeats, and no file is ever rewritten. Each example uses its own day.
    day = dt.date(2023, 1, 1) + dt.timedelta(days=next(_days))
    legs: list[Leg] = data.draw(day_legs(day=day, max_cards=3), label="first legs")
    steps = data.draw(
        st.lists(st.one_of(st.none(), day_legs(day=day, max_cards=2, min_cards=1)), max_size=4),
        label="late legs (None: settle again unchanged)",
    )
    files: dict[Path, tuple[bytes, int]] = {}
    for n, late in enumerate([[], *steps]):
        legs = legs + (late or [])
        reason = "initial" if n == 0 else "late_batch"
        result = settle_day(engine, day, legs_table(legs), TARIFFS, reason=reason)
        assert result.run == n + 1
        [run] = [r for r in _runs(engine, Scope.DAY, day) if r.run == result.run]
        path = write_run_file(tmp_path, run, REGISTRY)
        assert path not in files
        files[path] = _stamp(path)
        assert all(_stamp(p) == stamp for p, stamp in files.items())
    paid: dict[str, int] = defaultdict(int)
    ids = []
    for path in sorted((tmp_path / "payments" / day.isoformat()).iterdir()):
        for row in read_payments_csv(path):
            sign = 1 if row["direction"] == "pay_out" else -1
            paid[row["party"]] += sign * int(row["amount_fen"])
            ids.append(row["instruction_id"])
    assert len(ids) == len(set(ids))
    once = compute_day(legs_table(legs), TARIFFS, day)
    expected = {
        i.party.tag: i.signed_fen
        for i in run_instructions(once.positions, day.isoformat(), 1, day)
    }
    assert {k: v for k, v in paid.items() if v} == expected
    # and that is the day's hub-and-spoke payments
    assert expected == {
        p.party.tag: p.amount_fen if p.direction == Direction.PAY_OUT else -p.amount_fen
        for p in payment_instructions(once.positions, day)
    }
    assert all(total == 0 for *_, total in entry_sums(engine))
    assert {p.parent.name for p in files} == {day.isoformat()}
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path / "payments" / str(day)))
