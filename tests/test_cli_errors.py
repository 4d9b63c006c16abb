"""What a person meets at the command line when something is wrong: one coded line, never a
traceback, the documented exit code, and nothing of theirs touched.

Each case runs the real entry point (``tongka.cli.run``) in process, so the error handling
under test is the one users get.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import coded, tongka

DAY = dt.date(2026, 11, 24)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("args", "db", "code", "exit_code"),
    [
        (("batches", "list"), "postgresql+psycopg://postgres@127.0.0.1:{port}/test",
         "DB_UNREACHABLE", 1),
        (("clear", "--date", str(DAY)), "mysql://x@y/z", "DB_URL_UNSUPPORTED", 2),
        (("clear", "--date", str(DAY)), "not a url", "DB_URL_INVALID", 2),
        (("ingest", "--date", "9999-12-31", "x.parquet"), None, "DATE_OUT_OF_RANGE", 2),
        (("ingest", "--date", "0001-01-01", "x.parquet"), None, "DATE_OUT_OF_RANGE", 2),
        (("settle", "--date", "9999-12-31"), None, "DATE_OUT_OF_RANGE", 2),
        (("close-month", "2026-13"), None, "MONTH_INVALID", 2),
        (("close-month", "nov"), None, "MONTH_INVALID", 2),
        (("close-month", "9999-12"), None, "DATE_OUT_OF_RANGE", 2),
        (("clear", "--date", str(DAY), "--partitions", "2", "--scheduler",
          "tcp://127.0.0.1:{port}"), None, "SCHEDULER_UNREACHABLE", 1),
        (("quarantine", "list", "--code", "NOPE"), None, "ROW_CODE_UNKNOWN", 2),
        (("batches", "list"), None, "NO_DATA_DIR", 3),
        (("ledger", "verify"), None, "NO_DATA_DIR", 3),
        (("report", "--date", str(DAY)), None, "NO_DATA_DIR", 3),
        (("risk", "--date", str(DAY)), None, "NO_DATA_DIR", 3),
    ],
)
def test_a_bad_request_is_one_coded_line_with_its_exit_code(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    args: tuple[str, ...],
    db: str | None,
    code: str,
    exit_code: int,
) -> None:
    port = str(_closed_port())
    home = tmp_path / "home"
    rc, _out, err = tongka(
        monkeypatch,
        capsys,
        home,
        *(a.replace("{port}", port) for a in args),
        db=db.replace("{port}", port) if db else None,
    )
    assert coded(err) == code
    assert rc == exit_code
    assert not home.exists()  # no request refused here creates the data directory


def test_read_only_commands_do_not_create_the_data_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    home = tmp_path / "nowhere"
    for args in (("batches", "list"), ("quarantine", "list"), ("ledger", "balances")):
        rc, _out, err = tongka(monkeypatch, capsys, home, *args)
        assert (rc, coded(err)) == (3, "NO_DATA_DIR")
    assert not home.exists()


def test_demo_refuses_a_users_non_empty_folder_and_leaves_it_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keep = tmp_path / "K"
    (keep / "important").mkdir(parents=True)
    (keep / "important" / "thesis.txt").write_text("years of work")
    rc, _out, err = tongka(monkeypatch, capsys, tmp_path / "h", "demo", "--taps", "1000",
                           "--keep", str(keep))
    assert (rc, coded(err)) == (2, "DIR_NOT_EMPTY")
    assert (keep / "important" / "thesis.txt").read_text() == "years of work"
    plain = tmp_path / "file"
    plain.write_text("x")
    rc, _out, err = tongka(monkeypatch, capsys, tmp_path / "h", "demo", "--keep", str(plain))
    assert (rc, coded(err)) == (2, "DIR_NOT_EMPTY")
    assert plain.read_text() == "x"


def _generate(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              home: Path, out: Path, taps: int = 3000, seed: int = 3) -> list[Path]:
    rc, _o, err = tongka(monkeypatch, capsys, home, "generate", "--date", str(DAY),
                         "--taps", str(taps), "--seed", str(seed), "--out", str(out))
    assert rc == 0, err
    return sorted(out.glob("*.parquet"))


def test_a_multi_file_ingest_tries_every_file_and_reports_each(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    db_url: str,
) -> None:
    home = tmp_path / "home"
    files = _generate(monkeypatch, capsys, home, tmp_path / "in")
    corrupt = tmp_path / "in" / "broken.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    missing = tmp_path / "in" / "gone.parquet"
    order = [files[0], corrupt, *files[1:4], missing, *files[4:]]
    rc, out, err = tongka(monkeypatch, capsys, home, "ingest", *map(str, order), db=db_url)
    assert rc == 2
    assert coded(err) == "INPUT_FILES_REFUSED"
    assert "Traceback" not in err
    # every good file was stored, the two bad ones are in the table with their codes
    for path in files:
        (row,) = [line for line in out.splitlines() if path.name in line]
        assert "accepted" in row
    assert "refused [INPUT_CORRUPT]" in out and "refused [INPUT_MISSING]" in out
    rc, out, err = tongka(monkeypatch, capsys, home, "batches", "list", db=db_url)
    assert rc == 0, err
    assert out.count("accepted") >= 1
    for path in files:
        assert path.name in out


def test_tables_never_wrap_a_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A narrow terminal must not split ``15,192`` into ``15,19``/``2`` (nor dates, statuses)."""
    monkeypatch.setenv("COLUMNS", "60")
    home = tmp_path / "home"
    files = _generate(monkeypatch, capsys, home, tmp_path / "in")
    rc, _out, err = tongka(monkeypatch, capsys, home, "ingest", *map(str, files))
    assert rc == 0, err
    rc, out, err = tongka(monkeypatch, capsys, home, "batches", "list")
    assert rc == 0, err
    rows = [line for line in out.splitlines() if re.search(r"\b2026-11-24\b", line)]
    assert len(rows) == len(files)  # one line per batch: nothing folded onto a second line
    for path in files:
        assert path.name in out
    assert "accepted" in out


