"""What-if re-pricing (SPEC v1.2 §11): stored days priced under a proposed tariff set beside the
current one, settled in memory and compared; nothing stored changes.

The functional core is ``WhatIf``: fed one service day of accepted taps at a time (memory is
bounded by one day, plus a per-card monthly spend for the rebate months), it prices the taps
with the fast path under both sets (``clearing.day.price_taps``), settles both in memory
(``settlement.settle.compute_day``) and sums the figures of each side per party, city (the
leg's tariff area), mode, medium and (honoured) product. Both sides are priced now from the
same stored taps, so account-based legs are charged the fare of their side and stored-value
legs their reader debits on both (SPEC §6). ``run_whatif`` is the shell: it loads and checks
the proposed set exactly like ``tongka tariffs validate``, reads each day from the tap store,
refuses a tap the proposed set cannot price (by batch and row), and writes the report. It posts
no ledger entry, writes no stored file and takes no settlement lock.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import tomllib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Engine

from clearing.day import DayUnpriceableError, check_day_priceable, price_taps
from clearing.errors import InputError, StateError
from clearing.legs import LEG_TYPES, PENALTY_STATUSES, LegStatus
from clearing.service_day import day_from_number, day_number
from clearing.tapstore import read_day_taps
from settlement.amounts import CURRENCY, yuan
from settlement.month_close import month_days, month_rebates, rebate_obligations
from settlement.obligations import COMPONENT_COLUMNS, Component, ObligationKind, funder_of
from settlement.parties import parse_tag, party_name
from settlement.settle import DayComputation, compute_day
from tariffs.error_codes import ErrorCode
from tariffs.errors import TariffError, TariffProblem
from tariffs.load import CONTRACTS_FILE, DEFAULT_TARIFF_DIR, TariffSet, load_tariff_set
from tariffs.model import TariffVersion
from tariffs.registry import FLAT, Registry, load_registry
from tariffs.vocab import Media, Mode, Product

SIDES = ("current", "proposed")
# The leg tables of the comparison (SPEC §11: per city, mode, medium and product); "total" is
# the whole range, "party" the settlement parties and "rebate" the monthly rebates.
LEG_TABLES = ("city", "mode", "medium", "product")
SAMPLE_LEGS = 50  # changed legs kept for the report, spread over the days
MONEY_COLUMNS = ("charged_fen", "computed_fen", *COMPONENT_COLUMNS.values())

Key = tuple[str, str, str]  # (table, key, measure)
SPEND_SCHEMA = pa.schema([pa.field(n, LEG_TYPES[n])
                          for n in ("network", "issuer", "card_id", "computed_fen")])
Figures = dict[Key, int]


class WhatIfUnpriceableError(StateError):
    """A stored tap that the proposed (or current) tariff set cannot price: the what-if fails
    rather than leave it out (SPEC §11), naming each tap by batch and row."""

    code = ErrorCode.WHATIF_UNPRICEABLE

    def __init__(self, message: str, cause: DayUnpriceableError) -> None:
        super().__init__(message)
        self.taps = cause.taps
        self.count = cause.count


@dataclass(frozen=True, slots=True, order=True)
class Comparison:
    """One figure of the range on both sides, in fen (``legs`` and ``cards`` are counts)."""

    table: str  # total | party | city | mode | medium | product | rebate
    key: str  # party tag (GOV-420900), area code, or enum name (BUS, CARD, STUDENT)
    measure: str  # e.g. charged_fen, discount_card_government, subsidy_fen, net_fen
    current: int
    proposed: int

    @property
    def difference(self) -> int:
        return self.proposed - self.current

    @property
    def share_bp(self) -> int | None:
        """The difference as basis points of |current|, rounded half away from zero; None when
        the current figure is 0 (no share of nothing)."""
        return share_bp(self.difference, self.current)


def share_bp(difference: int, current: int) -> int | None:
    """``difference / |current|`` in basis points by integer arithmetic (no float near money)."""
    if current == 0:
        return None
    q, r = divmod(abs(difference) * 10_000, abs(current))
    q += 2 * r >= abs(current)
    return -q if difference < 0 else q


@dataclass(frozen=True, slots=True)
class ChangedLeg:
    """A leg whose computed fare differs between the two sets, and the step that moved it."""

    day: dt.date
    card_id: int  # the pseudonymous token
    issuer: int
    area: int
    operator: int
    line: int
    mode: int
    media: int
    honoured_product: int
    board_stop: int
    exit_stop: int
    board_ts_ms: int
    debit_kind: int
    current_computed_fen: int
    proposed_computed_fen: int
    current_charged_fen: int
    proposed_charged_fen: int
    rule: str  # which pricing step changed, and the proposed tariff version


@dataclass(frozen=True)
class WhatIfResult:
    """Everything a what-if found; ``rows`` hold every comparison, sorted."""

    first: dt.date
    last: dt.date
    days: int
    taps: int
    rows: tuple[Comparison, ...]
    changed_legs: int  # legs present on both sides whose computed fare changed
    changed_charged: int  # ... whose charged amount changed (account-based legs)
    only_current: int  # legs that exist on one side only (matching changed: journey time)
    only_proposed: int
    histogram: dict[int, int]  # change of computed fare per leg (fen) -> number of legs
    sample: tuple[ChangedLeg, ...]
    months: tuple[dt.date, ...]  # calendar months wholly inside the range: rebates compared
    proposed_dir: Path | None = None

    def table(self, name: str) -> list[Comparison]:
        return [r for r in self.rows if r.table == name]

    def get(self, table: str, key: str, measure: str) -> Comparison:
        """One figure; a figure neither side has is zero on both."""
        for r in self.rows:
            if (r.table, r.key, r.measure) == (table, key, measure):
                return r
        return Comparison(table, key, measure, 0, 0)

    @property
    def is_zero(self) -> bool:
        """No figure differs and no leg changed (what a no-op proposal must give)."""
        return (all(r.difference == 0 for r in self.rows) and self.changed_legs == 0
                and self.changed_charged == 0 and self.only_current == 0
                and self.only_proposed == 0)


# --------------------------------------------------------------------------- the proposed set


def load_proposed_set(tariffs_dir: Path, current_dir: Path | None = None,
                      registry: Registry | None = None) -> TariffSet:
    """The current tariff directory with ``tariffs_dir``'s files replacing or adding to it.

    A proposed file replaces the current file of the same name, or of the same area (so a
    renamed Xiaogan file replaces ``420900-xiaogan.toml``); ``contracts.toml`` replaces the
    contracts. The merged set is loaded by ``tariffs.load`` exactly as ``tongka tariffs
    validate`` loads a directory, so a bad file raises the same ``TariffError`` naming file and
    field. The merge happens in a temporary directory; no tariff file is changed.
    """
    proposed = Path(tariffs_dir)
    current = Path(current_dir or DEFAULT_TARIFF_DIR)
    if not proposed.is_dir():
        raise TariffError([TariffProblem(ErrorCode.TARIFF_NO_DIRECTORY, str(proposed), "-", "-",
                                         "is not a directory of tariff files")])
    new_files = sorted(proposed.glob("*.toml"))
    if not new_files:
        raise TariffError([TariffProblem(ErrorCode.TARIFF_NO_FILES, str(proposed), "-", "-",
                                         "holds no *.toml tariff file to propose")])
    replaced_areas = {a for a in map(_area_of, new_files) if a is not None}
    names = {p.name for p in new_files}
    with tempfile.TemporaryDirectory(prefix="tongka-whatif-") as tmp:
        merged = Path(tmp)
        for path in sorted(current.glob("*.toml")):
            if path.name in names or (path.name != CONTRACTS_FILE
                                      and _area_of(path) in replaced_areas):
                continue
            shutil.copyfile(path, merged / path.name)
        for path in new_files:
            shutil.copyfile(path, merged / path.name)
        return load_tariff_set(merged, registry or load_registry())


def _area_of(path: Path) -> int | None:
    """A tariff file's ``area``, or None when it cannot tell (the loader then says why)."""
    if path.name == CONTRACTS_FILE:
        return None
    try:
        area = tomllib.loads(path.read_text(encoding="utf-8")).get("area")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return area if isinstance(area, int) else None


