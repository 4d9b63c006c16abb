"""What a person reads in statements (issue #19 points 7 and 9): amounts as 1,234,567.89 with
one currency label (CNY) in pages, CSVs and charts, negatives marked, party names escaped, and
a stale report saying so on every page."""

from __future__ import annotations

import csv
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_settle_builders import DAY, REGISTRY, TARIFFS, leg

import settlement.statements as statements
from clearing.errors import InputError
from clearing.legs import Leg, legs_table
from settlement.amounts import CURRENCY, yuan, yuan_tick
from settlement.apportion import allocate
from settlement.charts import Chart, tick_label
from settlement.parties import Party, operator
from settlement.settle import settle_day
from settlement.statements import (
    DayColumns,
    money_html,
    overview_html,
    party_html,
    write_statements,
)

GROUPED = re.compile(r"^[-+]?\d{1,3}(,\d{3})*\.\d{2}$")  # 1,234,567.89
NUM_CELL = re.compile(r'<td class="num">(.*?)</td>')
HOSTILE = '<script>alert("x")</script> & Co'
STALE = "taps of this day changed since it was settled (1 late batch): re-run settle"


def _big_day() -> list[Leg]:
    """Wuhan Tong cards: one leg of 1,234,567.89 CNY on Wuhan Bus, one small one on the metro."""
    return [
        leg(card_id=1, charged_fen=123_456_789, computed_fen=123_456_789, base_fen=123_456_789),
        leg(card_id=2, operator=102, mode=1, charged_fen=300, computed_fen=300, base_fen=300),
    ]


def _write(out: Path, stale: str | None = None) -> list[Path]:
    table = legs_table(_big_day())
    result = settle_day(None, DAY, table, TARIFFS, dry_run=True)  # type: ignore[arg-type]
    return write_statements(out, DAY, table, result, REGISTRY, workers=1, stale=stale)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("plain")
    return out, _write(out)


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("stale")
    return out, _write(out, stale=STALE + "\n  (see the batch report)")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (0, "0.00"),
        (5, "0.05"),
        (-5, "-0.05"),
        (100_000, "1,000.00"),
        (123_456_789, "1,234,567.89"),
        (-123_456_789, "-1,234,567.89"),
    ],
)
def test_yuan_groups_thousands(fen: int, text: str) -> None:
    assert yuan(fen) == text


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.booleans())
def test_yuan_reads_back_to_the_fen(fen: int, signed: bool) -> None:
    text = yuan(fen, signed=signed)
    assert GROUPED.match(text)
    assert Decimal(text.replace(",", "")) * 100 == fen
    assert text.startswith("-") == (fen < 0)
    assert text.startswith("+") == (signed and fen > 0)


def test_yuan_refuses_a_float() -> None:
    with pytest.raises(TypeError):
        yuan(1.5)  # type: ignore[arg-type]


def test_chart_ticks_keep_sign_and_fen() -> None:
    assert tick_label(123_456_700.0) == "1,234,567"
    assert tick_label(-150.0) == "-1.50"  # floor division used to show -2
    assert tick_label(50.0) == "0.50"  # used to show 0, beside a real 0 tick
    assert tick_label(-0.2) == "0" == yuan_tick(0)


def test_a_negative_amount_is_marked_even_unsigned() -> None:
    assert str(money_html(-123_456)) == '<span class="neg">-1,234.56</span>'
    assert str(money_html(123_456)) == "1,234.56"
    assert str(money_html(123_456, True)) == '<span class="pos">+1,234.56</span>'
    assert str(money_html(0, True)) == "0.00"


# ---------------------------------------------------------------- pages and CSVs


def test_html_amounts_are_grouped_and_labelled_cny(plain) -> None:  # type: ignore[no-untyped-def]
    out, paths = plain
    pages = [p for p in paths if p.suffix == ".html"]
    assert pages
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "(yuan)" not in text and "yuan" not in text.lower(), page.name
        assert f"All amounts in {CURRENCY}." in text
        assert f"({CURRENCY})" in text
        for cell in NUM_CELL.findall(text):
            bare = re.sub(r"<[^>]+>", "", cell)
            assert GROUPED.match(bare) or re.fullmatch(r"[\d,]+", bare), (page.name, cell)
    bus = (out / f"statement-{DAY.isoformat()}-OPR-101.html").read_text(encoding="utf-8")
    assert "1,234,567.89" in bus
    card = (out / f"statement-{DAY.isoformat()}-ISS-1.html").read_text(encoding="utf-8")
    assert re.search(r'<span class="neg">-1,234,5\d\d\.\d\d</span>', card)  # what it owes


