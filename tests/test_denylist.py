"""Issuers clearing their cards from the deny list (SPEC §10): a clearing through day C takes the
card's signals of days up to C off the deny lists of days C to C+29 and changes nothing else;
later signals list the card again; the clearings are append-only evidence; an issuer sees and
clears its own cards only; repeating a clearing writes the same files; the command line.

Signals are planted as stored signal files (the SPEC §10 detectors have tests of their own), so
the days and cards can be chosen freely; the deny lists are then written and rewritten by the
real code, and compared with a model written from the SPEC sentence alone.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any
from unittest import mock

import pyarrow as pa
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from clearing.db import make_engine, transaction
from clearing.errors import TongkaError
from clearing.parquet_io import write_atomic
from clearing.risk import DENY_KINDS, EVIDENCE_TYPE, SIGNAL_SCHEMA, RiskKind
from clearing.risk_clearances import Clearance, clear_card, clearances, cleared_through
from clearing.risk_store import (
    DenyEntry,
    denylist_path,
    read_denylist,
    risk_summary,
    signals_path,
    write_denylist,
)
from tests import service_support
from tests.service_support import Service
from tongka import audit
from tongka.cli_denylist import denylist_app
from tongka.denylist import clear_cards, list_clearances, show_denylist
from tongka.schema import upgrade

BASE = dt.date(2025, 3, 1)  # long past: every clearing below is through a day already over
TODAY = BASE + dt.timedelta(days=200)
DAYS = 45  # signals on days BASE .. BASE+44
Signal = tuple[dt.date, str, int, int]  # (day, kind, issuer, card)

service = service_support.service  # the fixture: the service on each database


@pytest.fixture(autouse=True)
def _no_fsync() -> Iterator[None]:
    """Each case writes some ninety small files, each fsynced before its rename; that costs
    seconds per case on a shared disk and is not what these tests are about."""
    with mock.patch.object(os, "fsync", lambda fd: None):
        yield


def day(n: int) -> dt.date:
    return BASE + dt.timedelta(days=n)


def signals_table(rows: Iterable[Signal]) -> pa.Table:
    rows = list(rows)
    n = len(rows)
    return pa.table({
        "service_day": pa.array([r[0] for r in rows], pa.date32()),
        "kind": pa.array([r[1] for r in rows], pa.string()),
        "issuer": pa.array([r[2] for r in rows], pa.uint16()),
        "card_id": pa.array([r[3] for r in rows], pa.uint64()),
        "operator": pa.array([101] * n, pa.uint16()),
        "device_id": pa.array([None] * n, pa.int64()),
        "city": pa.array([420100] * n, pa.uint32()),
        "ts_ms": pa.array([0] * n, pa.int64()),
        "evidence": pa.array([[]] * n, pa.list_(EVIDENCE_TYPE)),
    }, schema=SIGNAL_SCHEMA)


def plant(home: Path, signals: Iterable[Signal], days: Iterable[dt.date],
          engine: Engine | None = None) -> None:
    """Store the signals of each of ``days`` (an empty file for a day without any), then write
    each day's deny list, as clearing the days would."""
    days = sorted(set(days))
    signals = list(signals)
    for d in days:
        write_atomic(signals_table(s for s in signals if s[0] == d), signals_path(home, d))
    for d in days:
        write_denylist(home, d, engine=engine)


def files(home: Path, days: Iterable[dt.date]) -> dict[dt.date, bytes]:
    return {d: denylist_path(home, d).read_bytes() for d in days}


def model(signals: list[Signal], clearings: list[tuple[int, int, dt.date]], d: dt.date
          ) -> list[DenyEntry]:
    """SPEC §10 read plainly: the cards with a deny-list signal in [D-29, D], less, per card,
    its signals of days up to the day its latest clearing (in record order) through a day on or
    before D reaches. ``clearings`` are (issuer, card, through) in record order."""
    reach: dict[tuple[int, int], dt.date] = {}
    for issuer, card, through in clearings:
        if through <= d:
            reach[(issuer, card)] = through  # later ones supersede
    kept: dict[tuple[int, int], list[tuple[dt.date, str]]] = {}
    for when, kind, issuer, card in signals:
        if not d - dt.timedelta(days=29) <= when <= d or RiskKind[kind] not in DENY_KINDS:
            continue
        if (issuer, card) in reach and when <= reach[(issuer, card)]:
            continue
        kept.setdefault((issuer, card), []).append((when, kind))
    return [DenyEntry(i, c, tuple(sorted({k for _, k in got}, key=lambda k: RiskKind[k])),
                      min(w for w, _ in got), max(w for w, _ in got))
            for (i, c), got in sorted(kept.items())]


