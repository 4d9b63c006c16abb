"""The pages over the service, on both databases, through an in-process client: signing in
with a key gives a session cookie (HttpOnly, SameSite=Strict, Secure over TLS, never the key),
every form and every cookie-authenticated API call that changes something needs the session's
CSRF token, and each role sees exactly its pages (another party's page is 404, like a page that
does not exist). The browser journeys are in tests/test_browser.py."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

import pytest
from fastapi.testclient import TestClient
from matplotlib import font_manager

from clearing.batches import list_batches
from clearing.db import session_factory
from settlement import charts
from settlement.amounts import yuan
from settlement.ledger import Scope, positions_from_balances, posted_balances
from tariffs.error_codes import ErrorCode
from tests import service_support
from tests.service_support import DAY, Service, day_files
from tongka import jobs
from tongka.access import Role, revoke_key, split_key
from tongka.web.render import code_text
from tongka.web.sessions import COOKIE, CSRF_HEADER

service = service_support.service  # the fixture: the service on each database
OP_A, OP_B = 102, 101  # Wuhan Metro 武汉地铁 (the most rows), Wuhan Bus Group
ISS_A, ISS_B = 1, 2
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """A small generated day as canonical batch files: operator -> the file's bytes."""
    out = tmp_path_factory.mktemp("day")
    return {int(p.stem.rsplit("op", 1)[1]): p.read_bytes() for p in day_files(out, 2_000)}


@dataclass
class Browser:
    """One signed-in browser: its own cookie jar, and the CSRF token its pages carry."""

    client: TestClient
    csrf: str
    key: str

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, follow_redirects=False, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.client.post(path, follow_redirects=False, **kw)


def sign_in(service: Service, role: Role, party: int | None = None, *,
            base_url: str = "http://testserver") -> Browser:
    """A new browser (cookie jar) signed in with a key of ``role``."""
    client = TestClient(service.client.app, base_url=base_url, raise_server_exceptions=False)
    key = service.key(role, party)
    form = client.get("/signin")
    assert form.status_code == 200
    done = client.post("/signin", data={"key": key, "csrf": token(form.text)},
                       follow_redirects=False)
    assert done.status_code == 303, done.text
    start = client.get(done.headers["location"], follow_redirects=False)
    assert start.status_code == 200, start.text
    return Browser(client, token(start.text), key)