def test_csvs_keep_raw_fen_and_write_grouped_cny(plain) -> None:  # type: ignore[no-untyped-def]
    out, paths = plain
    seen_grouped = False
    for path in (p for p in paths if p.suffix == ".csv"):
        rows = _rows(path)
        assert rows, path.name
        pairs = [("amount_fen", "amount_cny")]
        if path.name.startswith("overview"):
            pairs = [("net_position_fen", "net_position_cny"), ("payment_fen", "payment_cny")]
        for row in rows:
            for fen_col, cny_col in pairs:
                fen = int(row[fen_col])  # machines still read a plain integer
                assert row[cny_col] == yuan(fen)
                seen_grouped |= "," in row[cny_col]
    assert seen_grouped


def test_every_chart_title_carries_the_one_label() -> None:
    table = legs_table(_big_day())
    result = settle_day(None, DAY, table, TARIFFS, dry_run=True)  # type: ignore[arg-type]
    cols = DayColumns.of(table, allocate(table))
    pending: list[Chart] = []
    party_html(DAY, operator(101), result, cols, lambda p: p.tag, pending)
    overview_html(DAY, result, cols, lambda p: p.tag, pending)
    assert len(pending) == 8
    assert all(c.args[0].endswith(f"({CURRENCY})") for c in pending)


# ---------------------------------------------------------------- stale banner


def test_no_banner_unless_asked(plain) -> None:  # type: ignore[no-untyped-def]
    out, paths = plain
    for page in (p for p in paths if p.suffix == ".html"):
        text = page.read_text(encoding="utf-8")
        assert 'class="stale"' not in text and "Warning" not in text, page.name
    first = (out / f"overview-{DAY.isoformat()}.csv").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("day,party,")


def test_stale_banner_tops_every_page_and_the_overview_csv(stale) -> None:  # type: ignore[no-untyped-def]
    out, paths = stale
    line = STALE + " (see the batch report)"  # made one line
    pages = [p for p in paths if p.suffix == ".html"]
    assert len(pages) == len([p for p in paths if p.suffix == ".csv"])
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert text.count('class="stale"') == 1, page.name
        body = text.split("<body>", 1)[1].lstrip()
        assert body.startswith(f'<div class="stale" role="alert" data-stale="1">Warning: {line}')
        assert body.index('class="stale"') < body.index("<h1>")
    lines = (out / f"overview-{DAY.isoformat()}.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"# WARNING: {line}"
    assert lines[1].startswith("day,party,")
    statement = out / f"statement-{DAY.isoformat()}-OPR-101.csv"
    assert statement.read_text(encoding="utf-8").startswith("day,party,")


def test_an_empty_stale_warning_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        _write(tmp_path, stale=" \n ")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- escaping


def test_party_names_are_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = statements.party_name

    def hostile(p: Party, registry: object) -> str:
        return HOSTILE if p == operator(101) else real(p, registry)  # type: ignore[arg-type]

    monkeypatch.setattr(statements, "party_name", hostile)
    paths = _write(tmp_path, stale='<img src=x onerror="alert(1)">')
    escaped = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co"
    for page in (p for p in paths if p.suffix == ".html"):
        text = page.read_text(encoding="utf-8")
        assert "<script" not in text and "<img src=x" not in text, page.name
        assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in text
    for name in ("statement-{d}-OPR-101.html", "statement-{d}-ISS-1.html", "overview-{d}.html"):
        assert escaped in (tmp_path / name.format(d=DAY.isoformat())).read_text(encoding="utf-8")
    # A CSV is not markup: it carries the name exactly as the registry spells it.
    rows = _rows(tmp_path / f"statement-{DAY.isoformat()}-ISS-1.csv")
    assert HOSTILE in {r["counterparty_name"] for r in rows}
