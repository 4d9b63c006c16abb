"""Run the real ``tongka`` entry point in process, as a user would, and read what it printed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tongka.cli import run

CODED_LINE = re.compile(r"^error: .+ \[([A-Z][A-Z0-9_]+)\]$")


def tongka(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    home: Path,
    *args: str,
    db: str | None = None,
) -> tuple[int, str, str]:
    monkeypatch.setenv("TONGKA_HOME", str(home))
    if db is None:
        monkeypatch.delenv("TONGKA_DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("TONGKA_DATABASE_URL", db)
    monkeypatch.setattr(sys, "argv", ["tongka", *args])
    with pytest.raises(SystemExit) as exited:
        run()
    out, err = capsys.readouterr()
    code = exited.value.code
    return (code if isinstance(code, int) else 1), out, err


def coded(err: str) -> str:
    """The code of the one error line; fails when there is a traceback or no coded line."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    match = CODED_LINE.match(lines[0])
    assert match, lines[0]
    return match.group(1)


def ok(result: tuple[int, str, str]) -> str:
    """What a command that must succeed printed (stdout then stderr); fails with both if not."""
    rc, out, err = result
    assert rc == 0, out + err
    return out + err