# --------------------------------------------------------------------------- one side of a day


def side_figures(legs: pa.Table, comp: DayComputation, tariffs: TariffSet) -> Figures:
    """One side's figures of one day: per leg table (city, mode, medium, product) and in total,
    the legs, charged and computed fen, each discount component by funder and the subsidies;
    per party the revenue, fees, subsidies (received +, paid -) and the net position; fees
    also per city (the city of the operator that pays them)."""
    out: Figures = defaultdict(int)
    versions = _versions(tariffs)
    keys = ["area", "version", "mode", "media", "honoured_product"]
    for row in _group_sum(legs, keys, list(MONEY_COLUMNS)):
        area, version_no, mode, media, product, count, charged, computed, *components = row
        version = versions[(area, version_no)]
        cells = [("total", "all"), ("city", str(area)), ("mode", Mode(mode).name),
                 ("medium", Media(media).name), ("product", Product(product).name)]
        figures = {"legs": count, "charged_fen": charged, "computed_fen": computed}
        for component, amount in zip(Component, components, strict=True):
            funder = funder_of(version, component, product)
            name = f"discount_{component.name.lower()}_{funder}"
            figures[name] = figures.get(name, 0) + amount
            figures["discount_fen"] = figures.get("discount_fen", 0) + amount
            if funder == "government":
                figures["subsidy_fen"] = figures.get("subsidy_fen", 0) + amount
        for table, key in cells:
            for measure, amount in figures.items():
                out[(table, key, measure)] += amount
    for ob in comp.obligations:
        measure = f"{ob.kind.name.lower()}_fen"
        out[("party", ob.debtor.tag, measure)] -= ob.amount_fen
        out[("party", ob.creditor.tag, measure)] += ob.amount_fen
        if ob.kind == ObligationKind.FEE:
            city = tariffs.registry.operators[ob.debtor.code].city
            out[("city", str(city), "fee_fen")] += ob.amount_fen
            out[("total", "all", "fee_fen")] += ob.amount_fen
    for party, amount in comp.positions.items():
        out[("party", party.tag, "net_fen")] += amount
    return out


