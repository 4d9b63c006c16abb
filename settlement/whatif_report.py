"""The what-if report (SPEC v1.2 §11): one HTML page with charts, and CSV files, in a directory.

Tables per party, city, mode, medium and product show current, proposed, difference and the
difference as a share; the changed legs get a histogram of the change per leg and a sample with
both fares and the step that moved them; whole months get their rebates. Amounts are written by
``settlement.amounts`` (integer fen, never a float); the page reuses the statements' base
template and style, so a what-if reads like the statements it anticipates.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
from collections.abc import Sequence
from pathlib import Path

import jinja2
from markupsafe import Markup
from matplotlib.figure import Figure

from clearing import files
from settlement.amounts import CURRENCY, yuan
from settlement.charts import signed_chart
from settlement.parties import parse_tag, party_name
from settlement.whatif import Comparison, WhatIfResult
from tariffs.registry import Registry
from tariffs.vocab import Media, Mode, Product

TEMPLATES = Path(__file__).with_name("templates")
HTML, CSV, LEGS_CSV, HISTOGRAM_CSV = ("whatif.html", "whatif.csv", "whatif-changed-legs.csv",
                                      "whatif-histogram.csv")
TABLES = (("party", "Per party"), ("city", "Per city (tariff area)"), ("mode", "Per mode"),
          ("medium", "Per medium"), ("product", "Per product (honoured)"),
          ("rebate", "Monthly rebates (whole months only)"))
HISTOGRAM_BINS = 24  # at most this many bars; one bar per value when there are fewer values


def write_report(result: WhatIfResult, registry: Registry, out_dir: Path) -> list[Path]:
    """Write the HTML page and the three CSV files into ``out_dir`` (created if missing)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_write_csv(out_dir / CSV, _csv_rows(result, registry)),
             _write_csv(out_dir / LEGS_CSV, _leg_rows(result)),
             _write_csv(out_dir / HISTOGRAM_CSV, [("change_fen", "legs"),
                                                  *result.histogram.items()])]
    page = out_dir / HTML
    files.write_text(page, render_html(result, registry))
    return [page, *paths]


def key_name(table: str, key: str, registry: Registry) -> str:
    """A row key in words: a party's or city's registry name, an enum's name in lower case."""
    if table in ("party", "rebate"):
        return "all" if key == "all" else party_name(parse_tag(key), registry)
    if table == "city":
        city = registry.cities.get(int(key))
        return f"{key} {city.name}" if city else key
    enum = {"mode": Mode, "medium": Media, "product": Product}.get(table)
    return key.lower() if enum else key


MEASURES = {"legs": "legs", "charged_fen": "charged revenue", "computed_fen": "computed fares",
            "discount_fen": "discounts, all", "subsidy_fen": "government subsidies",
            "fee_fen": "fees", "net_fen": "net position", "revenue_fen": "revenue",
            "rebate_fen": "rebates"}
COMPONENT_WORDS = {"card": "card discount", "transfer": "transfer discount", "cap": "cap discount"}


def measure_name(measure: str) -> str:
    """A measure in words: ``discount_card_government`` is "card discount, government-funded";
    a party's amounts are signed (+ received, - paid), SPEC §8's net position convention."""
    name, _, month = measure.partition(" ")
    parts = name.split("_")
    if len(parts) == 3 and parts[0] == "discount":
        words = f"{COMPONENT_WORDS.get(parts[1], parts[1])}, {parts[2]}-funded"
    else:
        words = MEASURES.get(name, name.replace("_", " "))
    return f"{words} {month}".strip()


def _csv_rows(result: WhatIfResult, registry: Registry) -> list[Sequence[object]]:
    rows: list[Sequence[object]] = [("table", "key", "name", "measure", "current", "proposed",
                                     "difference", "share_bp")]
    for r in result.rows:
        bp = r.share_bp
        rows.append((r.table, r.key, key_name(r.table, r.key, registry), r.measure, r.current,
                     r.proposed, r.difference, "" if bp is None else bp))
    return rows


def _leg_rows(result: WhatIfResult) -> list[Sequence[object]]:
    fields = ("day", "card_id", "issuer", "area", "operator", "line", "mode", "media",
              "honoured_product", "board_stop", "exit_stop", "board_ts_ms", "debit_kind",
              "current_computed_fen", "proposed_computed_fen", "current_charged_fen",
              "proposed_charged_fen", "rule")
    return [fields, *([getattr(leg, f) for f in fields] for leg in result.sample)]


