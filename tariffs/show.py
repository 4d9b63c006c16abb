"""A readable view of the tariff version in force in one city on one day, for fare reviewers.

The rows are plain values (``FareRow`` ...) computed with ``tariffs.fares``, so what the table
shows is what the engine charges; ``render_version`` only lays them out as rich tables.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from tariffs.fares import price_fare, price_for, rebate_valid_from, visitor_fare
from tariffs.load import TariffSet
from tariffs.model import TariffVersion, TransferStep
from tariffs.registry import FLAT, Registry
from tariffs.vocab import Media, Mode, Product

MEDIA = "card, shaped card, NFC phone, wearable, social-security card, QR code"
assert len(MEDIA.split(", ")) == len(Media)


def find_area(tariffs: TariffSet, city: str) -> int:
    """A city given as its GB/T 2260 code or its English or Chinese name; ValueError if none."""
    reg = tariffs.registry
    for code, c in reg.cities.items():
        if city.strip().lower() in {str(code), c.name.lower(), c.name_zh}:
            return code
    known = ", ".join(f"{code} {c.name}" for code, c in sorted(reg.cities.items()))
    raise ValueError(f"unknown city {city!r}: use one of {known}")


@dataclass(frozen=True, slots=True)
class BaseFare:
    """The base fare a mode's column is priced on: its usual flat fare, or a network's lowest."""

    mode: Mode
    fen: int
    label: str  # e.g. "bus, fare 200"


@dataclass(frozen=True, slots=True)
class FareRow:
    """What one kind of card pays on each mode's typical base fare (SPEC §6 steps 2-3)."""

    who: str  # e.g. "ordinary" or "visitor (issuer not accepted)"
    fares: tuple[tuple[int, str], ...]  # per BaseFare: (fare in fen, the rule that made it)


def typical_bases(version: TariffVersion, reg: Registry, area: int) -> list[BaseFare]:
    """Per mode the area runs: the most common flat fare, or the lowest fare of its networks."""
    out = []
    lines = [ln for ln in reg.lines.values() if reg.operators[ln.operator].city == area]
    flat_fares: dict[tuple[int, int], int] = {}
    for lf in version.line_fares:
        keys = lf.lines if lf.lines is not None else [
            ln.line for ln in lines if ln.operator == lf.operator and ln.network == FLAT]
        for n in keys:
            flat_fares[(lf.operator, n)] = lf.fare_fen
    for mode in sorted({ln.mode for ln in lines}):
        flat = [flat_fares[ln.key] for ln in lines if ln.mode == mode and ln.key in flat_fares]
        nets = {ln.network for ln in lines if ln.mode == mode and ln.network != FLAT}
        name = mode.name.lower()
        if flat:
            fen = Counter(flat).most_common(1)[0][0]
            out.append(BaseFare(mode, fen, f"{name}, fare {fen}"))
        elif nets:
            lowest = []
            for nf in version.networks:
                if nf.network in nets:
                    lowest.append(min(b.fare_fen for b in nf.bands) if nf.bands is not None
                                  else min(row[2] for row in nf.matrix or [[0, 0, 0]]))
            fen = min(lowest)
            out.append(BaseFare(mode, fen, f"{name}, lowest fare {fen}"))
    return out


def fare_rows(version: TariffVersion, bases: list[BaseFare]) -> list[FareRow]:
    """Own-issuer cards of each product, and visitors, on each base (any medium pays the same)."""
    rows = []
    for product in Product:
        cells = []
        for base in bases:
            price = price_for(version, base.mode, product)
            own = price.product == product.name.lower()
            rule = (f"{price.rate_bp} bp off" if price.rate_bp is not None
                    else f"fixed {price.fixed_fen}")
            fen = price_fare(price, base.fen)
            cells.append((fen, rule if own else f"as ordinary: {rule}"))
        rows.append(FareRow(product.name.lower(), tuple(cells)))
    rows.append(FareRow("visitor (issuer not accepted)", tuple(
        (visitor_fare(version, b.fen), f"{version.visitor_rate_bp} bp off")
        for b in bases)))
    return rows


def describe_step(step: TransferStep) -> str:
    """One transfer step in words (SPEC §6.4)."""
    if step.kind == "free":
        return "free"
    if step.kind == "off_fen":
        return f"{step.fen} fen off"
    if step.kind == "pay_rate":
        return f"pays {step.bp} bp of its base fare"
    return "difference: pays only what it costs above the previous leg (扣高免低)"


def _fen(fen: int) -> str:
    return f"{fen} ({fen / 100:.2f} yuan)"