def _versions(tariffs: TariffSet) -> dict[tuple[int, int], TariffVersion]:
    """Every tariff version by (area, valid_from day number), as legs name them."""
    return {(area, day_number(v.valid_from)): v
            for area, t in tariffs.tariffs.items() for v in t.versions}


def _group_sum(legs: pa.Table, keys: list[str], values: list[str]) -> list[list[int]]:
    """Rows ``keys..., count, sums...`` of a vectorised group-by, plain Python ints."""
    if legs.num_rows == 0:
        return []
    table = legs.select(keys + values).cast(
        pa.schema([pa.field(k, pa.int64()) for k in keys + values]))
    out = table.group_by(keys).aggregate([(keys[0], "count"), *[(v, "sum") for v in values]])
    cols = [out.column(k).to_pylist() for k in keys] + [out.column(f"{keys[0]}_count")
                                                        .to_pylist()]
    cols += [out.column(f"{v}_sum").to_pylist() for v in values]
    return sorted(list(r) for r in zip(*cols, strict=True))


# --------------------------------------------------------------------------- legs that changed

LEG_KEYS = ["card_id", "issuer", "board_ts_ms", "board_card_seq"]  # a leg's boarding tap
_COMPARED = ["status", "version", "base_fen", "card_discount_fen", "transfer_discount_fen",
             "cap_discount_fen", "computed_fen", "charged_fen"]
_DESCRIBED = ["area", "operator", "line", "mode", "media", "honoured_product", "board_stop",
              "exit_stop", "debit_kind"]
# SPEC §6 steps, in pricing order: every one whose amount differs moved the fare.
RULES = (("status", "matching (max_journey_minutes)"), ("base_fen", "base fare (step 1)"),
         ("card_discount_fen", "product price (step 3)"),
         ("transfer_discount_fen", "transfer rule (step 4)"),
         ("cap_discount_fen", "daily cap (step 5)"))


@dataclass(frozen=True, slots=True)
class LegDiff:
    """How one day's legs differ between the sides (the input of ``WhatIf``'s counters)."""

    changed: int
    changed_charged: int
    only_current: int
    only_proposed: int
    deltas: dict[int, int]
    sample: list[ChangedLeg]


