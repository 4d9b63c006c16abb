"""Batches over HTTP, on both databases: an operator sees its own batches and quarantined rows
and nobody else's (another's batch is 404 exactly like a missing one), finance and auditors
see all; quarantine pages carry codes, the corrections file downloads as JSON Lines or CSV,
without raw records, and comes back corrected through the same ingestion."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest

from clearing.batches import QuarantineStatus, quarantined_rows
from readers.config import ReaderConfig
from tests import service_support
from tests.service_support import DAY, Service, day_files
from tongka.access import Role

service = service_support.service  # the fixture: the service on each database
OP_A, OP_B = 101, 102
READERS = ((Role.FINANCE, None), (Role.AUDITOR, None))
REFUSED = ((Role.ISSUER, 1), (Role.ADMIN, None))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """A small generated day as canonical batch files: operator -> the file's bytes."""
    out = tmp_path_factory.mktemp("day")
    return {int(p.stem.rsplit("op", 1)[1]): p.read_bytes() for p in day_files(out, 2_000)}


@pytest.fixture
def stored(service: Service, files: dict[int, bytes]) -> dict[int, dict[str, Any]]:
    """Operators A and B have each uploaded their file (raw records sealed: the centre has a
    key); operator -> the upload's answer."""
    service.centre.reader_config = ReaderConfig.demo()
    out = {}
    for op in (OP_A, OP_B):
        got = service.client.post("/v1/batches", content=files[op],
                                  headers=service.auth(Role.OPERATOR, op))
        assert got.status_code == 201, got.text
        out[op] = got.json()
    return out


def get(service: Service, path: str, role: Role = Role.OPERATOR, party: int | None = OP_A,
        headers: dict[str, str] | None = None, **params: Any) -> Any:
    return service.client.get(path, params=params,
                              headers={**service.auth(role, party), **(headers or {})})


def listed(service: Service, role: Role, party: int | None, **params: Any) -> list[int]:
    got = get(service, "/v1/batches", role, party, **params)
    assert got.status_code == 200, got.text
    return [b["id"] for b in got.json()["batches"]]


def corrections(service: Service, batch_id: int, lines: list[dict[str, Any]],
                party: int = OP_A, role: Role = Role.OPERATOR) -> Any:
    body = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return service.client.post(f"/v1/batches/{batch_id}/corrections", content=body,
                               headers={**service.auth(role, party),
                                        "Content-Type": "application/x-ndjson"})


def export(service: Service, batch_id: int, party: int = OP_A) -> list[dict[str, Any]]:
    got = get(service, f"/v1/batches/{batch_id}/quarantine", party=party, format="jsonl")
    assert got.status_code == 200, got.text
    return [json.loads(line) for line in got.text.splitlines()]


# ---------------------------------------------------------------- who sees what


def test_an_operator_lists_only_its_own_batches(
    service: Service, stored: dict[int, dict[str, Any]]
) -> None:
    a, b = stored[OP_A]["batch_id"], stored[OP_B]["batch_id"]
    assert listed(service, Role.OPERATOR, OP_A) == [a]
    assert listed(service, Role.OPERATOR, OP_B) == [b]
    assert listed(service, Role.OPERATOR, 103) == []
    for role, party in READERS:
        assert sorted(listed(service, role, party)) == sorted([a, b])
        assert sorted(listed(service, role, party, day=DAY.isoformat())) == sorted([a, b])
        assert listed(service, role, party, day="2026-11-25") == []
        assert listed(service, role, party, status="withdrawn") == []
    assert listed(service, Role.OPERATOR, OP_A, status="accepted") == [a]
    for role, party in REFUSED:
        got = get(service, "/v1/batches", role, party)
        assert (got.status_code, got.json()["code"]) == (403, "FORBIDDEN")


def test_the_list_pages(service: Service, stored: dict[int, dict[str, Any]]) -> None:
    first = get(service, "/v1/batches", Role.AUDITOR, None, limit=1).json()
    second = get(service, "/v1/batches", Role.AUDITOR, None, limit=1,
                 offset=first["next_offset"]).json()
    assert first["next_offset"] == 1 and second["next_offset"] is None
    ids = [b["id"] for b in first["batches"] + second["batches"]]
    assert sorted(ids) == sorted(s["batch_id"] for s in stored.values())


