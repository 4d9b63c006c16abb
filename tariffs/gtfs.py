"""GTFS-Fares v2 export and import: the tariffs in force on a day as a feed trip planners read.

A planner should show the fare Tongka clears, so the export writes the Fares v2 files of the
GTFS reference (fare media, rider categories, fare products, networks, areas, leg and transfer
rules) from the tariff versions in force on one service day, with Tongka's registry ids as
route and stop ids. What Fares v2 cannot say (the "difference" transfer step, daily caps,
monthly rebates, per-issuer acceptance, ...) is listed, never dropped. The import reads such a
feed back into tariff files for the parts Tongka's model covers and refuses the rest, file by
file and row by row. Money in a feed is yuan written from integer fen by integer arithmetic.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tariffs.error_codes import ErrorCode, Kind, error_code
from tariffs.errors import TongkaError
from tariffs.fares import base_fare_flat, price_fare, price_for
from tariffs.load import TariffSet
from tariffs.model import (
    LineFare,
    NetworkFare,
    ProductPrice,
    Tariff,
    TariffVersion,
    TransferRule,
    TransferStep,
)
from tariffs.registry import FLAT, Line, Registry, load_registry
from tariffs.validate import check_tariff
from tariffs.vocab import Media, Mode, Product

CURRENCY = "CNY"
CASH_MEDIUM = "cash"  # fare_media_type 0: no medium; carries the full adult cash (base) fare
NOTES_FILE = "export-notes.txt"
DEFAULT_JOURNEY_MINUTES = 240  # SPEC §5 (Wuhan Metro); a foreign feed has no journey limit
UNLIMITED_TRANSFERS = 16  # transfer_count -1 imported as this many steps (a day has fewer)
# Extension columns of networks.txt (consumers ignore unknown columns): SPEC §5-§6 penalty
# rules that Fares v2 has no field for, carried so that a round trip keeps them.
EXT_JOURNEY = "tongka_max_journey_minutes"
EXT_MAX_FARE = "tongka_max_fare"

# GTFS reference fare_media_type: 0 none (cash), 2 physical transit card, 4 mobile app.
MEDIA_TYPES: dict[Media, tuple[str, str, int]] = {
    Media.CARD: ("card", "Transit card", 2),
    Media.SHAPED_CARD: ("shaped_card", "Shaped card 异形卡", 2),
    Media.NFC_PHONE: ("nfc_phone", "Phone NFC card", 4),
    Media.WEARABLE: ("wearable", "Wearable", 2),
    Media.SOCIAL_SECURITY: ("social_security", "Social-security card", 2),
    Media.QR_CODE: ("qr_code", "QR code", 4),
}
ROUTE_TYPES = {Mode.BUS: 3, Mode.METRO: 1, Mode.FERRY: 4, Mode.INTERCITY: 3}

_YUAN = re.compile(r"^(-?)(\d+)(?:\.(\d{1,2}))?$")


# ---------------------------------------------------------------------------------------------
# Errors and results


@dataclass(frozen=True, slots=True)
class GtfsProblem:
    """One thing in a feed Tongka cannot read or cannot express, where it is."""

    code: ErrorCode  # a GTFS problem code: GTFS_MISSING_FILE, GTFS_BAD_ROW, GTFS_UNSUPPORTED, ...
    file: str
    row: int  # 1-based data row (line number - 1); 0 for the file as a whole
    field: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", error_code(self.code, kind=Kind.TARIFF))

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row else "-"
        return f"{self.file}: {where}: {self.field or '-'}: {self.message} [{self.code}]"


class GtfsError(TongkaError):
    """A feed that cannot become tariff files; carries every problem found, not just the first."""

    code = ErrorCode.GTFS_INVALID

    def __init__(self, problems: Sequence[GtfsProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return str(self.args[0])  # the problems, one a line; each names its own code


@dataclass(frozen=True, slots=True)
class ExportResult:
    files: tuple[Path, ...]
    not_expressible: tuple[str, ...]  # also written to export-notes.txt


@dataclass(frozen=True, slots=True)
class ImportResult:
    files: tuple[Path, ...]
    notes: tuple[str, ...]  # defaults taken where the feed says nothing (journey limit, ...)
    tariffs: dict[int, Tariff] = field(default_factory=dict)  # by area, as written (checked)


# ---------------------------------------------------------------------------------------------
# Money: yuan strings <-> integer fen, never through a float


def fen_to_yuan(fen: int) -> str:
    """``-150`` -> ``"-1.50"``: a decimal string by integer division, exact to the fen."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan}.{cents:02d}"


def yuan_to_fen(text: str) -> int:
    """``"2.5"`` -> 250; ValueError for anything not a decimal with at most 2 decimals."""
    m = _YUAN.match(text.strip())
    if m is None:
        raise ValueError(f"{text!r} is not an amount with at most 2 decimals")
    sign, whole, frac = m.groups()
    fen = int(whole) * 100 + int((frac or "0").ljust(2, "0"))
    return -fen if sign else fen


# ---------------------------------------------------------------------------------------------
# Export


def route_id(line: Line) -> str:
    return f"{line.operator}-{line.line}"


def _leg_group(area: int, mode: Mode) -> str:
    return f"{area}-{mode.name.lower()}"


def _product_id(area: int, mode: Mode, base: int) -> str:
    return f"{area}-{mode.name.lower()}-{base}"


