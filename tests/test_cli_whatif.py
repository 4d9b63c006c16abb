"""``tongka whatif`` through the real command line: the summary, and its coded refusals."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import pytest
from cli_run import coded, tongka

DAY = dt.date(2026, 11, 24)
XIAOGAN = Path(__file__).resolve().parents[1] / "tariffs/data/tariffs/420900-xiaogan.toml"


def test_whatif_prints_who_pays_what_and_refuses_bad_requests(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    home = tmp_path / "home"

    def cli(*args: str) -> tuple[int, str, str]:
        return tongka(monkeypatch, capsys, home, *args)

    for args in (("generate", "--date", str(DAY), "--taps", "3000", "--seed", "9", "--out",
                  str(tmp_path / "in")),):
        assert cli(*args)[0] == 0
    assert cli("ingest", *map(str, sorted((tmp_path / "in").glob("*.parquet"))))[0] == 0
    assert cli("clear", "--date", str(DAY))[0] == 0

    same = tmp_path / "same"
    same.mkdir()
    shutil.copy(XIAOGAN, same)
    rc, out, err = cli("whatif", "--tariffs", str(same), "--date", str(DAY))
    assert rc == 0, err
    assert "Legs whose fare changed: 0 " in out and "No party's net position changes." in out

    dearer = tmp_path / "dearer"
    dearer.mkdir()
    text = XIAOGAN.read_text()
    # Xiaogan's ordinary card discount on buses from 10 % to 20 %
    changed = re.sub(r'(mode = "bus"\nproduct = "ordinary"\nrate_bp = )1000', r"\g<1>2000", text)
    assert changed != text
    (dearer / XIAOGAN.name).write_text(changed)
    rc, out, err = cli("whatif", "--tariffs", str(dearer), "--date", str(DAY),
                       "--out", str(tmp_path / "report"))
    assert rc == 0, err
    assert re.search(r"Legs whose fare changed: [1-9]", out)
    assert "Xiaogan" in out and (tmp_path / "report" / "whatif.html").exists()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / XIAOGAN.name).write_text(text.replace("rate_bp = 1000", 'rate_bp = "ten"', 1))
    rc, _out, err = cli("whatif", "--tariffs", str(broken), "--date", str(DAY))
    assert rc == 4 and "420900-xiaogan.toml" in err and "Traceback" not in err

    rc, _out, err = cli("whatif", "--tariffs", str(same), "--date", str(DAY), "--from", str(DAY))
    assert (rc, coded(err)) == (2, "WHATIF_RANGE")
