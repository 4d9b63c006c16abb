"""Who gets what, on both databases: every route of the service against every kind of caller
(issue 11's role list), and not one byte of operator B's or issuer B's data reaching operator A
or issuer A.

The table below has one row per request and one expected outcome per caller; the application's
own route list is the checklist, so a route added without a row fails here. One generated day is
ingested and settled first (the use cases, not HTTP), so that every resource exists: batches,
quarantined rows, statements, payment lines, a job. The application runs without its job worker
(``run_jobs=False``): a settlement the table asks for stays queued, so no job races the requests
that follow it and every outcome is decided by the caller alone. The generated day raises no
deny-list signal, so one card of issuer A and one of issuer B are planted in its signals: the
deny list then has something of each issuer to show, hide and clear.

The leak check collects everything operator A and issuer A receive from every GET route (status,
headers and body; lists, every statement in JSON, CSV and HTML, payment lines, quarantine pages
and exports) and counts B's identifiers in it. A request for B's own resource must be answered
exactly as one for a resource that does not exist (after swapping the two identifiers, which is
only the caller's own words echoed). The same count over finance's answers must find B's data of
every kind: that is what shows the check can see a leak at all.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import json
import logging
import re
import secrets
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from clearing.batches import export_quarantine
from clearing.db import session_factory
from clearing.ingest import BatchReport
from clearing.parquet_io import write_atomic
from clearing.risk import EVIDENCE_TYPE, SIGNAL_SCHEMA
from clearing.risk_store import signals_path, write_denylist
from clearing.settings import Settings
from readers.config import ReaderConfig
from settlement.ledger import Scope, load_runs
from tests.service_support import DAY, Service, day_files, tariffs
from tongka import audit, jobs
from tongka.access import Role, create_key, revoke_key, split_key
from tongka.ingest_files import ingest_files
from tongka.service.app import READS, create_app
from tongka.service.centre import open_centre
from tongka.settling import settle

OP_A, OP_B = 101, 102
ISS_A, ISS_B = 1, 2
MONTH = f"{DAY:%Y-%m}"
GHOST_BATCH = 999_999_999  # no batch has this id
GHOST_CODE = 999_999  # no operator or issuer has this code
# Planted deny-listed cards: tokens no generated card has, long enough to be found anywhere.
CARDS = {ISS_A: 18_000_000_000_000_000_001, ISS_B: 18_000_000_000_000_000_002}


# ---------------------------------------------------------------- callers and outcomes


class Caller(enum.StrEnum):
    OPERATOR_A = "operator:A"
    OPERATOR_B = "operator:B"
    ISSUER_A = "issuer:A"
    ISSUER_B = "issuer:B"
    FINANCE = "finance"
    AUDITOR = "auditor"
    ADMIN = "admin"
    NO_KEY = "no key"
    REVOKED = "revoked key"
    WRONG = "wrong key"  # a live key's id with another secret


KEYED = (Caller.OPERATOR_A, Caller.OPERATOR_B, Caller.ISSUER_A, Caller.ISSUER_B, Caller.FINANCE,
         Caller.AUDITOR, Caller.ADMIN)
ANONYMOUS = (Caller.NO_KEY, Caller.REVOKED, Caller.WRONG)
ROLE_OF: dict[Caller, tuple[Role, int | None]] = {
    Caller.OPERATOR_A: (Role.OPERATOR, OP_A), Caller.OPERATOR_B: (Role.OPERATOR, OP_B),
    Caller.ISSUER_A: (Role.ISSUER, ISS_A), Caller.ISSUER_B: (Role.ISSUER, ISS_B),
    Caller.FINANCE: (Role.FINANCE, None), Caller.AUDITOR: (Role.AUDITOR, None),
    Caller.ADMIN: (Role.ADMIN, None),
}


class Outcome(enum.Enum):
    """The class of answer a caller must get: what the issue's role list says."""

    ALLOWED = "200/201/202"
    ROLE = "403 FORBIDDEN"  # outside the caller's role
    MISMATCH = "403 OPERATOR_MISMATCH"  # an operator sending another operator's file
    HIDDEN = "404"  # another party's resource, answered as if it did not exist
    UNAUTHENTICATED = "401"

    def matches(self, status: int, code: str | None) -> bool:
        if self is Outcome.ALLOWED:
            return status in (200, 201, 202)
        if self is Outcome.ROLE:
            return status == 403 and code == "FORBIDDEN"
        if self is Outcome.MISMATCH:
            return status == 403 and code == "OPERATOR_MISMATCH"
        if self is Outcome.HIDDEN:
            return status == 404
        return status == 401


