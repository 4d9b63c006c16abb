"""Statements of a settled day: per party a CSV and an HTML page with charts; the centre's overview.

Everything shown is derived from the day's legs and its ``SettlementResult``; the charts are
PNGs embedded in the HTML (no side files), so one statement is one self-contained file.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import html
import multiprocessing
import os
import re
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from settlement.apportion import allocate
from settlement.charts import Chart, render_chart
from settlement.netting import Direction
from settlement.obligations import Component, DiscountLine, Obligation
from settlement.parties import CENTRE, Party, party_name
from settlement.payments import cny
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
class _Day:
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
    def of(cls, legs: pa.Table, allocated: np.ndarray) -> _Day:
        col = lambda n: legs.column(n).to_numpy()  # noqa: E731
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
        if party.role == PartyRole.ISSUER:
            return self.issuer == party.code
        if party.role == PartyRole.OPERATOR:
            return self.operator == party.code
        if party.role == PartyRole.GOVERNMENT:
            return self.area == party.code
        return np.ones(self.issuer.shape, dtype=bool)


def write_statements(
    out_dir: Path,
    day: dt.date,
    legs: pa.Table,
    result: SettlementResult,
    registry: Registry | None,
    *,
    workers: int | None = None,
) -> list[Path]:
    """Write every party's CSV and HTML statement and the overview; returns the paths written.

    Drawing the charts is most of the work, so they are drawn by ``workers`` processes
    (default: up to 4, one per core); ``workers=1`` draws them in this process.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    allocated = result.allocated
    if allocated is None or len(allocated) != legs.num_rows:
        allocated = allocate(legs)
    cols = _Day.of(legs, allocated)
    names = _namer(registry)
    paths: list[Path] = []
    pages: list[tuple[Path, str]] = []
    pending: list[Chart] = []
    for party in sorted(result.positions):
        stem = out / f"statement-{day.isoformat()}-{party.tag}"
        paths.append(_write_csv(stem.with_suffix(".csv"), day, party, result, names))
        page = party_html(day, party, result, cols, names, pending)
        pages.append((stem.with_suffix(".html"), page))
    paths.append(_write_overview_csv(out / f"overview-{day.isoformat()}.csv", day, result, names))
    overview = overview_html(day, result, cols, names, pending)
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
    return re.sub("\x00([0-9]+)\x00", lambda m: pngs[int(m.group(1))], page)


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
    cols: _Day, mask: np.ndarray, names: Callable[[Party], str]
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


def mismatch_panels(cols: _Day, mask: np.ndarray) -> dict[str, list[tuple[str, int]]]:
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


CSS = """
body{font-family:-apple-system,'Segoe UI',Roboto,'Noto Sans','Noto Sans CJK SC',sans-serif;
margin:24px auto;max-width:1060px;color:#222;line-height:1.4}
h1{font-size:22px;margin-bottom:2px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ddd}
.sub{color:#666;margin-top:0}.num{text-align:right;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;font-size:13px}td,th{padding:3px 10px;border-bottom:1px solid #eee}
th{text-align:left;background:#f6f6f6}.pos{color:#2e7d32}.neg{color:#c62828}
.kpi{display:flex;gap:28px;margin:14px 0}
.kpi div{background:#f6f8fb;padding:10px 16px;border-radius:6px}
.kpi b{display:block;font-size:20px}figure{margin:14px 0}figure img{max-width:100%}
figcaption{font-size:12px;color:#666}
"""


def _fmt(fen: int, signed: bool = False) -> str:
    cls = "" if not signed else ("pos" if fen > 0 else "neg" if fen < 0 else "")
    text = ("+" if signed and fen > 0 else "") + cny(fen)
    return f'<span class="{cls}">{text}</span>' if cls else text


def _figure(pending: list[Chart] | None, name: str, chart: Chart, caption: str) -> str:
    """A figure with the chart's PNG, or, when charts are collected for rendering in parallel,
    a placeholder that ``_fill`` replaces once every chart is drawn."""
    if pending is None:
        data = base64.b64encode(render_chart(chart)).decode("ascii")
    else:
        data = f"\x00{len(pending)}\x00"
        pending.append(chart)
    return (
        f'<figure class="chart" data-chart="{name}"><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'
    )