def not_expressible(version: TariffVersion, area: int, registry: Registry) -> list[str]:
    """What of one version Fares v2 cannot say; each line names the area and the rule."""
    out: list[str] = []
    where = f"area {area} (version {version.valid_from})"
    everyone = sorted(registry.issuers)
    if sorted(version.accepted_issuers) != everyone:
        out.append(f"{where}: per-issuer acceptance: only issuers {version.accepted_issuers} "
                   f"pay product prices; others pay the visitor rate "
                   f"({version.visitor_rate_bp} bp off the base fare)")
    if sorted(version.concession_issuers) != sorted(version.accepted_issuers):
        out.append(f"{where}: concessions honoured only on cards of issuers "
                   f"{version.concession_issuers}; rider categories assume every card")
    for cap in version.caps:
        out.append(f"{where}: daily cap {cap.product} {fen_to_yuan(cap.cap_fen)} {CURRENCY}")
    for rebate in version.rebates:
        tiers = ", ".join(f"{fen_to_yuan(t.spend_fen)}->{fen_to_yuan(t.rebate_fen)}"
                          for t in rebate.tiers)
        out.append(f"{where}: monthly rebate on network {rebate.network}: {tiers} {CURRENCY}")
    if version.apportionment != "later_leg":
        out.append(f"{where}: apportionment {version.apportionment} (revenue sharing)")
    funders = version.funders
    if funders.card or funders.transfer != "operator" or funders.cap != "operator":
        out.append(f"{where}: discount funders (who pays a discount is not a fare)")
    for nf in version.networks:
        out.append(f"{where}: network {nf.network}: penalty fare {fen_to_yuan(nf.max_fare)} "
                   f"{CURRENCY} for incomplete, overtime and orphan legs, journey limit "
                   f"{nf.max_journey_minutes} min (carried in {EXT_MAX_FARE}, {EXT_JOURNEY})")
    out.extend(_transfer_problems(version.transfer, where))
    return out


def _transfer_problems(rule: TransferRule | None, where: str) -> list[str]:
    """Why a transfer rule is not expressible; empty when it is written whole."""
    if rule is None:
        return []
    problems = []
    kinds = {s.kind for s in rule.steps}
    if kinds & {"difference", "pay_rate"}:
        problems.append(f"{where}: transfer steps {sorted(kinds & {'difference', 'pay_rate'})}"
                        " (pay the difference / pay a share of the base fare)")
    if len({(s.kind, s.fen) for s in rule.steps}) > 1:
        problems.append(f"{where}: transfer steps that differ by ordinal")
    cross = any(a != b for a, b in rule.allowed_modes)
    if len(rule.steps) > 1 and rule.window_from == "first_boarding":
        problems.append(f"{where}: a window from the chain's first boarding over "
                        f"{len(rule.steps)} transfers")
    if len(rule.steps) > 1 and cross:
        problems.append(f"{where}: a count of {len(rule.steps)} transfers across modes")
    return [p + ": the transfer rule is not exported" for p in problems]


