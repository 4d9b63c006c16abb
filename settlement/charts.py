"""Statement charts (matplotlib, headless): each function returns one PNG as bytes.

Amounts are plotted in integer fen and labelled in CNY by integer formatting
(``settlement.amounts``, the same writing as the statements' tables), so no float ever stands
for money; the figures are built without pyplot's global state (safe to call from
anywhere, no display needed).

Party names are Chinese and English (武汉公交集团 Wuhan Bus Group). Matplotlib's default font
has no CJK glyphs, so every text is drawn with ``font_family()``: the default font first (Latin
text looks as it always did), then the first CJK font installed, to which matplotlib falls back
glyph by glyph. The family is passed to each text, not set in the global rcParams, so threads
drawing at once never see each other's settings. Without a CJK font, labels keep their Latin
part only (``ascii_label``) rather than show empty boxes.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib import font_manager  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from settlement.amounts import yuan_tick  # noqa: E402

DPI = 90
POSITIVE, NEGATIVE, NEUTRAL = "#2e7d32", "#c62828", "#1f5fa8"
SERIES_COLOURS = ("#1f5fa8", "#ef8f00", "#6a3d9a", "#2e7d32", "#c62828", "#00838f")


def tick_label(position: float, _pos: object = None) -> str:
    """A money axis tick: positions are fen (matplotlib hands them over as floats, being axis
    coordinates, not money); whole yuan show without decimals so narrow panels stay legible,
    others to the fen, and a negative tick keeps its sign (-1.50, never floored to -2)."""
    return yuan_tick(int(round(position)))


_yuan = FuncFormatter(tick_label)


# The CJK fonts tried, in order: the same stack the web pages declare (tongka/web/static).
CJK_FONTS = ("Noto Sans CJK SC", "Source Han Sans SC", "PingFang SC", "Microsoft YaHei")


@functools.cache
def font_family() -> tuple[str, ...]:
    """The font family list every chart text is drawn with: matplotlib's default sans-serif
    font, then the first installed CJK font (none when none is installed). Only installed
    fonts are named, so matplotlib never warns about a missing one."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    cjk = next((name for name in CJK_FONTS if name in installed), None)
    return (str(matplotlib.rcParams["font.sans-serif"][0]),) + ((cjk,) if cjk else ())


def has_cjk_font() -> bool:
    return len(font_family()) > 1


def ascii_label(text: str) -> str:
    """The Latin part of a registry name, for when no CJK font is installed."""
    kept = "".join(ch for ch in text if ord(ch) < 128).strip()
    return kept or text


def chart_label(text: str) -> str:
    """A name as a chart shows it: whole when a CJK font can draw it, else its Latin part."""
    return text if has_cjk_font() else ascii_label(text)


def label_inches(labels: Iterable[str], size: float = 8.0) -> float:
    """About how wide the widest tick label is drawn, in inches, so a margin can hold it: a
    CJK character is about a square em, a Latin one a little over half. An estimate: measuring
    the text would cost a renderer pass, more than drawing the chart."""
    em = size / 72.0
    widest = max((sum(1.0 if ord(ch) > 0x2E7F else 0.6 for ch in chart_label(text))
                  for text in labels), default=0.0)
    return widest * em + 0.15


def _font() -> dict[str, Any]:
    return {"fontfamily": list(font_family())}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _empty(ax: Axes, text: str = "nothing to show") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777",
            **_font())
    ax.set_xticks([])
    ax.set_yticks([])


def _hbar(ax: Axes, title: str, items: Sequence[tuple[str, int]], signed: bool = False) -> None:
    ax.set_title(title, fontsize=10, loc="left", **_font())
    if not items:
        _empty(ax)
        return
    labels = [chart_label(k) for k, _ in items]
    values = [v for _, v in items]
    colours = [(POSITIVE if v >= 0 else NEGATIVE) if signed else NEUTRAL for v in values]
    ax.barh(range(len(values)), values, color=colours, height=0.7)
    ax.set_yticks(range(len(values)), labels, fontsize=8, **_font())
    ax.set_ylim(max(len(values), 4) - 0.5, -0.5)  # top to bottom; a lone bar stays bar-sized
    ax.xaxis.set_major_locator(MaxNLocator(3))
    ax.xaxis.set_major_formatter(_yuan)
    ax.tick_params(axis="x", labelsize=7)
    ax.axvline(0, color="#333", linewidth=0.6)
    ax.grid(axis="x", alpha=0.3)


def breakdown_chart(title: str, panels: Mapping[str, Sequence[tuple[str, int]]]) -> bytes:
    """Side-by-side horizontal bar panels (e.g. revenue by city, by mode, by medium)."""
    n = max(1, len(panels))
    fig = Figure(figsize=(3.6 * n, 3.0))
    fig.suptitle(title, fontsize=11, x=0.01, ha="left", **_font())
    # Fixed margins instead of tight_layout: a measured layout costs more than the drawing.
    fig.subplots_adjust(left=0.5 / n + 0.02, right=0.98, top=0.82, bottom=0.12, wspace=1.0)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, items) in zip(axes, panels.items(), strict=False):
        _hbar(ax, name, items)
    return _png(fig)


def stacked_chart(
    title: str, categories: Sequence[str], series: Mapping[str, Sequence[int]]
) -> bytes:
    """Stacked horizontal bars: one bar per category, one colour per series (e.g. funder)."""
    fig = Figure(figsize=(7.0, 0.9 + 0.45 * max(3, len(categories))))
    fig.subplots_adjust(left=0.16, right=0.97, top=0.85, bottom=0.14)
    ax = fig.subplots()
    ax.set_title(title, fontsize=11, loc="left", **_font())
    if not categories or not any(any(v for v in vals) for vals in series.values()):
        _empty(ax)
        return _png(fig)
    left = [0] * len(categories)
    for (name, values), colour in zip(series.items(), SERIES_COLOURS * 4, strict=False):
        ax.barh(range(len(categories)), values, left=left, label=name, color=colour)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.set_yticks(range(len(categories)), [chart_label(c) for c in categories], fontsize=8,
                  **_font())
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(6))
    ax.xaxis.set_major_formatter(_yuan)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(prop={"family": list(font_family()), "size": 8}, loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def signed_chart(
    title: str, items: Sequence[tuple[str, int]], *, height: float | None = None
) -> bytes:
    """Signed bars, green what is owed to the party, red what it owes (e.g. net positions)."""
    h = height or 0.9 + 0.3 * max(3, len(items))
    width = 7.5
    fig = Figure(figsize=(width, h))
    left = max(0.36, min(0.6, label_inches(k for k, _ in items) / width))
    fig.subplots_adjust(left=left, right=0.97, top=1 - 0.35 / h, bottom=0.35 / h)
    ax = fig.subplots()
    _hbar(ax, title, items, signed=True)
    return _png(fig)


@dataclass(frozen=True, init=False)
class Chart:
    """A chart to draw later, perhaps in another process: a chart function's name and arguments."""

    fn: str
    args: tuple[Any, ...]

    def __init__(self, fn: str, *args: Any) -> None:
        if fn not in CHARTS:
            raise ValueError(f"unknown chart {fn!r} (one of: {', '.join(CHARTS)})")
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "args", args)


CHARTS: dict[str, Callable[..., bytes]] = {
    "breakdown_chart": breakdown_chart,
    "stacked_chart": stacked_chart,
    "signed_chart": signed_chart,
}


def render_chart(chart: Chart) -> bytes:
    """Draw a ``Chart`` to PNG bytes (a module-level function, so worker processes can run it)."""
    return CHARTS[chart.fn](*chart.args)