def test_a_batch_shows_its_counts_and_errors_to_whom_may_see_it(
    service: Service, stored: dict[int, dict[str, Any]]
) -> None:
    up = stored[OP_A]
    path = f"/v1/batches/{up['batch_id']}"
    for role, party in ((Role.OPERATOR, OP_A), *READERS):
        got = get(service, path, role, party)
        assert got.status_code == 200, got.text
        shown = got.json()
        for field in ("file_sha256", "operator", "received", "accepted", "duplicates",
                      "quarantined", "late"):
            assert shown[field] == up[field], field
        assert {g["code"]: g["count"] for g in shown["errors"]} == up["errors"]
        assert all(e["code"] == g["code"] for g in shown["errors"] for e in g["examples"])
        assert "tap_path" not in shown
    for role, party in REFUSED:
        assert get(service, path, role, party).status_code == 403


def test_another_operators_batch_is_404_like_a_missing_one(
    service: Service, stored: dict[int, dict[str, Any]]
) -> None:
    theirs = stored[OP_B]["batch_id"]
    missing = max(s["batch_id"] for s in stored.values()) + 1000
    for suffix in ("", "/quarantine", "/quarantine?format=csv"):
        other = get(service, f"/v1/batches/{theirs}{suffix}")
        absent = get(service, f"/v1/batches/{missing}{suffix}")
        assert other.status_code == absent.status_code == 404
        assert other.json()["code"] == absent.json()["code"] == "BATCH_NOT_FOUND"
        assert str(stored[OP_B]["file_sha256"]) not in other.text
    posted = corrections(service, theirs, [{"quarantine_id": 1, "record": {}}])
    assert (posted.status_code, posted.json()["code"]) == (404, "BATCH_NOT_FOUND")
    # nothing of B's was touched
    assert all(q.status == QuarantineStatus.OPEN
               for q in quarantined_rows(service.centre.engine, theirs))


# ---------------------------------------------------------------- quarantine


def test_quarantined_rows_come_in_pages_with_their_codes(
    service: Service, stored: dict[int, dict[str, Any]]
) -> None:
    up = stored[OP_A]
    path = f"/v1/batches/{up['batch_id']}/quarantine"
    rows: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        page = get(service, path, limit=3, offset=offset)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["rows"]) <= 3
        rows += body["rows"]
        offset = body["next_offset"]
    assert len(rows) == up["quarantined"] == len({r["id"] for r in rows})
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["code"]] = counts.get(r["code"], 0) + 1
        assert r["message"] and r["record"]["operator"] == OP_A and r["status"] == "open"
        assert "raw" not in r and "raw_sealed" not in r
    assert counts == up["errors"]
    one_code = next(iter(up["errors"]))
    only = get(service, path, code=one_code).json()["rows"]
    assert {r["code"] for r in only} == {one_code} and len(only) == up["errors"][one_code]
    too_many = get(service, path, limit=100_000)
    assert too_many.status_code == 422


def test_the_corrections_file_downloads_without_raw_records(
    service: Service, stored: dict[int, dict[str, Any]]
) -> None:
    up = stored[OP_A]
    path = f"/v1/batches/{up['batch_id']}/quarantine"
    lines = export(service, up["batch_id"])
    assert len(lines) == up["quarantined"]
    for line in lines:
        assert line["batch_id"] == up["batch_id"] and line["operator"] == OP_A
        assert line["batch_sha256"] == up["file_sha256"]
        assert line["raw"] == {"sealed": True}  # kept sealed by the centre, never sent
    as_csv = get(service, path, headers={"Accept": "text/csv"})
    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert [int(r["quarantine_id"]) for r in table] == [x["quarantine_id"] for x in lines]
    assert [json.loads(r["record"]) for r in table] == [x["record"] for x in lines]
    assert get(service, path, headers={"Accept": "application/x-ndjson"}).text == "".join(
        json.dumps(x, ensure_ascii=False) + "\n" for x in lines)
    for role, party in READERS:
        assert get(service, path, role, party, format="jsonl").status_code == 200
    refused = get(service, path, headers={"Accept": "image/png"})
    assert (refused.status_code, refused.json()["code"]) == (406, "NOT_ACCEPTABLE")


# ---------------------------------------------------------------- corrections