def rule(*allowed: Caller, hidden: Iterable[Caller] = (), mismatch: Iterable[Caller] = ()
         ) -> dict[Caller, Outcome]:
    """The outcome of every caller: ``allowed`` in, ``hidden`` 404, ``mismatch`` 403 for a
    foreign file, every other key 403 for its role, and no valid key 401."""
    out = {c: Outcome.ROLE for c in KEYED} | {c: Outcome.UNAUTHENTICATED for c in ANONYMOUS}
    out.update({c: Outcome.ALLOWED for c in allowed})
    out.update({c: Outcome.HIDDEN for c in hidden})
    out.update({c: Outcome.MISMATCH for c in mismatch})
    return out


PUBLIC = {c: Outcome.ALLOWED for c in Caller}  # docs, schema, health and metrics need no key
OVERSEERS = (Caller.FINANCE, Caller.AUDITOR)
OTHERS_OF_OPERATOR_A = (Caller.OPERATOR_B, Caller.ISSUER_A, Caller.ISSUER_B)
OTHERS_OF_ISSUER_A = (Caller.OPERATOR_A, Caller.OPERATOR_B, Caller.ISSUER_B)
PARTIES = (Caller.OPERATOR_A, Caller.OPERATOR_B, Caller.ISSUER_A, Caller.ISSUER_B)


# ---------------------------------------------------------------- the world


