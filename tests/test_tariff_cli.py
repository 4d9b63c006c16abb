"""``tongka tariffs validate | show | diff``: what a fare reviewer types and reads."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from typer.testing import CliRunner

from tariffs.cli import EXIT_BAD_ARGUMENT, EXIT_INVALID, app
from tariffs.diff import ABSENT, Change, diff_tariffs
from tariffs.fares import product_fare
from tariffs.load import DEFAULT_TARIFF_DIR, load_tariff_file, load_tariff_set
from tariffs.show import fare_rows, typical_bases
from tariffs.vocab import Product

runner = CliRunner()


def _copy(tmp_path: Path, name: str = "tariffs") -> Path:
    directory = tmp_path / name
    shutil.copytree(DEFAULT_TARIFF_DIR, directory)
    return directory


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _row(output: str, first_cell: str) -> list[str]:
    """The cells of the table row whose first cell is ``first_cell``."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split("[│┃]", line.strip("│┃ "))]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


def test_validate_the_default_tariffs() -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
    assert "9 tariff area(s), 10 version(s), 14 fee contract(s)" in result.output


def test_validate_a_broken_directory_names_file_version_and_field(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    _edit(directory / "420200-huangshi.toml", 'product = "student"', 'product = "pupil"')
    result = runner.invoke(app, ["validate", str(directory)])
    assert result.exit_code == EXIT_INVALID
    assert ("420200-huangshi.toml: version 2015-11-15: versions[0].prices[1].product: 'pupil' "
            "is not a product") in result.output


def test_validate_one_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "wuhan.toml"
    shutil.copy(DEFAULT_TARIFF_DIR / "420100-wuhan.toml", path)
    _edit(path, "concession_issuers = [1]", "concession_issuers = [1, 30]")
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == EXIT_INVALID
    assert ("wuhan.toml: version 2016-01-01: versions[0].concession_issuers[1]: issuer 30 "
            in result.output)


def test_validate_a_path_that_does_not_exist(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nowhere")])
    assert result.exit_code == EXIT_BAD_ARGUMENT


def test_show_wuhan_prices_every_mode_and_product() -> None:
    result = runner.invoke(app, ["show", "420100", "--date", "2024-05-14"])
    assert result.exit_code == 0, result.output
    assert "version valid from 2020-12-01, in force on 2024-05-14" in result.output
    header = _row(result.output, "card product")
    assert [h.split(",")[0] for h in header[1:]] == ["bus", "metro", "ferry"]
    bus = header.index("bus, fare 200")
    assert _row(result.output, "ordinary")[bus] == "160 (2000 bp off)"  # Wuhan Tong on a bus
    assert _row(result.output, "senior")[bus] == "0 (10000 bp off)"
    assert "difference: pays only what it costs above the previous leg" in result.output


def test_show_the_2016_version_and_a_city_by_name() -> None:
    result = runner.invoke(app, ["show", "wuhan", "--date", "2018-03-01"])
    assert result.exit_code == 0, result.output
    assert "version valid from 2016-01-01 until 2020-11-30" in result.output
    assert _row(result.output, "transfer 2")[1] == "pays 6000 bp of its base fare"


def test_show_an_unknown_city_or_a_day_before_any_version() -> None:
    result = runner.invoke(app, ["show", "Paris"])
    assert result.exit_code == EXIT_BAD_ARGUMENT
    assert "unknown city 'Paris'" in result.output
    result = runner.invoke(app, ["show", "420200", "--date", "2015-11-14"])
    assert result.exit_code == EXIT_BAD_ARGUMENT
    assert "no tariff version of area 420200 is in force on 2015-11-14" in result.output


def test_the_fare_table_is_what_the_engine_charges_an_own_card() -> None:
    tariffs = load_tariff_set()
    for area, tariff in tariffs.tariffs.items():
        own = tariff.versions[0].concession_issuers[0]
        for version in tariff.versions:
            bases = typical_bases(version, tariffs.registry, area)
            rows = fare_rows(version, bases)
            for product in Product:
                for base, (fen, _rule) in zip(bases, rows[product].fares, strict=True):
                    assert fen == product_fare(version, own, product, base.mode, base.fen)[1]


def test_diff_reports_a_changed_fare(tmp_path: Path) -> None:
    new = _copy(tmp_path)
    _edit(new / "420200-huangshi.toml", "fixed_fen = 160", "fixed_fen = 180")
    result = runner.invoke(app, ["diff", str(DEFAULT_TARIFF_DIR), str(new)])
    assert result.exit_code == 0, result.output
    assert "1 change(s)" in result.output
    assert _row(result.output, "420200")[1:] == [
        "2015-11-15", "prices[bus, ordinary].fixed_fen", "160", "180"]


def test_diff_of_equal_sets_and_of_a_broken_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["diff", str(DEFAULT_TARIFF_DIR), str(DEFAULT_TARIFF_DIR)])
    assert result.exit_code == 0 and "no differences" in result.output
    broken = _copy(tmp_path)
    _edit(broken / "420700-ezhou.toml", "max_fare = 1500", "max_fare = 1000")
    result = runner.invoke(app, ["diff", str(DEFAULT_TARIFF_DIR), str(broken)])
    assert result.exit_code == EXIT_INVALID
    assert "420700-ezhou.toml: version 2019-01-01: versions[0].networks[0].max_fare" in (
        result.output)


def test_diff_matches_rules_by_what_they_price_not_by_position(tmp_path: Path) -> None:
    path = tmp_path / "huangshi.toml"
    text = (DEFAULT_TARIFF_DIR / "420200-huangshi.toml").read_text(encoding="utf-8")
    head, *prices = text.split("[[versions.prices]]")
    last, tail = prices[-1].split("[versions.funders]")
    prices[-1] = last
    path.write_text(head + "".join("[[versions.prices]]" + p for p in reversed(prices))
                    + "[versions.funders]" + tail, encoding="utf-8")
    old = load_tariff_file(DEFAULT_TARIFF_DIR / "420200-huangshi.toml")
    new = load_tariff_file(path)
    products = [p.product for p in old.versions[0].prices]
    assert [p.product for p in new.versions[0].prices] == list(reversed(products))
    assert diff_tariffs({420200: old}, {420200: new}) == []


def test_diff_of_added_and_removed_versions_and_areas() -> None:
    tariffs = load_tariff_set().tariffs
    wuhan = tariffs[420100]
    only_2016 = wuhan.model_copy(update={"versions": wuhan.versions[:1]})
    assert diff_tariffs({420100: only_2016}, {420100: wuhan}) == [
        Change("420100", "2020-12-01", "version", ABSENT, "in force from 2020-12-01")]
    assert diff_tariffs({420100: wuhan}, {}) == [
        Change("420100", "-", "tariff", "Wuhan 武汉, 2 version(s)", ABSENT)]
