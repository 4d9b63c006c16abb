"""Settling a service day as finance runs it: the reason, re-clearing a changed day, the run's
payment file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from clearing.day import clear_day, read_day_legs
from clearing.days import DayStatus, day_revision, day_status
from clearing.db import session_factory
from clearing.legs_store import legs_path, legs_revision, parts_manifest
from settlement.ledger import Scope, has_entries
from settlement.partials import SETTLEMENT_SUMS, legs_file_partials, read_day_partials
from settlement.payments import write_missing_run_files
from settlement.settle import SettlementResult, settle_day, settle_from_partials
from tariffs.load import TariffSet


@dataclass(frozen=True, slots=True)
class SettledDay:
    """What settling a day did: the settlement, whether the day was cleared again first, and
    the payment files written (the run's own, and any lost to a crash after a commit)."""

    result: SettlementResult
    recleared: bool
    payment_files: tuple[Path, ...]
    from_partials: bool = False  # settled from a partitioned clear's sums, no leg read


def default_reason(engine: Engine, day: dt.date) -> str:
    """SPEC §8: adjustments name their reason; a day settled before and changed since is
    settled again as a late batch, any other as the first settlement."""
    with session_factory(engine)() as session:
        changed = day_status(session, day) is DayStatus.NEEDS_SETTLEMENT
        settled_before = has_entries(session, day, Scope.DAY)
    return "late_batch" if settled_before and changed else "initial"


def settle(
    engine: Engine, home: Path, day: dt.date, tariffs: TariffSet, *, reason: str = "",
    clear_first: bool = False, progress: Callable[[str], None] | None = None,
    scheduler: str | None = None, client: Any = None,
) -> SettledDay:
    """Settle ``day`` from its complete legs: a day whose taps changed since it was cleared is
    cleared again first, so settlement never posts legs that miss taps (SPEC §4: never lost);
    then the run's payment instructions go to a file of their own (SPEC v1.2 §8).

    A day cleared on partitions (``tongka clear --partitions``) settles from the partial sums
    stored with its legs when they price the day's current revision: no leg is read
    (``settle_from_partials``, the same figures and ledger as from the legs). If the day
    changed since, it is cleared again the way it was: on as many partitions, on the same
    storage, on the cluster at ``scheduler`` or of ``client`` (a local one by default).

    ``clear_first`` also clears a day never cleared (the service's one-call settlement; the
    command line keeps ``tongka clear`` a step of its own). ``progress`` hears each step.
    """
    say = progress or (lambda _text: None)
    reason = reason or default_reason(engine, day)
    with session_factory(engine)() as session:
        revision = day_revision(session, day)
    cleared = legs_revision(home, day)
    recleared = cleared is not None and cleared != revision
    if recleared or (clear_first and cleared is None):
        how = partitioned_as(home, day) if recleared else None
        if how is None:
            say("clearing: matching and pricing the day's taps")
            revision = clear_day(home, day, tariffs, engine=engine).revision
        else:
            say(f"clearing: matching and pricing the day's taps on {how.partitions} partitions")
            revision = clear_day(home, day, tariffs, engine=engine, partitions=how.partitions,
                                 storage=how.storage, scheduler=scheduler, client=client,
                                 summary=SETTLEMENT_SUMS).revision
    # the stored sums of a partitioned clear, if they price the day as it is now
    partials = read_day_partials(home, day, revision=revision)
    if partials is not None:
        say("settling from the partitions' partial sums: obligations, netting and the "
            "journal entry")
        result = settle_from_partials(engine, day, partials, tariffs, reason=reason,
                                      revision=revision)
    else:
        say("settling: obligations, netting and the journal entry")
        result = _settle_from_legs(engine, home, day, tariffs, reason, revision)
    say("writing the run's payment file")
    files = write_missing_run_files(engine, home, tariffs.registry, scope=Scope.DAY, period=day)
    return SettledDay(result, recleared, tuple(files), partials is not None)


def _settle_from_legs(engine: Engine, home: Path, day: dt.date, tariffs: TariffSet, reason: str,
                      revision: int) -> SettlementResult:
    """Settle from the day's stored legs: a single legs file is summed a row group at a time
    (``legs_file_partials``: 18 columns, whole cards per group; the process peaks at 0.9 GB
    at 15M taps, where the whole table took 3.6 GB, issue 13), then posted as
    from a partitioned clear's sums (the same figures and ledger); the parts of a partitioned
    clear without sums, or a file not in card order, are read whole (``settle_day``). The
    streamed way's result has no per-leg ``allocated`` (its readers allocate again)."""
    if parts_manifest(home, day) is None:
        partials = legs_file_partials(legs_path(home, day), day)
        if partials is not None:
            return settle_from_partials(engine, day, partials, tariffs, reason=reason,
                                        revision=revision)
    return settle_day(engine, day, read_day_legs(home, day), tariffs, reason=reason,
                      revision=revision)


@dataclass(frozen=True, slots=True)
class Partitioned:
    """How a day's stored legs were cleared on partitions: what clearing it again needs."""

    partitions: int
    storage: str | None  # the directory or fsspec URL its parts are on; None: the data dir


def partitioned_as(home: Path, day: dt.date) -> Partitioned | None:
    """The partitions and storage of a day cleared on partitions (its manifest); None for a day
    cleared in one process (or never cleared)."""
    manifest = parts_manifest(home, day, resolve=False)
    if manifest is None:
        return None
    # older manifests name no count: one part file per partition (an empty one writes a file)
    partitions = int(manifest.get("partitions") or max(1, len(manifest["parts"])))
    return Partitioned(partitions, manifest.get("storage") or None)


def staleness(engine: Engine, home: Path, day: dt.date) -> str | None:
    """Why the stored legs of ``day`` no longer show the day (a report must say so), or None."""
    with session_factory(engine)() as session:
        revision = day_revision(session, day)
        status = day_status(session, day)
        settled_before = has_entries(session, day, Scope.DAY)
    cleared = legs_revision(home, day)
    if settled_before and status is DayStatus.NEEDS_SETTLEMENT:
        return (
            f"the taps of {day} changed since it was settled (a late or withdrawn batch): "
            f"these figures are not the settlement; run `tongka settle --date {day}` or "
            "report with --settle"
        )
    if cleared is not None and cleared != revision:
        return (
            f"the taps of {day} changed since it was cleared: these figures miss them; run "
            f"`tongka clear --date {day}` or report with --settle"
        )
    return None