# ---------------------------------------------------------------------------------------------
# the rule, against the model


KINDS = [k.name for k in RiskKind if k is not RiskKind.DEBIT_MISMATCH]  # card kinds, deny or not
CARDS = [(1, 10), (1, 11), (2, 10)]  # token 10 twice: a card is its issuer's token


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[Signal], list[tuple[int, int, dt.date]]]:
    signals = draw(st.lists(st.tuples(st.integers(0, DAYS - 1), st.sampled_from(KINDS),
                                      st.sampled_from(CARDS)), max_size=40))
    clearings = draw(st.lists(st.tuples(st.sampled_from(CARDS), st.integers(0, DAYS - 1)),
                              min_size=1, max_size=4))
    return ([(day(n), k, i, c) for n, k, (i, c) in signals],
            [(i, c, day(n)) for (i, c), n in clearings])


@settings(max_examples=8)
@given(worlds())
def test_a_clearing_removes_exactly_the_cards_signals_up_to_its_day(
    world: tuple[list[Signal], list[tuple[int, int, dt.date]]]
) -> None:
    """Through the use case, one clearing after another: each changes only the lists of days C
    to C+29 (or, superseding an earlier clearing of the card that reached a later day, to 29
    days after that one), only for its card, only by the card's signals up to C (a later
    signal lists it again), and reports exactly the files it changed; after all of them every
    list is the model's."""
    signals, clearings = world
    all_days = [day(n) for n in range(DAYS)]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        engine = make_engine(f"sqlite:///{home / 'db.sqlite'}")
        try:
            upgrade(engine)
            plant(home, signals, all_days, engine)
            done: list[tuple[int, int, dt.date]] = []
            for issuer, card, through in clearings:
                before = files(home, all_days)
                listed = {(s[2], s[3]) for s in signals
                          if s[0] <= through + dt.timedelta(days=29)
                          and RiskKind[s[1]] in DENY_KINDS}
                if (issuer, card) not in listed:
                    with pytest.raises(TongkaError) as refused:
                        clear_cards(engine, home, issuer, [card], through, "test", "test",
                                    today=TODAY)
                    assert refused.value.code == "DENYLIST_CARD_NOT_LISTED"
                    assert files(home, all_days) == before
                    continue
                result = clear_cards(engine, home, issuer, [card], through, "test", "test",
                                     today=TODAY)
                done.append((issuer, card, through))
                after = files(home, all_days)
                changed = {d for d in all_days if after[d] != before[d]}
                assert set(result.rewritten) == changed
                reach = max([through, *(t for i, c, t in done[:-1] if (i, c) == (issuer, card))])
                assert changed <= {d for d in all_days
                                   if through <= d <= reach + dt.timedelta(days=29)}
                for d in changed:
                    was = {(e.issuer, e.card_id): e for e in model(signals, done[:-1], d)}
                    now = {(e.issuer, e.card_id): e for e in read_denylist(home, d) or []}
                    assert {k: v for k, v in was.items() if k != (issuer, card)} == {
                        k: v for k, v in now.items() if k != (issuer, card)}
                    left = [s for s in signals if (s[2], s[3]) == (issuer, card)
                            and through < s[0]]
                    assert now.get((issuer, card)) == (
                        {(e.issuer, e.card_id): e for e in model(left, [], d)}.get((issuer, card)))
            for d in all_days:
                assert read_denylist(home, d) == model(signals, done, d), d
        finally:
            engine.dispose()


@given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 3), st.integers(0, 60)),
                max_size=12), st.integers(0, 60))
def test_the_latest_clearing_through_the_day_decides(
    found: list[tuple[int, int, int]], on: int
) -> None:
    """``cleared_through`` (pure): per card, the latest recorded clearing through a day on or
    before D, whatever the order of the days they reach."""
    at = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    records = [Clearance(i + 1, issuer, card, day(n), "r", "a", at)
               for i, (issuer, card, n) in enumerate(found)]
    want: dict[tuple[int, int], dt.date] = {}
    for c in records:
        if c.through <= day(on):
            want[c.card] = c.through
    assert cleared_through(reversed(records), day(on)) == want


# ---------------------------------------------------------------------------------------------
# one worked case, on both databases