def _write_csv(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    with files.atomic_file(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


# --------------------------------------------------------------------------- HTML


@functools.cache
def _templates() -> jinja2.Environment:
    """Autoescaped like the statements: a registry name can never inject markup."""
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True, keep_trailing_newline=True)


def _money(fen: int, signed: bool = False) -> Markup:
    text = yuan(fen, signed=signed)
    cls = "neg" if fen < 0 else "pos" if signed and fen > 0 else ""
    return Markup('<span class="{}">{}</span>').format(cls, text) if cls else Markup.escape(text)


def _share(r: Comparison) -> str:
    bp = r.share_bp
    if bp is None:
        return "new" if r.difference else ""
    whole, frac = divmod(abs(bp), 100)
    return f"{'-' if bp < 0 else '+' if bp else ''}{whole}.{frac:02d} %"


def _cells(r: Comparison) -> list[object]:
    """A row's four figures; counts (legs, cards) as plain integers, money as yuan."""
    if r.measure == "legs" or r.measure.startswith("cards"):
        return [f"{r.current:,}", f"{r.proposed:,}", f"{r.difference:+,}", _share(r)]
    return [_money(r.current), _money(r.proposed), _money(r.difference, signed=True), _share(r)]


def render_html(result: WhatIfResult, registry: Registry) -> str:
    sections = []
    for table, title in TABLES:
        rows = [[key_name(table, r.key, registry), measure_name(r.measure), *_cells(r)]
                for r in result.table(table) if r.current or r.proposed]
        sections.append({"title": title, "rows": rows})
    legs = result.get("total", "all", "legs").current
    figures = [
        _figure("net", "Change of net position over the range, per party",
                signed_chart("Net position: proposed - current",
                             _differences(result, "party", "net_fen", registry))),
        _figure("charged", "Change of charged revenue per city",
                signed_chart("Charged revenue: proposed - current",
                             _differences(result, "city", "charged_fen", registry))),
        _figure("histogram", "Change of computed fare per changed leg",
                histogram_chart(result.histogram)),
    ]
    totals = [(label, _money(result.get("total", "all", m).difference, signed=True))
              for m, label in (("charged_fen", "charged revenue"), ("discount_fen", "discounts"),
                               ("subsidy_fen", "subsidies"), ("fee_fen", "fees"))]
    sample = [[str(leg.day), leg.card_id, leg.issuer, key_name("city", str(leg.area), registry),
               Mode(leg.mode).name.lower(), Media(leg.media).name.lower(),
               Product(leg.honoured_product).name.lower(), leg.line,
               _money(leg.current_computed_fen), _money(leg.proposed_computed_fen),
               _money(leg.current_charged_fen), _money(leg.proposed_charged_fen), leg.rule]
              for leg in result.sample]
    return _templates().get_template("whatif.html.j2").render(
        currency=CURRENCY, stale=None,
        title=f"What-if {result.first} to {result.last}",
        subtitle=(f"{result.days} day(s), {result.taps:,} taps, {legs:,} legs; proposed tariffs "
                  f"{result.proposed_dir or '-'}. Both sides priced now from the stored taps "
                  "(SPEC §11); nothing was posted or stored."),
        totals=totals, figures=figures, sections=sections, sample=sample,
        changed=result.changed_legs, changed_charged=result.changed_charged,
        only_current=result.only_current, only_proposed=result.only_proposed,
        months=[f"{m:%Y-%m}" for m in result.months],
        histogram=[(yuan(d, signed=True), f"{n:,}") for d, n in result.histogram.items()],
    )


def _differences(result: WhatIfResult, table: str, measure: str, registry: Registry
                 ) -> list[tuple[str, int]]:
    rows = [r for r in result.table(table) if r.measure == measure and r.difference]
    rows.sort(key=lambda r: (-abs(r.difference), r.key))
    return [(key_name(table, r.key, registry), r.difference) for r in rows[:20]]


def _figure(name: str, caption: str, png: bytes) -> dict[str, str]:
    return {"name": name, "caption": caption, "data": base64.b64encode(png).decode("ascii")}


def histogram_bins(histogram: dict[int, int], bins: int = HISTOGRAM_BINS
                   ) -> list[tuple[int, int, int]]:
    """``(low, high, legs)`` bars of the change per leg in fen, both ends inclusive: one bar per
    value when there are few, else equal integer widths (no float in a money bound)."""
    if not histogram:
        return []
    values = sorted(histogram)
    if len(values) <= bins:
        return [(v, v, histogram[v]) for v in values]
    low, high = values[0], values[-1]
    width = -(-(high - low + 1) // bins)
    out = []
    for k in range(bins):
        a, b = low + k * width, min(high, low + (k + 1) * width - 1)
        if a > high:
            break
        out.append((a, b, sum(n for v, n in histogram.items() if a <= v <= b)))
    return out


def histogram_chart(histogram: dict[int, int]) -> bytes:
    """Bars of legs per change of computed fare (matplotlib, headless, like settlement.charts)."""
    fig = Figure(figsize=(7.5, 3.0))
    fig.subplots_adjust(left=0.1, right=0.98, top=0.88, bottom=0.3)
    ax = fig.subplots()
    ax.set_title(f"Legs per change of computed fare ({CURRENCY})", fontsize=10, loc="left")
    bars = histogram_bins(histogram)
    if not bars:
        ax.text(0.5, 0.5, "no leg changed fare", ha="center", va="center",
                transform=ax.transAxes, color="#777")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        labels = [yuan(a, signed=True) if a == b else f"{yuan(a, signed=True)}..{yuan(b)}"
                  for a, b, _ in bars]
        ax.bar(range(len(bars)), [n for _, _, n in bars],
               color=["#c62828" if b < 0 else "#2e7d32" for _, b, _ in bars])
        ax.set_xticks(range(len(bars)), labels, rotation=60, fontsize=7, ha="right")
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


__all__ = ["histogram_bins", "histogram_chart", "measure_name", "render_html", "write_report"]
