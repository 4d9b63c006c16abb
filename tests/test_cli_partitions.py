"""`tongka clear --partitions N` refused before anything runs: N outside 1..BUCKETS, the
options that only go with it given without it, --reference with it, and dask not installed.
Each is one coded line with its exit code, and the data directory is not created.

A partitioned clear that runs is tests/test_scaleout_identity.py (the command line against
the single process, on a cluster the test starts once).
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest
from cli_run import coded, tongka

from clearing.partition import BUCKETS

DAY = "2026-11-24"


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("--partitions", "0"), "PARTITIONS_INVALID", f"give 1 to {BUCKETS} partitions"),
        (("--partitions", "-3"), "PARTITIONS_INVALID", f"give 1 to {BUCKETS} partitions"),
        (("--partitions", str(BUCKETS + 1)), "PARTITIONS_INVALID", f"{BUCKETS} card buckets"),
        (("--partitions", "2", "--reference"), "PARTITIONS_INVALID", "drop --partitions"),
        (("--storage", "/tmp/x"), "PARTITIONS_INVALID", "--storage only goes with"),
        (("--scheduler", "tcp://127.0.0.1:1"), "PARTITIONS_INVALID", "--scheduler only goes"),
        (("--partitions", "2", "--scheduler", "nohost"), "SCHEDULER_ADDRESS", "tcp://host"),
    ],
)
def test_a_bad_partitioned_clear_is_refused_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    args: tuple[str, ...], code: str, says: str,
) -> None:
    home = tmp_path / "home"
    rc, _out, err = tongka(monkeypatch, capsys, home, "clear", "--date", DAY, *args)
    assert (coded(err), rc) == (code, 2)
    assert says in err
    assert not home.exists()


def test_without_dask_a_partitioned_clear_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "dask.distributed", None)  # import fails as if missing
    home = tmp_path / "home"
    rc, _out, err = tongka(monkeypatch, capsys, home, "clear", "--date", DAY, "--partitions",
                           "4")
    assert (coded(err), rc) == ("SCALE_NOT_INSTALLED", 2)
    assert "pip install 'tongka[scale]'" in err
    assert not home.exists()


def test_the_largest_partition_count_is_accepted_up_to_the_clear(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """BUCKETS partitions pass the check: the clear itself then runs (here it finds a day
    never ingested, so its own error, not PARTITIONS_INVALID)."""
    import clearing.day

    seen: dict[str, object] = {}

    def fake_clear(home: Path, day: dt.date, tariffs: object, **kw: object) -> object:
        seen.update(kw)
        raise clearing.day.StateError("stop here", code="STATE_CONFLICT")

    monkeypatch.setattr(clearing.day, "clear_day", fake_clear)
    rc, _out, err = tongka(monkeypatch, capsys, tmp_path / "home", "clear", "--date", DAY,
                           "--partitions", str(BUCKETS), "--storage", "file:///tmp/nowhere")
    assert (coded(err), rc) == ("STATE_CONFLICT", 3)
    from settlement.partials import SETTLEMENT_SUMS

    assert seen["partitions"] == BUCKETS and seen["storage"] == "file:///tmp/nowhere"
    assert seen["summary"] is SETTLEMENT_SUMS and seen["scheduler"] is None
