"""API keys, on both databases: a revoked or wrong key is refused (401) the moment it is, the
database keeps a slow hash that is neither the key nor holds its secret, no key reaches the
audit trail or a log record, and ``tongka keys create|list|revoke`` manage them as the service
sees them."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from tests import service_support
from tests.cli_run import coded, ok, tongka
from tests.service_support import Service
from tongka import audit
from tongka.access import (
    AccessError,
    ApiKey,
    Role,
    authenticate,
    create_key,
    list_keys,
    revoke_key,
    split_key,
)

service = service_support.service  # the fixture: the service on each database
KEY_SHAPE = re.compile(r"^tk_([0-9a-f]{12})_([A-Za-z0-9_-]{43,})$")
GUARDED = "/v1/jobs"  # finance and auditors read it; nobody else does


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refusal(service: Service, key: str | None) -> tuple[int, str | None, dict[str, object]]:
    got = service.client.get(GUARDED, headers=bearer(key) if key is not None else {})
    body = got.json()
    return got.status_code, got.headers.get("www-authenticate"), {
        k: v for k, v in body.items() if k != "instance"}


def texts_of(keys: Iterable[str]) -> set[str]:
    """Each key whole and its secret alone: neither may be written down anywhere."""
    out = set()
    for key in keys:
        out.add(key)
        parts = split_key(key)
        assert parts is not None, key
        out.add(parts[1])
    return out


def hidden_everywhere(engine: Engine, caplog: pytest.LogCaptureFixture, keys: set[str]) -> None:
    events = audit.events(engine, limit=100_000)
    assert events, "nothing was audited: the check below would prove nothing"
    assert [e for e in events if any(k in repr(e) for k in keys)] == []
    logged = [r for r in caplog.records
              if any(k in f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for k in keys)]
    assert logged == []


# ---------------------------------------------------------------- refused keys


def test_a_revoked_key_is_refused_at_once_though_the_server_had_verified_it(
    service: Service,
) -> None:
    created = create_key(service.centre.engine, Role.FINANCE, label="leaving")
    assert service.client.get(GUARDED, headers=bearer(created.key)).status_code == 200
    assert service.client.get(GUARDED, headers=bearer(created.key)).status_code == 200  # cached
    revoke_key(service.centre.engine, created.info.key_id)
    status, challenge, body = refusal(service, created.key)
    assert (status, challenge, body["code"]) == (401, "Bearer", "AUTH_INVALID")
    # revoked means for good: revoking again changes nothing, the key stays refused
    revoke_key(service.centre.engine, created.info.key_id)
    assert refusal(service, created.key)[0] == 401


def test_wrong_unknown_and_malformed_keys_are_refused_with_one_answer(service: Service) -> None:
    """A caller learns nothing about which keys exist: every bad key gets the same 401."""
    good = create_key(service.centre.engine, Role.AUDITOR).key
    other = create_key(service.centre.engine, Role.AUDITOR).key
    parts, other_parts = split_key(good), split_key(other)
    assert parts is not None and other_parts is not None
    key_id, secret = parts
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    bad = {
        "right id, other secret": f"tk_{key_id}_{flipped}",
        "right id, another key's secret": f"tk_{key_id}_{other_parts[1]}",
        "unknown id, right secret": f"tk_{'0' * 12}_{secret}",
        "truncated": good[:-1],
        "extended": good + "x",
        "no prefix": good.removeprefix("tk_"),
        "other prefix": "sk" + good[2:],
        "not a key": "hunter2",
        "id only": f"tk_{key_id}",
    }
    assert service.client.get(GUARDED, headers=bearer(good)).status_code == 200
    answers = {what: refusal(service, key) for what, key in bad.items()}
    refused = {what for what, (status, _, _) in answers.items() if status == 401}
    assert refused == set(bad)
    assert len({repr(a) for a in answers.values()}) == 1, answers
    assert next(iter(answers.values()))[2]["code"] == "AUTH_INVALID"
    # no key at all is its own answer (send one), still 401 and still with the challenge
    status, challenge, body = refusal(service, None)
    assert (status, challenge, body["code"]) == (401, "Bearer", "AUTH_REQUIRED")


# ---------------------------------------------------------------- what is stored


def test_the_stored_hash_is_neither_the_key_nor_holds_its_secret(engine: Engine) -> None:
    created = [create_key(engine, Role.OPERATOR, party=101, label="bus"),
               create_key(engine, Role.FINANCE), create_key(engine, Role.FINANCE)]
    with engine.connect() as conn:
        rows = {r.key_id: r for r in conn.execute(select(ApiKey.__table__))}
    assert set(rows) == {c.info.key_id for c in created}
    for c in created:
        match = KEY_SHAPE.match(c.key)
        assert match, c.key
        key_id, secret = match.groups()
        assert len(base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))) >= 32
        row = rows[key_id]
        stored = " ".join(str(v) for v in row)  # every column of the row
        assert row.secret_hash != c.key and row.secret_hash != secret
        assert secret not in stored and c.key not in stored
        for fast in (hashlib.sha256, hashlib.sha512, hashlib.md5):  # not a fast, unsalted hash
            for text in (secret, c.key):
                digest = fast(text.encode())
                assert digest.hexdigest() not in stored
                assert base64.b64encode(digest.digest()).decode() not in stored
        scheme, n, *_ = row.secret_hash.split("$")
        assert (scheme, int(n) >= 2**14) == ("scrypt", True)
    same_role = [rows[c.info.key_id].secret_hash for c in created[1:]]
    assert same_role[0] != same_role[1]  # salted: equal roles, different hashes
    # and what the stored hash is for: the key verifies against it, a near miss does not
    key = created[0].key
    assert authenticate(engine, key).party == 101
    with pytest.raises(AccessError):
        authenticate(engine, key[:-1] + ("A" if key[-1] != "A" else "B"))


def test_keys_never_reach_the_audit_trail_or_the_logs(
    service: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """Keys created over HTTP and by hand, used, refused, revoked and used again: the audit
    trail names the key's public id, never the key nor its secret; no log record has either."""
    caplog.set_level(logging.DEBUG)
    engine = service.centre.engine
    admin = service.key(Role.ADMIN)
    made = service.client.post("/v1/keys", headers=bearer(admin),
                               json={"role": "operator", "party": 101, "label": "bus"})
    assert made.status_code == 201, made.text
    new_key = made.json()["key"]
    assert service.client.get("/v1/batches", headers=bearer(new_key)).status_code == 200
    assert service.client.get("/v1/ledger/balances", headers=bearer(new_key)).status_code == 403
    gone = service.client.delete(f"/v1/keys/{made.json()['key_id']}", headers=bearer(admin))
    assert gone.status_code == 200 and gone.json()["revoked_at"] is not None
    assert "key" not in gone.json()
    assert service.client.get("/v1/batches", headers=bearer(new_key)).status_code == 401
    parts = split_key(new_key)
    assert parts is not None
    wrong = f"tk_{parts[0]}_{'x' * 43}"
    assert service.client.get("/v1/batches", headers=bearer(wrong)).status_code == 401
    assert service.client.post("/v1/keys", headers=bearer(new_key),
                               json={"role": "admin"}).status_code == 401
    listed = service.client.get("/v1/keys", headers=bearer(admin))
    assert listed.status_code == 200

    keys = texts_of([admin, new_key, wrong])
    assert not any(k in listed.text for k in keys)
    hidden_everywhere(engine, caplog, keys)
    events = audit.events(engine)
    assert {(e.action, e.outcome, e.key_id) for e in events} >= {
        ("POST /v1/keys", 201, split_key(admin)[0]),  # type: ignore[index]
        ("DELETE /v1/keys/{key_id}", 200, split_key(admin)[0]),  # type: ignore[index]
        ("GET /v1/ledger/balances", 403, parts[0]),
        ("GET /v1/batches", 401, None),
    }


