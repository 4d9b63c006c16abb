"""Statements of a settled day: per party a CSV and an HTML page with charts; the centre's overview.

Everything shown is derived from the day's legs and its ``SettlementResult``; the charts are
PNGs embedded in the HTML (no side files), so one statement is one self-contained file. The
pages come from jinja2 templates in ``settlement/templates/`` with autoescaping on; amounts are
written for people by ``settlement.amounts`` (``1,234,567.89``, labelled CNY), while each CSV
keeps its raw integer ``*_fen`` column beside the formatted ``*_cny`` one for machines.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import functools
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import pyarrow as pa
from markupsafe import Markup

from clearing import files
from clearing.errors import InputError
from settlement.amounts import CURRENCY, yuan
from settlement.apportion import allocate
from settlement.charts import Chart, render_chart
from settlement.netting import Direction
from settlement.obligations import Component, DiscountLine, Obligation
from settlement.parties import CENTRE, Party, party_name
from settlement.settle import SettlementResult
from tariffs.registry import Registry
from tariffs.vocab import Media, Mode, PartyRole

PARTY_CHARTS = ("revenue", "discounts", "mismatches", "position")
OVERVIEW_CHARTS = ("positions", "revenue", "discounts", "mismatches")
STATEMENT_FIELDS = (
    "day",
    "party",
    "party_name",
    "counterparty",
    "counterparty_name",
    "kind",
    "direction",
    "amount_fen",
    "amount_cny",
)
TOP = 12  # lines and devices shown in the mismatch charts


@dataclass(frozen=True)
class DayColumns:
    """The day's leg columns the statements need, as numpy arrays (read once)."""

    issuer: np.ndarray
    operator: np.ndarray
    area: np.ndarray
    mode: np.ndarray
    media: np.ndarray
    line: np.ndarray
    device: np.ndarray
    allocated: np.ndarray
    mismatch: np.ndarray

    @classmethod
    def of(cls, legs: pa.Table, allocated: np.ndarray) -> DayColumns:
        def col(name: str) -> np.ndarray:
            column: np.ndarray = legs.column(name).to_numpy()
            return column

        return cls(
            col("issuer"),
            col("operator"),
            col("area"),
            col("mode"),
            col("media"),
            col("line"),
            col("board_device_id"),
            np.asarray(allocated, dtype=np.int64),
            col("mismatch_fen").astype(np.int64),
        )

    def mask(self, party: Party) -> np.ndarray:
        """The legs a party's statement is about: its cards, its lines, its city, or all."""
        mine: np.ndarray
        if party.role == PartyRole.ISSUER:
            mine = self.issuer == party.code
        elif party.role == PartyRole.OPERATOR:
            mine = self.operator == party.code
        elif party.role == PartyRole.GOVERNMENT:
            mine = self.area == party.code
        else:
            mine = np.ones(self.issuer.shape, dtype=bool)
        return mine


def write_statements(
    out_dir: Path,
    day: dt.date,
    legs: pa.Table,
    result: SettlementResult,
    registry: Registry | None,
    *,
    workers: int | None = None,
    stale: str | None = None,
    signals: pa.Table | None = None,
) -> list[Path]:
    """Write every party's CSV and HTML statement and the overview; returns the paths written.

    ``signals`` are the day's risk signals (``clearing.risk.SIGNAL_SCHEMA``, SPEC v1.2 §10):
    an issuer's page counts its flagged cards by kind, the overview counts signals by kind and
    city. They are evidence only: no amount on any page depends on them.

    Drawing the charts is most of the work, so they are drawn by ``workers`` processes
    (default: up to 4, one per core); ``workers=1`` draws them in this process.

    ``stale`` is a one-line warning for a report whose day's taps changed since it was settled
    (the caller decides when): it becomes a banner at the top of every HTML page and the first
    line (a ``#`` comment) of the overview CSV, so nobody reads those figures as final.
    """
    stale = one_line(stale)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    allocated = result.allocated
    if allocated is None or len(allocated) != legs.num_rows:
        allocated = allocate(legs)
    cols = DayColumns.of(legs, allocated)
    names = _namer(registry)
    paths: list[Path] = []
    pages: list[tuple[Path, str]] = []
    pending: list[Chart] = []
    for party in sorted(result.positions):
        stem = out / f"statement-{day.isoformat()}-{party.tag}"
        paths.append(_write_csv(stem.with_suffix(".csv"), day, party, result, names))
        page = party_html(day, party, result, cols, names, pending, stale=stale,
                          risk=issuer_flagged_cards(signals, party))
        pages.append((stem.with_suffix(".html"), page))
    paths.append(
        _write_overview_csv(out / f"overview-{day.isoformat()}.csv", day, result, names, stale)
    )
    overview = overview_html(day, result, cols, names, pending, stale=stale,
                             risk=signals_by_kind_and_city(signals, names))
    pages.append((out / f"overview-{day.isoformat()}.html", overview))
    pngs = _render_all(pending, workers)
    for path, page in pages:
        paths.append(_write(path, _fill(page, pngs)))
    return sorted(paths)