def diff_legs(day: dt.date, current: pa.Table, proposed: pa.Table, sample: int) -> LegDiff:
    """Pair each leg with its twin on the other side by its boarding tap (card, issuer, time,
    counter) and compare the fares; both sides come from the same taps, so every leg has a
    twin unless a changed journey time matched the taps differently."""
    cols = LEG_KEYS + _DESCRIBED + _COMPARED
    a, b = current.select(cols), proposed.select(cols)
    same_keys = a.num_rows == b.num_rows and all(
        a.column(k).equals(b.column(k)) for k in LEG_KEYS)
    if same_keys:
        only_a = only_b = 0
        cur = {c: a.column(c).to_numpy() for c in cols}
        new = {c: b.column(c).to_numpy() for c in _COMPARED}
    else:
        joined = a.join(b.select(LEG_KEYS + _COMPARED), LEG_KEYS, join_type="inner",
                        right_suffix="__p")
        only_a, only_b = a.num_rows - joined.num_rows, b.num_rows - joined.num_rows
        cur = {c: joined.column(c).to_numpy() for c in cols}
        new = {c: joined.column(f"{c}__p").to_numpy() for c in _COMPARED}
    delta = new["computed_fen"].astype(np.int64) - cur["computed_fen"].astype(np.int64)
    changed = np.flatnonzero(delta)
    values, counts = np.unique(delta[changed], return_counts=True)
    n_charged = int(np.count_nonzero(new["charged_fen"] != cur["charged_fen"]))
    picked = changed[:sample]
    rows = [ChangedLeg(
        day=day, **{c: int(cur[c][i]) for c in ("card_id", "issuer", "board_ts_ms", *_DESCRIBED)},
        current_computed_fen=int(cur["computed_fen"][i]),
        proposed_computed_fen=int(new["computed_fen"][i]),
        current_charged_fen=int(cur["charged_fen"][i]),
        proposed_charged_fen=int(new["charged_fen"][i]), rule=_rule(cur, new, int(i)),
    ) for i in picked]
    return LegDiff(len(changed), n_charged, only_a, only_b,
                   dict(zip(values.tolist(), counts.tolist(), strict=True)), rows)


def _rule(cur: dict[str, np.ndarray], new: dict[str, np.ndarray], i: int) -> str:
    """The SPEC §6 steps whose amounts differ, with the proposed version that priced the leg."""
    version = day_from_number(int(new["version"][i])).isoformat()
    moved = [label for column, label in RULES if cur[column][i] != new[column][i]]
    return f"{' + '.join(moved) or 'fare'}, proposed version {version}"


# --------------------------------------------------------------------------- the accumulator