def _rows(path: Path, header: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(header), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return path


def network_bases(nf: NetworkFare, registry: Registry) -> dict[tuple[int, int], int]:
    """SPEC §6.1: the base fare of every ordered stop pair of a network, a -> a included."""
    stops = registry.networks[nf.network].stops
    out: dict[tuple[int, int], int] = {}
    if nf.matrix is not None:
        out.update({(a, b): fen for a, b, fen in nf.matrix})
    else:
        assert nf.bands is not None
        dist = registry.distances(nf.network)
        for i, a in enumerate(stops):
            for j, b in enumerate(stops):
                d = int(dist[i, j])
                out[(a, b)] = next(band.fare_fen for band in nf.bands
                                   if band.upper_m is None or d <= band.upper_m)
    for s in stops:
        out[(s, s)] = nf.same_station_fare
    return out


@dataclass
class _Feed:
    """The rows of an export, gathered before writing."""

    agencies: set[int] = field(default_factory=set)
    routes: list[dict[str, Any]] = field(default_factory=list)
    stops: set[int] = field(default_factory=set)
    products: dict[str, tuple[int, Mode, int, TariffVersion]] = field(default_factory=dict)
    networks: list[dict[str, Any]] = field(default_factory=list)
    route_networks: list[dict[str, Any]] = field(default_factory=list)
    areas: set[int] = field(default_factory=set)
    leg_rules: list[dict[str, Any]] = field(default_factory=list)
    transfers: list[dict[str, Any]] = field(default_factory=list)
    transfer_products: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def export(tariff_set: TariffSet, day: dt.date, out_dir: Path) -> ExportResult:
    """Write the Fares v2 feed of the tariff versions in force on ``day`` into ``out_dir``."""
    reg = tariff_set.registry
    feed = _Feed()
    ends: list[dt.date] = []
    for area in sorted(tariff_set.tariffs):
        try:
            version = tariff_set.version_for(area, day)
        except LookupError:
            feed.notes.append(f"area {area}: no tariff version in force on {day}; not exported")
            continue
        later = [v.valid_from for v in tariff_set.tariffs[area].versions if v.valid_from > day]
        ends += later[:1]
        _export_area(feed, reg, area, version)
    out_dir.mkdir(parents=True, exist_ok=True)
    end = min(ends) - dt.timedelta(days=1) if ends else None
    return ExportResult(_write(feed, reg, out_dir, day, end), tuple(feed.notes))


def _export_area(feed: _Feed, reg: Registry, area: int, version: TariffVersion) -> None:
    feed.notes.extend(not_expressible(version, area, reg))
    lines = [ln for key, ln in sorted(reg.lines.items()) if reg.line_area(*key) == area]
    flat_groups: dict[tuple[int, Mode, int], list[Line]] = {}
    for ln in lines:
        feed.agencies.add(ln.operator)
        feed.stops.update(ln.stops)
        feed.routes.append({"route_id": route_id(ln), "agency_id": ln.operator,
                            "route_short_name": ln.name, "route_type": ROUTE_TYPES[ln.mode]})
        if ln.network == FLAT:
            base = base_fare_flat(version, reg, ln.operator, ln.line)
            flat_groups.setdefault((ln.operator, ln.mode, base), []).append(ln)
    for (operator, mode, base), members in sorted(flat_groups.items()):
        nid = f"flat-{operator}-{mode.name.lower()}-{base}"
        feed.networks.append({"network_id": nid, "network_name":
                              f"{reg.operators[operator].name} {fen_to_yuan(base)} flat"})
        feed.route_networks += [{"network_id": nid, "route_id": route_id(ln)} for ln in members]
        feed.leg_rules.append(_leg_rule(feed, version, area, mode, nid, base, None, None))
    for nf in version.networks:
        net = reg.networks[nf.network]
        nid = f"net-{nf.network}"
        feed.networks.append({"network_id": nid, "network_name": net.name,
                              EXT_JOURNEY: nf.max_journey_minutes, EXT_MAX_FARE: nf.max_fare})
        feed.route_networks += [{"network_id": nid, "route_id": route_id(reg.lines[k])}
                                for k in net.lines]
        mode = reg.lines[net.lines[0]].mode
        feed.areas.update(net.stops)
        for (a, b), base in sorted(network_bases(nf, reg).items()):
            feed.leg_rules.append(_leg_rule(feed, version, area, mode, nid, base, a, b))
    if version.transfer is not None and not _transfer_problems(version.transfer, ""):
        _export_transfer(feed, area, version.transfer)


def _leg_rule(feed: _Feed, version: TariffVersion, area: int, mode: Mode, nid: str, base: int,
              a: int | None, b: int | None) -> dict[str, Any]:
    pid = _product_id(area, mode, base)
    feed.products[pid] = (area, mode, base, version)
    return {"leg_group_id": _leg_group(area, mode), "network_id": nid,
            "from_area_id": None if a is None else f"stop-{a}",
            "to_area_id": None if b is None else f"stop-{b}", "fare_product_id": pid}


def _export_transfer(feed: _Feed, area: int, rule: TransferRule) -> None:
    step = rule.steps[0]
    product = None
    if step.kind == "off_fen":
        assert step.fen is not None
        product = f"{area}-transfer-off-{step.fen}"
        feed.transfer_products[product] = -step.fen
    for a, b in rule.allowed_modes:
        same = a == b
        feed.transfers.append({
            "from_leg_group_id": _leg_group(area, Mode[a.upper()]),
            "to_leg_group_id": _leg_group(area, Mode[b.upper()]),
            "transfer_count": len(rule.steps) if same else None,
            "duration_limit": rule.window_minutes * 60,
            # 1: departure of the current leg to departure of the next (one transfer, so the
            # chain's first boarding); 2: arrival of the current leg to departure of the next.
            "duration_limit_type": 1 if rule.window_from == "first_boarding" else 2,
            # 0: A + AB with no product, a free transfer; 1: A + AB + B, AB a negative discount
            "fare_transfer_type": 0 if step.kind == "free" else 1,
            "fare_product_id": product,
        })


def _write(feed: _Feed, reg: Registry, out: Path, day: dt.date, end: dt.date | None
           ) -> tuple[Path, ...]:
    files = [
        _rows(out / "agency.txt", ("agency_id", "agency_name", "agency_url", "agency_timezone"),
              ({"agency_id": op, "agency_name": reg.operators[op].name,
                "agency_url": f"https://tongka.invalid/operators/{op}",
                "agency_timezone": "Asia/Shanghai"} for op in sorted(feed.agencies))),
        _rows(out / "routes.txt", ("route_id", "agency_id", "route_short_name", "route_type"),
              feed.routes),
        _rows(out / "stops.txt", ("stop_id", "stop_name", "stop_lat", "stop_lon"),
              ({"stop_id": s, "stop_name": reg.stops[s].name} for s in sorted(feed.stops))),
        _rows(out / "feed_info.txt", ("feed_publisher_name", "feed_publisher_url", "feed_lang",
                                      "feed_start_date", "feed_end_date"),
              [{"feed_publisher_name": "Tongka clearing centre",
                "feed_publisher_url": "https://tongka.invalid", "feed_lang": "zh",
                "feed_start_date": day.strftime("%Y%m%d"),
                "feed_end_date": end.strftime("%Y%m%d") if end else None}]),
        _rows(out / "fare_media.txt", ("fare_media_id", "fare_media_name", "fare_media_type"),
              [{"fare_media_id": CASH_MEDIUM, "fare_media_name": "Cash", "fare_media_type": 0}]
              + [{"fare_media_id": i, "fare_media_name": n, "fare_media_type": t}
                 for i, n, t in MEDIA_TYPES.values()]),
        _rows(out / "rider_categories.txt",
              ("rider_category_id", "rider_category_name", "is_default_fare_category"),
              ({"rider_category_id": p.name.lower(), "rider_category_name": p.name.title(),
                "is_default_fare_category": int(p == Product.ORDINARY)} for p in Product)),
        _rows(out / "fare_products.txt", ("fare_product_id", "fare_product_name",
                                          "rider_category_id", "fare_media_id", "amount",
                                          "currency"), _product_rows(feed)),
        _rows(out / "networks.txt", ("network_id", "network_name", EXT_JOURNEY, EXT_MAX_FARE),
              feed.networks),
        _rows(out / "route_networks.txt", ("network_id", "route_id"), feed.route_networks),
        _rows(out / "areas.txt", ("area_id", "area_name"),
              ({"area_id": f"stop-{s}", "area_name": reg.stops[s].name}
               for s in sorted(feed.areas))),
        _rows(out / "stop_areas.txt", ("area_id", "stop_id"),
              ({"area_id": f"stop-{s}", "stop_id": s} for s in sorted(feed.areas))),
        _rows(out / "fare_leg_rules.txt", ("leg_group_id", "network_id", "from_area_id",
                                           "to_area_id", "fare_product_id"), feed.leg_rules),
    ]
    (out / "fare_transfer_rules.txt").unlink(missing_ok=True)  # none from an older export
    if feed.transfers:
        files.append(_rows(out / "fare_transfer_rules.txt", (
            "from_leg_group_id", "to_leg_group_id", "transfer_count", "duration_limit",
            "duration_limit_type", "fare_transfer_type", "fare_product_id"), feed.transfers))
    notes = out / NOTES_FILE
    text = "".join(f"- {n}\n" for n in feed.notes) or "- nothing: every rule is in the feed\n"
    notes.write_text("Not expressible in GTFS-Fares v2 (not in this feed's fare files):\n"
                     + text, encoding="utf-8")
    files.append(notes)
    return tuple(files)


def _product_rows(feed: _Feed) -> Iterable[dict[str, Any]]:
    for pid, (_, mode, base, version) in sorted(feed.products.items()):
        name = f"{mode.name.lower()} {fen_to_yuan(base)}"
        yield {"fare_product_id": pid, "fare_product_name": name, "rider_category_id": "ordinary",
               "fare_media_id": CASH_MEDIUM, "amount": fen_to_yuan(base), "currency": CURRENCY}
        for product in Product:
            fare = price_fare(price_for(version, int(mode), int(product)), base)
            for medium, _, _ in MEDIA_TYPES.values():
                yield {"fare_product_id": pid, "fare_product_name": name,
                       "rider_category_id": product.name.lower(), "fare_media_id": medium,
                       "amount": fen_to_yuan(fare), "currency": CURRENCY}
    for pid, fen in sorted(feed.transfer_products.items()):
        yield {"fare_product_id": pid, "fare_product_name": "transfer discount",
               "amount": fen_to_yuan(fen), "currency": CURRENCY}


# ---------------------------------------------------------------------------------------------
# Import


class _Reader:
    """A feed directory's files as rows, collecting problems instead of stopping at the first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.problems: list[GtfsProblem] = []

    def problem(self, code: ErrorCode, file: str, row: int, fld: str, message: str) -> None:
        self.problems.append(GtfsProblem(code, file, row, fld, message))

    def integer(self, file: str, row: int, fld: str, text: str, default: int) -> int:
        """An integer field; a bad one is a GTFS_BAD_ROW problem and reads as ``default``."""
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            self.problem(ErrorCode.GTFS_BAD_ROW, file, row, fld, f"{text!r} is not an integer")
            return default

    def rows(self, name: str, required: Sequence[str], *, optional_file: bool = True
             ) -> list[tuple[int, dict[str, str]]]:
        path = self.directory / name
        if not path.is_file():
            if not optional_file:
                self.problem(ErrorCode.GTFS_MISSING_FILE, name, 0, "", "is required but missing")
            return []
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [f for f in required if f not in header]
            if missing:
                self.problem(ErrorCode.GTFS_MISSING_FIELD, name, 0, ",".join(missing),
                             "required column(s) missing")
                return []
            return [(i, {k: (v or "").strip() for k, v in row.items() if k is not None})
                    for i, row in enumerate(reader, start=1)]


@dataclass
class _Parsed:
    """The parts of a feed the import uses, by id."""

    lines: dict[str, Line] = field(default_factory=dict)  # route_id -> registry line
    route_network: dict[str, str] = field(default_factory=dict)
    network_ext: dict[str, dict[str, str]] = field(default_factory=dict)
    stop_areas: dict[int, set[str]] = field(default_factory=dict)
    media_type: dict[str, int] = field(default_factory=dict)
    category: dict[str, Product] = field(default_factory=dict)
    default_category: Product = Product.ORDINARY
    # product id -> [(product, medium, fen)]
    products: dict[str, list[tuple[Product, str, int]]] = field(default_factory=dict)
    leg_rules: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    transfers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    valid_from: dt.date | None = None


def import_feed(feed_dir: Path, out_dir: Path, *, registry: Registry | None = None,
                currency: str = CURRENCY, valid_from: dt.date | None = None) -> ImportResult:
    """Read a Fares v2 feed into one tariff file per area it prices; GtfsError lists problems.

    Route ids must be the registry's ``operator-line`` and stop ids its stop ids (an export's
    own). Amounts are read as hundredths of ``currency`` (fen for CNY); a feed in another
    currency is refused. ``valid_from`` overrides the feed's ``feed_start_date``.
    """
    reg = registry or load_registry()
    rd = _Reader(feed_dir)
    parsed = _parse(rd, reg, currency)
    day = valid_from or parsed.valid_from
    if day is None:
        rd.problem(ErrorCode.GTFS_MISSING_FILE, "feed_info.txt", 0, "feed_start_date",
                   "no first service day: give feed_info.feed_start_date or --valid-from")
    notes: list[str] = []
    tariffs: dict[int, Tariff] = {}
    if not rd.problems and day is not None:
        tariffs = _build(rd, reg, parsed, day, notes)
    for area, tariff in sorted(tariffs.items()):
        for p in check_tariff(f"{area}-gtfs.toml", tariff, reg):
            rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_leg_rules.txt", 0, p.field,
                       f"area {area}: {p.message} [{p.code}]")
    if rd.problems:
        raise GtfsError(rd.problems)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for area, tariff in sorted(tariffs.items()):
        path = out_dir / f"{area}-gtfs.toml"
        path.write_text(tariff_toml(tariff), encoding="utf-8")
        files.append(path)
    return ImportResult(tuple(files), tuple(notes), tariffs)


def _parse(rd: _Reader, reg: Registry, currency: str) -> _Parsed:
    p = _Parsed()
    by_route = {route_id(ln): ln for ln in reg.lines.values()}
    for i, row in rd.rows("routes.txt", ("route_id",), optional_file=False):
        ln = by_route.get(row["route_id"])
        if ln is None:
            rd.problem(ErrorCode.GTFS_UNKNOWN_ID, "routes.txt", i, "route_id",
                       f"route {row['route_id']!r} is not a registry line (operator-line)")
            continue
        p.lines[row["route_id"]] = ln
        if row.get("network_id"):
            p.route_network[row["route_id"]] = row["network_id"]
    for i, row in rd.rows("route_networks.txt", ("network_id", "route_id")):
        if row["route_id"] not in p.lines:
            rd.problem(ErrorCode.GTFS_UNKNOWN_ID, "route_networks.txt", i, "route_id",
                       f"route {row['route_id']!r} is not in routes.txt")
        p.route_network[row["route_id"]] = row["network_id"]
    for i, row in rd.rows("networks.txt", ("network_id",)):
        for ext in (EXT_JOURNEY, EXT_MAX_FARE):
            row[ext] = str(rd.integer("networks.txt", i, ext, row.get(ext, ""), 0) or "")
        p.network_ext[row["network_id"]] = row
    for i, row in rd.rows("stop_areas.txt", ("area_id", "stop_id")):
        try:
            stop = int(row["stop_id"])
        except ValueError:
            stop = -1
        if stop not in reg.stops:
            rd.problem(ErrorCode.GTFS_UNKNOWN_ID, "stop_areas.txt", i, "stop_id",
                       f"stop {row['stop_id']!r} is not a registry stop")
            continue
        p.stop_areas.setdefault(stop, set()).add(row["area_id"])
    for i, row in rd.rows("fare_media.txt", ("fare_media_id", "fare_media_type")):
        p.media_type[row["fare_media_id"]] = rd.integer(
            "fare_media.txt", i, "fare_media_type", row["fare_media_type"], 0)
    _parse_categories(rd, p)
    _parse_products(rd, p, currency)
    p.leg_rules = rd.rows("fare_leg_rules.txt", ("fare_product_id",), optional_file=False)
    for i, row in p.leg_rules:
        for fld in ("from_timeframe_group_id", "to_timeframe_group_id", "rule_priority",
                    "contains_area_id"):
            if row.get(fld):
                rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_leg_rules.txt", i, fld,
                           "time-of-day fares, rule priorities and area sets are not in "
                           "Tongka's model (SPEC §6 prices by line, stops and day only)")
        if row["fare_product_id"] not in p.products:
            rd.problem(ErrorCode.GTFS_UNKNOWN_ID, "fare_leg_rules.txt", i, "fare_product_id",
                       f"product {row['fare_product_id']!r} is not in fare_products.txt")
    p.transfers = rd.rows("fare_transfer_rules.txt", ("fare_transfer_type",))
    if rd.rows("timeframes.txt", ("timeframe_group_id",)):
        rd.problem(ErrorCode.GTFS_UNSUPPORTED, "timeframes.txt", 0, "timeframe_group_id",
                   "time-of-day fares are not in Tongka's model")
    for i, row in rd.rows("feed_info.txt", ("feed_start_date",)):
        if row["feed_start_date"]:
            try:
                p.valid_from = dt.datetime.strptime(row["feed_start_date"], "%Y%m%d").date()
            except ValueError:
                rd.problem(ErrorCode.GTFS_BAD_ROW, "feed_info.txt", i, "feed_start_date",
                           "is not a YYYYMMDD date")
    return p


def _parse_categories(rd: _Reader, p: _Parsed) -> None:
    names = {pr.name.lower(): pr for pr in Product}
    for i, row in rd.rows("rider_categories.txt", ("rider_category_id",)):
        cid = row["rider_category_id"]
        product = names.get(cid.lower()) or names.get(row.get("rider_category_name", "").lower())
        if row.get("is_default_fare_category") == "1":
            p.default_category = product or Product.ORDINARY
            product = p.default_category
        if product is None:
            rd.problem(ErrorCode.GTFS_UNSUPPORTED, "rider_categories.txt", i, "rider_category_id",
                       f"{cid!r} is none of Tongka's products "
                       f"({', '.join(names)}); name it after one")
            continue
        p.category[cid] = product


def _parse_products(rd: _Reader, p: _Parsed, currency: str) -> None:
    for i, row in rd.rows("fare_products.txt", ("fare_product_id", "amount", "currency"),
                          optional_file=False):
        if row["currency"] != currency:
            rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_products.txt", i, "currency",
                       f"{row['currency']!r}: only {currency} amounts are read")
            continue
        try:
            fen = yuan_to_fen(row["amount"])
        except ValueError as exc:
            rd.problem(ErrorCode.GTFS_BAD_AMOUNT, "fare_products.txt", i, "amount", str(exc))
            continue
        cid = row.get("rider_category_id", "")
        if cid and cid not in p.category:
            rd.problem(ErrorCode.GTFS_UNKNOWN_ID, "fare_products.txt", i, "rider_category_id",
                       f"{cid!r} is not in rider_categories.txt")
            continue
        medium = row.get("fare_media_id", "")
        if medium and medium not in p.media_type:
            rd.problem(ErrorCode.GTFS_UNKNOWN_ID, "fare_products.txt", i, "fare_media_id",
                       f"{medium!r} is not in fare_media.txt")
            continue
        product = p.category[cid] if cid else p.default_category
        p.products.setdefault(row["fare_product_id"], []).append((product, medium, fen))


@dataclass
class _AreaFares:
    """What one area's leg rules say, gathered line by line."""

    flat: dict[tuple[int, int], int] = field(default_factory=dict)  # (operator, line) -> base
    matrices: dict[int, dict[tuple[int, int], int]] = field(default_factory=dict)
    feed_network: dict[int, str] = field(default_factory=dict)
    amounts: dict[tuple[Mode, Product], set[tuple[int, int]]] = field(default_factory=dict)
    groups: dict[str, set[Mode]] = field(default_factory=dict)  # leg group -> modes