# ---------------------------------------------------------------- the command line


def test_keys_through_the_command_line(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, engine: Engine,
) -> None:
    """``tongka keys create`` prints the key once (stdout, alone), ``list`` shows its id and
    never its secret, ``revoke`` ends it; the service's own check agrees at each step."""
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "home"

    def cli(*args: str) -> tuple[int, str, str]:
        return tongka(monkeypatch, capsys, home, "keys", *args, db=db_url)

    rc, out, err = cli("create", "--role", "operator", "--operator", "101", "--label", "Bus")
    assert rc == 0, out + err
    key = out.strip()
    match = KEY_SHAPE.match(key)
    assert match, out
    key_id, secret = match.groups()
    assert key_id in err and secret not in err  # the id is named, the key printed once
    assert authenticate(engine, key).name == "operator:101"
    finance = ok(cli("create", "--role", "finance")).splitlines()[0].strip()
    assert authenticate(engine, finance).role is Role.FINANCE

    def listed_line() -> str:
        listed = ok(cli("list"))
        assert secret not in listed and finance.split("_", 2)[2] not in listed
        (line,) = [line for line in listed.splitlines() if key_id in line]
        return line

    line = listed_line()
    assert "Bus" in line and "operator" in line and "101" in line
    dates = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}")
    assert len(dates.findall(line)) == 1  # created, not revoked

    assert key_id in ok(cli("revoke", key_id))
    with pytest.raises(AccessError):
        authenticate(engine, key)
    assert authenticate(engine, finance).role is Role.FINANCE  # only that key ended
    (row,) = [k for k in list_keys(engine) if k.key_id == key_id]
    assert row.revoked_at is not None
    assert len(dates.findall(listed_line())) == 2  # created and revoked

    refused = {
        "party missing": ("create", "--role", "operator"),
        "party for a role without one": ("create", "--role", "finance", "--operator", "101"),
        "issuer code for an operator": ("create", "--role", "operator", "--issuer", "1"),
        "both parties": ("create", "--role", "issuer", "--operator", "101", "--issuer", "1"),
        "unknown role": ("create", "--role", "wizard"),
        "unknown key": ("revoke", "000000000000"),
    }
    codes = {}
    for what, args in refused.items():
        rc, _out, err = cli(*args)
        codes[what] = (rc != 0, coded(err))
    assert codes == {
        "party missing": (True, "ROLE_PARTY_MISMATCH"),
        "party for a role without one": (True, "ROLE_PARTY_MISMATCH"),
        "issuer code for an operator": (True, "ROLE_PARTY_MISMATCH"),
        "both parties": (True, "ROLE_PARTY_MISMATCH"),
        "unknown role": (True, "ROLE_INVALID"),
        "unknown key": (True, "KEY_NOT_FOUND"),
    }
    assert len(list_keys(engine)) == 2  # nothing refused was stored
    assert [r for r in caplog.records if key in r.getMessage() or secret in r.getMessage()] == []
