"""What-if re-pricing (SPEC v1.2 §11) on stored days, on SQLite and PostgreSQL: it changes
nothing, its current side is the ledger as settled, its proposed side is what clearing and
settling under the proposed set really gives (to the fen), and a bad or insufficient proposed
set fails like ``tongka tariffs validate`` or by batch and row."""

from __future__ import annotations

import csv
import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from sqlalchemy import Engine
from test_whatif_helpers import (
    TARIFFS,
    area_file,
    dump_tables,
    store_days,
    tariff_toml,
    tree_hashes,
)
from typer.testing import CliRunner

from clearing.day import clear_day, read_day_legs
from clearing.errors import InputError
from settlement.ledger import account_balances, positions_from_balances
from settlement.month_close import close_month
from settlement.settle import settle_day
from settlement.whatif import (
    WhatIfUnpriceableError,
    load_proposed_set,
    run_whatif,
    summary_lines,
)
from settlement.whatif_report import CSV, HISTOGRAM_CSV, HTML, LEGS_CSV
from tariffs.errors import TariffError
from tariffs.model import Tariff

XIAOGAN, WUHAN = 420900, 420100
FEB = dt.date(2026, 2, 1)
DAYS = [dt.date(2026, 2, 3), dt.date(2026, 2, 4)]
FIRST, LAST = FEB, dt.date(2026, 2, 28)


def changed_tariff(area: int, change: Any) -> str:
    """The current tariff of ``area`` with ``change(version_dict)`` applied to every version."""
    data = TARIFFS.tariffs[area].model_dump()
    for version in data["versions"]:
        change(version)
    return tariff_toml(Tariff.model_validate(data))


def xiaogan_change(version: dict[str, Any]) -> None:
    """Finance's question (issue #17): the card discount 10 % -> 20 %, the window 60 -> 90."""
    for price in version["prices"]:
        if price["mode"] == "bus" and price["product"] == "ordinary":
            price["rate_bp"] = 2000
    if version.get("transfer"):
        version["transfer"]["window_minutes"] = 90


def cheap_rebate(version: dict[str, Any]) -> None:
    """A metro rebate every regular rider reaches in two days, so whole months compare."""
    for rebate in version.get("rebates") or []:
        rebate["tiers"] = [{"spend_fen": 400, "rebate_fen": 50}]


def proposal(tmp_path: Path) -> Path:
    out = tmp_path / "proposed"
    out.mkdir(parents=True)
    (out / "xiaogan-2026.toml").write_text(changed_tariff(XIAOGAN, xiaogan_change))  # renamed
    (out / area_file(WUHAN).name).write_text(changed_tariff(WUHAN, cheap_rebate))
    return out


def by_party(result: Any, table: str, measure: str, side: str) -> dict[str, int]:
    return {r.key: getattr(r, side) for r in result.table(table)
            if r.measure == measure and getattr(r, side)}


def tags(positions: dict[Any, int]) -> dict[str, int]:
    return {p.tag: v for p, v in positions.items() if v}


def test_a_whatif_changes_nothing_and_equals_clearing_for_real(
    engine: Engine, db_url: str, tmp_path: Path
) -> None:
    home, incoming = tmp_path / "home", tmp_path / "incoming"
    store_days(engine, home, incoming, DAYS, 2500, seed=17)
    for day in DAYS:  # the days as cleared and settled under the current set
        clear_day(home, day, TARIFFS, engine=engine)
        settle_day(engine, day, read_day_legs(home, day), TARIFFS)
    settled = tags(positions_from_balances(account_balances(engine)))
    proposed_dir = proposal(tmp_path)
    files_before = tree_hashes(tmp_path)
    tables_before = dump_tables(engine)

    seen: list[dt.date] = []
    out = tmp_path / "report"
    result = run_whatif(engine, home, proposed_dir, FIRST, LAST, out, progress=seen.append)

    # nothing changed: every file byte for byte (the SQLite file too), every row, every sequence
    report_files = {str(out / n) for n in (HTML, CSV, LEGS_CSV, HISTOGRAM_CSV)}
    after = tree_hashes(tmp_path)
    assert set(after) - set(files_before) == report_files
    assert {k: v for k, v in after.items() if k not in report_files} == files_before
    assert dump_tables(engine) == tables_before
    assert seen == [FIRST + dt.timedelta(days=k) for k in range(28)]  # one call per day
    assert result.days == 28 and result.months == (FEB,)
    with (out / CSV).open(encoding="utf-8") as f:
        figures = list(csv.DictReader(f))
    assert len(figures) == len(result.rows) and all(
        int(r["difference"]) == int(r["proposed"]) - int(r["current"]) for r in figures)
    page = (out / HTML).read_text(encoding="utf-8")
    assert "Xiaogan" in page and "rebates 2026-02" in page and page.count("<figure") == 3

    # the current side is the ledger as settled
    assert by_party(result, "party", "net_fen", "current") == settled
    assert result.changed_legs > 0 and result.get("city", str(XIAOGAN), "charged_fen").difference

    # the proposed side is clearing and settling the same days under that set, to the fen
    proposed = load_proposed_set(proposed_dir)
    per_kind: dict[tuple[str, str], int] = defaultdict(int)
    charged: dict[str, int] = defaultdict(int)
    for day in DAYS:
        clear_day(home, day, proposed, engine=engine)
        legs = read_day_legs(home, day)
        real = settle_day(engine, day, legs, proposed, reason="tariff_correction")
        for ob in real.obligations:
            per_kind[(ob.debtor.tag, ob.kind.name.lower())] -= ob.amount_fen
            per_kind[(ob.creditor.tag, ob.kind.name.lower())] += ob.amount_fen
        for row in real.city_summary:
            charged[str(row.city)] += row.charged_fen
    assert by_party(result, "party", "net_fen", "proposed") == tags(
        positions_from_balances(account_balances(engine)))
    for kind in ("revenue", "fee", "subsidy"):
        assert by_party(result, "party", f"{kind}_fen", "proposed") == {
            p: v for (p, k), v in per_kind.items() if k == kind and v}
    assert by_party(result, "city", "charged_fen", "proposed") == dict(charged)

    # ... and so are the month's rebates (month close under the proposed set)
    month_legs = pa.concat_tables([read_day_legs(home, d) for d in DAYS])
    closed = close_month(engine, FEB, month_legs, proposed)
    assert closed.rebates, "the cheap rebate must pay someone, or this compares nothing"
    rebates = by_party(result, "rebate", "rebate_fen 2026-02", "proposed")
    assert rebates.pop("all") == sum(r.rebate_fen for r in closed.rebates)
    assert rebates == tags(closed.positions)
    assert result.get("rebate", "all", "cards 2026-02").proposed == len(closed.rebates)

    lines = summary_lines(result, TARIFFS.registry)
    assert any("Xiaogan" in line and ("pays" in line or "receives" in line) for line in lines)
    assert "Monthly rebates 2026-02" in "\n".join(lines)