def _build(rd: _Reader, reg: Registry, p: _Parsed, day: dt.date,
           notes: list[str]) -> dict[int, Tariff]:
    areas: dict[int, _AreaFares] = {}
    rules_by_net: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for i, row in p.leg_rules:
        rules_by_net.setdefault(row.get("network_id", ""), []).append((i, row))
    for rid, ln in sorted(p.lines.items()):
        af = areas.setdefault(reg.line_area(ln.operator, ln.line), _AreaFares())
        net = p.route_network.get(rid, "")
        rules = rules_by_net.get(net) or rules_by_net.get("", [])
        if not rules:
            rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_leg_rules.txt", 0, "network_id",
                       f"no leg rule prices route {rid} (network {net or '-'})")
            continue
        if ln.network == FLAT:
            _flat_line(rd, p, af, ln, rid, rules)
        else:
            _network_line(rd, p, reg, af, ln, net, rules)
    _check_transfer_groups(rd, p, areas)
    tariffs = {}
    for area, af in sorted(areas.items()):
        try:
            version = _version(rd, reg, p, area, af, day, notes)
        except ValidationError as exc:  # a value outside Tongka's ranges (SPEC §1, §6)
            for err in exc.errors():
                rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_leg_rules.txt", 0,
                           ".".join(str(x) for x in err["loc"]), f"area {area}: {err['msg']}")
            continue
        if version is not None:
            city = reg.cities[area]
            tariffs[area] = Tariff(area=area, name=f"{city.name} {city.name_zh} (GTFS import)",
                                   versions=[version])
    return tariffs