def _render_all(pending: list[Chart], workers: int | None) -> list[str]:
    """Every pending chart as base64 PNG, in order; in worker processes when it pays."""
    n = min(4, os.cpu_count() or 1) if workers is None else max(1, workers)
    if n == 1 or len(pending) < 16:
        pngs = [render_chart(c) for c in pending]
    else:
        # spawn, not fork: the parent may hold threads (Arrow, numba) that fork would copy badly.
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
            pngs = list(pool.map(render_chart, pending, chunksize=4))
    return [base64.b64encode(p).decode("ascii") for p in pngs]


def _fill(page: str, pngs: list[str]) -> str:
    """Put each drawn chart in its placeholder; only inside an image source, so text on the
    page (a party name, say) can never pull a chart into itself."""
    return re.sub("base64,\x00([0-9]+)\x00", lambda m: "base64," + pngs[int(m.group(1))], page)


# ---------------------------------------------------------------- data for one party


def party_obligations(
    party: Party, obligations: Iterable[Obligation]
) -> list[tuple[Party, Obligation, int]]:
    """(counterparty, obligation, signed amount: + receivable, - payable) for one party."""
    out = []
    for ob in obligations:
        if ob.creditor == party:
            out.append((ob.debtor, ob, ob.amount_fen))
        elif ob.debtor == party:
            out.append((ob.creditor, ob, -ob.amount_fen))
    return out


def _sum_by(keys: np.ndarray, values: np.ndarray) -> list[tuple[int, int]]:
    """(key, integer sum) per distinct key, by sorting: integer sums, no float on the way."""
    if keys.size == 0:
        return []
    order = np.argsort(keys, kind="stable")
    k, v = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    return list(zip(k[starts].tolist(), np.add.reduceat(v, starts).tolist(), strict=True))


def revenue_panels(
    cols: DayColumns, mask: np.ndarray, names: Callable[[Party], str]
) -> dict[str, list[tuple[str, int]]]:
    alloc = cols.allocated[mask]

    def label(kind: str, key: int) -> str:
        if kind == "city":
            return names(Party(PartyRole.GOVERNMENT, key)).removesuffix(" government")
        enum = Mode if kind == "mode" else Media
        try:
            return enum(key).name.lower().replace("_", " ")
        except ValueError:
            return str(key)

    return {
        f"by {kind}": sorted(
            ((label(kind, k), v) for k, v in _sum_by(getattr(cols, attr)[mask], alloc)),
            key=lambda kv: -kv[1],
        )
        for kind, attr in (("city", "area"), ("mode", "mode"), ("medium", "media"))
    }


def discount_series(lines: Sequence[DiscountLine]) -> tuple[list[str], dict[str, list[int]]]:
    """Categories (components) and one series per funder, for the stacked discount chart."""
    cats = [c.name.lower() for c in Component]
    series: dict[str, list[int]] = {"operator": [0] * len(cats), "government": [0] * len(cats)}
    for ln in lines:
        series.setdefault(ln.funder, [0] * len(cats))[int(ln.component)] += ln.amount_fen
    return cats, {f"funded by {k}": v for k, v in series.items()}


def party_discounts(party: Party, lines: Iterable[DiscountLine]) -> list[DiscountLine]:
    if party.role == PartyRole.ISSUER:
        return [ln for ln in lines if ln.issuer == party.code]
    if party.role == PartyRole.OPERATOR:
        return [ln for ln in lines if ln.operator == party.code]
    if party.role == PartyRole.GOVERNMENT:
        return [ln for ln in lines if ln.area == party.code]
    return list(lines)