def render_version(tariffs: TariffSet, area: int, day: dt.date) -> RenderableType:
    """Every rule of the version in force in ``area`` on service day ``day``, as rich tables."""
    reg = tariffs.registry
    tariff = tariffs.tariffs[area]
    version = tariffs.version_for(area, day)
    later = [v.valid_from for v in tariff.versions if v.valid_from > version.valid_from]
    until = f" until {later[0] - dt.timedelta(days=1)}" if later else ""
    head = Text.assemble(
        (f"{tariff.name} ({area})", "bold"),
        f" — version valid from {version.valid_from}{until}, in force on {day}",
        "\n" + version.note if version.note else "",
        "\nillustrative values: not from a published notice" if tariff.illustrative else "",
    )
    parts: list[RenderableType] = [head]

    lines = Table(title="Lines and base fares (the full adult cash fare)", title_justify="left")
    for col in ("operator", "lines", "mode", "base fare (fen)", "source"):
        lines.add_column(col)
    for lf in version.line_fares:
        op = reg.operators[lf.operator]
        names = "all flat lines" if lf.lines is None else ", ".join(map(str, lf.lines))
        modes = sorted({reg.lines[k].mode.name.lower() for k in reg.lines
                        if k[0] == lf.operator and reg.lines[k].network == FLAT})
        lines.add_row(escape(f"{lf.operator} {op.name}"), names, "/".join(modes),
                      _fen(lf.fare_fen), escape(lf.source))
    parts.append(lines)

    for nf in version.networks:
        net = reg.networks[nf.network]
        t = Table(title=f"Network {nf.network} {net.name}: entry-exit fares", title_justify="left")
        t.add_column("distance (shortest path)" if nf.bands is not None else "from → to")
        t.add_column("fare (fen)", justify="right")
        if nf.bands is not None:
            low = 0
            for band in nf.bands:
                span = (f"{low / 1000:g}-{band.upper_m / 1000:g} km" if band.upper_m is not None
                        else f"over {low / 1000:g} km")
                t.add_row(span, str(band.fare_fen))
                low = band.upper_m or low
        else:
            for a, b, fen in nf.matrix or []:
                t.add_row(escape(f"{reg.stops[a].name} → {reg.stops[b].name}"), str(fen))
        t.add_section()
        t.add_row("exit at the entry station", str(nf.same_station_fare))
        t.add_row("penalty: incomplete, overtime, orphan exit", str(nf.max_fare))
        t.add_row(f"journey limit {nf.max_journey_minutes} min", "")
        t.caption = escape(nf.source)
        parts.append(t)

    bases = typical_bases(version, reg, area)
    own = ", ".join(reg.issuers[i].name for i in version.concession_issuers) or "none"
    fares = Table(title="Fares by product and medium (fen)", title_justify="left")
    fares.add_column("card product")
    for base in bases:
        fares.add_column(base.label, justify="right")
    for row in fare_rows(version, bases):
        fares.add_row(row.who, *(f"{fen} [dim]({rule})[/dim]" for fen, rule in row.fares))
    parts.append(fares)
    parts.append(Text(
        f"Concessions are honoured for cards of {own}; cards of the other accepted issuers "
        f"({', '.join(map(str, version.accepted_issuers))}) pay the ordinary fare. Every "
        f"medium pays the same: {MEDIA}.", style="dim"))

    rule = version.transfer
    transfer = Table(title="Transfer rule", title_justify="left", show_header=False)
    transfer.add_column("what")
    transfer.add_column("rule")
    if rule is None:
        transfer.add_row("transfers", "none: every leg pays its own fare")
    else:
        frm = ("the chain's first boarding" if rule.window_from == "first_boarding"
               else "the previous leg's last tap")
        transfer.add_row("window", f"{rule.window_minutes} minutes from {frm}")
        transfer.add_row("between", ", ".join(f"{a}→{b}" for a, b in rule.allowed_modes))
        for k, step in enumerate(rule.steps, start=1):
            transfer.add_row(f"transfer {k}", describe_step(step))
        transfer.add_row("after that", "a new chain starts")
        if rule.source:
            transfer.add_row("source", escape(rule.source))
    parts.append(transfer)

    other = Table(title="Caps, funders, rebates", title_justify="left", show_header=False)
    other.add_column("what")
    other.add_column("rule")
    caps = ", ".join(f"{c.product} {c.cap_fen}" for c in version.caps) or "none"
    other.add_row("daily caps (fen)", caps)
    card = ", ".join(f"{p}: {f}" for p, f in version.funders.card.items()) or "all: operator"
    other.add_row("card discount funded by", card)
    other.add_row("transfer discount funded by", version.funders.transfer)
    other.add_row("cap discount funded by", version.funders.cap)
    other.add_row("chain revenue", version.apportionment.replace("_", " "))
    other.add_row("visitor rate", f"{version.visitor_rate_bp} bp off")
    for rebate in version.rebates:
        tiers = ", ".join(f"{t.spend_fen} → {t.rebate_fen}" for t in rebate.tiers)
        payer = reg.operators[rebate.operator].name
        start = rebate_valid_from(version, rebate)
        other.add_row(f"monthly rebate, network {rebate.network}",
                      f"spend → rebate (fen): {tiers}; owed by {rebate.operator} {payer}; "
                      f"from {start}")
    parts.append(other)
    return Group(*parts)