def _check_transfer_groups(rd: _Reader, p: _Parsed, areas: dict[int, _AreaFares]) -> None:
    """SPEC §6.4: a chain never spans tariff areas, so a transfer rule stays inside one."""
    home: dict[str, set[int]] = {}
    for area, af in areas.items():
        for g in af.groups:
            home.setdefault(g, set()).add(area)
    for i, r in p.transfers:
        ends = [r.get("from_leg_group_id", ""), r.get("to_leg_group_id", "")]
        unknown = [g for g in ends if g not in home]
        if unknown:
            rd.problem(ErrorCode.GTFS_UNKNOWN_ID, "fare_transfer_rules.txt", i, "from_leg_group_id",
                       f"leg group(s) {unknown} price no leg of the feed's routes")
        elif not home[ends[0]] & home[ends[1]]:
            rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_transfer_rules.txt", i, "to_leg_group_id",
                       f"a transfer from area(s) {sorted(home[ends[0]])} to area(s) "
                       f"{sorted(home[ends[1]])}: a chain ends where the tariff area changes "
                       "(SPEC §6.4)")


class _RuleIndex:
    """One network's leg rules by (from_area_id, to_area_id), for Fares v2 matching.

    Without rule_priority an empty area matches every area that no rule of the network names.
    """

    def __init__(self, rules: list[tuple[int, dict[str, str]]]) -> None:
        self.by_pair: dict[tuple[str, str], list[tuple[int, dict[str, str]]]] = {}
        for i, r in rules:
            key = (r.get("from_area_id", ""), r.get("to_area_id", ""))
            self.by_pair.setdefault(key, []).append((i, r))
        self.named_from = {f for f, _ in self.by_pair} - {""}
        self.named_to = {t for _, t in self.by_pair} - {""}

    def match(self, p: _Parsed, a: int | None, b: int | None
              ) -> list[tuple[int, dict[str, str]]]:
        froms = self._values(p.stop_areas.get(a, set()) if a is not None else set(),
                             self.named_from)
        tos = self._values(p.stop_areas.get(b, set()) if b is not None else set(),
                           self.named_to)
        return [hit for f in froms for t in tos for hit in self.by_pair.get((f, t), [])]

    @staticmethod
    def _values(here: set[str], named: set[str]) -> list[str]:
        return sorted(here & named) + ([""] if not here & named else [])