def fixable(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """A quarantined row whose one wrong field has an obviously right value."""
    line = next(x for x in lines if x["code"] == "BAD_PRODUCT")
    return {**line, "record": {**line["record"], "product": 0}}


def test_corrections_round_trip(service: Service, stored: dict[int, dict[str, Any]]) -> None:
    batch_id = stored[OP_A]["batch_id"]
    fixed = fixable(export(service, batch_id))
    got = corrections(service, batch_id, [fixed])
    assert got.status_code == 201, got.text
    (made,) = got.json()["batches"]
    assert (made["operator"], made["service_day"]) == (OP_A, DAY.isoformat())
    assert (made["received"], made["accepted"], made["quarantined"]) == (1, 1, 0)
    assert fixed["quarantine_id"] not in {x["quarantine_id"] for x in export(service, batch_id)}
    page = get(service, f"/v1/batches/{batch_id}/quarantine", include_resubmitted=True).json()
    assert {r["id"]: r["status"] for r in page["rows"]}[fixed["quarantine_id"]] == "resubmitted"
    assert made["batch_id"] in listed(service, Role.OPERATOR, OP_A)
    again = corrections(service, batch_id, [fixed])
    assert again.status_code == 200, again.text
    assert again.json()["batches"] == [] and again.json()["skipped"] == [fixed["quarantine_id"]]


def test_corrections_may_name_only_the_batchs_own_rows(
    service: Service, stored: dict[int, dict[str, Any]]
) -> None:
    mine, theirs = stored[OP_A]["batch_id"], stored[OP_B]["batch_id"]
    my_fix = fixable(export(service, mine))
    their_row = export(service, theirs, party=OP_B)[0]
    for lines in ([my_fix, their_row], [{**my_fix, "quarantine_id": 10**12}]):
        refused = corrections(service, mine, lines)
        assert (refused.status_code, refused.json()["code"]) == (
            400, "INPUT_RESUBMIT_OTHER_BATCH")
    moved = {**my_fix, "record": {**my_fix["record"], "operator": OP_B}}
    refused = corrections(service, mine, [moved])
    assert (refused.status_code, refused.json()["code"]) == (403, "OPERATOR_MISMATCH")
    for role, party in ((Role.FINANCE, None), (Role.AUDITOR, None)):
        assert corrections(service, mine, [my_fix], party=party,  # type: ignore[arg-type]
                           role=role).status_code == 403
    # nothing was resubmitted: every row of both batches is still open, no batch was added
    for batch_id, party in ((mine, OP_A), (theirs, OP_B)):
        assert len(export(service, batch_id, party=party)) == stored[party]["quarantined"]
    assert sorted(listed(service, Role.AUDITOR, None)) == sorted([mine, theirs])


def test_a_corrections_file_that_is_not_json_lines_is_refused_with_its_code(
    service: Service, stored: dict[int, dict[str, Any]]
) -> None:
    batch_id = stored[OP_A]["batch_id"]
    got = service.client.post(f"/v1/batches/{batch_id}/corrections", content=b"{not json\n",
                              headers=service.auth(Role.OPERATOR, OP_A))
    assert (got.status_code, got.json()["code"]) == (400, "INPUT_CORRUPT")
    empty = service.client.post(f"/v1/batches/{batch_id}/corrections", content=b"",
                                headers=service.auth(Role.OPERATOR, OP_A))
    assert (empty.status_code, empty.json()["code"]) == (400, "UPLOAD_EMPTY")


# ---------------------------------------------------------------- the schema


def test_the_openapi_schema_describes_bodies_and_answers(service: Service) -> None:
    schema = service.client.get("/v1/openapi.json").json()
    paths = schema["paths"]
    upload = paths["/v1/batches"]["post"]
    body = upload["requestBody"]["content"]["application/octet-stream"]["schema"]
    assert body == {"type": "string", "format": "binary"}
    for status in ("200", "201"):
        assert "$ref" in upload["responses"][status]["content"]["application/json"]["schema"]
    for status in ("403", "408", "413", "415"):
        assert "application/problem+json" in upload["responses"][status]["content"]
    for path in ("/v1/batches", "/v1/batches/{batch_id}", "/v1/batches/{batch_id}/quarantine"):
        ok = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in ok, path
    assert "requestBody" in paths["/v1/batches/{batch_id}/corrections"]["post"]