@dataclass
class WhatIf:
    """The running comparison over a range of days, one day at a time (the functional core).

    ``add_day`` takes a day's accepted taps; ``result`` sums up. Per-card monthly spend is
    kept only for calendar months wholly inside [first, last] (SPEC §11), summed per card as
    the days come, so memory stays one day of legs plus one row per card and network.
    """

    current: TariffSet
    proposed: TariffSet
    first: dt.date
    last: dt.date
    days_expected: int = 0
    figures: dict[Key, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    spend: dict[tuple[dt.date, str], pa.Table] = field(default_factory=dict)
    days: int = 0
    taps: int = 0
    changed: int = 0
    changed_charged: int = 0
    only_current: int = 0
    only_proposed: int = 0
    histogram: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    sample: list[ChangedLeg] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.first > self.last:
            raise InputError(f"--from {self.first} is after --to {self.last}",
                             code=ErrorCode.WHATIF_RANGE)
        self.days_expected = self.days_expected or (self.last - self.first).days + 1

    @property
    def months(self) -> tuple[dt.date, ...]:
        return whole_months(self.first, self.last)

    def add_day(self, day: dt.date, taps: pa.Table) -> None:
        """Price ``taps`` (the day's accepted taps) under both sets and add the day's figures."""
        legs = {side: price_taps(taps, ts) for side, ts in self._sets()}
        for i, (side, ts) in enumerate(self._sets()):
            comp = compute_day(legs[side], ts, day)
            for key, amount in side_figures(legs[side], comp, ts).items():
                self.figures[key][i] += amount
        quota = max(1, SAMPLE_LEGS // max(1, self.days_expected))
        diff = diff_legs(day, legs["current"], legs["proposed"],
                         min(quota, SAMPLE_LEGS - len(self.sample)))
        self.changed += diff.changed
        self.changed_charged += diff.changed_charged
        self.only_current += diff.only_current
        self.only_proposed += diff.only_proposed
        for delta, count in diff.deltas.items():
            self.histogram[delta] += count
        self.sample.extend(diff.sample)
        month = day.replace(day=1)
        if month in self.months:
            for side in SIDES:
                self._add_spend(month, side, legs[side])
        self.days += 1
        self.taps += taps.num_rows

    def _sets(self) -> list[tuple[str, TariffSet]]:
        return [("current", self.current), ("proposed", self.proposed)]

    def _add_spend(self, month: dt.date, side: str, legs: pa.Table) -> None:
        """SPEC §6 monthly rebate: a card's spend is the computed fares of its non-penalty
        legs; summed per (network, issuer, card) now, so a month costs one row per card."""
        penalty = pa.array([int(s) for s in PENALTY_STATUSES], type=LEG_TYPES["status"])
        keep = pc.and_(pc.invert(pc.is_in(legs.column("status"), value_set=penalty)),
                       pc.not_equal(legs.column("network"), FLAT))  # flat lines earn no rebate
        spend = legs.filter(keep).select(["network", "issuer", "card_id", "computed_fen"])
        key = (month, side)
        spend = spend.cast(SPEND_SCHEMA)
        if key in self.spend:
            spend = pa.concat_tables([self.spend[key], spend])
        self.spend[key] = spend.group_by(["network", "issuer", "card_id"]).aggregate(
            [("computed_fen", "sum")]).rename_columns(SPEND_SCHEMA.names).cast(SPEND_SCHEMA)

    def _add_rebates(self) -> None:
        """Each whole month's rebates on both sides, by party (operator pays -, issuer +),
        with ``tariffs``' rule in force on the month's last day (settlement.month_close)."""
        for month in self.months:
            for i, (side, ts) in enumerate(self._sets()):
                spend = self.spend.get((month, side))
                if spend is None:
                    continue
                rebates = month_rebates(_spend_as_legs(spend, month), ts, month)
                label = f"{month:%Y-%m}"
                self.figures[("rebate", "all", f"cards {label}")][i] += len(rebates)
                self.figures[("rebate", "all", f"rebate_fen {label}")][i] += sum(
                    r.rebate_fen for r in rebates)
                for ob in rebate_obligations(rebates):
                    self.figures[("rebate", ob.debtor.tag, f"rebate_fen {label}")][i] -= (
                        ob.amount_fen)
                    self.figures[("rebate", ob.creditor.tag, f"rebate_fen {label}")][i] += (
                        ob.amount_fen)

    def result(self, proposed_dir: Path | None = None) -> WhatIfResult:
        self._add_rebates()
        self.spend.clear()
        rows = tuple(sorted(Comparison(t, k, m, c, p)
                            for (t, k, m), (c, p) in self.figures.items() if c or p))
        return WhatIfResult(
            first=self.first, last=self.last, days=self.days, taps=self.taps, rows=rows,
            changed_legs=self.changed, changed_charged=self.changed_charged,
            only_current=self.only_current, only_proposed=self.only_proposed,
            histogram=dict(sorted(self.histogram.items())), sample=tuple(self.sample),
            months=self.months, proposed_dir=proposed_dir,
        )


def _spend_as_legs(spend: pa.Table, month: dt.date) -> pa.Table:
    """A month's summed spend shaped as the legs ``month_rebates`` reads (one per card and
    network, non-penalty, dated the month's first day), so the rebate rule is that module's
    alone."""
    n = spend.num_rows
    return pa.table({
        "service_day": pa.array(np.full(n, day_number(month), np.int32), LEG_TYPES["service_day"]),
        "status": pa.array(np.full(n, int(LegStatus.FLAT), np.uint8), LEG_TYPES["status"]),
        "network": spend.column("network").cast(LEG_TYPES["network"]),
        "issuer": spend.column("issuer").cast(LEG_TYPES["issuer"]),
        "card_id": spend.column("card_id").cast(LEG_TYPES["card_id"]),
        "computed_fen": spend.column("computed_fen").cast(LEG_TYPES["computed_fen"]),
    })


def whole_months(first: dt.date, last: dt.date) -> tuple[dt.date, ...]:
    """The first days of the calendar months wholly inside [first, last]."""
    out = []
    month = first.replace(day=1)
    while month <= last:
        start, end = month_days(month)
        if start >= first and end <= last:
            out.append(start)
        month = end + dt.timedelta(days=1)
    return tuple(out)


def days_of(first: dt.date, last: dt.date) -> Iterator[dt.date]:
    day = first
    while day <= last:
        yield day
        day += dt.timedelta(days=1)


# --------------------------------------------------------------------------- the shell

Progress = Callable[[dt.date], None]


def run_whatif(
    engine: Engine | None,
    data_dir: Path,
    tariffs_dir: Path,
    first: dt.date,
    last: dt.date,
    out_dir: Path | None = None,
    progress: Progress | None = None,
    *,
    current: TariffSet | None = None,
    current_dir: Path | None = None,
) -> WhatIfResult:
    """``tongka whatif``: compare the stored days [first, last] under the proposed set.

    ``current`` is the set in force (default: the built-in set, as the other commands use);
    the proposed set is ``current_dir`` (default: the built-in directory) with ``tariffs_dir``
    merged in (``load_proposed_set``). Raises ``TariffError`` for a bad proposed file,
    ``WhatIfUnpriceableError`` (exit 3) for a stored tap either set cannot price, and
    ``InputError`` for a reversed range or an ``out_dir`` inside the data directory (a what-if
    changes no file there). Reads only: no ledger entry, no lock, no stored file. With
    ``out_dir`` the HTML and CSV report is written there (``settlement.whatif_report``).
    """
    data_dir = Path(data_dir)
    if out_dir is not None and _inside(Path(out_dir), data_dir):
        raise InputError(f"--out {out_dir} is inside the data directory {data_dir}: a what-if "
                         "writes nothing there; give a directory outside it",
                         code=ErrorCode.WHATIF_OUT_IN_DATA_DIR)
    registry = current.registry if current is not None else load_registry()
    if current is None:
        current = load_tariff_set() if current_dir is None else load_tariff_set(current_dir,
                                                                               registry)
    proposed = load_proposed_set(tariffs_dir, current_dir, registry)
    whatif = WhatIf(current, proposed, first, last)
    for day in days_of(first, last):
        taps = read_day_taps(data_dir, day, engine)
        for side, ts in (("current", current), ("proposed", proposed)):
            check_priceable(data_dir, day, taps, ts, engine, side)
        whatif.add_day(day, taps)
        del taps
        if progress is not None:
            progress(day)
    result = whatif.result(Path(tariffs_dir))
    if out_dir is not None:
        # a cycle: settlement.whatif_report imports this module's result types
        from settlement.whatif_report import write_report

        write_report(result, registry, Path(out_dir))
    return result


def check_priceable(data_dir: Path, day: dt.date, taps: pa.Table, tariffs: TariffSet,
                    engine: Engine | None, side: str) -> None:
    """SPEC §11: a tap the set cannot price fails the what-if, listed by batch and row (the
    acceptance rules themselves, through ``clearing.day.check_day_priceable``)."""
    try:
        check_day_priceable(data_dir, day, taps, tariffs, engine=engine)
    except DayUnpriceableError as exc:
        lines = [f"what-if: the {side} tariff set cannot price {exc.count} stored tap(s) of "
                 f"{day} (SPEC §11):"]
        for t in exc.taps:
            batch = (f"batch {t.batch_id} ({t.batch_file})" if t.batch_id is not None
                     else f"batch file {t.batch_file}")
            lines.append(f"  {batch} row {t.row}: {t.code}, operator {t.operator} line "
                         f"{t.line} device {t.device_id} seq {t.device_seq}")
        if exc.count > len(exc.taps):
            lines.append(f"  ... and {exc.count - len(exc.taps)} more")
        lines.append("Give the proposed set a version in force on that day that prices each "
                     "tap's line." if side == "proposed" else
                     "The current set no longer prices the stored day: fix it first.")
        raise WhatIfUnpriceableError("\n".join(lines), exc) from None


def _inside(path: Path, directory: Path) -> bool:
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents


# --------------------------------------------------------------------------- the terminal

def summary_lines(result: WhatIfResult, registry: Registry, *, parties: int = 8) -> list[str]:
    """The one-screen summary: the range, the legs that changed, the totals, and each party's
    change of net position in words, largest first ("Xiaogan government pays 41,230.50 CNY
    more")."""
    def money(fen: int) -> str:
        return f"{yuan(fen)} {CURRENCY}"

    legs = result.get("total", "all", "legs").current
    lines = [f"What-if {result.first} to {result.last}: {result.days} day(s), "
             f"{result.taps:,} taps, {legs:,} legs"
             + (f", proposed tariffs {result.proposed_dir}" if result.proposed_dir else "")]
    share = f" ({_pct(result.changed_legs * 10_000 // legs).lstrip('+')} of all)" if legs else ""
    lines.append(f"Legs whose fare changed: {result.changed_legs:,}{share}; charged amount "
                 f"changed on {result.changed_charged:,} (account-based legs; stored-value "
                 "legs are charged their reader debits on both sides)")
    if result.only_current or result.only_proposed:
        lines.append(f"Matching changed: {result.only_current:,} legs only now, "
                     f"{result.only_proposed:,} only under the proposal")
    for measure, label in (("charged_fen", "Charged revenue"), ("discount_fen", "Discounts"),
                           ("subsidy_fen", "Government subsidies"), ("fee_fen", "Fees")):
        row = result.get("total", "all", measure)
        lines.append(f"{label}: {money(row.current)} → {money(row.proposed)} "
                     f"({yuan(row.difference, signed=True)}{_share(row)})")
    moved = sorted((r for r in result.table("party") if r.measure == "net_fen" and r.difference),
                   key=lambda r: (-abs(r.difference), r.key))
    if not moved:
        lines.append("No party's net position changes.")
    for r in moved[:parties]:
        name = party_name(parse_tag(r.key), registry)
        lines.append(f"  {_position_words(name, r.current, r.proposed, money)}")
    if len(moved) > parties:
        lines.append(f"  ... and {len(moved) - parties} more parties (see the report)")
    for month in result.months:
        row = result.get("rebate", "all", f"rebate_fen {month:%Y-%m}")
        lines.append(f"Monthly rebates {month:%Y-%m}: {money(row.current)} → "
                     f"{money(row.proposed)} ({yuan(row.difference, signed=True)})")
    if not result.months:
        lines.append("Monthly rebates: not compared (no calendar month wholly in the range)")
    return lines


def _position_words(name: str, current: int, proposed: int, money: Callable[[int], str]) -> str:
    """A net position change as a sentence: payers pay, receivers receive (SPEC §8 signs)."""
    d = proposed - current
    span = f"(net {money(current)} → {money(proposed)})"
    if current <= 0 and proposed <= 0:
        return f"{name} pays {money(abs(d))} {'less' if d > 0 else 'more'} {span}"
    if current >= 0 and proposed >= 0:
        return f"{name} receives {money(abs(d))} {'more' if d > 0 else 'less'} {span}"
    return f"{name} {'now receives' if proposed > 0 else 'now pays'} {span}"


def _pct(bp: int) -> str:
    sign = "-" if bp < 0 else "+"
    whole, frac = divmod(abs(bp), 100)
    return f"{sign}{whole}.{frac:02d} %"


def _share(row: Comparison) -> str:
    bp = row.share_bp
    return "" if bp is None else f", {_pct(bp)}"


__all__ = ["SIDES", "ChangedLeg", "Comparison", "WhatIf", "WhatIfResult",
           "WhatIfUnpriceableError", "load_proposed_set", "run_whatif", "summary_lines"]