def mismatch_panels(cols: DayColumns, mask: np.ndarray) -> dict[str, list[tuple[str, int]]]:
    """Reader-debit mismatches (charged - computed) by line and by device, largest first."""
    m = mask & (cols.mismatch != 0)
    ops, lines, devs, mis = cols.operator[m], cols.line[m], cols.device[m], cols.mismatch[m]
    # One int64 key per (operator, line) and (operator, device): operator codes fit in 16 bits.
    line_key = ops.astype(np.int64) << 40 | lines.astype(np.int64)
    dev_key = ops.astype(np.int64) << 47 | (devs.astype(np.int64) & ((1 << 47) - 1))

    def top(pairs: list[tuple[int, int]], shift: int, what: str) -> list[tuple[str, int]]:
        pairs = sorted(pairs, key=lambda kv: -abs(kv[1]))[:TOP]
        return [(f"OPR-{k >> shift} {what} {k & ((1 << shift) - 1)}", v) for k, v in pairs]

    return {
        "by line": top(_sum_by(line_key, mis), 40, "line"),
        "by device": top(_sum_by(dev_key, mis), 47, "device"),
    }


# ---------------------------------------------------------------- HTML

TEMPLATES = Path(__file__).with_name("templates")  # package data: settlement/templates/*
MONEY = f"({CURRENCY})"  # the one label of every amount column and money chart


def money_html(fen: int, signed: bool = False) -> Markup:
    """An amount for a page: ``yuan`` text, a negative one always marked (leading minus and the
    ``neg`` class, red); ``signed`` also marks positives (``+`` and ``pos``, green)."""
    text = yuan(fen, signed=signed)
    cls = "neg" if fen < 0 else "pos" if signed and fen > 0 else ""
    if not cls:
        return Markup.escape(text)
    return Markup('<span class="{}">{}</span>').format(cls, text)