def _page(title: str, subtitle: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{CSS}</style></head><body><h1>{html.escape(title)}"
        f'</h1><p class="sub">{html.escape(subtitle)}</p>{body}</body></html>\n'
    )


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(r)
        )
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def party_html(
    day: dt.date,
    party: Party,
    result: SettlementResult,
    cols: _Day,
    names: Callable[[Party], str],
    pending: list[Chart] | None = None,
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
        pay = f"pays {cny(payment.amount_fen)} CNY into the settlement account"
    else:
        pay = f"is paid {cny(payment.amount_fen)} CNY from the settlement account"
    kpis = (
        f'<div class="kpi"><div>net position<b>{_fmt(net, True)}</b></div>'
        f"<div>receivable<b>{_fmt(sum(a for *_, a in mine if a > 0))}</b></div>"
        f"<div>payable<b>{_fmt(-sum(a for *_, a in mine if a < 0))}</b></div>"
        f"<div>legs<b>{int(mask.sum()):,}</b></div></div><p>{html.escape(names(party))} {pay}.</p>"
    )
    table = _table(
        ["counterparty", "kind", "direction", "CNY"],
        [
            (
                html.escape(f"{names(cp)} ({cp.tag})"),
                ob.kind.name.lower(),
                "receivable" if a > 0 else "payable",
                _fmt(a, True),
            )
            for cp, ob, a in mine
        ],
        {3},
    )
    position_items = sorted(
        ((f"{'from' if a > 0 else 'to'} {cp.tag} {ob.kind.name.lower()}", a) for cp, ob, a in mine),
        key=lambda kv: -abs(kv[1]),
    )[:15] + [("NET POSITION", net)]
    cats, series = discount_series(party_discounts(party, result.discounts))
    figures = "".join(
        [
            _figure(
                pending,
                "revenue",
                Chart(
                    "breakdown_chart", "Allocated revenue (yuan)", revenue_panels(cols, mask, names)
                ),
                "Allocated revenue of the legs in this statement, by city, mode and medium",
            ),
            _figure(
                pending,
                "discounts",
                Chart("stacked_chart", "Discounts by component and funder (CNY)", cats, series),
                "Card, transfer and cap discounts, split by who funds them (tariff funders)",
            ),
            _figure(
                pending,
                "mismatches",
                Chart(
                    "breakdown_chart",
                    "Reader-debit mismatches, charged - computed (CNY)",
                    mismatch_panels(cols, mask),
                ),
                f"The {TOP} lines and devices with the largest mismatches; "
                "a reader on an old tariff shows here",
            ),
            _figure(
                pending,
                "position",
                Chart("signed_chart", "Net position (CNY)", position_items),
                "What the party is owed (green) and owes (red), and the net",
            ),
        ]
    )
    role = party.role.name.lower()
    return _page(
        f"Settlement statement: {names(party)}",
        f"{role} {party.tag} · service day {day.isoformat()} · {_entry_note(result)}",
        kpis + "<h2>Obligations</h2>" + table + "<h2>Charts</h2>" + figures,
    )


def overview_html(
    day: dt.date,
    result: SettlementResult,
    cols: _Day,
    names: Callable[[Party], str],
    pending: list[Chart] | None = None,
) -> str:
    everything = np.ones(cols.issuer.shape, dtype=bool)
    cities = _table(
        ["city", "legs", "base", "charged", "allocated", "discount", "mismatch"],
        [
            (
                html.escape(names(Party(PartyRole.GOVERNMENT, c.city)).removesuffix(" government")),
                f"{c.legs:,}",
                _fmt(c.base_fen),
                _fmt(c.charged_fen),
                _fmt(c.allocated_fen),
                _fmt(c.discount_fen),
                _fmt(c.mismatch_fen, True),
            )
            for c in result.city_summary
        ],
        {1, 2, 3, 4, 5, 6},
    )
    payments = _table(
        ["direction", "party", "CNY"],
        [
            (
                p.direction.name.lower().replace("_", " "),
                html.escape(f"{names(p.party)} ({p.party.tag})"),
                _fmt(p.amount_fen),
            )
            for p in result.payments
        ],
        {2},
    )
    positions = _table(
        ["party", "net position"],
        [
            (html.escape(f"{names(p)} ({p.tag})"), _fmt(v, True))
            for p, v in result.positions.items()
        ],
        {1},
    )
    pay_in = sum(p.amount_fen for p in result.payments if p.direction == Direction.PAY_IN)
    pay_out = sum(p.amount_fen for p in result.payments if p.direction == Direction.PAY_OUT)
    kpis = (
        f'<div class="kpi"><div>legs<b>{sum(c.legs for c in result.city_summary):,}</b></div>'
        f"<div>charged<b>{_fmt(sum(c.charged_fen for c in result.city_summary))}</b></div>"
        f"<div>pay-ins<b>{_fmt(pay_in)}</b></div><div>pay-outs<b>{_fmt(pay_out)}</b></div>"
        f"<div>centre keeps<b>{_fmt(pay_in - pay_out)}</b></div>"
        f"<div>positions sum<b>{_fmt(sum(result.positions.values()))}</b></div></div>"
    )
    cats, series = discount_series(result.discounts)
    figures = "".join(
        [
            _figure(
                pending,
                "positions",
                Chart(
                    "signed_chart",
                    "Net positions of all parties (CNY)",
                    [(f"{p.tag} {names(p)}", v) for p, v in result.positions.items()],
                ),
                "Every party's net position: green is paid out, red pays in",
            ),
            _figure(
                pending,
                "revenue",
                Chart(
                    "breakdown_chart",
                    "Allocated revenue of the day (CNY)",
                    revenue_panels(cols, everything, names),
                ),
                "All legs' allocated revenue by city, mode and medium",
            ),
            _figure(
                pending,
                "discounts",
                Chart("stacked_chart", "Discounts by component and funder (CNY)", cats, series),
                "All discounts, by who funds them",
            ),
            _figure(
                pending,
                "mismatches",
                Chart(
                    "breakdown_chart",
                    "Reader-debit mismatches, charged - computed (CNY)",
                    mismatch_panels(cols, everything),
                ),
                "Lines and devices with the largest mismatches across the circle",
            ),
        ]
    )
    return _page(
        f"Clearing centre overview {day.isoformat()}",
        f"Tongka settlement · {_entry_note(result)}",
        kpis
        + "<h2>Per city</h2>"
        + cities
        + "<h2>Charts</h2>"
        + figures
        + "<h2>Net positions</h2>"
        + positions
        + "<h2>Payment instructions</h2>"
        + payments,
    )


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _write_csv(
    path: Path, day: dt.date, party: Party, result: SettlementResult, names: Callable[[Party], str]
) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
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
                    cny(amount),
                ]
            )
        net = result.positions.get(party, 0)
        w.writerow([day.isoformat(), party.tag, names(party), "", "", "net", "net", net, cny(net)])
    tmp.replace(path)
    return path


def _write_overview_csv(
    path: Path, day: dt.date, result: SettlementResult, names: Callable[[Party], str]
) -> Path:
    payments = {p.party: p for p in result.payments}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
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
                    cny(net),
                    p.direction.name.lower() if p else "",
                    p.amount_fen if p else 0,
                ]
            )
    tmp.replace(path)
    return path