@dataclass
class World:
    """A service over one ingested and settled day, and what the requests below refer to."""

    service: Service
    batches: dict[int, BatchReport]  # operator -> its batch of the day
    files: dict[int, bytes]  # operator -> its batch file's bytes
    corrections: bytes  # operator A's open quarantine as the export writes it (JSON Lines)
    job_id: int
    spare_key_id: str  # a key admin may revoke
    keys: dict[Caller, str] = field(default_factory=dict)
    cards: dict[int, int] = field(default_factory=lambda: dict(CARDS))  # issuer -> listed card

    @property
    def client(self) -> TestClient:
        return self.service.client

    def headers(self, caller: Caller) -> dict[str, str]:
        key = self.keys.get(caller)
        return {} if key is None else {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def day_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A small generated day, one canonical batch file per operator (made once per module)."""
    return day_files(tmp_path_factory.mktemp("day"), 3_000)


def open_world(db_url: str, home: Path, day_paths: list[Path]) -> Iterator[World]:
    centre = open_centre(Settings(home=home, database_url=db_url), tariffs=tariffs())
    centre.reader_config = ReaderConfig.demo()  # raw records sealed, raw uploads readable
    outcomes = ingest_files(centre.engine, centre.home, day_paths, centre.tariffs,
                            centre.reader_config, seal_key=centre.seal_key)
    reports = {r.operator: r for r in outcomes if isinstance(r, BatchReport)}
    assert len(reports) == len(day_paths), outcomes
    assert reports[OP_A].quarantined and reports[OP_B].quarantined  # pages and exports to read
    settle(centre.engine, centre.home, DAY, centre.tariffs, clear_first=True)
    plant_deny_listed(centre.engine, home, CARDS)
    export = home.parent / "corrections-a.jsonl"
    assert export_quarantine(centre.engine, export, batch_id=reports[OP_A].batch_id)
    job = jobs.submit(centre.engine, DAY - dt.timedelta(days=1))  # stays queued: no worker
    spare = create_key(centre.engine, Role.AUDITOR, label="spare").info.key_id
    with TestClient(create_app(centre, run_jobs=False), raise_server_exceptions=False) as client:
        service = Service(centre, client)
        world = World(service, reports, {op: p.read_bytes() for op, p in _by_operator(day_paths)},
                      export.read_bytes(), job.id, spare)
        for caller, (role, party) in ROLE_OF.items():
            world.keys[caller] = service.key(role, party)
        revoked = create_key(centre.engine, Role.FINANCE, label="revoked")
        revoke_key(centre.engine, revoked.info.key_id)
        world.keys[Caller.REVOKED] = revoked.key
        finance_id, _ = split_key(world.keys[Caller.FINANCE]) or ("", "")
        world.keys[Caller.WRONG] = f"tk_{finance_id}_{secrets.token_urlsafe(32)}"
        yield world
    centre.engine.dispose()


def plant_deny_listed(engine: Any, home: Path, cards: dict[int, int]) -> None:
    """Add a CARD_SEQ_BACKWARDS signal of each issuer's card to the day's stored signals, and
    write the day's deny list again."""
    n = len(cards)
    planted = pa.table({
        "service_day": pa.array([DAY] * n, pa.date32()),
        "kind": pa.array(["CARD_SEQ_BACKWARDS"] * n, pa.string()),
        "issuer": pa.array(list(cards), pa.uint16()),
        "card_id": pa.array(list(cards.values()), pa.uint64()),
        "operator": pa.array([OP_A] * n, pa.uint16()),
        "device_id": pa.array([None] * n, pa.int64()),
        "city": pa.array([420100] * n, pa.uint32()),
        "ts_ms": pa.array([0] * n, pa.int64()),
        "evidence": pa.array([[]] * n, pa.list_(EVIDENCE_TYPE)),
    }, schema=SIGNAL_SCHEMA)
    path = signals_path(home, DAY)
    stored = pq.read_table(path, schema=SIGNAL_SCHEMA) if path.exists() else None
    write_atomic(planted if stored is None else pa.concat_tables([stored, planted]), path)
    write_denylist(home, DAY, engine=engine)


def _by_operator(paths: list[Path]) -> Iterator[tuple[int, Path]]:
    for p in paths:
        yield int(p.stem.rsplit("op", 1)[1]), p


@pytest.fixture
def world(db_url: str, tmp_path: Path, day_paths: list[Path]) -> Iterator[World]:
    yield from open_world(db_url, tmp_path / "home", day_paths)


# ---------------------------------------------------------------- the table


@dataclass(frozen=True)
class Call:
    """One request of the table: the route it exercises (method and path template), how to
    make it, and what each caller must get."""

    method: str
    template: str
    make: Callable[[World], dict[str, Any]]  # -> url and httpx request arguments
    expect: dict[Caller, Outcome]


def at(url: Callable[[World], str], **extra: Any) -> Callable[[World], dict[str, Any]]:
    return lambda w: {"url": url(w), **extra}


def batch_of(op: int) -> Callable[[World], int]:
    return lambda w: w.batches[op].batch_id


def statement_url(tag: str) -> Callable[[World], str]:
    return lambda _w: f"/v1/days/{DAY}/statements/{tag}"


A_BATCH = batch_of(OP_A)
PARQUET = {"Content-Type": "application/vnd.apache.parquet"}

# In order: reads first, then what changes something; corrections last (they change the day).
TABLE: tuple[Call, ...] = (
    Call("GET", "/v1/openapi.json", at(lambda w: "/v1/openapi.json"), PUBLIC),
    Call("GET", "/docs", at(lambda w: "/docs"), PUBLIC),
    Call("GET", "/docs/oauth2-redirect", at(lambda w: "/docs/oauth2-redirect"), PUBLIC),
    Call("GET", "/healthz", at(lambda w: "/healthz"), PUBLIC),
    Call("GET", "/metrics", at(lambda w: "/metrics"), PUBLIC),
    Call("GET", "/v1/keys", at(lambda w: "/v1/keys"), rule(Caller.ADMIN)),
    Call("GET", "/v1/batches", at(lambda w: "/v1/batches"),
         rule(Caller.OPERATOR_A, Caller.OPERATOR_B, *OVERSEERS)),
    Call("GET", "/v1/batches/{batch_id}", at(lambda w: f"/v1/batches/{A_BATCH(w)}"),
         rule(Caller.OPERATOR_A, *OVERSEERS, hidden=[Caller.OPERATOR_B])),
    Call("GET", "/v1/batches/{batch_id}/quarantine",
         at(lambda w: f"/v1/batches/{A_BATCH(w)}/quarantine"),
         rule(Caller.OPERATOR_A, *OVERSEERS, hidden=[Caller.OPERATOR_B])),
    Call("GET", "/v1/batches/{batch_id}/quarantine",
         at(lambda w: f"/v1/batches/{A_BATCH(w)}/quarantine", params={"format": "csv"}),
         rule(Caller.OPERATOR_A, *OVERSEERS, hidden=[Caller.OPERATOR_B])),
    Call("GET", "/v1/days", at(lambda w: "/v1/days"), rule(*OVERSEERS)),
    Call("GET", "/v1/jobs", at(lambda w: "/v1/jobs"), rule(*OVERSEERS)),
    Call("GET", "/v1/jobs/{job_id}", at(lambda w: f"/v1/jobs/{w.job_id}"), rule(*OVERSEERS)),
    Call("GET", "/v1/days/{day}/statements/{party}", at(statement_url(f"OPR-{OP_A}")),
         rule(Caller.OPERATOR_A, *OVERSEERS, hidden=OTHERS_OF_OPERATOR_A)),
    Call("GET", "/v1/days/{day}/statements/{party}", at(statement_url(f"ISS-{ISS_A}")),
         rule(Caller.ISSUER_A, *OVERSEERS, hidden=OTHERS_OF_ISSUER_A)),
    Call("GET", "/v1/days/{day}/statements/{party}", at(statement_url("GOV-420100")),
         rule(*OVERSEERS, hidden=PARTIES)),
    Call("GET", "/v1/days/{day}/statements/{party}", at(statement_url("CTR-0")),
         rule(*OVERSEERS, hidden=PARTIES)),
    Call("GET", "/v1/days/{day}/payments", at(lambda w: f"/v1/days/{DAY}/payments"),
         rule(*PARTIES, *OVERSEERS)),
    Call("GET", "/v1/ledger/balances", at(lambda w: "/v1/ledger/balances"), rule(*OVERSEERS)),
    Call("GET", "/v1/days/{day}/denylist", at(lambda w: f"/v1/days/{DAY}/denylist"),
         rule(Caller.ISSUER_A, Caller.ISSUER_B, *OVERSEERS)),
    Call("GET", "/v1/days/{day}/denylist",
         at(lambda w: f"/v1/days/{DAY}/denylist", headers={"Accept": "text/csv"}),
         rule(Caller.ISSUER_A, Caller.ISSUER_B, *OVERSEERS)),
    Call("POST", "/v1/ledger/verify", at(lambda w: "/v1/ledger/verify"), rule(*OVERSEERS)),
    Call("POST", "/v1/keys", at(lambda w: "/v1/keys", json={"role": "auditor"}),
         rule(Caller.ADMIN)),
    Call("DELETE", "/v1/keys/{key_id}", at(lambda w: f"/v1/keys/{w.spare_key_id}"),
         rule(Caller.ADMIN)),
    # operator A's own file again: 200 with the stored batch; operator B sending it: refused
    Call("POST", "/v1/batches",
         lambda w: {"url": "/v1/batches", "content": w.files[OP_A], "headers": PARQUET},
         rule(Caller.OPERATOR_A, mismatch=[Caller.OPERATOR_B])),
    Call("POST", "/v1/days/{day}/settlement", at(lambda w: f"/v1/days/{DAY}/settlement"),
         rule(Caller.FINANCE)),
    # issuer A's own card (finance may clear any); issuer B is told it is on no list of its own
    Call("POST", "/v1/denylist/clearings",
         lambda w: {"url": "/v1/denylist/clearings",
                    "json": {"issuer": ISS_A, "cards": [str(w.cards[ISS_A])],
                             "through": DAY.isoformat(),
                             "reason": "card replaced after a reader fault"}},
         rule(Caller.ISSUER_A, Caller.FINANCE, hidden=[Caller.ISSUER_B])),
    Call("POST", "/v1/months/{month}/close", at(lambda w: f"/v1/months/{MONTH}/close"),
         rule(Caller.FINANCE)),
    Call("POST", "/v1/batches/{batch_id}/corrections",
         lambda w: {"url": f"/v1/batches/{A_BATCH(w)}/corrections", "content": w.corrections,
                    "headers": {"Content-Type": "application/x-ndjson"}},
         rule(Caller.OPERATOR_A, hidden=[Caller.OPERATOR_B])),
)


# The browser pages (tongka.web: signed in by a session cookie, with CSRF tokens) are a surface
# of their own, with their own access tests; this table is the API's (issue 11). Any route whose
# endpoint lives elsewhere, including every new one, must have a row.
PAGES = "tongka.web."


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every API route the application serves; HEAD goes with GET.

    FastAPI 0.16x keeps an included router as one entry of ``app.routes``; its
    ``iter_route_contexts`` flattens them (older versions list the routes themselves)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - FastAPI before included routers were kept whole
        routes: Iterable[Any] = app.routes
    else:
        routes = iter_route_contexts(app.routes)
    found = set()
    for route in routes:
        module = getattr(getattr(route, "endpoint", None), "__module__", "") or ""
        if module.startswith(PAGES):
            continue
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


def test_the_table_names_every_route_of_the_application(tmp_path: Path) -> None:
    """A new route without a row here fails: its roles were never decided."""
    centre = open_centre(Settings(home=tmp_path / "home",
                                  database_url=f"sqlite:///{tmp_path / 'routes.sqlite'}"),
                         tariffs=tariffs())
    try:
        served = app_routes(create_app(centre, run_jobs=False))
    finally:
        centre.engine.dispose()
    tabled = {(c.method, c.template) for c in TABLE}
    assert served, "no routes found: the route listing broke"
    assert served - tabled == set(), "routes without a row in TABLE"
    assert tabled - served == set(), "rows of TABLE for routes the application does not serve"


@dataclass(frozen=True)
class Sent:
    caller: Caller
    method: str
    template: str
    path: str
    status: int
    code: str | None
    body: bytes


def send(world: World, call: Call, caller: Caller) -> Sent:
    request = call.make(world)
    url = request.pop("url")
    headers = {**request.pop("headers", {}), **world.headers(caller)}
    got = world.client.request(call.method, url, headers=headers, **request)
    code = None
    if got.headers.get("content-type", "").startswith("application/problem+json"):
        code = got.json().get("code")
    return Sent(caller, call.method, call.template, url.split("?", 1)[0], got.status_code, code,
                got.content)


def test_every_route_answers_every_caller_as_the_role_list_says(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Table-driven: each (request, caller) gets its outcome class; then the audit trail has a
    row for every change and every refusal, and no audit row, log record or response other than
    the key's own creation carries a key."""
    caplog.set_level(logging.DEBUG)
    sent: list[Sent] = []
    wrong: list[str] = []
    for call in TABLE:
        for caller in Caller:
            done = send(world, call, caller)
            sent.append(done)
            want = call.expect[caller]
            if not want.matches(done.status, done.code):
                wrong.append(f"{call.method} {done.path} as {caller}: got {done.status} "
                             f"{done.code or ''}, want {want.value}: {done.body[:200]!r}")
    assert wrong == [], "\n".join(wrong)

    audited = Counter(
        (e.action, e.resource, e.outcome, e.key_id, e.role)
        for e in audit.events(world.service.centre.engine, limit=100_000)
    )
    assert audited == Counter(_audit_row(world, s) for s in sent if _audited(s))

    created = [json.loads(s.body)["key"] for s in sent
               if s.template == "/v1/keys" and s.method == "POST" and s.status == 201]
    assert len(created) == 1
    secrets_ = _key_texts([*world.keys.values(), *created])
    events = audit.events(world.service.centre.engine, limit=100_000)
    assert [e for e in events if any(k in str(e) for k in secrets_)] == []
    assert [r.getMessage() for r in caplog.records
            if any(k in _record_text(r) for k in secrets_)] == []
    echoed = [f"{s.method} {s.path} as {s.caller}" for s in sent
              if not (s.template == "/v1/keys" and s.method == "POST")
              and any(k.encode() in s.body for k in secrets_)]
    assert echoed == []


def _audited(s: Sent) -> bool:
    """What the service writes to the audit trail (docs/service.md): every request that changes
    something, every refused one (401, 403), and a 404 to a known caller (it may hide another
    party's resource)."""
    known = s.caller in KEYED
    return s.method not in READS or s.status in (401, 403) or (s.status == 404 and known)


def _audit_row(world: World, s: Sent) -> tuple[str, str, int, str | None, str | None]:
    if s.caller not in KEYED:
        return (f"{s.method} {s.template}", s.path, s.status, None, None)
    key_id, _ = split_key(world.keys[s.caller]) or (None, "")
    role, party = ROLE_OF[s.caller]
    name = f"{role}:{party}" if party is not None else str(role)
    return (f"{s.method} {s.template}", s.path, s.status, key_id, name)


def _key_texts(keys: Iterable[str]) -> set[str]:
    """Each whole key and its secret part: neither may be written anywhere."""
    out = set()
    for key in keys:
        out.add(key)
        parts = split_key(key)
        if parts is not None:
            out.add(parts[1])
    return out


def _record_text(record: logging.LogRecord) -> str:
    return " ".join([record.getMessage(), repr(record.args), record.exc_text or "",
                     repr(getattr(record, "__dict__", {}))])


# ---------------------------------------------------------------- leaks


@dataclass(frozen=True)
class Ask:
    """A GET a viewer makes; ``ident`` names the party or batch its path asks for, and
    ``ghost`` is the same request for one that does not exist."""

    template: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    ident: str | None = None
    ghost: str | None = None
    owner: str | None = None  # the party tag whose resource this is, if any


@dataclass(frozen=True)
class Received:
    ask: Ask
    status: int
    content_type: str
    raw: bytes  # headers and body (identifiers swapped when ``hidden``)
    hidden: bool = False  # answered exactly as the same request for a missing resource


@dataclass(frozen=True)
class Markers:
    """What would betray party ``tag``'s data: identifiers found anywhere in the bytes, and
    values of party, operator and batch fields in the JSON, JSON Lines and CSV received."""

    tag: str
    patterns: dict[str, re.Pattern[bytes]]  # kind -> identifiers of the party
    operator: int | None = None
    batch_ids: frozenset[int] = frozenset()

    def kinds(self) -> set[str]:
        out = {*self.patterns, "party field", "existence"}
        if self.operator is not None:
            out |= {"operator field", "batch id field"}
        return out


ACCEPTS = ("application/json", "text/csv", "text/html")
STATEMENT = "/v1/days/{day}/statements/{party}"


def asks(world: World, *, rendered: bool = True) -> list[Ask]:
    """Every GET route, for every batch and party of interest, in every format it speaks
    (statements as JSON only unless ``rendered``: CSV and HTML cost a rendering with charts
    each, and the control below needs to find B's identifiers, which JSON carries too)."""
    out = [Ask(t, t) for t in ("/v1/openapi.json", "/docs", "/docs/oauth2-redirect", "/healthz",
                              "/metrics", "/v1/keys", "/v1/days", "/v1/jobs",
                              "/v1/ledger/balances")]
    out += [Ask("/v1/batches", f"/v1/batches{q}") for q in (
        "", f"?day={DAY}", "?status=accepted", "?status=withdrawn", f"?day={DAY}&limit=1",
        f"?day={DAY}&offset=1&limit=3")]
    out.append(Ask("/v1/jobs/{job_id}", f"/v1/jobs/{world.job_id}"))
    out.append(Ask("/v1/days/{day}/payments", f"/v1/days/{DAY}/payments"))
    out += [Ask("/v1/days/{day}/denylist", f"/v1/days/{DAY}/denylist{q}", {"Accept": accept})
            for q in ("", f"?issuer={ISS_A}") for accept in ("application/json", "text/csv")]
    for op in (OP_A, OP_B):
        batch = str(world.batches[op].batch_id)
        ghost = str(GHOST_BATCH)
        owner = f"OPR-{op}"
        out.append(Ask("/v1/batches/{batch_id}", f"/v1/batches/{batch}", ident=batch,
                       ghost=ghost, owner=owner))
        for query, accept in (("", ""), ("?format=json", ""), ("?format=csv", ""),
                              ("?format=jsonl", ""), ("", "text/csv"),
                              ("", "application/x-ndjson"), ("?include_resubmitted=true", "")):
            out.append(Ask("/v1/batches/{batch_id}/quarantine",
                           f"/v1/batches/{batch}/quarantine{query}",
                           {"Accept": accept} if accept else {}, batch, ghost, owner))
    media_types = ACCEPTS if rendered else ACCEPTS[:1]
    for tag, media in [(t, m) for t in (f"OPR-{OP_A}", f"OPR-{OP_B}", f"ISS-{ISS_A}",
                                        f"ISS-{ISS_B}") for m in media_types] + [
                       ("GOV-420100", "application/json"), ("CTR-0", "application/json")]:
        role = tag.split("-")[0]
        out.append(Ask("/v1/days/{day}/statements/{party}", f"/v1/days/{DAY}/statements/{tag}",
                       {"Accept": media}, tag, f"{role}-{GHOST_CODE}", tag))
    return out


def receive(world: World, caller: Caller, ask: Ask, url: str | None = None) -> Received:
    got = world.client.get(url or ask.url, headers={**ask.headers, **world.headers(caller)})
    head = "".join(f"{k}: {v}\n" for k, v in got.headers.items()).encode()
    return Received(ask, got.status_code, got.headers.get("content-type", ""),
                    head + b"\n" + got.content)


def _body(r: Received) -> bytes:
    return r.raw.split(b"\n\n", 1)[1]


def _swap(data: bytes, ident: str, ghost: str) -> bytes:
    """``ident`` replaced by ``ghost`` where it stands alone (not inside a longer number)."""
    return re.sub(rb"(?<![0-9A-Za-z])" + re.escape(ident.encode()) + rb"(?![0-9])",
                  ghost.encode(), data)


def observe(world: World, caller: Caller, *, rendered: bool = True) -> list[Received]:
    """What ``caller`` receives from every ask. An answer about a real batch or party that
    reads exactly as the answer about a missing one (same status, same bytes once the two
    identifiers are swapped: only the caller's own words come back) is kept swapped and marked
    ``hidden``; anything else is kept as received."""
    out = []
    ghosts: dict[tuple[str, str], Received] = {}
    for ask in asks(world, rendered=rendered):
        got = receive(world, caller, ask)
        if ask.ident is not None and ask.ghost is not None:
            url = _swap(ask.url.encode(), ask.ident, ask.ghost).decode()
            key = (url, json.dumps(ask.headers))
            ghost = ghosts[key] = ghosts.get(key) or receive(world, caller, ask, url)
            if ghost.status == got.status and _swap(_body(got), ask.ident,
                                                    ask.ghost) == _body(ghost):
                got = Received(ask, got.status, got.content_type,
                               _swap(got.raw, ask.ident, ask.ghost), hidden=True)
        out.append(got)
    return out


def markers_of(world: World, tag: str) -> Markers:
    """Party ``tag``'s identifiers: its tag, its payment lines' instruction ids, for an
    issuer its deny-listed card's token, and for an operator its batch's id and SHA-256."""
    patterns: dict[str, re.Pattern[bytes]] = {
        "party tag": re.compile(rb"(?<![0-9A-Za-z])" + re.escape(tag.encode()) + rb"(?![0-9])"),
    }
    with session_factory(world.service.centre.engine)() as session:
        ids = [i.instruction_id for run in load_runs(session, Scope.DAY, DAY)
               for i in run.instructions if i.party.tag == tag]
    assert ids, f"{tag} has no payment line: nothing to look for"
    patterns["instruction id"] = re.compile(
        b"|".join(re.escape(i.encode()) + rb"(?![0-9])" for i in ids))
    role, code = tag.split("-")
    if role == "ISS":
        patterns["card token"] = re.compile(
            rb"(?<![0-9])" + str(world.cards[int(code)]).encode() + rb"(?![0-9])")
    if role != "OPR":
        return Markers(tag, patterns)
    batch = world.batches[int(code)]
    patterns["batch sha256"] = re.compile(batch.file_sha256.encode())
    return Markers(tag, patterns, int(code), frozenset({batch.batch_id}))


def leaks(seen: list[Received], b: Markers, viewer: str) -> Counter[str]:
    """How often B's identifiers appear in what ``viewer`` (a party tag) saw, by kind.

    The viewer's own statement names its counterparties, and another party's tag there is the
    viewer's own business (issuer A owes operator B): tags are not counted in it."""
    found: Counter[str] = Counter()
    for r in seen:
        if r.ask.owner == b.tag and not r.hidden:
            found["existence"] += 1  # B's resource answered unlike a missing one
        own_statement = r.ask.owner == viewer and r.ask.template == STATEMENT
        for kind, pattern in b.patterns.items():
            if not (own_statement and kind == "party tag"):
                found[kind] += len(pattern.findall(r.raw))
        for obj in _records(r):
            if obj.get("party") == b.tag:
                found["party field"] += 1
            if b.operator is not None:
                if _int(obj.get("operator")) == b.operator:
                    found["operator field"] += 1
                ids = {_int(obj.get("batch_id"))}
                if "file_sha256" in obj:
                    ids.add(_int(obj.get("id")))
                if ids & b.batch_ids:
                    found["batch id field"] += 1
    return found


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _records(r: Received) -> Iterator[dict[str, Any]]:
    """Every object of a JSON, JSON Lines or CSV body (CSV rows as dicts, nested JSON walked)."""
    body = _body(r)
    media = r.content_type.split(";")[0].strip()
    values: list[Any] = []
    if media in ("application/json", "application/problem+json"):
        values.append(json.loads(body))
    elif media == "application/x-ndjson":
        values += [json.loads(line) for line in body.splitlines() if line.strip()]
    elif media == "text/csv":
        text = body.decode("utf-8")
        rows = [line for line in text.splitlines(keepends=True) if not line.startswith("#")]
        values += list(csv.DictReader(io.StringIO("".join(rows))))
    stack = values
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            yield value
            stack += list(value.values())
        elif isinstance(value, list):
            stack += value


def test_operator_a_and_issuer_a_never_receive_a_byte_of_b(world: World) -> None:
    """0 leaks for A; the same count over finance's answers finds B's data of every kind, and
    over A's own answers A's data of every kind (so the routes asked do return data)."""
    templates = {a.template for a in asks(world)}
    gets = {t for m, t in app_routes(world.client.app) if m == "GET"}  # type: ignore[arg-type]
    assert gets - templates == set(), "GET routes the leak check never asks"
    op_a, op_b = markers_of(world, f"OPR-{OP_A}"), markers_of(world, f"OPR-{OP_B}")
    iss_a, iss_b = markers_of(world, f"ISS-{ISS_A}"), markers_of(world, f"ISS-{ISS_B}")

    seen_op = observe(world, Caller.OPERATOR_A)
    seen_iss = observe(world, Caller.ISSUER_A)
    found = {
        "operator A receives operator B's": leaks(seen_op, op_b, op_a.tag),
        "operator A receives issuer B's": leaks(seen_op, iss_b, op_a.tag),
        "issuer A receives issuer B's": leaks(seen_iss, iss_b, iss_a.tag),
        "issuer A receives operator B's": leaks(seen_iss, op_b, iss_a.tag),
    }
    assert {what: sum(n.values()) for what, n in found.items()} == dict.fromkeys(found, 0), found

    seen_finance = observe(world, Caller.FINANCE, rendered=False)
    for seen, b, viewer in ((seen_finance, op_b, "finance"), (seen_finance, iss_b, "finance"),
                            (seen_op, op_a, "none"), (seen_iss, iss_a, "none")):
        control = leaks(seen, b, viewer)
        assert {k for k in b.kinds() if control[k] == 0} == set(), (
            f"the check finds not every kind of {b.tag}'s data where it is: {control}")
