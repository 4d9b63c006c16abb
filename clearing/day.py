"""Clearing one service day: read its accepted taps, match and price them, store the legs.

The fast path prices by default; the reference is for audits and tests (``--reference``).
Legs are an immutable Parquet file per day, replaced whole when a day is cleared again.
Before any pricing, the day's taps are checked against the tariff set in force with the very
rules acceptance applied (``clearing.accept.day_rules``): if the set changed since and can no
longer price some of them, the day stays uncleared with ``DAY_UNPRICEABLE`` naming them
(SPEC §4), never a pricing traceback and never a fare of zero.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, select

from clearing import partition as scale
from clearing.accept import PRICING_CODES, day_rules
from clearing.batches import Batch
from clearing.days import day_revision
from clearing.db import session_factory
from clearing.errors import StateError
from clearing.legs import LEG_DICTIONARY_COLUMNS, LEG_SCHEMA, SIGNAL_LEG_COLUMNS
from clearing.legs_store import (  # re-exported: the day's readers import them from here
    PARTS_KEY,
    REVISION_KEY,
    SIGNALS_FIELD,
    legs_path,
    not_cleared,
    parts_manifest,
)
from clearing.parquet_io import write_atomic, write_atomic_stream
from clearing.partition import BatchFile, LegSummary, local_client, read_parts, scheduler_client
from clearing.reference import match_and_price
from clearing.taps import TAP_COLUMNS
from tariffs.load import TariffSet


@dataclass(frozen=True, slots=True)
class ClearResult:
    day: dt.date
    taps: int
    legs: int
    path: Path
    revision: int  # the day's revision (clearing.days) whose taps these legs price
    signals: int = 0  # SPEC §10 risk signals stored beside the legs (clearing.risk_store)
    # a partitioned clear's figures per partition and per batch file split
    # (clearing.partition.PartitionStats and Split)
    parts: tuple[Any, ...] = ()
    splits: tuple[Any, ...] = ()
    stages: tuple[tuple[str, float], ...] = ()  # a partitioned clear's wall time per stage


def day_revision_of(engine: Engine | None, day: dt.date) -> int:
    """The day's current revision; every stored batch that changes the day's taps bumps it."""
    if engine is None:
        return 0
    with session_factory(engine)() as session:
        return day_revision(session, day)


def price_taps(taps: pa.Table, tariffs: TariffSet, *, reference: bool = False) -> pa.Table:
    """Match and price a table of accepted taps with the fast path or the reference."""
    if reference:
        return match_and_price(taps, tariffs)
    # numba kernels (+0.21 s, -X importtime): clearing.day is imported by every reader of legs
    from clearing.fast import match_and_price_fast

    return match_and_price_fast(taps, tariffs)


def clear_day(
    data_dir: Path,
    day: dt.date,
    tariffs: TariffSet,
    *,
    reference: bool = False,
    engine: Engine | None = None,
    partitions: int = 0,
    scheduler: str | None = None,
    client: Any = None,
    storage: str | None = None,
    summary: LegSummary | None = None,
    range_taps: int | None = None,
) -> ClearResult:
    """Price every accepted tap of ``day`` and store the day's legs.

    ``partitions > 0`` clears that many card partitions on dask.distributed (see
    ``clearing.partition``; at most ``BUCKETS``): on ``client``, on the cluster at ``scheduler``
    (an address such as ``tcp://10.0.0.5:8786``), or on local worker processes. Workers read
    the batch files and write the bucket and legs files under ``storage`` (a directory or an
    fsspec URL every worker sees; the data directory by default), and ``summary`` (settlement's
    ``SETTLEMENT_SUMS``) is summed per partition and stored beside the legs, so the day settles
    from it. The partitions also compute the SPEC §10 signals (the card signals of their own
    cards, and per-device leg counts that this process adds up for DEBIT_MISMATCH), stored
    beside their legs and committed with them. This process reads no tap and no leg.

    A single-process clear prices about ``range_taps`` taps of whole card-days at a time
    (``clearing.fast.RangePricer``; ``RANGE_TAPS`` by default, a hook for tests) and streams
    the legs file; the signals get only the leg columns they read (``SIGNAL_LEG_COLUMNS``).
    """
    if partitions > 0 and not reference:
        return _clear_partitioned(data_dir, day, tariffs, engine=engine, partitions=partitions,
                                  scheduler=scheduler, client=client, storage=storage,
                                  summary=summary)
    # numba kernels (tapstore +0.38 s, risk_store +0.44 s): clearing.day is imported by
    # every reader of legs (reports, the service), which never price
    from clearing.risk_store import read_day_signals, start_replay_lookback, write_day_signals

    revision = day_revision_of(engine, day)  # read before the taps: a later batch bumps it
    if reference:
        return _clear_reference(data_dir, day, tariffs, engine, revision)
    from clearing.sorted_day import read_sorted_day  # numba kernels, as above

    # the day's taps go straight into pricing's sorted records, a row group at a time: no
    # table of them is held beside the records (issue 13: 1.2 GB at fifteen million taps)
    taps = read_sorted_day(data_dir, day, engine)
    check_pairs_priceable(data_dir, day, taps.pairs, tariffs, engine=engine)
    # SPEC §10: CARD_SEQ_REPLAY's lookback needs only the taps: it runs on a thread while the
    # day is priced and its legs written (risk_store.ReplayLookback), and stops if they fail
    with start_replay_lookback(data_dir, day, taps, engine=engine) as lookback:
        legs, boards, path = _price_and_write(data_dir, day, taps.records, tariffs, revision,
                                              range_taps)
        _remove_local_runs(data_dir, day)  # a partitioned clear's parts are superseded now
        n_taps, n_legs = taps.num_rows, legs.num_rows
        # SPEC §10: signals come after pricing and never feed back into legs, fares or ledger
        write_day_signals(data_dir, day, taps, legs, engine=engine, lookback=lookback,
                          boards=boards)
    del legs, boards, taps  # gone before the result is built
    signals = read_day_signals(data_dir, day)
    return ClearResult(day, n_taps, n_legs, path, revision,
                       signals.num_rows if signals is not None else 0)


def _clear_reference(data_dir: Path, day: dt.date, tariffs: TariffSet, engine: Engine | None,
                     revision: int) -> ClearResult:
    """``clear_day(reference=True)``: the plain twins on the day's taps read as one table."""
    from clearing.risk_store import read_day_signals, write_day_signals  # as in clear_day
    from clearing.tapstore import read_day_taps

    full = read_day_taps(data_dir, day, engine, optional=True)  # balance_fen for risk only
    taps = full.select(list(TAP_COLUMNS))  # pricing never sees balance_fen (SPEC v1.2 §3)
    check_day_priceable(data_dir, day, taps, tariffs, engine=engine)
    legs = price_taps(taps, tariffs, reference=True).replace_schema_metadata(
        {REVISION_KEY: str(revision).encode()})
    path = write_atomic(legs, legs_path(data_dir, day),
                        use_dictionary=list(LEG_DICTIONARY_COLUMNS))
    _remove_local_runs(data_dir, day)
    write_day_signals(data_dir, day, full, legs, engine=engine, reference=True)
    signals = read_day_signals(data_dir, day)
    return ClearResult(day, taps.num_rows, legs.num_rows, path, revision,
                       signals.num_rows if signals is not None else 0)


def _price_and_write(data_dir: Path, day: dt.date, records: np.ndarray, tariffs: TariffSet,
                     revision: int, range_taps: int | None
                     ) -> tuple[pa.Table, np.ndarray, Path]:
    """Price the day's sorted records a range of cards at a time and stream the legs file.

    Each range's legs are written as they come and dropped: the day's whole leg table (144
    bytes a leg) is never held, only ``SIGNAL_LEG_COLUMNS`` (42) for the signals. The file
    is the one ``write_atomic`` writes of the whole table (same rows, order, row groups and
    revision), under a temporary name until complete. Returns (the signals' leg columns with
    the revision, each leg's boarding record (``RangePricer.boards``), the file).
    """
    from clearing.fast import RangePricer  # numba kernels, as in clear_day

    pricer = RangePricer(None, tariffs, keep=SIGNAL_LEG_COLUMNS, range_taps=range_taps,
                         records=records)
    metadata = {REVISION_KEY: str(revision).encode()}
    path = write_atomic_stream(pricer.legs(), LEG_SCHEMA.with_metadata(metadata),
                               legs_path(data_dir, day),
                               use_dictionary=list(LEG_DICTIONARY_COLUMNS))
    return pricer.kept().replace_schema_metadata(metadata), pricer.boards(), path


MAX_LISTED = 20  # taps named in a DAY_UNPRICEABLE message; the rest are counted


@dataclass(frozen=True, slots=True)
class UnpriceableTap:
    """A stored tap the tariff set in force cannot price, and where it came from.

    The tap store keeps a batch's accepted taps in file order but not their source rows, so
    ``row`` is the tap's 0-based position among its batch's stored taps; the device key and
    time find it in the source file.
    """

    code: str  # NO_TARIFF_VERSION or UNPRICEABLE_LINE (the acceptance codes, SPEC §4)
    batch_id: int | None  # None when the day was read without a database
    batch_file: str  # the batch's source file name (or stored file without a database)
    row: int  # position among the batch's stored (accepted) taps
    operator: int
    line: int
    device_id: int
    device_seq: int
    ts_ms: int


class DayUnpriceableError(StateError):
    """Stored taps of a day that the tariff set in force cannot price (SPEC §4).

    A state conflict (exit 3), not an invalid tariff set (exit 4): the set loads and is valid,
    but it no longer covers taps accepted under an earlier one. The day stays uncleared until
    the tariff set covers them again or their batches are withdrawn.
    """

    code = "DAY_UNPRICEABLE"

    def __init__(self, message: str, taps: tuple[UnpriceableTap, ...], count: int) -> None:
        super().__init__(message)
        self.taps = taps  # the first MAX_LISTED
        self.count = count  # all of them


def check_day_priceable(
    data_dir: Path, day: dt.date, taps: pa.Table, tariffs: TariffSet, *,
    engine: Engine | None = None,
) -> None:
    """Raise ``DayUnpriceableError`` if ``tariffs`` cannot price some of the day's stored taps.

    One implementation of the rule: the acceptance checks' own ``day_rules`` (SPEC §4), so a
    day whose taps were accepted under this tariff set always passes.
    """
    if taps.num_rows == 0:
        return
    rules = day_rules(tariffs, day)
    # A tap's status is a function of its (operator, line) alone: the day's hundred or so
    # distinct pairs answer for its millions of taps (0.15 s against 0.9-1.9 s and 400 MB of
    # temporaries at 10M taps, issue 13); the taps are only gone through when a pair fails.
    pairs = pa.table({"operator": taps.column("operator"), "line": taps.column("line")}
                     ).group_by(["operator", "line"]).aggregate([])
    if not rules.status(np.asarray(pairs.column("operator").to_numpy()),
                        np.asarray(pairs.column("line").to_numpy())).any():
        return
    status = rules.status(
        np.asarray(taps.column("operator").to_numpy()), np.asarray(taps.column("line").to_numpy()))
    bad = np.flatnonzero(status)
    if len(bad) == 0:
        return
    listed = bad[:MAX_LISTED]
    rows = taps.take(pa.array(listed)).select(
        ["operator", "line", "device_id", "device_seq", "ts_ms"]).to_pylist()
    where = _tap_sources(data_dir, day, engine, taps.num_rows)
    found = tuple(UnpriceableTap(PRICING_CODES[int(status[i])], *where(int(i)), **r)
                  for i, r in zip(listed.tolist(), rows, strict=True))
    raise DayUnpriceableError(_unpriceable_message(day, found, len(bad)), found, len(bad))


def check_pairs_priceable(data_dir: Path, day: dt.date, pairs: tuple[np.ndarray, np.ndarray],
                          tariffs: TariffSet, *, engine: Engine | None = None) -> None:
    """``check_day_priceable`` from the day's distinct (operator, line) pairs alone (a tap's
    status is a function of its pair): only when one fails are the taps read, to name them."""
    if len(pairs[0]) == 0:
        return
    if not day_rules(tariffs, day).status(np.asarray(pairs[0]), np.asarray(pairs[1])).any():
        return
    from clearing.tapstore import read_day_taps  # numba kernels (+0.38 s), as in clear_day

    check_day_priceable(data_dir, day, read_day_taps(data_dir, day, engine), tariffs,
                        engine=engine)


def _unpriceable_message(day: dt.date, taps: tuple[UnpriceableTap, ...], count: int) -> str:
    """Every listed tap by batch and row, then the two ways out."""
    lines = [f"service day {day} cannot be cleared: {count} accepted tap(s) cannot be priced "
             "by the tariff set in force (SPEC §4):"]
    for t in taps:
        batch = f"batch {t.batch_id} ({t.batch_file})" if t.batch_id is not None else (
            f"batch file {t.batch_file}")
        lines.append(f"  {batch} stored tap {t.row}: {t.code}, operator {t.operator} line "
                     f"{t.line} device {t.device_id} seq {t.device_seq} ts_ms {t.ts_ms}")
    if count > len(taps):
        lines.append(f"  ... and {count - len(taps)} more")
    ids = sorted({t.batch_id for t in taps if t.batch_id is not None})
    withdraw = (f"`tongka batches withdraw {ids[0]}`" if len(ids) == 1 else
                "`tongka batches withdraw ID` for each batch named" if ids else
                "`tongka batches withdraw ID`")
    lines.append(f"Fix the tariff set (a version in force on {day} for each tap's area, pricing "
                 f"its line), or withdraw the batch: {withdraw}. The day stays uncleared "
                 "until then.")
    return "\n".join(lines)


Source = tuple[int | None, str, int]  # (batch id, batch file, row among its stored taps)


def _tap_sources(data_dir: Path, day: dt.date, engine: Engine | None, n_taps: int
                 ) -> Callable[[int], Source]:
    """A function from a position in ``read_day_taps``'s table to its batch and row.

    ``read_day_taps`` concatenates the day's batch files in acceptance order; this lists the
    same files in the same order with their row counts (Parquet footers only). If a batch
    came or went meanwhile (the counts no longer add up) no position is guessed.
    """
    from clearing import tapstore  # numba kernels (+0.38 s), as in clear_day

    root = Path(data_dir)
    files: list[tuple[int | None, str, Path]] = []
    if engine is not None:
        with session_factory(engine)() as session:
            rels = [rel for _, _, rel in tapstore._committed_files(session, [day])]
            named = {str(b.tap_path): (b.id, b.source_name) for b in session.scalars(
                select(Batch).where(Batch.tap_path.in_(rels)))}
        files = [(*named.get(rel, (None, rel)), root / rel) for rel in rels]
    else:
        files = [(None, f.relative_to(root).as_posix(), f)
                 for f in tapstore.day_files_on_disk(root, day)]
    counts = [pq.read_metadata(f).num_rows if f.is_file() else 0 for _, _, f in files]
    starts = np.cumsum([0, *counts])
    consistent = int(starts[-1]) == n_taps

    def where(i: int) -> Source:
        if not consistent:
            return None, "(the day's batches changed while clearing: clear again)", -1
        k = int(np.searchsorted(starts, i, side="right")) - 1
        batch_id, name, _ = files[k]
        return batch_id, name, i - int(starts[k])

    return where


def _clear_partitioned(
    data_dir: Path, day: dt.date, tariffs: TariffSet, *, engine: Engine | None, partitions: int,
    scheduler: str | None, client: Any, storage: str | None, summary: LegSummary | None,
) -> ClearResult:
    """The partitioned clear's coordinator: list the batch files, run the two stages on the
    cluster, and commit by replacing ``legs.parquet`` with the manifest of the run's parts."""
    scale.require_dask()
    start = time.perf_counter()
    revision = day_revision_of(engine, day)  # read before the batches: a later batch bumps it
    batches = _day_batch_files(data_dir, day, engine)
    earlier = _earlier_batch_files(data_dir, day, engine)
    url = storage or str(data_dir)
    listed = time.perf_counter() - start
    with _cluster(client, scheduler, partitions) as c:
        connected = time.perf_counter()
        done = scale.clear_on_cluster(
            c, url, day, [scale.BatchFile(rel, seq, rows) for rel, seq, _, _, rows in batches],
            tariffs, partitions, revision, summary, MAX_LISTED, earlier=earlier)
    if done.unpriceable_count:
        scale.remove_run(url, day, done.run)  # the day stays as it was (uncleared, or not)
        found = tuple(UnpriceableTap(PRICING_CODES[status], batches[b][2], batches[b][3], row,
                                     operator, line, device, seq, ts)
                      for status, b, row, operator, line, device, seq, ts, _
                      in done.unpriceable(MAX_LISTED))
        raise DayUnpriceableError(_unpriceable_message(day, found, done.unpriceable_count),
                                  found, done.unpriceable_count)
    metadata = {REVISION_KEY: str(revision).encode(), PARTS_KEY: json.dumps(
        {"storage": storage, "run": done.run, "parts": [p.stats.path for p in done.parts],
         "partitions": partitions,
         SIGNALS_FIELD: done.signal_paths}).encode()}
    if summary is not None:
        metadata[summary.key] = summary.dumps(done.summary)
    path = write_atomic(LEG_SCHEMA.empty_table().replace_schema_metadata(metadata),
                        legs_path(data_dir, day))  # the commit: legs and signals together
    _supersede_signals(data_dir, day, engine)
    committed = time.perf_counter()
    scale.remove_runs(url, day, keep=done.run)
    last = max((s for _, s, _, _, _ in batches if s is not None), default=0)
    scale.remove_stale_splits(url, day, {s.key for s in done.splits}, last)
    ran = sum(t for _, t in done.seconds)
    stages = (("list", listed), ("connect", connected - start - listed), *done.seconds,
              ("commit", committed - connected - ran), ("tidy", time.perf_counter() - committed))
    return ClearResult(day, done.taps, done.legs, path, revision, done.signals,
                       tuple(p.stats for p in done.parts), done.splits, stages)


@contextmanager
def _cluster(client: Any, scheduler: str | None, partitions: int) -> Iterator[Any]:
    """The given client (left open), a client of the cluster at ``scheduler``, or a local one."""
    if client is not None:
        yield client
        return
    if scheduler:
        with scheduler_client(scheduler) as c:
            yield c
        return
    with local_client(max(1, min(partitions, os.cpu_count() or 1))) as c:
        yield c


def _day_batch_files(data_dir: Path, day: dt.date, engine: Engine | None
                     ) -> list[tuple[str, int | None, int | None, str, int]]:
    """(file under the data directory, day_seq, batch id, batch file name, taps) of the day's
    committed batches in acceptance order: the database's list, or the directory's without one
    (as ``read_day_taps`` reads them; the taps from each file's footer)."""
    from clearing import tapstore  # numba kernels (+0.38 s), as in clear_day

    if engine is None:
        root = Path(data_dir)
        on_disk = tapstore.day_files_on_disk(root, day)
        return [(f.relative_to(root).as_posix(), None, None, f.relative_to(root).as_posix(),
                 pq.read_metadata(f).num_rows) for f in on_disk]
    with session_factory(engine)() as session:
        files = tapstore._committed_files(session, [day])
        named = {str(b.tap_path): (b.id, b.source_name, b.accepted) for b in session.scalars(
            select(Batch).where(Batch.tap_path.in_([rel for _, _, rel in files])))}
    return [(rel, seq, *named[rel]) for _, seq, rel in files]


def _earlier_batch_files(data_dir: Path, day: dt.date, engine: Engine | None
                         ) -> list[Any]:
    """The stored batch files a replay into ``day`` reaches (``risk.replay_days``), oldest day
    first and in acceptance order within a day, as ``partition.BatchFile``s naming their day:
    the files ``clearing.risk_store.earlier_keys`` reads for the single-process clear (the
    database's live committed batches, or the files on disk without one)."""
    # numba kernels (tapstore +0.38 s, risk +0.45 s), as in clear_day
    from clearing import tapstore
    from clearing.risk import replay_days

    first, last = replay_days(day)
    days = [first + dt.timedelta(days=k) for k in range((last - first).days + 1)]
    root = Path(data_dir)
    if engine is None:
        return [BatchFile(f.relative_to(root).as_posix(), None, pq.read_metadata(f).num_rows, d)
                for d in days for f in tapstore.day_files_on_disk(root, d)]
    with session_factory(engine)() as session:
        files = tapstore._committed_files(session, days)
        rows = dict(session.execute(select(Batch.tap_path, Batch.accepted).where(
            Batch.tap_path.in_([rel for _, _, rel in files]))).all())
    return [BatchFile(rel, seq, int(rows[rel]), d) for d, seq, rel in files]


def _supersede_signals(data_dir: Path, day: dt.date, engine: Engine | None) -> None:
    """After a partitioned clear's commit: the day's signals are its run's parts, named in
    the manifest (``risk_store.read_day_signals`` reads them); a single-process clear's file
    is stale, so it goes, and the deny lists holding the day are written again."""
    from clearing.risk_store import signals_path, write_denylists_from  # numba kernels (+0.44 s)

    signals_path(data_dir, day).unlink(missing_ok=True)
    write_denylists_from(data_dir, day, engine=engine)


def _remove_local_runs(data_dir: Path, day: dt.date) -> None:
    """After a single-process clear: the part files of an earlier partitioned clear of the day
    in the data directory (parts on other storage go with the next partitioned clear)."""
    runs = legs_path(data_dir, day).parent
    if runs.is_dir():
        for d in runs.glob("run=*"):
            shutil.rmtree(d, ignore_errors=True)


def read_day_legs(data_dir: Path, day: dt.date) -> pa.Table:
    """The stored legs of a cleared day; a day never cleared is a StateError naming the fix.

    A day cleared on partitions is read from its part files, in the canonical order of a
    single-process clear (``clearing.legs.LEG_SORT_KEYS``).
    """
    path = legs_path(data_dir, day)
    if not path.exists():
        raise not_cleared(day)
    manifest = parts_manifest(data_dir, day)
    if manifest is None:
        return pq.read_table(path, schema=LEG_SCHEMA)
    return read_parts(manifest["storage"], manifest["parts"])
