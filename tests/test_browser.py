"""The main journeys in a real browser (Playwright driving Debian's Chromium) against a real
server (uvicorn on a loopback port, in a thread), on both databases: an operator signs in,
uploads a batch and sees a quarantined row; finance settles the day and sees the positions sum
to zero; an operator cannot open another operator's page (404).

Each main page is saved at 1280 px and at 390 px wide under the test's temporary directory
(``screens/``, for a reviewer), and at 390 px no page is wider than the screen (wide tables
scroll inside themselves). Without Chromium these tests skip, except under CI=true, where they
fail: .ci/run installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from clearing.settings import Settings
from tariffs.error_codes import ErrorCode
from tests.service_support import DAY, day_files, tariffs
from tongka.access import Role, create_key
from tongka.service.app import create_app
from tongka.service.centre import Centre, open_centre

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WIDTHS = (1280, 390)
OP_A, OP_B = 102, 101  # Wuhan Metro 武汉地铁 (the most rows, some rejected), Wuhan Bus Group
WAIT_MS = 180_000  # the longest wait for a page or a job on a busy machine (a bound, not a test)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"CI=true: the browser tests must run, but {reason}")
    pytest.skip(reason)


def _chromium() -> str:
    """TONGKA_CHROMIUM, else Debian's ``chromium`` on the PATH, else where Debian puts it."""
    return os.environ.get("TONGKA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, once per test module (and xdist worker)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    executable = _chromium()
    if not Path(executable).exists():
        _unavailable(f"no Chromium at {executable} (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                              headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Live:
    """A running server over its own centre."""

    url: str
    centre: Centre
    files: dict[int, Path]

    def key(self, role: Role, party: int | None = None) -> str:
        return create_key(self.centre.engine, role, party=party).key

    def upload(self, op: int) -> int:
        """The operator's file stored through the API (a real HTTP request); its batch id."""
        request = urllib.request.Request(
            f"{self.url}/v1/batches?name={self.files[op].name}", data=self.files[op].read_bytes(),
            method="POST", headers={"Authorization": f"Bearer {self.key(Role.OPERATOR, op)}",
                                    "Content-Type": "application/vnd.apache.parquet"})
        with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - loopback
            return int(json.load(answer)["batch_id"])


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[Live]:
    """``tongka serve``'s application under uvicorn on a free loopback port, in a thread."""
    centre = open_centre(Settings(home=tmp_path / "home", database_url=db_url),
                         tariffs=tariffs())
    files = {int(p.stem.rsplit("op", 1)[1]): p for p in day_files(tmp_path / "in", 2_000)}
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(centre), log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the server did not start")
        time.sleep(0.05)
    try:
        yield Live(f"http://127.0.0.1:{port}", centre, files)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        centre.engine.dispose()


def sign_in(browser: Any, live: Live, key: str) -> Any:
    """A new browser context (its own cookies) signed in with ``key``; its page."""
    context = browser.new_context(viewport={"width": WIDTHS[0], "height": 900})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto(f"{live.url}/signin")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/(operators|issuers|finance)(/.*)?$"))
    return page


def shoot(page: Any, out: Path, name: str) -> None:
    """The page saved at each width; at the narrow one, nothing wider than the screen."""
    out.mkdir(exist_ok=True)
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(150)  # framed documents re-measure their height on resize
        page.screenshot(path=str(out / f"{name}-{width}.png"), full_page=True)
        overflow = page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width, f"{name} is {overflow} px wide at {width} px"
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})