def _one(rd: _Reader, found: list[tuple[int, dict[str, str]]], what: str
         ) -> tuple[int, dict[str, str]] | None:
    if len(found) == 1:
        return found[0]
    rows = ", ".join(str(i) for i, _ in found) or "none"
    rd.problem(ErrorCode.GTFS_UNSUPPORTED if found else ErrorCode.GTFS_NO_FARE,
               "fare_leg_rules.txt",
               found[0][0] if found else 0, "", f"{what}: {len(found)} leg rules match "
               f"(rows {rows}); Tongka needs exactly one fare per leg")
    return None


def _price_rule(rd: _Reader, p: _Parsed, af: _AreaFares, mode: Mode, i: int,
                rule: dict[str, str]) -> int | None:
    """The base fare a leg rule gives, recording its rider-category amounts; None if refused."""
    rows = p.products[rule["fare_product_id"]]
    af.groups.setdefault(rule.get("leg_group_id", ""), set()).add(mode)
    cash = [fen for pr, m, fen in rows
            if pr == Product.ORDINARY and m and p.media_type.get(m) == 0]
    by_product: dict[Product, set[int]] = {}
    for pr, m, fen in rows:
        if not (m and p.media_type.get(m) == 0):
            by_product.setdefault(pr, set()).add(fen)
    for pr, fens in by_product.items():
        if len(fens) > 1:
            rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_leg_rules.txt", i, "fare_product_id",
                       f"{rule['fare_product_id']}: {pr.name.lower()} pays {sorted(fens)} fen "
                       "by medium; Tongka prices every medium alike (SPEC §6.3)")
            return None
    ordinary = by_product.get(Product.ORDINARY)
    if not cash and not ordinary:
        rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_leg_rules.txt", i, "fare_product_id",
                   f"{rule['fare_product_id']}: no amount for the default rider category")
        return None
    base = max(cash) if cash else min(ordinary or {0})
    for pr, fens in by_product.items():
        af.amounts.setdefault((mode, pr), set()).add((base, min(fens)))
    return base