def test_every_option_has_help_and_formats_are_listed() -> None:
    """Each option of each command says what it is for; format options name the formats."""
    import typer.main

    from tongka.cli import FORMAT_NAMES, app

    command = typer.main.get_command(app)
    missing = []

    def walk(cmd, path: str) -> None:  # type: ignore[no-untyped-def]
        for sub_name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {sub_name}")
        for param in cmd.params:
            if param.param_type_name == "option" and "--help" not in param.opts:
                if not (getattr(param, "help", None) or "").strip():
                    missing.append(f"{path} {'/'.join(param.opts)}")

    walk(command, "tongka")
    assert missing == []
    assert "card" in FORMAT_NAMES and "qr" in FORMAT_NAMES
    help_text = subprocess.run(
        [sys.executable, "-c", "from tongka.cli import run; run()", "ingest", "--help"],
        capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""}, timeout=60,
    ).stdout
    for name in FORMAT_NAMES.split(", "):
        assert name in help_text
    demo_help = subprocess.run(
        [sys.executable, "-c", "from tongka.cli import run; run()", "demo", "--help"],
        capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""}, timeout=60,
    ).stdout
    assert "2026-11-24" in demo_help and "00:00:00" not in demo_help


def test_commands_started_at_once_on_a_new_sqlite_database_wait_for_each_other(
    tmp_path: Path,
) -> None:
    """Several commands on one fresh SQLite file: each waits its turn (busy timeout, BEGIN
    IMMEDIATE for the migration), none fails with "database is locked"."""
    import os

    env = {**os.environ, "TONGKA_HOME": str(tmp_path / "home")}
    env.pop("TONGKA_DATABASE_URL", None)
    code = "from tongka.cli import run; run()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, "db", "upgrade"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, out + err
        assert "schema at revision" in out