A, B = 1, 2
CARD = 7  # issuer A's card 7 and issuer B's card 7 are two cards
WORKED: list[Signal] = [
    (day(0), "CARD_SEQ_BACKWARDS", A, CARD),
    (day(9), "CARD_SEQ_REPLAY", A, CARD),
    (day(9), "IMPOSSIBLE_TRAVEL", A, CARD),  # no deny-list kind: never listed
    (day(19), "BALANCE_BREAK", A, CARD),
    (day(4), "CARD_SEQ_BACKWARDS", B, CARD),
]


def _entry(home: Path, d: dt.date, issuer: int, card: int) -> DenyEntry | None:
    return next((e for e in read_denylist(home, d) or [] if (e.issuer, e.card_id) ==
                 (issuer, card)), None)


def test_clearing_a_card_through_a_day(engine: Engine, tmp_path: Path) -> None:
    all_days = [day(n) for n in range(DAYS)]
    plant(tmp_path, WORKED, all_days, engine)
    summary = [risk_summary(tmp_path, d) for d in all_days]
    before = files(tmp_path, all_days)
    assert _entry(tmp_path, day(9), A, CARD) == DenyEntry(
        A, CARD, ("CARD_SEQ_REPLAY", "CARD_SEQ_BACKWARDS"), day(0), day(9))

    result = clear_cards(engine, tmp_path, A, [CARD], day(9), "card replaced", "finance key k1",
                         today=TODAY)
    assert [(c.issuer, c.card_id, c.through) for c in result.recorded] == [(A, CARD, day(9))]
    assert result.rewritten == tuple(day(n) for n in range(9, 39))  # C to C+29
    assert _entry(tmp_path, day(8), A, CARD) is not None  # published before C: as it was
    for n in range(9, 19):
        assert _entry(tmp_path, day(n), A, CARD) is None
    assert _entry(tmp_path, day(19), A, CARD) == DenyEntry(
        A, CARD, ("BALANCE_BREAK",), day(19), day(19))  # a later signal lists it again
    for n in range(0, 34):
        assert _entry(tmp_path, day(n), B, CARD) == (
            DenyEntry(B, CARD, ("CARD_SEQ_BACKWARDS",), day(4), day(4)) if 4 <= n <= 33
            else None)  # issuer B's card 7 is another card
    assert [risk_summary(tmp_path, d) for d in all_days] == summary  # evidence: unchanged
    after = files(tmp_path, all_days)
    assert {d for d in all_days if after[d] != before[d]} == set(result.rewritten)

    again = clear_cards(engine, tmp_path, A, [CARD], day(9), "card replaced", "finance key k1",
                        today=TODAY)
    assert (again.recorded, again.already, again.rewritten) == ((), (CARD,), ())
    assert files(tmp_path, all_days) == after
    assert len(list_clearances(engine, A)) == 1

    # a mistaken clearing is superseded: through day 0 only, the day-9 replay lists it again
    fixed = clear_cards(engine, tmp_path, A, [CARD], day(0), "cleared too far", "finance key",
                        today=TODAY)
    assert fixed.recorded and fixed.rewritten
    assert _entry(tmp_path, day(9), A, CARD) == DenyEntry(
        A, CARD, ("CARD_SEQ_REPLAY",), day(9), day(9))
    assert _entry(tmp_path, day(0), A, CARD) is None
    assert [c.through for c in list_clearances(engine, A, [CARD])] == [day(9), day(0)]


def test_a_day_cleared_again_keeps_the_clearings(engine: Engine, tmp_path: Path) -> None:
    """The deny list written when a day is cleared again applies the recorded clearings."""
    plant(tmp_path, WORKED, [day(n) for n in range(DAYS)], engine)
    clear_cards(engine, tmp_path, A, [CARD], day(9), "replaced", "finance", today=TODAY)
    kept = denylist_path(tmp_path, day(12)).read_bytes()
    write_denylist(tmp_path, day(12), engine=engine)
    assert denylist_path(tmp_path, day(12)).read_bytes() == kept
    assert _entry(tmp_path, day(12), A, CARD) is None