def _flat_line(rd: _Reader, p: _Parsed, af: _AreaFares, ln: Line, rid: str,
               rules: list[tuple[int, dict[str, str]]]) -> None:
    if any(r.get("from_area_id") or r.get("to_area_id") for _, r in rules):
        rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_leg_rules.txt", rules[0][0], "from_area_id",
                   f"route {rid} is a flat (single-tap) line: its fare cannot depend on areas")
        return
    hit = _one(rd, rules, f"route {rid}")
    if hit is not None:
        base = _price_rule(rd, p, af, ln.mode, *hit)
        if base is not None:
            af.flat[ln.key] = base


def _network_line(rd: _Reader, p: _Parsed, reg: Registry, af: _AreaFares, ln: Line, net: str,
                  rules: list[tuple[int, dict[str, str]]]) -> None:
    seen = af.feed_network.setdefault(ln.network, net)
    if seen != net:
        rd.problem(ErrorCode.GTFS_UNSUPPORTED, "route_networks.txt", 0, "network_id",
                   f"registry network {ln.network} is split over feed networks {seen!r} and "
                   f"{net!r}; one entry-exit network has one fare table")
        return
    if ln.network in af.matrices:
        return
    stops = reg.networks[ln.network].stops
    fares: dict[tuple[int, int], int] = {}
    cache: dict[int, int | None] = {}
    index = _RuleIndex(rules)
    for a in stops:
        for b in stops:
            hit = _one(rd, index.match(p, a, b), f"network {net}: stop {a} to stop {b}")
            if hit is None:
                return
            if hit[0] not in cache:
                cache[hit[0]] = _price_rule(rd, p, af, ln.mode, *hit)
            fen = cache[hit[0]]
            if fen is None:
                return
            fares[(a, b)] = fen
    af.matrices[ln.network] = fares


def _version(rd: _Reader, reg: Registry, p: _Parsed, area: int, af: _AreaFares, day: dt.date,
             notes: list[str]) -> TariffVersion | None:
    line_fares: dict[tuple[int, int], list[int]] = {}
    for (op, line), base in sorted(af.flat.items()):
        line_fares.setdefault((op, base), []).append(line)
    networks = [_network_fare(reg, p, af, nid, fares, notes)
                for nid, fares in sorted(af.matrices.items())]
    prices = []
    for (mode, product), pairs in sorted(af.amounts.items()):
        price = fit_price(sorted(pairs))
        if price is None:
            rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_products.txt", 0, "amount",
                       f"area {area}: {product.name.lower()} amounts on {mode.name.lower()} "
                       f"(base, amount) {sorted(pairs)[:4]} are neither a rate off the base "
                       "fare nor a fixed fare (SPEC §6.3)")
            continue
        prices.append(ProductPrice(mode=mode.name.lower(), product=product.name.lower(),  # type: ignore[arg-type]
                                   source="GTFS import", **price))
    transfer = _transfer(rd, p, area, af, notes)
    everyone = sorted(reg.issuers)
    return TariffVersion(
        valid_from=day, note="imported from a GTFS-Fares v2 feed",
        accepted_issuers=everyone, concession_issuers=everyone,
        line_fares=[LineFare(operator=op, lines=lines, fare_fen=base, source="GTFS import")
                    for (op, base), lines in sorted(line_fares.items())],
        networks=networks, prices=prices, transfer=transfer)


def _network_fare(reg: Registry, p: _Parsed, af: _AreaFares, nid: int,
                  fares: dict[tuple[int, int], int], notes: list[str]) -> NetworkFare:
    stops = reg.networks[nid].stops
    same = {fares[(s, s)] for s in stops}
    ext = p.network_ext.get(af.feed_network[nid], {})
    top = max(fares.values())
    journey = int(ext.get(EXT_JOURNEY) or 0) or DEFAULT_JOURNEY_MINUTES
    max_fare = int(ext.get(EXT_MAX_FARE) or 0) or top
    if not ext.get(EXT_JOURNEY) or not ext.get(EXT_MAX_FARE):
        notes.append(f"network {nid}: the feed has no journey limit or penalty fare; "
                     f"imported as {journey} min and {fen_to_yuan(max_fare)} {CURRENCY}")
    # Same-station exits keep the feed's one fare; several would need a per-stop rule Tongka
    # lacks, so the highest is taken and said.
    if len(same) > 1:
        notes.append(f"network {nid}: same-station fares differ by stop; imported as the highest")
    return NetworkFare(network=nid, max_journey_minutes=journey, max_fare=max(max_fare, top),
                       same_station_fare=max(same), source="GTFS import",
                       matrix=[[a, b, fen] for (a, b), fen in sorted(fares.items()) if a != b])