def token(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def set_cookies(response: Any) -> dict[str, SimpleCookie]:
    out = {}
    for header in response.headers.get_list("set-cookie"):
        jar: SimpleCookie = SimpleCookie()
        jar.load(header)
        out.update({name: jar for name in jar})
    return out


def upload(service: Service, files: dict[int, bytes], *ops: int) -> dict[int, int]:
    """Operators' files stored through the API; operator -> batch id."""
    out = {}
    for op in ops:
        got = service.client.post("/v1/batches", content=files[op],
                                  headers=service.auth(Role.OPERATOR, op))
        assert got.status_code == 201, got.text
        out[op] = got.json()["batch_id"]
    return out


# --------------------------------------------------------------------------- signing in


def test_signing_in_gives_a_strict_httponly_session_cookie_that_is_not_the_key(
    service: Service,
) -> None:
    client = service.client
    form = client.get("/signin")
    key = service.key(Role.OPERATOR, OP_A)
    done = client.post("/signin", data={"key": key, "csrf": token(form.text)},
                       follow_redirects=False)
    assert (done.status_code, done.headers["location"]) == (303, f"/operators/{OP_A}")
    cookie = set_cookies(done)[COOKIE][COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"].lower() == "strict"
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # plain http here: see the TLS test below
    assert cookie.value and cookie.value not in key and key not in done.headers.get("set-cookie")
    split = split_key(key)  # the secret itself may hold "_": split as the service does
    assert split is not None
    secret = split[1]
    assert secret not in str(done.headers) and secret not in done.text
    page = client.get(f"/operators/{OP_A}")
    assert page.status_code == 200 and "武汉地铁" in page.text  # the party's name, unmangled


def test_over_tls_the_session_cookie_is_secure(service: Service) -> None:
    client = TestClient(service.client.app, base_url="https://testserver")
    form = client.get("/signin")
    assert set_cookies(form)["tongka_signin"]["tongka_signin"]["secure"] is True
    done = client.post("/signin", data={"key": service.key(Role.FINANCE),
                                        "csrf": token(form.text)}, follow_redirects=False)
    assert done.status_code == 303
    assert set_cookies(done)[COOKIE][COOKIE]["secure"] is True


def test_a_wrong_key_or_a_missing_form_token_does_not_sign_in(service: Service) -> None:
    client = service.client
    key = service.key(Role.FINANCE)
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    got = client.post("/signin", data={"key": wrong, "csrf": token(client.get("/signin").text)},
                      follow_redirects=False)
    assert got.status_code == 401 and COOKIE not in set_cookies(got)
    assert wrong not in got.text  # the key typed is not echoed back
    client.get("/signin")  # a fresh sign-in cookie, then a form token that is not its own
    for csrf in ("", "0" * 64):
        got = client.post("/signin", data={"key": key, "csrf": csrf}, follow_redirects=False)
        assert got.status_code == 403 and COOKIE not in set_cookies(got)
    assert client.get("/finance", follow_redirects=False).status_code == 303  # still signed out


def test_without_a_session_pages_send_to_sign_in_and_back_but_never_off_site(
    service: Service,
) -> None:
    client = service.client
    got = client.get(f"/operators/{OP_A}/statements", follow_redirects=False)
    assert (got.status_code, got.headers["location"]) == (
        303, f"/signin?next=/operators/{OP_A}/statements")
    assert client.get("/v1/batches").status_code == 401  # the API without key nor cookie
    for target, lands in ((f"/operators/{OP_A}/statements", f"/operators/{OP_A}/statements"),
                          ("//evil.example/x", f"/operators/{OP_A}"),
                          ("https://evil.example/", f"/operators/{OP_A}")):
        fresh = TestClient(service.client.app)
        form = fresh.get("/signin")
        done = fresh.post("/signin", data={"key": service.key(Role.OPERATOR, OP_A),
                                           "csrf": token(form.text), "next": target},
                          follow_redirects=False)
        assert done.headers["location"] == lands


def test_signing_out_or_revoking_the_key_ends_the_session(service: Service) -> None:
    finance = sign_in(service, Role.FINANCE)
    cookie = finance.client.cookies[COOKIE]
    refused = finance.post("/signout", data={})  # a form without its token changes nothing
    assert refused.status_code == 403
    assert finance.get("/finance").status_code == 200
    assert finance.post("/signout", data={"csrf": finance.csrf}).status_code == 303
    stale = TestClient(service.client.app, cookies={COOKIE: cookie})
    assert stale.get("/finance", follow_redirects=False).status_code == 303
    assert stale.get("/v1/jobs").status_code == 401

    auditor = sign_in(service, Role.AUDITOR)
    assert auditor.get("/finance").status_code == 200
    key_id = auditor.key.split("_")[1]
    revoke_key(service.centre.engine, key_id)
    assert auditor.get("/finance").status_code == 303
    assert auditor.client.get("/v1/jobs").status_code == 401


# --------------------------------------------------------------------------- CSRF


def test_forms_without_the_session_token_are_refused_and_change_nothing(
    service: Service, files: dict[int, bytes]
) -> None:
    engine = service.centre.engine
    operator = sign_in(service, Role.OPERATOR, OP_A)
    body = files[OP_A]
    for csrf in (None, "forged"):
        data = {"csrf": csrf} if csrf else {}
        got = operator.post(f"/operators/{OP_A}/batches", data=data,
                            files={"file": ("a.parquet", body)})
        assert got.status_code == 403 and "CSRF_INVALID" in got.text
        headers = {"Accept": "application/json", "Content-Type": "application/octet-stream",
                   **({CSRF_HEADER: csrf} if csrf else {})}
        got = operator.post(f"/operators/{OP_A}/batches", content=body, headers=headers)
        assert (got.status_code, got.json()["code"]) == (403, "CSRF_INVALID")
    assert list_batches(engine) == []

    upload(service, files, OP_A)
    finance = sign_in(service, Role.FINANCE)
    for path, data in ((f"/finance/days/{DAY}/settlement", {}),
                       ("/finance/months/close", {"month": DAY.strftime("%Y-%m")}),
                       ("/finance/ledger/verify", {})):
        got = finance.post(path, data={**data, "csrf": "forged"})
        assert got.status_code == 403 and "CSRF_INVALID" in got.text, path
    assert jobs.recent(engine) == []


def test_page_scripts_call_the_api_with_the_cookie_and_the_token(
    service: Service, files: dict[int, bytes]
) -> None:
    upload(service, files, OP_A)
    finance = sign_in(service, Role.FINANCE)
    assert finance.client.get("/v1/batches").status_code == 200  # reading needs no token
    path = f"/v1/days/{DAY}/settlement"
    refused = finance.client.post(path)
    assert (refused.status_code, refused.json()["code"]) == (403, "CSRF_INVALID")
    forged = finance.client.post(path, headers={CSRF_HEADER: "forged"})
    assert forged.status_code == 403
    assert jobs.recent(service.centre.engine) == []
    started = finance.client.post(path, headers={CSRF_HEADER: finance.csrf})
    assert started.status_code == 202, started.text
    operator = sign_in(service, Role.OPERATOR, OP_A)
    denied = operator.client.post(path, headers={CSRF_HEADER: operator.csrf})
    assert denied.status_code == 403 and denied.json()["code"] == "FORBIDDEN"  # role, not token


# --------------------------------------------------------------------------- who sees what


def test_each_role_sees_exactly_its_pages_and_another_partys_page_is_404(
    service: Service, files: dict[int, bytes]
) -> None:
    ids = upload(service, files, OP_A, OP_B)
    mine, theirs = ids[OP_A], ids[OP_B]
    missing = max(ids.values()) + 1000
    roles = {
        "opA": (Role.OPERATOR, OP_A), "opB": (Role.OPERATOR, OP_B),
        "issA": (Role.ISSUER, ISS_A), "issB": (Role.ISSUER, ISS_B),
        "finance": (Role.FINANCE, None), "auditor": (Role.AUDITOR, None),
        "admin": (Role.ADMIN, None),
    }
    op_page = {"opA": 200, "finance": 200, "auditor": 200}  # everyone else: 404
    iss_page = {"issA": 200, "finance": 200, "auditor": 200}
    overseer = {"finance": 200, "auditor": 200}  # everyone else: 403
    table: list[tuple[str, dict[str, int], int]] = [
        (f"/operators/{OP_A}", op_page, 404),
        (f"/operators/{OP_A}/batches/{mine}", op_page, 404),
        (f"/operators/{OP_A}/statements", op_page, 404),
        (f"/operators/{OP_A}/statements/{DAY}", op_page, 404),
        (f"/operators/{OP_A}/batches/{theirs}", {}, 404),  # B's batch under A: nobody
        (f"/operators/{OP_A}/batches/{missing}", {}, 404),
        ("/operators/999", {}, 404),  # no such operator
        (f"/issuers/{ISS_A}", iss_page, 404),
        (f"/issuers/{ISS_A}/statements/{DAY}", iss_page, 404),
        ("/finance", overseer, 403),
        (f"/finance/days/{DAY}", overseer, 403),
        ("/finance/ledger", overseer, 403),
        ("/finance/parties", overseer, 403),
        ("/finance/months", {"finance": 200}, 403),
        ("/account", dict.fromkeys(roles, 200), 200),
    ]
    browsers = {name: sign_in(service, *who) for name, who in roles.items()}
    wrong = []
    for path, allowed, otherwise in table:
        for name, browser in browsers.items():
            got = browser.get(path)
            if got.status_code != allowed.get(name, otherwise):
                wrong.append((path, name, got.status_code))
    assert wrong == []
    # B's batch is refused exactly as a batch that does not exist, and shows none of B's figures
    other = browsers["opA"].get(f"/operators/{OP_B}/batches/{theirs}")
    absent = browsers["opA"].get(f"/operators/{OP_B}/batches/{missing}")
    assert other.status_code == absent.status_code == 404
    assert other.text == absent.text
    b_sha = service.client.get(f"/v1/batches/{theirs}",
                               headers=service.auth(Role.FINANCE)).json()["file_sha256"]
    assert b_sha not in other.text
    # the menu offers each role its own pages only
    assert f'href="/operators/{OP_B}"' not in browsers["opA"].get(f"/operators/{OP_A}").text
    assert 'href="/finance"' not in browsers["issA"].get(f"/issuers/{ISS_A}").text
    assert "Month close" not in browsers["auditor"].get("/finance").text


def test_pages_carry_their_security_headers(service: Service) -> None:
    finance = sign_in(service, Role.FINANCE)
    for path in ("/signin", "/finance"):
        got = (finance if path != "/signin" else TestClient(service.client.app)).get(path)
        assert got.status_code == 200
        assert got.headers["cache-control"] == "no-store"
        assert got.headers["x-frame-options"] == "SAMEORIGIN"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "script-src 'self'" in got.headers["content-security-policy"]


# --------------------------------------------------------------------------- operator pages


def test_an_operator_uploads_through_the_page_and_sees_each_code_with_its_meaning(
    service: Service, files: dict[int, bytes]
) -> None:
    operator = sign_in(service, Role.OPERATOR, OP_A)
    got = operator.post(f"/operators/{OP_A}/batches", data={"csrf": operator.csrf},
                        files={"file": ("metro.parquet", files[OP_A])})
    assert got.status_code == 303, got.text
    page = operator.get(got.headers["location"])
    assert page.status_code == 200
    detail = service.client.get(f"/v1/batches/{got.headers['location'].rsplit('/', 1)[1]}",
                                headers=service.auth(Role.OPERATOR, OP_A)).json()
    assert detail["quarantined"] > 0, "the generated file should have rejected rows"
    assert "stored:" in page.text  # the notice of the upload
    for group in detail["errors"]:
        code = group["code"]
        meaning = re.escape(str(code_text(ErrorCode[code].meaning)))
        assert re.search(rf'<tr data-code="{code}">.*?{meaning}', page.text, re.S), code
    rows = re.findall(r'<tr data-quarantine="(\d+)" data-code="([A-Z_]+)">', page.text)
    assert len(rows) == min(detail["quarantined"], 100)
    assert f'/v1/batches/{detail["id"]}/quarantine?format=jsonl' in page.text
    # the page script's way: the body itself, the token in a header; the same bytes again
    again = operator.post(f"/operators/{OP_A}/batches?name=metro.parquet", content=files[OP_A],
                          headers={"Accept": "application/json", CSRF_HEADER: operator.csrf,
                                   "Content-Type": "application/octet-stream"})
    assert again.status_code == 200
    assert again.json()["batch_id"] == detail["id"] and again.json()["created"] is False
    # a file of another operator is refused and nothing is stored
    foreign = operator.post(f"/operators/{OP_A}/batches?name=bus.parquet", content=files[OP_B],
                            headers={"Accept": "application/json", CSRF_HEADER: operator.csrf,
                                     "Content-Type": "application/octet-stream"})
    assert (foreign.status_code, foreign.json()["code"]) == (403, "OPERATOR_MISMATCH")
    assert len(list_batches(service.centre.engine)) == 1
    # finance reads the operator's pages but uploads nothing for it
    finance = sign_in(service, Role.FINANCE)
    assert finance.post(f"/operators/{OP_A}/batches", data={"csrf": finance.csrf},
                        files={"file": ("x.parquet", files[OP_A])}).status_code == 403


# --------------------------------------------------------------------------- finance pages


def test_finance_settles_a_day_and_sees_positions_that_sum_to_zero(
    service: Service, files: dict[int, bytes]
) -> None:
    upload(service, files, *files)
    finance = sign_in(service, Role.FINANCE)
    calendar = finance.get(f"/finance?month={DAY:%Y-%m}")
    assert f'data-day="{DAY}" data-state="open"' in calendar.text
    day_page = finance.get(f"/finance/days/{DAY}")
    got = finance.post(f"/finance/days/{DAY}/settlement", data={"csrf": token(day_page.text)})
    assert (got.status_code, got.headers["location"]) == (303, f"/finance/days/{DAY}")
    job = jobs.recent(service.centre.engine)[0]
    deadline = time.monotonic() + 300  # a bound on the wait, not an assertion on time
    while jobs.get(service.centre.engine, job.id).state in jobs.ACTIVE:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the settlement job never finished"
        time.sleep(0.2)
    assert jobs.get(service.centre.engine, job.id).state == "succeeded"  # type: ignore[union-attr]
    page = finance.get(f"/finance/days/{DAY}").text
    with session_factory(service.centre.engine)() as s:
        positions = positions_from_balances(posted_balances(s, DAY, Scope.DAY))
    assert positions and sum(positions.values()) == 0
    shown = dict(re.findall(r'<tr data-party="([A-Z]+-\d+)">.*?<td class="num">(.*?)</td>',
                            page))
    assert set(shown) == {p.tag for p in positions}
    for party, fen in positions.items():  # right-aligned, separated, a negative marked
        text = yuan(fen, signed=True)
        cls = ' class="neg"' if fen < 0 else ' class="pos"' if fen > 0 else ""
        assert shown[party.tag] == (f"<span{cls}>{text}</span>" if cls else text), party
    assert 'data-positions-sum="0">0.00<' in page
    assert 'data-day-state="settled"' in page
    overview = finance.get(f"/finance/days/{DAY}/overview")
    assert overview.status_code == 200
    assert overview.text.count('src="data:image/png;base64,') == 4
    assert "武汉" in overview.text and 'name="viewport"' in overview.text
    ledger = finance.post("/finance/ledger/verify", data={"csrf": finance.csrf})
    assert 'data-verified="true"' in ledger.text


# --------------------------------------------------------------------------- charts


def test_chart_labels_keep_chinese_names_when_a_cjk_font_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "OPR-102 Wuhan Metro 武汉地铁"
    if not any("CJK" in f.name for f in font_manager.fontManager.ttflist):
        pytest.skip("no CJK font installed (Debian: fonts-noto-cjk)")
    assert charts.has_cjk_font()
    assert charts.chart_label(name) == name
    png = charts.signed_chart("positions", [(name, 100), ("ISS-1 武汉通", -100)])
    assert png.startswith(b"\x89PNG")
    monkeypatch.setattr(charts, "font_family", lambda: ("DejaVu Sans",))
    assert charts.chart_label(name) == "OPR-102 Wuhan Metro"  # no boxes without the font
    assert charts.signed_chart("positions", [(name, 100)]).startswith(b"\x89PNG")
