"""An operator who sent a batch with the wrong option withdraws it and sends it again
(SPEC v1.2 §4), through the real command line."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cli_run import coded, ok, tongka

DAY = dt.date(2026, 11, 24)


def test_a_batch_read_with_the_wrong_format_is_withdrawn_and_loaded_right(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    db_url: str,
) -> None:
    monkeypatch.setenv("TONGKA_DEMO_KEYS", "1")
    home = tmp_path / "home"

    def cli(*args: str) -> tuple[int, str, str]:
        return tongka(monkeypatch, capsys, home, *args, db=db_url)

    ok(cli("generate", "--date", str(DAY), "--taps", "2000", "--seed", "4", "--raw", "card",
            "--out", str(tmp_path / "raw")))
    (card,) = sorted((tmp_path / "raw").glob("*card*"))[:1]
    wrong = ok(cli("ingest", "--format", "nfc", "--date", str(DAY), "--operator", "101",
                    str(card)))
    assert "accepted" in wrong
    rc, out, err = cli("ingest", str(card))
    assert rc == 0 and "already_ingested" in out  # the identity is the file's bytes

    # every wrongly read row kept its raw bytes, sealed: exported with the key, it is the line
    export = tmp_path / "q.jsonl"
    ok(cli("quarantine", "export", str(export), "--batch", "1", "--with-raw"))
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert rows and all(r["raw"] and "base64" in r["raw"] for r in rows)

    ok(cli("batches", "withdraw", "1", "--reason", "read with --format nfc by mistake"))
    right = ok(cli("ingest", str(card)))
    assert "already_ingested" not in right
    listing = ok(cli("batches", "list"))
    assert "withdrawn" in listing

    rc, _out, err = cli("batches", "withdraw", "1", "--reason", "again")
    assert (rc, coded(err)) == (3, "BATCH_WITHDRAWN")
    rc, _out, err = cli("batches", "withdraw", "999", "--reason", "no such batch")
    assert coded(err) == "BATCH_NOT_FOUND"


def test_withdrawing_a_batch_of_a_settled_day_settles_it_again(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    db_url: str,
) -> None:
    home = tmp_path / "home"

    def cli(*args: str) -> tuple[int, str, str]:
        return tongka(monkeypatch, capsys, home, *args, db=db_url)

    ok(cli("generate", "--date", str(DAY), "--taps", "3000", "--seed", "6",
            "--out", str(tmp_path / "in")))
    files = sorted((tmp_path / "in").glob("*.parquet"))
    ok(cli("ingest", *map(str, files)))
    ok(cli("clear", "--date", str(DAY)))
    ok(cli("settle", "--date", str(DAY)))
    out = ok(cli("batches", "withdraw", "2", "--reason", "sent for the wrong day"))
    assert "settled it again" in out
    assert "journal entry:" in out and "nothing to post" not in out
    ok(cli("ledger", "verify"))
    report = ok(cli("report", "--date", str(DAY), "--out", str(tmp_path / "r")))
    assert "warning" not in report  # the day is settled as it now stands