def fit_price(pairs: Sequence[tuple[int, int]]) -> dict[str, int | None] | None:
    """A product price that turns every (base, amount) into its amount, or None (SPEC §6.3).

    First a rate: each pair bounds ``k = 10000 - bp`` to an interval by the half-up rounding of
    ``apply_rate``; the intervals must meet. Else a fixed fare ``min(base, X)``.
    """
    lo, hi = 0, 10_000
    for base, amount in pairs:
        if base == 0:
            if amount != 0:
                lo, hi = 1, 0
            continue
        # floor((base*k + 5000) / 10000) == amount  <=>  amount*10000-5000 <= base*k < ...+5000
        lo = max(lo, -(-(amount * 10_000 - 5_000) // base))
        hi = min(hi, (amount * 10_000 + 4_999) // base)
    if lo <= hi:
        # Any bp in [10000 - hi, 10000 - lo] prices these bases alike; the roundest is the one
        # a person wrote (1000 bp, not 976).
        low, high = 10_000 - hi, 10_000 - lo
        for step in (10_000, 1000, 500, 100, 50, 10, 5, 1):
            bp = -(-low // step) * step
            if bp <= high:
                return {"rate_bp": bp, "fixed_fen": None}
    below = {amount for base, amount in pairs if amount < base}
    if len(below) == 1:
        cap = below.pop()
        if all(min(base, cap) == amount for base, amount in pairs):
            return {"rate_bp": None, "fixed_fen": cap}
    return None


def _transfer(rd: _Reader, p: _Parsed, area: int, af: _AreaFares,
              notes: list[str]) -> TransferRule | None:
    rows = [(i, r) for i, r in p.transfers
            if r.get("from_leg_group_id") in af.groups and r.get("to_leg_group_id") in af.groups]
    if not rows:
        return None
    kinds: set[tuple[Any, ...]] = set()
    pairs: set[tuple[str, str]] = set()
    counts: set[int] = set()
    for i, r in rows:
        step = _step(rd, p, i, r)
        limit = rd.integer("fare_transfer_rules.txt", i, "duration_limit",
                           r.get("duration_limit", ""), 0)
        ltype = r.get("duration_limit_type", "")
        if step is None:
            continue
        if limit <= 0 or limit % 60 or ltype not in ("1", "2"):
            rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_transfer_rules.txt", i, "duration_limit",
                       "Tongka needs a window in whole minutes from the previous boarding (1) "
                       "or the previous leg's last tap (2)")
            continue
        count = rd.integer("fare_transfer_rules.txt", i, "transfer_count",
                           r.get("transfer_count", ""), 1)
        if count == 0 or count < -1:
            rd.problem(ErrorCode.GTFS_BAD_ROW, "fare_transfer_rules.txt", i, "transfer_count",
                       "is -1 (unlimited) or a positive count")
            continue
        if count == -1:
            count = UNLIMITED_TRANSFERS
            notes.append(f"area {area}: unlimited transfers imported as {count} per chain")
        counts.add(count)
        kinds.add((step.kind, step.fen, limit // 60, ltype))
        for a in af.groups[r["from_leg_group_id"]]:
            for b in af.groups[r["to_leg_group_id"]]:
                pairs.add((a.name.lower(), b.name.lower()))
    if rd.problems:
        return None
    if len(kinds) != 1:
        rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_transfer_rules.txt", rows[0][0], "",
                   f"area {area}: transfer rules differ in price or window; Tongka has one "
                   "transfer rule per area (SPEC §6.4)")
        return None
    kind, fen, minutes, ltype = kinds.pop()
    step = TransferStep(kind=kind, fen=fen)
    # validated as the tariff file's own data: the mode names are Mode's, which ModeName lists
    return TransferRule.model_validate({
        "window_minutes": minutes,
        "window_from": "first_boarding" if ltype == "1" else "previous_last_tap",
        "allowed_modes": [list(x) for x in sorted(pairs)],
        "steps": [step] * max(counts), "source": "GTFS import"})


def _step(rd: _Reader, p: _Parsed, i: int, r: dict[str, str]) -> TransferStep | None:
    kind, product = r.get("fare_transfer_type", ""), r.get("fare_product_id", "")
    fens = {fen for _, _, fen in p.products.get(product, [])}
    if product and product not in p.products:
        rd.problem(ErrorCode.GTFS_UNKNOWN_ID, "fare_transfer_rules.txt", i, "fare_product_id",
                   f"product {product!r} is not in fare_products.txt")
        return None
    if kind == "0" and fens <= {0}:
        return TransferStep(kind="free")
    if kind == "1" and len(fens) == 1 and max(fens) <= 0:
        return TransferStep(kind="off_fen", fen=-max(fens))
    rd.problem(ErrorCode.GTFS_UNSUPPORTED, "fare_transfer_rules.txt", i, "fare_transfer_type",
               f"type {kind} with product {product or '-'}: Tongka's transfer steps are free "
               "(0, no product) or a fixed amount off the next leg (1, one negative amount)")
    return None


# ---------------------------------------------------------------------------------------------
# Tariff files


def tariff_toml(tariff: Tariff) -> str:
    """A tariff as a TOML file ``tariffs.load`` reads back to an equal model."""
    out = [f"area = {tariff.area}", f"name = {_toml(tariff.name)}",
           f"illustrative = {_toml(tariff.illustrative)}"]
    for version in tariff.versions:
        out.append("\n[[versions]]")
        for key, value in version.model_dump(exclude_none=True).items():
            out.append(f"{key} = {_toml(value)}")
    return "\n".join(out) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | dt.date):  # a TOML integer, or a TOML local date
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        items = [f"{k} = {_toml(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
