"""What-if properties (SPEC v1.2 §11) over generated days, no database: a proposal that changes
no fare reports zero difference everywhere; a real proposal moves only its own city, and
stored-value legs keep their reader debits on both sides."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_whatif_helpers import TARIFFS, accepted_day, area_file, tariff_toml

from clearing.legs import DebitKind
from settlement.whatif import WhatIf, load_proposed_set, share_bp
from settlement.whatif_report import histogram_bins
from tariffs.load import DEFAULT_TARIFF_DIR
from tariffs.model import Tariff

DAY0 = dt.date(2026, 11, 2)
NOOPS = ("rewrite", "rename", "later_version", "restated_version", "contracts")


def noop_file(area: int, kind: str, day: dt.date, later: int) -> tuple[str, str]:
    """A proposed file that changes no fare of ``day``: the current tariff written back, under
    another name, with a copy of a version valid only after the range, or with the version in
    force restated as a new version starting on ``day``."""
    tariff = TARIFFS.tariffs[area]
    if kind == "contracts":
        return "contracts.toml", (DEFAULT_TARIFF_DIR / "contracts.toml").read_text("utf-8")
    if kind in ("rewrite", "rename"):
        name = area_file(area).name if kind == "rewrite" else f"proposed-{area}.toml"
        return name, tariff_toml(tariff)
    data = tariff.model_dump()
    if kind == "later_version":
        copy = dict(data["versions"][-1], valid_from=day + dt.timedelta(days=later))
    else:
        in_force = TARIFFS.version_for(area, day)
        if in_force.valid_from == day:
            return area_file(area).name, tariff_toml(tariff)
        copy = dict(in_force.model_dump(), valid_from=day)
    copy["rebates"] = [dict(r, valid_from=copy["valid_from"]) for r in copy.get("rebates") or []]
    data["versions"] = sorted([*data["versions"], copy], key=lambda v: v["valid_from"])
    return area_file(area).name, tariff_toml(Tariff.model_validate(data))


def run_days(proposed_files: dict[str, str], days: list[tuple[dt.date, int, int]]) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in proposed_files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        proposed = load_proposed_set(Path(tmp))
    whatif = WhatIf(TARIFFS, proposed, days[0][0], days[-1][0])
    for day, n_taps, seed in days:
        whatif.add_day(day, accepted_day(day, n_taps, seed))
    return whatif.result()


@settings(max_examples=8)
@given(
    seed=st.integers(0, 2**31 - 1),
    n_taps=st.integers(200, 1500),
    offset=st.integers(0, 60),
    two_days=st.booleans(),
    changes=st.dictionaries(st.sampled_from(sorted(TARIFFS.tariffs)), st.sampled_from(NOOPS),
                            min_size=1, max_size=4),
    later=st.integers(1, 400),
)
def test_a_proposal_that_changes_no_fare_reports_zero_difference_everywhere(
    seed: int, n_taps: int, offset: int, two_days: bool, changes: dict[int, str], later: int
) -> None:
    first = DAY0 + dt.timedelta(days=offset)
    days = [(first + dt.timedelta(days=k), n_taps, seed + k) for k in range(1 + two_days)]
    files = dict(noop_file(area, kind, days[-1][0], later) for area, kind in changes.items())
    result = run_days(files, days)
    assert result.rows and result.get("total", "all", "legs").current > 0
    assert [r for r in result.rows if r.difference] == []
    assert result.is_zero and result.histogram == {} and result.sample == ()


def xiaogan_cheaper(version: dict[str, Any]) -> None:
    for price in version["prices"]:
        if price["mode"] == "bus" and price["product"] == "ordinary":
            price["rate_bp"] = 2000
    if version.get("transfer"):
        version["transfer"]["window_minutes"] = 90


@settings(max_examples=4)
@given(seed=st.integers(0, 2**31 - 1), n_taps=st.integers(3000, 6000))
def test_a_change_in_one_city_moves_only_that_city_and_never_a_reader_debit(
    seed: int, n_taps: int
) -> None:
    data = TARIFFS.tariffs[420900].model_dump()
    for version in data["versions"]:
        xiaogan_cheaper(version)
    files = {"x.toml": tariff_toml(Tariff.model_validate(data))}
    result = run_days(files, [(DAY0, n_taps, seed)])
    moved = {r.key for r in result.table("city") if r.difference and r.measure != "fee_fen"}
    assert moved == {"420900"} and result.changed_legs > 0
    assert sum(result.histogram.values()) == result.changed_legs
    assert result.changed_charged <= result.changed_legs
    for leg in result.sample:
        assert leg.current_computed_fen != leg.proposed_computed_fen
        if leg.debit_kind == DebitKind.STORED_VALUE:  # SPEC §11: the debit belongs to the reader
            assert leg.current_charged_fen == leg.proposed_charged_fen
        if leg.debit_kind == DebitKind.ACCOUNT:  # ... an account leg is charged its side's fare
            assert leg.proposed_charged_fen == leg.proposed_computed_fen


@given(st.integers(-10**9, 10**9), st.integers(-10**9, 10**9))
def test_the_share_is_the_difference_over_the_current_figure_rounded_half_away(
    difference: int, current: int
) -> None:
    bp = share_bp(difference, current)
    if current == 0:
        assert bp is None
        return
    assert bp is not None
    exact = abs(difference) * 10_000  # |bp| * |current| is within half a |current| of it
    assert abs(2 * abs(bp) * abs(current) - 2 * exact) <= abs(current)
    if bp != 0:
        assert (bp < 0) == (difference < 0)


@given(st.dictionaries(st.integers(-5000, 5000).filter(bool), st.integers(1, 1000), max_size=80))
def test_histogram_bins_keep_every_leg_once(histogram: dict[int, int]) -> None:
    bars = histogram_bins(histogram)
    assert sum(n for _, _, n in bars) == sum(histogram.values())
    assert all(a <= b for a, b, _ in bars) and len(bars) <= 24
    assert all(any(a <= v <= b for a, b, _ in bars) for v in histogram)