def test_a_tap_the_proposed_set_cannot_price_fails_by_batch_and_row(
    engine: Engine, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    store_days(engine, home, tmp_path / "incoming", DAYS[:1], 1500, seed=3)
    late = tmp_path / "late"
    late.mkdir()

    def from_2027(version: dict[str, Any]) -> None:
        version["valid_from"] = dt.date(2027, 1, 1)
        for rebate in version.get("rebates") or []:
            rebate["valid_from"] = dt.date(2027, 1, 1)

    assert len(TARIFFS.tariffs[XIAOGAN].versions) == 1  # else two versions would share a day
    (late / area_file(XIAOGAN).name).write_text(changed_tariff(XIAOGAN, from_2027))
    before = tree_hashes(home)
    with pytest.raises(WhatIfUnpriceableError) as caught:
        run_whatif(engine, home, late, DAYS[0], DAYS[0], tmp_path / "report")
    err = caught.value
    assert err.code == "WHATIF_UNPRICEABLE" and err.exit_code == 3
    assert err.count > 0 and all(t.code == "NO_TARIFF_VERSION" for t in err.taps)
    assert all(t.batch_id is not None and t.row >= 0 for t in err.taps)
    assert f"batch {err.taps[0].batch_id} " in str(err) and f"row {err.taps[0].row}:" in str(err)
    assert tree_hashes(home) == before
    assert not (tmp_path / "report").exists()  # no report of a failed what-if


def test_a_bad_proposed_file_fails_naming_file_and_field_like_tariffs_validate(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    text = area_file(XIAOGAN).read_text(encoding="utf-8").replace(
        "visitor_rate_bp = 0", "visitor_rate_bp = 0\ncolour = \"red\"", 1)
    assert "colour" in text
    (bad / area_file(XIAOGAN).name).write_text(text, encoding="utf-8")
    with pytest.raises(TariffError) as caught:  # before any data is read: no engine needed
        run_whatif(None, tmp_path / "no-data", bad, DAYS[0], DAYS[0])
    problems = caught.value.problems
    assert [(p.file, p.field) for p in problems] == [(area_file(XIAOGAN).name,
                                                      "versions[0].colour")]

    # the very lines `tongka tariffs validate` prints for the merged directory, and its exit 4
    from tariffs.cli import app
    from tariffs.load import DEFAULT_TARIFF_DIR

    merged = tmp_path / "merged"
    merged.mkdir()
    for path in DEFAULT_TARIFF_DIR.glob("*.toml"):
        (merged / path.name).write_bytes(path.read_bytes())
    (merged / area_file(XIAOGAN).name).write_text(text, encoding="utf-8")
    validated = CliRunner().invoke(app, ["validate", str(merged)])
    assert validated.exit_code == 4
    assert " ".join(str(problems[0]).split()) in " ".join(validated.output.split())


def test_not_a_directory_and_a_report_inside_the_data_directory_are_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(TariffError) as caught:
        load_proposed_set(tmp_path / "missing")
    assert caught.value.problems[0].code == "TARIFF_NO_DIRECTORY"
    home = tmp_path / "home"
    home.mkdir()
    with pytest.raises(InputError) as refused:
        run_whatif(None, home, proposal(tmp_path), DAYS[0], DAYS[0], home / "whatif")
    assert refused.value.code == "WHATIF_OUT_IN_DATA_DIR"
    with pytest.raises(InputError) as reversed_range:
        run_whatif(None, home, proposal(tmp_path / "b"), DAYS[1], DAYS[0])
    assert reversed_range.value.code == "WHATIF_RANGE"
    assert list(home.iterdir()) == []
