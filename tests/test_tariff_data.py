"""The nine cities' default tariffs: each value sourced or illustrative; the issue's rules."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from tariffs.load import DEFAULT_TARIFF_DIR, load_tariff_set
from tariffs.model import Tariff

TARIFFS = load_tariff_set()


def _sourced_items(tariff: Tariff) -> list[tuple[str, str]]:
    """(path, source) of every rule a notice can stand behind."""
    items = []
    for i, v in enumerate(tariff.versions):
        at = f"{tariff.area} versions[{i}]"
        items += [(f"{at}.line_fares[{j}]", x.source) for j, x in enumerate(v.line_fares)]
        items += [(f"{at}.networks[{j}]", x.source) for j, x in enumerate(v.networks)]
        items += [(f"{at}.prices[{j}]", x.source) for j, x in enumerate(v.prices)]
        items += [(f"{at}.caps[{j}]", x.source) for j, x in enumerate(v.caps)]
        items += [(f"{at}.rebates[{j}]", x.source) for j, x in enumerate(v.rebates)]
        items += [(f"{at}.funders", v.funders.source)]
        if v.transfer is not None:
            items.append((f"{at}.transfer", v.transfer.source))
    return items


def test_every_value_of_a_sourced_tariff_names_its_source_or_says_illustrative() -> None:
    for tariff in TARIFFS.tariffs.values():
        if tariff.illustrative:
            continue
        for path, source in _sourced_items(tariff):
            assert source.startswith(("[", "illustrative")), f"{path} has no source: {source!r}"


def test_every_source_reference_is_defined_in_its_file_header() -> None:
    for path in sorted(DEFAULT_TARIFF_DIR.glob("4*.toml")):
        text = Path(path).read_text(encoding="utf-8")
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        for ref in set(re.findall(r"\[([A-Z]\d)\]", text)):
            assert f"#   [{ref}]" in header or f"Source [{ref}]" in header, (path.name, ref)


def test_partner_cities_without_a_notice_are_marked_illustrative() -> None:
    sourced = {a for a, t in TARIFFS.tariffs.items() if not t.illustrative}
    assert sourced == {420100, 420200}


def test_wuhan_2016_transfer_rule_and_2020_policy_are_two_versions() -> None:
    v2016, v2020 = TARIFFS.tariffs[420100].versions
    assert v2016.valid_from < v2020.valid_from == dt.date(2020, 12, 1)
    old, new = v2016.transfer, v2020.transfer
    assert old is not None and new is not None
    # 2016: 90 minutes from the chain's first boarding; free, then 60 % twice; bus and ferry.
    assert (old.window_minutes, old.window_from) == (90, "first_boarding")
    assert [(s.kind, s.bp) for s in old.steps] == [("free", None), ("pay_rate", 6000),
                                                   ("pay_rate", 6000)]
    assert {m for pair in old.allowed_modes for m in pair} == {"bus", "ferry"}
    # 2020: two transfers counted from the first boarding, 扣高免低, bus and metro together.
    assert new.window_from == "first_boarding"
    assert [s.kind for s in new.steps] == ["difference", "difference"]
    assert ["bus", "metro"] in new.allowed_modes and ["metro", "bus"] in new.allowed_modes


def test_wuhan_metro_rebate_and_concessions() -> None:
    for v in TARIFFS.tariffs[420100].versions:
        (rebate,) = v.rebates
        assert [(t.spend_fen, t.rebate_fen) for t in rebate.tiers] == [
            (20000, 1000), (30000, 3000), (40000, 6000)]
        prices = {(p.mode, p.product): (p.rate_bp, p.fixed_fen) for p in v.prices}
        assert prices[("metro", "student")] == (3000, None)
        assert prices[("bus", "student")] == (2000, None)
        for mode in ("bus", "metro", "ferry"):
            assert prices[(mode, "senior")] == prices[(mode, "disabled")] == (10000, None)
        assert prices[("bus", "ordinary")] == (2000, None)  # 200 -> 160
        assert v.concession_issuers == [1]


def test_huangshi_2015_notice() -> None:
    (v,) = TARIFFS.tariffs[420200].versions
    assert v.valid_from == dt.date(2015, 11, 15)
    prices = {(p.mode, p.product): (p.rate_bp, p.fixed_fen) for p in v.prices}
    assert prices[("bus", "ordinary")] == (None, 160)
    assert prices[("bus", "student")] == (None, 70)
    for product in ("senior", "disabled", "other"):  # other: the military ride free
        assert prices[("bus", product)] == (10000, None)
    assert {lf.operator: lf.fare_fen for lf in v.line_fares}[201] == 200