@functools.cache
def _templates() -> jinja2.Environment:
    """The statement templates, autoescaped: party names and every value are escaped, so a
    name from a registry file can never inject markup or script into a statement."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails loudly, never renders blank
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return env


def _render(template: str, **context: object) -> str:
    return _templates().get_template(template).render(currency=CURRENCY, **context)


def one_line(stale: str | None) -> str | None:
    """The staleness warning as the one line the banner and the CSV comment hold."""
    if stale is None:
        return None
    line = " ".join(stale.split())
    if not line:
        raise InputError("the staleness warning of a report is empty: say what changed")
    return line


def _figure(pending: list[Chart] | None, name: str, chart: Chart, caption: str) -> dict[str, str]:
    """A figure with the chart's PNG, or, when charts are collected for rendering in parallel,
    a placeholder that ``_fill`` replaces once every chart is drawn."""
    if pending is None:
        data = base64.b64encode(render_chart(chart)).decode("ascii")
    else:
        data = f"\x00{len(pending)}\x00"
        pending.append(chart)
    return {"name": name, "caption": caption, "data": data}


def party_html(
    day: dt.date,
    party: Party,
    result: SettlementResult,
    cols: DayColumns,
    names: Callable[[Party], str],
    pending: list[Chart] | None = None,
    *,
    stale: str | None = None,
    risk: list[tuple[str, str]] | None = None,
) -> str:
    mask = cols.mask(party)
    net = result.positions.get(party, 0)
    mine = party_obligations(party, result.obligations)
    payment = next((p for p in result.payments if p.party == party), None)
    if payment is None:
        pay = (
            "keeps its fees in the settlement account" if party == CENTRE and net else "no payment"
        )
    elif payment.direction == Direction.PAY_IN:
        pay = f"pays {yuan(payment.amount_fen)} {CURRENCY} into the settlement account"
    else:
        pay = f"is paid {yuan(payment.amount_fen)} {CURRENCY} from the settlement account"
    kpi = [
        ("net position", money_html(net, True)),
        ("receivable", money_html(sum(a for *_, a in mine if a > 0))),
        ("payable", money_html(-sum(a for *_, a in mine if a < 0))),
        ("legs", f"{int(mask.sum()):,}"),
    ]
    obligations = [
        (
            f"{names(cp)} ({cp.tag})",
            ob.kind.name.lower(),
            "receivable" if a > 0 else "payable",
            money_html(a, True),
        )
        for cp, ob, a in mine
    ]
    position_items = sorted(
        ((f"{'from' if a > 0 else 'to'} {cp.tag} {ob.kind.name.lower()}", a) for cp, ob, a in mine),
        key=lambda kv: -abs(kv[1]),
    )[:15] + [("NET POSITION", net)]
    cats, series = discount_series(party_discounts(party, result.discounts))
    charts = [
        _figure(
            pending,
            "revenue",
            Chart(
                "breakdown_chart", f"Allocated revenue {MONEY}", revenue_panels(cols, mask, names)
            ),
            "Allocated revenue of the legs in this statement, by city, mode and medium",
        ),
        _figure(
            pending,
            "discounts",
            Chart("stacked_chart", f"Discounts by component and funder {MONEY}", cats, series),
            "Card, transfer and cap discounts, split by who funds them (tariff funders)",
        ),
        _figure(
            pending,
            "mismatches",
            Chart(
                "breakdown_chart",
                f"Reader-debit mismatches, charged - computed {MONEY}",
                mismatch_panels(cols, mask),
            ),
            f"The {TOP} lines and devices with the largest mismatches; "
            "a reader on an old tariff shows here",
        ),
        _figure(
            pending,
            "position",
            Chart("signed_chart", f"Net position {MONEY}", position_items),
            "What the party is owed (green) and owes (red), and the net",
        ),
    ]
    return _render(
        "party.html.j2",
        title=f"Settlement statement: {names(party)}",
        subtitle=(
            f"{party.role.name.lower()} {party.tag} · service day {day.isoformat()} · "
            f"{_entry_note(result)}"
        ),
        stale=one_line(stale),
        kpi=kpi,
        name=names(party),
        pay=pay,
        obligation_headers=["counterparty", "kind", "direction", f"amount {MONEY}"],
        obligations=obligations,
        charts=charts,
        risk=risk,
        risk_headers=["signal", "cards flagged"],
    )


def overview_html(
    day: dt.date,
    result: SettlementResult,
    cols: DayColumns,
    names: Callable[[Party], str],
    pending: list[Chart] | None = None,
    *,
    stale: str | None = None,
    risk: list[tuple[str, str, str]] | None = None,
) -> str:
    everything = np.ones(cols.issuer.shape, dtype=bool)
    cities = [
        (
            names(Party(PartyRole.GOVERNMENT, c.city)).removesuffix(" government"),
            f"{c.legs:,}",
            money_html(c.base_fen),
            money_html(c.charged_fen),
            money_html(c.allocated_fen),
            money_html(c.discount_fen),
            money_html(c.mismatch_fen, True),
        )
        for c in result.city_summary
    ]
    payments = [
        (
            p.direction.name.lower().replace("_", " "),
            f"{names(p.party)} ({p.party.tag})",
            money_html(p.amount_fen),
        )
        for p in result.payments
    ]
    positions = [
        (f"{names(p)} ({p.tag})", money_html(v, True)) for p, v in result.positions.items()
    ]
    pay_in = sum(p.amount_fen for p in result.payments if p.direction == Direction.PAY_IN)
    pay_out = sum(p.amount_fen for p in result.payments if p.direction == Direction.PAY_OUT)
    kpi = [
        ("legs", f"{sum(c.legs for c in result.city_summary):,}"),
        ("charged", money_html(sum(c.charged_fen for c in result.city_summary))),
        ("pay-ins", money_html(pay_in)),
        ("pay-outs", money_html(pay_out)),
        ("centre keeps", money_html(pay_in - pay_out)),
        ("positions sum", money_html(sum(result.positions.values()))),
    ]
    cats, series = discount_series(result.discounts)
    charts = [
        _figure(
            pending,
            "positions",
            Chart(
                "signed_chart",
                f"Net positions of all parties {MONEY}",
                [(f"{p.tag} {names(p)}", v) for p, v in result.positions.items()],
            ),
            "Every party's net position: green is paid out, red pays in",
        ),
        _figure(
            pending,
            "revenue",
            Chart(
                "breakdown_chart",
                f"Allocated revenue of the day {MONEY}",
                revenue_panels(cols, everything, names),
            ),
            "All legs' allocated revenue by city, mode and medium",
        ),
        _figure(
            pending,
            "discounts",
            Chart("stacked_chart", f"Discounts by component and funder {MONEY}", cats, series),
            "All discounts, by who funds them",
        ),
        _figure(
            pending,
            "mismatches",
            Chart(
                "breakdown_chart",
                f"Reader-debit mismatches, charged - computed {MONEY}",
                mismatch_panels(cols, everything),
            ),
            "Lines and devices with the largest mismatches across the circle",
        ),
    ]
    return _render(
        "overview.html.j2",
        title=f"Clearing centre overview {day.isoformat()}",
        subtitle=f"Tongka settlement · {_entry_note(result)}",
        stale=one_line(stale),
        kpi=kpi,
        city_headers=[
            "city",
            "legs",
            f"base {MONEY}",
            f"charged {MONEY}",
            f"allocated {MONEY}",
            f"discount {MONEY}",
            f"mismatch {MONEY}",
        ],
        cities=cities,
        charts=charts,
        position_headers=["party", f"net position {MONEY}"],
        positions=positions,
        payment_headers=["direction", "party", f"amount {MONEY}"],
        payments=payments,
        risk=risk,
        risk_headers=["signal", "city", "signals"],
    )


def issuer_flagged_cards(signals: pa.Table | None, party: Party) -> list[tuple[str, str]] | None:
    """An issuer's cards flagged by each SPEC §10 kind: distinct cards, not signals, since
    the issuer acts per card. None for other parties or when no signals were given."""
    if signals is None or party.role != PartyRole.ISSUER:
        return None
    cards: dict[str, set[int]] = {}
    for kind, issuer, card in zip(signals.column("kind").to_pylist(),
                                  signals.column("issuer").to_pylist(),
                                  signals.column("card_id").to_pylist(), strict=True):
        if issuer == party.code and card is not None:
            cards.setdefault(kind, set()).add(card)
    return [(kind, f"{len(ids):,}") for kind, ids in sorted(cards.items())]


def signals_by_kind_and_city(signals: pa.Table | None, names: Callable[[Party], str]
                             ) -> list[tuple[str, str, str]] | None:
    """The overview's risk table: signals counted by kind and by the city they were seen in."""
    if signals is None:
        return None
    counts: dict[tuple[str, int], int] = {}
    for kind, city in zip(signals.column("kind").to_pylist(), signals.column("city").to_pylist(),
                          strict=True):
        counts[(kind, city)] = counts.get((kind, city), 0) + 1
    return [(kind, names(Party(PartyRole.GOVERNMENT, city)).removesuffix(" government"),
             f"{n:,}") for (kind, city), n in sorted(counts.items())]