@pytest.mark.parametrize("change", [
    "UPDATE risk_clearances SET cleared_through = cleared_through",
    "UPDATE risk_clearances SET reason = 'rewritten'",
    "DELETE FROM risk_clearances",
])
def test_clearings_are_append_only(engine: Engine, change: str) -> None:
    with transaction(engine) as s:
        clear_card(s, A, CARD, day(3), "reason", "finance")
    with pytest.raises(DBAPIError, match="DENYLIST_CLEARING_IMMUTABLE"), engine.begin() as conn:
        conn.execute(text(change))
    with transaction(engine) as s:
        assert [(c.card_id, c.reason) for c in clearances(s)] == [(CARD, "reason")]
    if engine.dialect.name == "postgresql":
        with pytest.raises(DBAPIError, match="DENYLIST_CLEARING_IMMUTABLE"), \
                engine.begin() as conn:
            conn.execute(text("TRUNCATE risk_clearances"))


def test_the_migration_creates_what_the_model_describes(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from clearing.db import Base
    from tongka.schema import SCHEMA

    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "risk_clearances" in repr(d)] == []
    assert "risk_clearances" in SCHEMA.append_only  # the engine role may SELECT and INSERT only


@pytest.mark.parametrize(("ask", "code"), [
    ({"reason": "  "}, "DENYLIST_REASON"),
    ({"issuer": 99}, "DENYLIST_ISSUER_UNKNOWN"),
    ({"tokens": []}, "DENYLIST_CARDS_INVALID"),
    ({"tokens": [2**64]}, "DENYLIST_CARDS_INVALID"),
    ({"through": TODAY + dt.timedelta(days=1)}, "DENYLIST_THROUGH_FUTURE"),
    ({"tokens": [CARD, 8]}, "DENYLIST_CARD_NOT_LISTED"),  # 8 is on no list
    ({"issuer": 3}, "DENYLIST_CARD_NOT_LISTED"),  # issuer 3 has no card 7 listed
    ({"through": day(4) - dt.timedelta(days=30)}, "DENYLIST_CARD_NOT_LISTED"),  # B's: day 4
])
def test_a_refused_clearing_writes_nothing(engine: Engine, tmp_path: Path,
                                           ask: dict[str, Any], code: str) -> None:
    all_days = [day(n) for n in range(DAYS)]
    plant(tmp_path, WORKED, all_days, engine)
    before = files(tmp_path, all_days)
    args: dict[str, Any] = {"issuer": B, "tokens": [CARD], "through": day(9),
                            "reason": "replaced"} | ask
    with pytest.raises(TongkaError) as refused:
        clear_cards(engine, tmp_path, args["issuer"], args["tokens"], args["through"],
                    args["reason"], "finance", today=TODAY)
    assert refused.value.code == code
    assert list_clearances(engine) == []
    assert files(tmp_path, all_days) == before


# ---------------------------------------------------------------------------------------------
# the service


def _auth(service: Service, role: str, party: int | None = None) -> dict[str, str]:
    return service.auth(role, party)


def test_an_issuer_sees_and_clears_its_own_cards_only(service: Service) -> None:
    home, engine = service.centre.home, service.centre.engine
    all_days = [day(n) for n in range(DAYS)]
    plant(home, WORKED + [(day(5), "BALANCE_BREAK", B, 900)], all_days, engine)
    client = service.client
    url = f"/v1/days/{day(9)}/denylist"

    mine = client.get(url, headers=_auth(service, "issuer", A))
    assert mine.status_code == 200
    assert {(c["issuer"], c["card_id"]) for c in mine.json()["cards"]} == {(A, str(CARD))}
    theirs = client.get(url, headers=_auth(service, "issuer", B))
    assert {(c["issuer"], c["card_id"]) for c in theirs.json()["cards"]} == {
        (B, str(CARD)), (B, "900")}
    every = client.get(url, headers={**_auth(service, "auditor"), "Accept": "text/csv"})
    assert every.headers["content-type"].startswith("text/csv")
    assert every.content == denylist_path(home, day(9)).read_bytes()
    assert client.get(url, params={"issuer": B}, headers=_auth(service, "issuer", A)
                      ).status_code == 404
    assert client.get(url, headers=_auth(service, "operator", 101)).status_code == 403
    assert client.get(f"/v1/days/{day(DAYS + 5)}/denylist", headers=_auth(service, "finance")
                      ).json()["code"] == "DAY_NOT_CLEARED"

    post = "/v1/denylist/clearings"
    body = {"cards": ["900"], "through": day(9).isoformat(), "reason": "replaced"}
    foreign = client.post(post, json=body, headers=_auth(service, "issuer", A))
    ghost = client.post(post, json=body | {"cards": ["901"]}, headers=_auth(service, "issuer", A))
    assert (foreign.status_code, foreign.json()["code"]) == (404, "DENYLIST_CARD_NOT_LISTED")
    assert foreign.json()["detail"].replace("900", "901") == ghost.json()["detail"]
    named = client.post(post, json=body | {"issuer": B}, headers=_auth(service, "issuer", A))
    assert (named.status_code, named.json()["code"]) == (404, "NOT_FOUND")
    assert client.post(post, json=body | {"issuer": B}, headers=_auth(service, "auditor")
                       ).status_code == 403
    unnamed = client.post(post, json=body, headers=_auth(service, "finance"))
    assert (unnamed.status_code, unnamed.json()["code"]) == (400, "DENYLIST_ISSUER_UNKNOWN")
    assert list_clearances(engine) == []  # nothing of the above was recorded

    own = client.post(post, json=body, headers=_auth(service, "issuer", B))
    assert own.status_code == 201, own.text
    assert own.json()["denylists_rewritten"] == [day(n).isoformat() for n in range(9, 35)]
    [recorded] = own.json()["recorded"]
    assert recorded["cleared_by"].startswith("issuer:2 key ")
    assert client.post(post, json=body | {"issuer": B}, headers=_auth(service, "finance")
                       ).status_code == 200  # already cleared through that day: nothing new
    after = client.get(url, headers=_auth(service, "issuer", B)).json()["cards"]
    assert {c["card_id"] for c in after} == {str(CARD)}
    [event] = [e for e in audit.events(engine) if e.action == f"POST {post}" and e.outcome == 201]
    assert f"[{recorded['id']}]" in event.detail


