"""A report never silently shows a stale day (issue: a report between a late batch and the
next settle used the old legs with no warning)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cli_run import ok, tongka

DAY = dt.date(2026, 11, 24)


def test_a_report_of_a_changed_day_says_so_or_settles_first(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    db_url: str,
    charts_as_digests: None,
) -> None:
    home = tmp_path / "home"

    def cli(*args: str) -> tuple[int, str, str]:
        return tongka(monkeypatch, capsys, home, *args, db=db_url)

    ok(cli("generate", "--date", str(DAY), "--taps", "3000", "--seed", "5",
            "--out", str(tmp_path / "in")))
    files = sorted((tmp_path / "in").glob("*.parquet"))
    ok(cli("ingest", *map(str, files[:-1])))
    ok(cli("clear", "--date", str(DAY)))
    ok(cli("settle", "--date", str(DAY)))

    fresh = ok(cli("report", "--date", str(DAY), "--out", str(tmp_path / "r0")))
    assert "warning" not in fresh
    assert all("data-stale" not in p.read_text() for p in (tmp_path / "r0").glob("*.html"))

    ok(cli("ingest", str(files[-1])))  # a late batch
    stale = ok(cli("report", "--date", str(DAY), "--out", str(tmp_path / "r1")))
    assert "warning: the taps of 2026-11-24 changed since it was settled" in stale
    pages = list((tmp_path / "r1").glob("*.html"))
    assert pages and all("data-stale" in p.read_text() for p in pages)

    settled = ok(cli("report", "--date", str(DAY), "--settle", "--out", str(tmp_path / "r2")))
    assert "warning" not in settled
    assert all("data-stale" not in p.read_text() for p in (tmp_path / "r2").glob("*.html"))
    # settling first made the day current: nothing left to warn about
    from sqlalchemy import create_engine

    from tongka.settling import staleness

    assert staleness(create_engine(db_url), home, DAY) is None
