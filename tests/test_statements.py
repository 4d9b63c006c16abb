"""Statements: every party of a settled day gets a CSV that adds up to its net position and an
HTML page carrying all of its charts as real PNGs; the overview carries the centre's charts."""

from __future__ import annotations

import base64
import csv
import re
from pathlib import Path

import pytest
from test_settle_builders import DAY, REGISTRY, TARIFFS, leg

from clearing.legs import Leg, legs_table
from clearing.service_day import day_number
from settlement.apportion import allocate
from settlement.parties import issuer, operator
from settlement.settle import settle_day
from settlement.statements import (
    OVERVIEW_CHARTS,
    PARTY_CHARTS,
    DayColumns,
    mismatch_panels,
    revenue_panels,
    write_statements,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FIGURE = re.compile(
    r'<figure class="chart" data-chart="([a-z]+)"><img alt="[^"]*" '
    r'src="data:image/png;base64,([A-Za-z0-9+/=]+)">'
)


def _charts(path: Path) -> dict[str, bytes]:
    text = path.read_text(encoding="utf-8")
    return {name: base64.b64decode(data) for name, data in FIGURE.findall(text)}


def _png_size(png: bytes) -> tuple[int, int]:
    assert png.startswith(PNG_MAGIC)
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _day_of_legs() -> list[Leg]:
    """Cards of three issuers on four operators in three cities, some with student discounts
    funded by the government, and one reader on an old tariff (mismatch 340 on device 7)."""
    legs = []
    for i, (iss, opr) in enumerate((i, o) for i in (1, 2, 20) for o in (101, 102, 201, 301)):
        area = REGISTRY.operators[opr].city
        version = TARIFFS.version_for(area, DAY)
        legs.append(
            leg(
                card_id=i + 1,
                issuer=iss,
                operator=opr,
                area=area,
                media=i % 6,
                mode=1 if opr == 102 else 0,
                version=day_number(version.valid_from),
                product=1,
                honoured_product=1 if iss in version.concession_issuers else 0,
                charged_fen=100 + 10 * i,
                computed_fen=100 + 10 * i,
            )
        )
    legs.append(
        leg(card_id=99, charged_fen=500, computed_fen=160, mismatch_fen=340, board_device_id=7)
    )
    return legs


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    table = legs_table(_day_of_legs())
    result = settle_day(None, DAY, table, TARIFFS, dry_run=True)  # type: ignore[arg-type]
    out = tmp_path_factory.mktemp("statements")
    return out, result, write_statements(out, DAY, table, result, REGISTRY)


def test_every_party_has_a_csv_and_an_html_statement(written) -> None:  # type: ignore[no-untyped-def]
    out, result, paths = written
    for party in result.positions:
        stem = f"statement-{DAY.isoformat()}-{party.tag}"
        assert out / f"{stem}.csv" in paths and out / f"{stem}.html" in paths
    assert out / f"overview-{DAY.isoformat()}.html" in paths
    assert len(paths) == 2 * len(result.positions) + 2
    assert not list(out.glob("*.tmp"))


def test_every_statement_has_its_charts(written) -> None:  # type: ignore[no-untyped-def]
    out, result, paths = written
    for path in paths:
        if path.suffix != ".html":
            continue
        charts = _charts(path)
        want = OVERVIEW_CHARTS if path.name.startswith("overview") else PARTY_CHARTS
        assert sorted(charts) == sorted(want), path.name
        for name, png in charts.items():
            width, height = _png_size(png)
            assert width >= 300 and height >= 150, (path.name, name)


def test_statement_csv_adds_up_to_the_net_position(written) -> None:  # type: ignore[no-untyped-def]
    out, result, _ = written
    for party, net in result.positions.items():
        with open(out / f"statement-{DAY.isoformat()}-{party.tag}.csv", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        lines, [last] = rows[:-1], rows[-1:]
        assert last["kind"] == "net" and int(last["amount_fen"]) == net
        assert sum(int(r["amount_fen"]) for r in lines) == net
        assert all(
            r["direction"] == ("receivable" if int(r["amount_fen"]) > 0 else "payable")
            for r in lines
        )


def test_overview_lists_every_position_and_they_sum_to_zero(written) -> None:  # type: ignore[no-untyped-def]
    out, result, _ = written
    with open(out / f"overview-{DAY.isoformat()}.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["party"] for r in rows} == {p.tag for p in result.positions}
    assert sum(int(r["net_position_fen"]) for r in rows) == 0
    html = (out / f"overview-{DAY.isoformat()}.html").read_text(encoding="utf-8")
    assert "positions sum<b>0.00</b>" in html


def test_chart_data_for_a_party() -> None:
    table = legs_table(_day_of_legs())
    cols = DayColumns.of(table, allocate(table))
    bus = cols.mask(operator(101))
    assert mismatch_panels(cols, bus) == {
        "by line": [("OPR-101 line 1", 340)],
        "by device": [("OPR-101 device 7", 340)],
    }
    assert mismatch_panels(cols, cols.mask(operator(102))) == {"by line": [], "by device": []}
    panels = revenue_panels(cols, cols.mask(issuer(20)), lambda p: p.tag)
    # T-Union cards (issuer 20) rode legs 8..11: 180 + 190 fen in Wuhan, 200 and 210 elsewhere.
    assert dict(panels["by city"]) == {"GOV-420100": 370, "GOV-420200": 200, "GOV-420700": 210}
    assert sum(v for _, v in panels["by mode"]) == 780 == sum(v for _, v in panels["by medium"])
