"""Take the README's screenshot of the finance overview (docs/images/finance-overview.png).

A demo-sized day (as ``tongka demo``: 200,000 taps of the whole circle, seed 1) is generated,
ingested and settled in a fresh temporary data directory; the service then runs on a loopback
port, finance signs in with a new key in Chromium (Playwright, Debian's ``chromium``), and the
day's page is photographed at 1280 px wide from its overview with the charts.

    .venv/bin/python tools/screenshot_overview.py                 # writes the README's image
    .venv/bin/python tools/screenshot_overview.py --taps 20000 --out /tmp/overview.png
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402

from clearing.ingest import ingest_file  # noqa: E402
from clearing.settings import Settings  # noqa: E402
from tongka.access import Role, create_key  # noqa: E402
from tongka.service.app import create_app  # noqa: E402
from tongka.service.centre import open_centre  # noqa: E402
from tongka.settling import settle  # noqa: E402
from tongka.testing.generate import generate_day, write_day  # noqa: E402

DAY = dt.date(2026, 11, 24)  # tongka demo's day
OUT = ROOT / "docs" / "images" / "finance-overview.png"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT = 1280, 1500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tongka-screenshot-") as tmp:
        home = Path(tmp) / "home"
        centre = open_centre(Settings(home=home, database_url=None), demo_keys=True)
        incoming = Path(tmp) / "incoming"
        print(f"generating and settling {args.taps:,} taps of {DAY} …", flush=True)
        for path in write_day(incoming, generate_day(DAY, args.taps, 1, centre.tariffs), DAY):
            ingest_file(centre.engine, home, path, centre.tariffs.registry, input_dir=incoming,
                        tariffs=centre.tariffs, seal_key=centre.seal_key)
        settle(centre.engine, home, DAY, centre.tariffs, clear_first=True)
        key = create_key(centre.engine, Role.FINANCE, label="screenshot").key
        _photograph(centre, key, args.chromium, args.out)
        centre.engine.dispose()
    print(f"wrote {args.out}")


def _photograph(centre: object, key: str, chromium: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(centre), log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=ARGS)
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.set_default_timeout(300_000)
            page.goto(f"{url}/signin")
            page.fill("#key", key)
            page.click("button[type=submit]")
            page.wait_for_url("**/finance")
            page.goto(f"{url}/finance/days/{DAY}")
            frame = page.frame_locator("#overview iframe")
            frame.locator("figure.chart img").nth(3).wait_for()
            page.wait_for_timeout(500)  # the frame grows to its content
            top = page.locator("#overview").bounding_box()
            assert top is not None
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True,
                            clip={"x": 0, "y": top["y"] - 12, "width": WIDTH, "height": HEIGHT})
            browser.close()
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


if __name__ == "__main__":
    main()