# ---------------------------------------------------------------------------------------------
# the command line


def test_the_commands(engine: Engine, tmp_path: Path) -> None:
    plant(tmp_path, WORKED, [day(n) for n in range(DAYS)], engine)
    url = engine.url.render_as_string(hide_password=False)
    env = {"TONGKA_HOME": str(tmp_path), "TONGKA_DATABASE_URL": url}
    runner = CliRunner()

    shown = runner.invoke(denylist_app, ["show", "--date", day(9).isoformat(), "--issuer", "1"],
                          env=env)
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[1:] == [
        f"1,{CARD},CARD_SEQ_REPLAY|CARD_SEQ_BACKWARDS,{day(0)},{day(9)}"]

    args = ["clear", "--issuer", "1", "--card", str(CARD), "--through", day(9).isoformat(),
            "--reason", "card replaced"]
    done = runner.invoke(denylist_app, args, env=env)
    assert done.exit_code == 0, done.output
    assert "cleared 1 card(s) of issuer 1 through" in done.output
    assert show_denylist(tmp_path, day(9), A) == []
    assert list_clearances(engine)[0].cleared_by.startswith("cli")
    again = runner.invoke(denylist_app, args, env=env)
    assert "1 card(s) already cleared" in again.output and "none changed" in again.output

    refused = runner.invoke(denylist_app, [*args[:4], "8", *args[5:]], env=env)
    assert isinstance(refused.exception, TongkaError)
    assert refused.exception.code == "DENYLIST_CARD_NOT_LISTED"
    bad = runner.invoke(denylist_app, [*args[:4], "x7", *args[5:]], env=env)
    assert getattr(bad.exception, "code", None) == "DENYLIST_CARDS_INVALID"


def test_the_commands_take_the_data_directory_and_database_of_the_command_above(
    engine: Engine, tmp_path: Path
) -> None:
    """Mounted as ``tongka denylist``, the commands use tongka's --data-dir and --db."""
    plant(tmp_path, WORKED, [day(n) for n in range(DAYS)], engine)
    top = typer.Typer()

    @top.callback()
    def main(data_dir: Annotated[Path | None, typer.Option("--data-dir")] = None,
             db: Annotated[str | None, typer.Option("--db")] = None) -> None:
        """Stands in for tongka.cli's callback."""

    top.add_typer(denylist_app, name="denylist")
    url = engine.url.render_as_string(hide_password=False)
    got = CliRunner().invoke(top, ["--data-dir", str(tmp_path), "--db", url, "denylist", "clear",
                                   "--issuer", "2", "--card", str(CARD), "--through",
                                   day(4).isoformat(), "--reason", "replaced"],
                             env={"TONGKA_HOME": str(tmp_path / "elsewhere"),
                                  "TONGKA_DATABASE_URL": "sqlite:///nowhere.sqlite"})
    assert got.exit_code == 0, (got.output, got.exception)
    assert [(c.issuer, c.card_id) for c in list_clearances(engine)] == [(B, CARD)]
