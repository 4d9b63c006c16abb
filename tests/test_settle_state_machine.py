"""Issue 7's state machine: batches, late batches, tariff corrections, settlements, re-settlements
of unchanged days and month closes in random order against the real ledger, beside a plain
dict model. (Duplicate batches are ingestion's concern: a duplicate adds no leg, which here is
the same as settling an unchanged day again.)

The model keeps, per day, the legs as they now are and the legs as last settled, and the
month's legs as last closed. After every step: every entry balances, the ledger's balances of
each settled day (and the closed month) equal those of settling its last-settled legs once,
and the ledger's net positions equal the model's and sum to 0.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tempfile
import uuid
from collections import defaultdict

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import create_engine, text
from test_settle_builders import TARIFFS, day_legs, leg

from clearing.db import make_engine
from clearing.legs import Leg, LegStatus, legs_table
from clearing.service_day import day_number
from settlement.ledger import (
    Scope,
    account_balances,
    entry_sums,
    period_balances,
    positions_from_balances,
    target_balances,
)
from settlement.month_close import close_month, month_obligations
from settlement.netting import net_positions
from settlement.settle import compute_day, settle_day
from tongka.schema import upgrade

MONTH = dt.date(2024, 5, 1)
DAYS = [dt.date(2024, 5, 14), dt.date(2024, 5, 15), dt.date(2024, 5, 31)]


def _metro_rides(day: dt.date, card: int, fen: int, n: int) -> list[Leg]:
    """``n`` Wuhan Metro legs of one card on one day (for the monthly rebate)."""
    version = TARIFFS.version_for(420100, day)
    return [
        leg(
            service_day=day_number(day),
            card_id=card,
            operator=102,
            mode=1,
            network=1,
            status=int(LegStatus.COMPLETE),
            chain=100 + i,
            board_card_seq=1000 + i,
            version=day_number(version.valid_from),
            base_fen=fen,
            computed_fen=fen,
            charged_fen=fen,
            product_fare_fen=fen,
            transfer_fare_fen=fen,
            card_discount_fen=0,
        )
        for i in range(n)
    ]


class LedgerMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self._cleanup = _fresh_database(self.url)
        self.engine = make_engine(self._url)
        upgrade(self.engine)
        self.legs: dict[dt.date, list[Leg]] = defaultdict(list)
        self.settled: dict[dt.date, list[Leg]] = {}
        self.closed: list[Leg] | None = None

    @property
    def _url(self) -> str:
        return self._cleanup[0]

    def teardown(self) -> None:
        self.engine.dispose()
        self._cleanup[1]()

    # ---- what happens to the days

    @initialize(data=st.data(), settle_now=st.lists(st.sampled_from(DAYS), unique=True))
    def first_batches(self, data: st.DataObject, settle_now: list[dt.date]) -> None:
        """Every day starts with a batch; some days are settled straight away."""
        for day in DAYS:
            self.legs[day] = data.draw(day_legs(day=day, max_cards=3, min_cards=1))
        for day in settle_now:
            self.settle(day, "late_batch")

    @rule(day=st.sampled_from(DAYS), data=st.data())
    def batch_arrives(self, day: dt.date, data: st.DataObject) -> None:
        """A batch (first, or late for a settled day) adds cards' legs to the day."""
        self.legs[day] = self.legs[day] + data.draw(day_legs(day=day, max_cards=3, min_cards=1))

    @rule(
        day=st.sampled_from(DAYS),
        card=st.integers(1, 3),
        fen=st.sampled_from([600, 900]),
        n=st.integers(25, 50),
    )
    def commuter_rides_the_metro(self, day: dt.date, card: int, fen: int, n: int) -> None:
        self.legs[day] = self.legs[day] + _metro_rides(day, card, fen, n)

    @precondition(lambda self: any(self.legs.values()))
    @rule(data=st.data())
    def tariff_correction(self, data: st.DataObject) -> None:
        """A corrected tariff re-prices some legs of a day: their charges change."""
        day = data.draw(st.sampled_from(sorted(d for d, v in self.legs.items() if v)))
        legs = list(self.legs[day])
        i = data.draw(st.integers(0, len(legs) - 1))
        new = data.draw(st.integers(0, 1500))
        legs[i] = dataclasses.replace(
            legs[i],
            charged_fen=new,
            computed_fen=min(new, legs[i].base_fen) if legs[i].chain >= 0 else legs[i].computed_fen,
        )
        self.legs[day] = legs

    # ---- settlement

    @rule(
        day=st.sampled_from(DAYS),
        reason=st.sampled_from(["late_batch", "tariff_correction", "manual_correction"]),
    )
    def settle(self, day: dt.date, reason: str) -> None:
        before = len(entry_sums(self.engine))
        first = day not in self.settled
        result = settle_day(
            self.engine,
            day,
            legs_table(self.legs[day]),
            TARIFFS,
            reason="initial" if first else reason,
        )
        unchanged = not first and self.settled[day] == self.legs[day]
        if unchanged or not result.obligations and first:
            assert result.entry_id is None  # idempotence: an unchanged day posts nothing
        assert len(entry_sums(self.engine)) == before + (result.entry_id is not None)
        event(f"settle: {result.entry_kind or 'nothing posted'}")
        self.settled[day] = list(self.legs[day])

    @precondition(lambda self: all(d in self.settled for d in DAYS))
    @rule(reason=st.sampled_from(["late_batch", "tariff_correction"]))
    def close_the_month(self, reason: str) -> None:
        month_legs = [x for d in DAYS for x in self.settled[d]]
        result = close_month(
            self.engine,
            MONTH,
            legs_table(month_legs),
            TARIFFS,
            reason="initial" if self.closed is None else reason,
        )
        event(
            f"month close: {len(result.rebates)} rebates, "
            f"{'posted' if result.entry_id else 'nothing posted'}"
        )
        self.closed = month_legs

    # ---- invariants

    @invariant()
    def every_entry_balances(self) -> None:
        assert all(total == 0 and n > 0 for *_, n, total in entry_sums(self.engine))

    @invariant()
    def balances_equal_settling_once(self) -> None:
        by_day = period_balances(self.engine, Scope.DAY)
        for day, legs in self.settled.items():
            once = target_balances(compute_day(legs_table(legs), TARIFFS, day).obligations)
            assert by_day.get(day, {}) == once
        assert set(by_day) <= set(self.settled)
        months = period_balances(self.engine, Scope.MONTH)
        if self.closed is None:
            assert months == {}
        else:
            once = target_balances(month_obligations(legs_table(self.closed), TARIFFS, MONTH))
            assert months.get(MONTH, {}) == once

    @invariant()
    def positions_equal_the_models(self) -> None:
        model: dict = defaultdict(int)
        for day, legs in self.settled.items():
            for party, v in compute_day(legs_table(legs), TARIFFS, day).positions.items():
                model[party] += v
        if self.closed is not None:
            obligations = month_obligations(legs_table(self.closed), TARIFFS, MONTH)
            for party, v in net_positions(obligations).items():
                model[party] += v
        ledger = positions_from_balances(account_balances(self.engine))
        assert sum(ledger.values()) == 0
        assert ledger == {p: v for p, v in model.items() if v}


def _fresh_database(kind: str):  # type: ignore[no-untyped-def]
    """(url, cleanup) of an empty database of the kind: a SQLite file or a PostgreSQL schema."""
    if kind == "sqlite":
        folder = tempfile.TemporaryDirectory()
        return f"sqlite:///{folder.name}/ledger.sqlite", folder.cleanup
    base = os.environ["TONGKA_TEST_DATABASE_URL"]
    schema = f"sm_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()

    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", drop


class SqliteLedgerMachine(LedgerMachine):
    url = "sqlite"


TestLedgerSqlite = SqliteLedgerMachine.TestCase
TestLedgerSqlite.settings = settings(max_examples=20, stateful_step_count=15, deadline=None)

if os.environ.get("TONGKA_TEST_DATABASE_URL"):

    class PostgresLedgerMachine(LedgerMachine):
        url = "postgresql"

    TestLedgerPostgresql = PostgresLedgerMachine.TestCase
    TestLedgerPostgresql.settings = settings(max_examples=10, stateful_step_count=15, deadline=None)