def _entry_note(result: SettlementResult) -> str:
    if result.dry_run:
        return "computed for reporting (no ledger entry written by this run)"
    if result.entry_id is None:
        return "ledger unchanged (already posted)"
    return f"ledger entry {result.entry_id} ({result.entry_kind}, {result.reason})"


# ---------------------------------------------------------------- files


def _namer(registry: Registry | None) -> Callable[[Party], str]:
    cache: dict[Party, str] = {}

    def name(p: Party) -> str:
        if p not in cache:
            cache[p] = party_name(p, registry)
        return cache[p]

    return name


def _write(path: Path, text: str) -> Path:
    return files.write_text(path, text)


def _write_csv(
    path: Path, day: dt.date, party: Party, result: SettlementResult, names: Callable[[Party], str]
) -> Path:
    with files.atomic_file(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(STATEMENT_FIELDS)
        for cp, ob, amount in party_obligations(party, result.obligations):
            w.writerow(
                [
                    day.isoformat(),
                    party.tag,
                    names(party),
                    cp.tag,
                    names(cp),
                    ob.kind.name.lower(),
                    "receivable" if amount > 0 else "payable",
                    amount,
                    yuan(amount),
                ]
            )
        net = result.positions.get(party, 0)
        w.writerow([day.isoformat(), party.tag, names(party), "", "", "net", "net", net, yuan(net)])
    return path


def _write_overview_csv(
    path: Path,
    day: dt.date,
    result: SettlementResult,
    names: Callable[[Party], str],
    stale: str | None = None,
) -> Path:
    """The overview as CSV: ``*_fen`` raw integers for machines, ``*_cny`` written for people;
    a stale report's warning is the first line, a ``#`` comment, ahead of the header."""
    payments = {p.party: p for p in result.payments}
    with files.atomic_file(path, "w", encoding="utf-8", newline="") as fh:
        if stale is not None:
            fh.write(f"# WARNING: {one_line(stale)}\n")
        w = csv.writer(fh)
        w.writerow(
            [
                "day",
                "party",
                "party_name",
                "net_position_fen",
                "net_position_cny",
                "payment",
                "payment_fen",
                "payment_cny",
            ]
        )
        for party, net in result.positions.items():
            p = payments.get(party)
            w.writerow(
                [
                    day.isoformat(),
                    party.tag,
                    names(party),
                    net,
                    yuan(net),
                    p.direction.name.lower() if p else "",
                    p.amount_fen if p else 0,
                    yuan(p.amount_fen if p else 0),
                ]
            )
    return path
