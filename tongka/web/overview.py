"""The finance overview of a day as a document of its own: the statements' overview page
(``settlement.statements.overview_html``: per-city table, risk signals, the four charts, net
positions, payment instructions), computed as ``tongka report`` computes it (a dry-run
settlement of the stored legs, nothing posted) and kept per legs revision.

Only the overview is drawn (four charts), not every party's statement: ``write_statements``
would draw four charts for each of some forty parties, which takes a minute on a busy machine.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict

from clearing.day import read_day_legs
from clearing.legs_store import legs_revision
from clearing.risk_store import read_day_signals
from settlement.apportion import allocate
from settlement.parties import Party, party_name
from settlement.settle import settle_day

# The day's leg columns as overview_html takes them; private in settlement.statements (a
# public name for it is requested there), so the import names what it is.
from settlement.statements import DayColumns, overview_html, signals_by_kind_and_city
from tongka.service.centre import Centre
from tongka.settling import staleness

KEEP = 4  # documents kept (each a few hundred kB of inline PNG)
# Added to the document's head when the pages serve it: phones get a readable width.
HEAD = ('<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/static/statement-frame.css" data-frame-style="1">')


class Overviews:
    """Rendered overview documents by (day, legs revision, staleness warning)."""

    def __init__(self) -> None:
        self._docs: OrderedDict[tuple[dt.date, int | None, str | None], str] = OrderedDict()
        self._lock = threading.Lock()  # one rendering at a time: it is CPU-bound anyway

    def document(self, centre: Centre, day: dt.date) -> str:
        """The day's overview; StateError DAY_NOT_CLEARED for a day never cleared."""
        stale = staleness(centre.engine, centre.home, day)
        key = (day, legs_revision(centre.home, day), stale)
        with self._lock:
            if key in self._docs:
                self._docs.move_to_end(key)
                return self._docs[key]
            doc = framed(_render(centre, day, stale))
            self._docs[key] = doc
            while len(self._docs) > KEEP:
                self._docs.popitem(last=False)
            return doc


def _render(centre: Centre, day: dt.date, stale: str | None) -> str:
    registry = centre.tariffs.registry
    legs = read_day_legs(centre.home, day)
    result = settle_day(centre.engine, day, legs, centre.tariffs, dry_run=True)
    allocated = result.allocated
    if allocated is None or len(allocated) != legs.num_rows:
        allocated = allocate(legs)

    def names(p: Party) -> str:
        return party_name(p, registry)

    signals = read_day_signals(centre.home, day)
    return overview_html(day, result, DayColumns.of(legs, allocated), names, stale=stale,
                         risk=signals_by_kind_and_city(signals, names))


def framed(document: str) -> str:
    """The statement document with the pages' viewport and narrow-screen style in its head."""
    return document.replace("</head>", HEAD + "</head>", 1)