def test_an_operator_signs_in_uploads_a_batch_and_sees_a_quarantined_row(
    browser: Any, live: Live, tmp_path: Path
) -> None:
    screens = tmp_path / "screens"
    page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900})
    page.goto(f"{live.url}/signin")
    shoot(page, screens, "signin")
    page.close()

    page = sign_in(browser, live, live.key(Role.OPERATOR, OP_A))
    assert page.url.endswith(f"/operators/{OP_A}")
    assert "武汉地铁" in page.inner_text("h1")
    page.set_input_files("#file", str(live.files[OP_A]))
    with page.expect_request(lambda r: r.method == "POST" and "/batches?" in r.url) as sent:
        page.click("form[data-upload] button[type=submit]")
    # the page script sent the bytes themselves (progress events), with the session's token
    assert sent.value.headers.get("x-csrf-token")
    assert sent.value.headers.get("content-type") == "application/octet-stream"
    page.wait_for_url(re.compile(rf".*/operators/{OP_A}/batches/\d+$"))
    assert "stored:" in page.inner_text(".notice")
    row = page.locator("tr[data-quarantine]").first
    row.wait_for()
    code = row.get_attribute("data-code")
    assert code in ErrorCode.__members__
    legend = page.locator(f'table.codes tr[data-code="{code}"]')
    assert ErrorCode[code].meaning.split("`")[0].strip()[:30] in legend.inner_text()
    shoot(page, screens, "operator-batch")
    page.goto(f"{live.url}/operators/{OP_A}")
    assert page.locator("tr[data-batch]").count() == 1
    shoot(page, screens, "operator-batches")


def test_finance_settles_the_day_and_sees_the_positions_sum_to_zero(
    browser: Any, live: Live, tmp_path: Path
) -> None:
    screens = tmp_path / "screens"
    for op in live.files:
        live.upload(op)
    page = sign_in(browser, live, live.key(Role.FINANCE))
    page.goto(f"{live.url}/finance?month={DAY:%Y-%m}")
    assert page.get_attribute(f'tr[data-day="{DAY}"]', "data-state") == "open"
    shoot(page, screens, "finance-calendar")
    page.click(f'tr[data-day="{DAY}"] a')
    page.wait_for_url(f"**/finance/days/{DAY}")
    page.click("button[data-settle]")
    # the page follows the job (polling /v1/jobs/{id}) and reloads when it is done
    page.wait_for_selector('[data-day-state="settled"]')
    cells = page.locator("table.positions tbody td.num").all_inner_texts()
    assert len(cells) > 2
    assert sum(_fen(text) for text in cells) == 0
    assert page.get_attribute("[data-positions-sum]", "data-positions-sum") == "0"
    assert page.inner_text("[data-positions-sum]") == "0.00"
    assert page.locator("table.positions .neg").count() > 0  # negatives marked
    assert "武汉地铁" in page.inner_text("table.positions")
    overview = page.frame_locator("#overview iframe")
    overview.locator("figure.chart img").nth(3).wait_for()
    assert overview.locator("figure.chart img").count() == 4
    shoot(page, screens, "finance-day")
    page.goto(f"{live.url}/finance/ledger")
    page.click("#verify button")
    page.wait_for_selector('[data-verified="true"]')
    shoot(page, screens, "finance-ledger")
    page.goto(f"{live.url}/finance/months?month={DAY:%Y-%m}")
    shoot(page, screens, "finance-months")
    page.goto(f"{live.url}/issuers/1/statements/{DAY}")
    page.frame_locator("iframe.document").locator("figure.chart img").first.wait_for()
    shoot(page, screens, "issuer-statement")


def _fen(text: str) -> int:
    """An amount as the page writes it (``-1,234.56``, ``+7.00``) back to integer fen."""
    match = re.fullmatch(r"([+-]?)([\d,]+)\.(\d\d)", text.strip())
    assert match, f"not an amount as the pages write them: {text!r}"
    fen = int(match.group(2).replace(",", "")) * 100 + int(match.group(3))
    return -fen if match.group(1) == "-" else fen


def test_an_operator_cannot_open_another_operators_page(
    browser: Any, live: Live, tmp_path: Path
) -> None:
    theirs = live.upload(OP_B)
    page = sign_in(browser, live, live.key(Role.OPERATOR, OP_A))
    for path in (f"/operators/{OP_B}", f"/operators/{OP_B}/batches/{theirs}",
                 f"/operators/{OP_A}/batches/{theirs}", f"/operators/{OP_B}/statements/{DAY}"):
        answer = page.goto(f"{live.url}{path}")
        assert answer is not None and answer.status == 404, path
        assert "No such" in page.inner_text("main")
        assert "Wuhan Bus Group" not in page.content()
    shoot(page, tmp_path / "screens", "not-found")
