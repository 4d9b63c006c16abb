"""Where risk signals live: a Parquet file beside each day's legs, and the daily deny list.

``legs/day=D/signals.parquet`` holds the SPEC §10 signals of service day D (``clearing.risk``),
replaced whole, atomically, whenever the day is cleared again; ``denylist/D.csv`` is the deny
list readers download for day D, less what issuers cleared (``clearing.risk_clearances``;
``refresh_denylists`` rewrites the lists a clearing changes). ``risk_summary`` is the body of
``tongka risk --date D``: like statements, it counts the signals as they happened, clearings
or not.
CARD_SEQ_REPLAY reads the card keys of the stored taps of the days a replay reaches
(``earlier_keys``; ``risk.replay_days``: from ``REPLAY_REACH_DAYS`` back to two days back):
each day's key digest (``clearing.risk_digest``, written by that day's clear) where it still
describes the day's stored taps, the Parquet files themselves where not. The lookback needs
only the day's taps: ``start_replay_lookback`` runs it on a thread while the day is priced
and its legs written, and ``write_day_signals(lookback=...)`` joins it.
"""

from __future__ import annotations

import csv
import datetime as dt
import fcntl
import io
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import Engine, select

from clearing import risk_digest, tapstore
from clearing.batches import Batch, BatchStatus
from clearing.day import read_day_legs
from clearing.days import day_revision
from clearing.db import session_factory
from clearing.errors import StateError
from clearing.legs_store import REVISION_KEY, SIGNALS_FIELD, legs_revision, parts_manifest
from clearing.parquet_io import TMP_SUFFIX, write_atomic
from clearing.partition import read_signal_parts
from clearing.read_ahead import read_ahead
from clearing.risk import (
    DENY_KINDS,
    SIGNAL_COLUMNS,
    SIGNAL_SCHEMA,
    EarlierKeys,
    Replays,
    RiskKind,
    day_signals,
    record_signals,
    replay_days,
    replay_evidence,
    stop_coordinates,
)
from clearing.risk_clearances import (
    CardKey,
    Clearance,
    clearances,
    cleared_through,
    is_cleared,
)
from clearing.risk_digest import DayFile, DayHashes, EarlierDigest
from clearing.sorted_day import SortedDay, read_sorted_day
from clearing.tapstore import CARD_KEY, DEVICE_KEY

DENY_WINDOW_DAYS = 30  # SPEC §10: signals of days [D-29, D]
DENYLIST_DIR = "denylist"
DENYLIST_FIELDS = ("issuer", "card_id", "kinds", "first_signal", "last_signal")


def signals_path(data_dir: Path, day: dt.date) -> Path:
    return Path(data_dir) / "legs" / f"day={day.isoformat()}" / "signals.parquet"


def denylist_path(data_dir: Path, day: dt.date) -> Path:
    return Path(data_dir) / DENYLIST_DIR / f"{day.isoformat()}.csv"


# ---------------------------------------------------------------------------------------------
# Earlier days' keys (CARD_SEQ_REPLAY)


def _earlier_files(data_dir: Path, day: dt.date, engine: Engine | None
                   ) -> list[tuple[dt.date, Path]]:
    """The stored tap files of the days a replay into ``day`` reaches (``risk.replay_days``),
    in acceptance order per day.

    With an engine the committed, live batches say which (as ``read_day_taps`` does);
    without one, the files on disk.
    """
    first, last = replay_days(day)
    root = Path(data_dir)
    if engine is not None:
        with session_factory(engine)() as session:
            days = sorted(session.scalars(
                select(Batch.service_day).where(Batch.service_day >= first,
                                                Batch.service_day <= last,
                                                Batch.status != BatchStatus.WITHDRAWN).distinct()))
            return [(d, root / rel) for d, _, rel in tapstore._committed_files(session, days)]
    out: list[tuple[dt.date, Path]] = []
    for back in range((last - first).days, -1, -1):
        when = last - dt.timedelta(days=back)
        out.extend((when, f) for f in tapstore.day_files_on_disk(root, when))
    return out


def earlier_keys(data_dir: Path, day: dt.date, engine: Engine | None = None, *,
                 digests: bool = False) -> Iterator[EarlierKeys | EarlierDigest]:
    """The card keys of every tap accepted on the days a replay into ``day`` reaches, a row
    group at a time (SPEC §4: a key seen again two or more days apart is a replay, not a
    duplicate; ``risk.replay_days`` bounds how far back). Like de-duplication's key index,
    memory never grows with history, and time grows with the reach, not with history.

    Only the card key is decoded for every row; a chunk's device key (evidence) is read for
    the rows that replay, when there are some. With ``digests``, a day whose key digest is
    still trusted (``risk_digest.trusted``: written at the revision its legs carry, over the
    very files listed now) comes as one ``EarlierDigest`` instead of its decoded keys.
    """
    files = _earlier_files(data_dir, day, engine)
    if not digests:
        return _read_ahead(_stored_keys(files))
    return _read_ahead(_digests_or_keys(Path(data_dir), files))


def _digests_or_keys(root: Path, files: list[tuple[dt.date, Path]]
                     ) -> Iterator[EarlierKeys | EarlierDigest]:
    """Per earlier day (in order): its trusted digest, or its stored keys."""
    days = sorted({when for when, _ in files})
    for when in days:
        mine = [(w, p) for w, p in files if w == when]
        rels = [p.relative_to(root).as_posix() for _, p in mine]
        digest = risk_digest.trusted(root, when, rels, legs_revision(root, when))
        if digest is not None:
            yield digest
        else:
            yield from _stored_keys(mine)


def _stored_keys(files: list[tuple[dt.date, Path]]) -> Iterator[EarlierKeys | EarlierDigest]:
    for when, path in files:
        if not path.is_file():
            continue  # a crash orphan's absence is not evidence; clearing reads the day's own
        stored = pq.ParquetFile(path)
        for group in range(stored.num_row_groups):
            keys = stored.read_row_group(group, columns=list(CARD_KEY))
            yield EarlierKeys(when, {c: np.ascontiguousarray(keys.column(c).to_numpy())
                                     for c in CARD_KEY},
                              partial(_device_rows, path, group))


READ_AHEAD = 2  # decoded key chunks waiting for the probe: memory stays a few chunks


def _read_ahead(chunks: Iterator[EarlierKeys | EarlierDigest]
                ) -> Iterator[EarlierKeys | EarlierDigest]:
    """``chunks`` decoded on a second thread while the caller probes the previous ones.

    Decoding (pyarrow) and probing (numba) both release the GIL, and each takes about half
    of the replay lookback: side by side they take the longer of the two. At most
    ``READ_AHEAD`` chunks wait; an error in the reader is raised here; a caller that stops
    early stops the reader at its next chunk.
    """
    return read_ahead(chunks, depth=READ_AHEAD, name="risk-replay-keys")


def _device_rows(path: Path, group: int, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The device key of some rows of one row group of a stored tap file."""
    keys = pq.ParquetFile(path).read_row_group(group, columns=list(DEVICE_KEY))
    return {c: np.asarray(keys.column(c).to_numpy())[rows] for c in DEVICE_KEY}


# ---------------------------------------------------------------------------------------------
# The replay lookback on a thread of its own, while the day is priced


class _Cancelled(Exception):
    """Raised inside a cancelled lookback's thread between two earlier days: it stops there."""


class ReplayLookback:
    """CARD_SEQ_REPLAY's lookback for one day's taps, run on a thread of its own from the
    moment they are read (a ``SortedDay``: from the moment they are sorted): the day's card
    keys hashed and sorted (from the records, or from the Arrow columns,
    ``DayHashes.of_table``), tested against every earlier day's digest or probed with its
    streamed keys, hits resolved against the Parquet files (``risk.replay_evidence``); for a
    ``SortedDay`` the day's per-card signals are walked here too (``walked``).

    It needs nothing pricing makes, and its kernels (numba ``nogil``), pyarrow's reads and
    zstd release the GIL, so it runs beside pricing and the legs' Parquet write (which leave a
    core idle for seconds at ten million taps); ``write_day_signals(lookback=...)`` then only
    joins it. It reads and never writes. ``result`` raises whatever the thread raised;
    ``cancel`` (or leaving it as a context manager) stops the thread at its next earlier day
    and waits for it, so a clear that fails before its signals leaves no thread behind.
    """

    def __init__(self, data_dir: Path, day: dt.date, taps: pa.Table | SortedDay,
                 engine: Engine | None, *, start: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.day = day
        # the columns the lookback reads (and the day's signals keep): the clear may drop
        # the others meanwhile, and this must not keep them alive
        self.taps: pa.Table | SortedDay | None = taps if isinstance(taps, SortedDay) else (
            taps.select([c for c in taps.column_names if c in (*SIGNAL_COLUMNS, "stop")]))
        self.engine = engine
        self._stop = threading.Event()
        self._done: tuple[DayHashes, Replays] | None = None
        # the day's per-card signals (risk.record_signals), walked on this thread too when the
        # taps are a SortedDay: they need only its records, so they run beside pricing
        self.walked: np.ndarray | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if not start:  # the reference twin's clear: write_day_signals does it all itself
            return
        try:  # the listing (a database query) on the caller's thread, as without a lookback
            earlier = earlier_keys(data_dir, day, engine, digests=True)
        except Exception as error:  # raised where the lookback's result is asked for
            self._error = error
            return
        self._thread = threading.Thread(target=self._run, args=(earlier,), daemon=True,
                                        name=f"risk-replay-lookback-{day.isoformat()}")
        self._thread.start()

    def _run(self, earlier: Iterator[EarlierKeys | EarlierDigest]) -> None:
        _lower_priority(LOOKBACK_NICE)
        taps = self.taps
        assert taps is not None  # released only once the thread has ended
        try:
            try:
                hashes = (DayHashes.of(records=taps.records) if isinstance(taps, SortedDay)
                          else DayHashes.of_table(taps))
                replayed = replay_evidence(taps, self._until_cancelled(earlier), hashes)
            finally:
                close = getattr(earlier, "close", None)
                if close is not None:  # stops the read-ahead thread of earlier_keys
                    close()
            if isinstance(taps, SortedDay) and not self._stop.is_set():
                # on as many threads as pricing: they inherit this thread's priority, so they
                # take the cores pricing leaves idle, and both once the clear waits for them
                self.walked = record_signals(taps.records, taps.balance, stop_coordinates())
            self._done = (hashes, replayed)
        except _Cancelled:
            pass
        except BaseException as error:  # handed to the caller by result()
            self._error = error

    def _until_cancelled(self, chunks: Iterator[EarlierKeys | EarlierDigest]
                         ) -> Iterator[EarlierKeys | EarlierDigest]:
        for chunk in chunks:
            if self._stop.is_set():
                raise _Cancelled
            yield chunk
        if self._stop.is_set():
            raise _Cancelled

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def cancel(self) -> None:
        """Stop the lookback (at its next earlier day) and wait for its thread; its result
        and the taps it held are dropped. Nothing was written. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._done = None
        self.walked = None
        self.taps = None

    def result(self) -> tuple[DayHashes, Replays] | None:
        """Wait for the lookback: (the day's sorted key hashes, the replay evidence), None if
        it was cancelled or never started; the thread's error is raised here."""
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return None if self._stop.is_set() else self._done

    def serves(self, data_dir: Path, day: dt.date, taps: pa.Table | SortedDay,
               engine: Engine | None) -> bool:
        """Whether this lookback is of ``day``'s ``taps`` in ``data_dir``: the same rows with
        the same card keys (normally the very same Arrow buffers, however the table was
        re-selected since; a sorted day must be the very same), the same day, data directory
        and database."""
        mine = self.taps
        if (mine is None or day != self.day
                or Path(data_dir).resolve() != self.data_dir.resolve()
                or engine is not self.engine or taps.num_rows != mine.num_rows):
            return False
        if isinstance(mine, SortedDay) or isinstance(taps, SortedDay):
            return mine is taps
        return all(_same_column(mine.column(c), taps.column(c)) for c in CARD_KEY)

    def __enter__(self) -> ReplayLookback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


LOOKBACK_NICE = 10  # the lookback thread's niceness above the clear's (0: the same)


def _lower_priority(nice: int) -> None:
    """Make the calling thread (and the threads it starts, which inherit it) yield to the
    clear's own: pricing keeps both cores while it runs, and the lookback takes what it
    leaves idle (the legs' Parquet write). Linux schedules threads by their own nice value;
    elsewhere, or when refused, nothing changes."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError:
        pass


def _same_column(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal columns: the same buffers at the same offsets (a table re-selected or with
    columns dropped shares them), else compared value by value."""
    if a.num_chunks == b.num_chunks and all(
            x.offset == y.offset and len(x) == len(y)
            and [q.address if q is not None else 0 for q in x.buffers()]
            == [q.address if q is not None else 0 for q in y.buffers()]
            for x, y in zip(a.chunks, b.chunks, strict=True)):
        return True
    return bool(a.equals(b))


def start_replay_lookback(data_dir: Path, day: dt.date, taps: pa.Table | SortedDay, *,
                          engine: Engine | None = None,
                          reference: bool = False) -> ReplayLookback:
    """Start ``day``'s replay lookback over ``taps`` (the day's accepted taps as read, before
    pricing) on a thread; hand it to ``write_day_signals(lookback=...)``. Use it as a context
    manager (or ``cancel`` it) so that a failure in between stops it. ``reference`` starts
    nothing: the reference twin streams the stored keys itself."""
    return ReplayLookback(data_dir, day, taps, engine, start=not reference)


# ---------------------------------------------------------------------------------------------
# The day's signals


def write_day_signals(data_dir: Path, day: dt.date, taps: pa.Table | SortedDay, legs: pa.Table, *,
                      engine: Engine | None = None, reference: bool = False,
                      order: np.ndarray | None = None,
                      records: np.ndarray | None = None,
                      lookback: ReplayLookback | None = None,
                      boards: np.ndarray | None = None) -> Path:
    """Compute the day's signals (SPEC §10), store them beside its legs, and write the day's
    deny list; returns the signals file. Nothing here touches legs, fares or the ledger.

    Pricing has already put the taps in card order: pass its sorted ``records``
    (``risk.record_signals``) or its ``order`` (``risk.card_signals``) to spare a second sort
    of the day; with neither, the signals sort the taps themselves. The result is the same.

    The day's key digest (``clearing.risk_digest``) is written too, for later days' replay
    lookback, when ``taps`` can be tied to the stored files and to the revision ``legs``
    carry (``_digest_files``); otherwise any old digest of the day is removed. The replay
    lookback reads earlier days' digests (``earlier_keys(digests=True)``), except for the
    reference twin, which streams their stored keys.

    ``lookback`` (``start_replay_lookback``, started when the taps were read) has done the
    replay lookback and the day's hashes meanwhile: they are joined here, its error raised
    here. A lookback of other taps, or given to the reference twin, is cancelled and the
    lookback done here, as without one. The result is the same either way.
    """
    covered = _digest_files(data_dir, day, engine, legs, taps.num_rows)
    done = None
    walked = None
    if lookback is not None:
        if reference or not lookback.serves(data_dir, day, taps, engine):
            lookback.cancel()
        else:
            done = lookback.result()
            walked = lookback.walked if done is not None else None
            lookback.cancel()  # ended: only drops what it held
    hashes = None
    replayed = None
    if done is not None:
        hashes, replayed = done
    elif covered is not None:
        if isinstance(taps, SortedDay):
            hashes = DayHashes.of(records=taps.records)
        else:
            hashes = (DayHashes.of(records=records) if records is not None and not reference
                      else DayHashes.of(keys={c: taps.column(c).to_numpy() for c in CARD_KEY}))
    earlier = () if replayed is not None else earlier_keys(data_dir, day, engine,
                                                           digests=not reference)
    # the digest (120 MB at 10M taps, fsynced) is written while the day's own signals are
    # computed: it depends on the stored taps alone, and is whole or absent whenever read
    digest = (_Background(partial(risk_digest.write_digest, data_dir, day, hashes, *covered))
              if covered is not None and hashes is not None else None)
    try:
        signals = day_signals(day, taps, legs, earlier=earlier, reference=reference,
                              order=order, records=records, hashes=hashes, replayed=replayed,
                              walked=walked, boards=boards)
        path = write_atomic(signals, signals_path(data_dir, day))
    except BaseException:
        if digest is not None:
            digest.wait(raise_error=False)  # this error goes on; no thread is left behind
        raise
    if digest is not None:
        digest.wait()
    else:
        risk_digest.remove_digest(data_dir, day)
    write_denylists_from(data_dir, day, engine=engine)
    return path


class _Background:
    """A call run on a thread; ``wait`` joins it and raises its error."""

    def __init__(self, call: Callable[[], object]) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            try:
                call()
            except BaseException as error:  # raised by wait()
                self._error = error

        self._thread = threading.Thread(target=run, name="risk-digest-write", daemon=True)
        self._thread.start()

    def wait(self, *, raise_error: bool = True) -> None:
        self._thread.join()
        if self._error is not None and raise_error:
            raise self._error


def _digest_files(data_dir: Path, day: dt.date, engine: Engine | None, legs: pa.Table,
                  taps: int) -> tuple[int, list[DayFile]] | None:
    """(legs revision, the day's stored tap files) when ``taps`` are exactly those files'
    taps at the revision the stored ``legs`` carry; None when that cannot be shown.

    The clear read the day's revision before its taps (``clearing.day.clear_day``), and every
    batch stored or withdrawn bumps it in the batch's own transaction: the same revision
    before and after listing the files means no batch changed the day since, so the files
    listed are the ones read. Without a database the files on disk are the day's; their taps
    must add up to the day's either way.
    """
    raw = (legs.schema.metadata or {}).get(REVISION_KEY)
    if raw is None:
        return None
    revision = int(raw)
    root = Path(data_dir)
    if engine is not None:
        with session_factory(engine)() as session:
            if day_revision(session, day) != revision:
                return None
            rels = [rel for _, _, rel in tapstore._committed_files(session, [day])]
            if day_revision(session, day) != revision:
                return None
    else:
        rels = [p.relative_to(root).as_posix() for p in tapstore.day_files_on_disk(root, day)]
    files = risk_digest.day_files(root, rels)
    if files is None or sum(f.rows for f in files) != taps or taps >= 1 << 32:
        return None
    return revision, files


def write_denylists_from(data_dir: Path, day: dt.date, *, engine: Engine | None = None) -> None:
    """Write ``day``'s deny list, and rewrite the stored lists of the later days whose window
    holds ``day`` (D+1..D+29) when its new signals change them: a day cleared again (a late
    or withdrawn batch) must not leave readers a later list built from its old signals."""
    write_denylist(data_dir, day, engine=engine)
    refresh_denylists(data_dir, day + dt.timedelta(days=1),
                      day + dt.timedelta(days=DENY_WINDOW_DAYS - 1), engine)


def read_day_signals(data_dir: Path, day: dt.date) -> pa.Table | None:
    """The stored signals of a day; None when they were never computed."""
    manifest = parts_manifest(data_dir, day)
    if manifest is not None and SIGNALS_FIELD in manifest:  # a partitioned clear's parts
        return read_signal_parts(manifest["storage"], manifest[SIGNALS_FIELD])
    path = signals_path(data_dir, day)
    if not path.is_file():
        return None
    return pq.read_table(path, schema=SIGNAL_SCHEMA)


# ---------------------------------------------------------------------------------------------
# The deny list


@dataclass(frozen=True, slots=True)
class DenyEntry:
    """A card on day D's deny list: its kinds and first and last signal within the window."""

    issuer: int
    card_id: int  # the card token (SPEC §3), never a card number
    kinds: tuple[str, ...]  # RiskKind names, in SPEC order
    first_signal: dt.date
    last_signal: dt.date


def deny_list(data_dir: Path, day: dt.date,
              cleared: Mapping[CardKey, dt.date] | None = None, *,
              signals_of: Callable[[dt.date], pa.Table | None] | None = None
              ) -> list[DenyEntry]:
    """SPEC §10: every card with a deny-list kind signalled on a day in [D-29, D], less the
    signals its issuer cleared: ``cleared`` maps a card to the day the clearing that applies to
    day D reaches (``risk_clearances.applying``), and its signals of days up to that day do not
    count. First, last and kinds come from the signals that remain.

    Days never cleared (or cleared before signals existed) contribute nothing. ``signals_of``
    reads a day's signals (default ``read_day_signals``; a caller listing many days reads each
    once).
    """
    cleared = cleared or {}
    signals_of = signals_of or partial(read_day_signals, data_dir)
    seen: dict[tuple[int, int], tuple[set[str], dt.date, dt.date]] = {}
    for back in range(DENY_WINDOW_DAYS - 1, -1, -1):
        when = day - dt.timedelta(days=back)
        signals = signals_of(when)
        if signals is None:
            continue
        for kind, issuer, card in zip(signals.column("kind").to_pylist(),
                                      signals.column("issuer").to_pylist(),
                                      signals.column("card_id").to_pylist(), strict=True):
            if RiskKind[kind] not in DENY_KINDS or card is None:
                continue
            if is_cleared(cleared, (issuer, card), when):
                continue
            kinds, first, _ = seen.get((issuer, card), (set(), when, when))
            seen[(issuer, card)] = (kinds | {kind}, first, when)
    return [DenyEntry(issuer, card, tuple(sorted(kinds, key=lambda k: RiskKind[k])), first, last)
            for (issuer, card), (kinds, first, last) in sorted(seen.items())]


def denylist_text(entries: list[DenyEntry]) -> str:
    """A deny list as its CSV file holds it (``DENYLIST_FIELDS``)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(DENYLIST_FIELDS)
    for e in entries:
        w.writerow([e.issuer, e.card_id, "|".join(e.kinds), e.first_signal.isoformat(),
                    e.last_signal.isoformat()])
    return buf.getvalue()


def read_denylist(data_dir: Path, day: dt.date) -> list[DenyEntry] | None:
    """Day D's deny list as published (``denylist/D.csv``); None when none was written (the
    day was never cleared)."""
    path = denylist_path(data_dir, day)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        return None
    return [DenyEntry(int(r["issuer"]), int(r["card_id"]),
                      tuple(k for k in r["kinds"].split("|") if k),
                      dt.date.fromisoformat(r["first_signal"]),
                      dt.date.fromisoformat(r["last_signal"])) for r in rows]


def signal_days(data_dir: Path, last: dt.date) -> list[dt.date]:
    """The days up to ``last`` that have a folder beside the legs (where their signals are
    stored, if they were computed), newest first."""
    days = []
    for folder in (Path(data_dir) / "legs").glob("day=*"):
        try:
            day = dt.date.fromisoformat(folder.name.removeprefix("day="))
        except ValueError:
            continue
        if day <= last:
            days.append(day)
    return sorted(days, reverse=True)


def listed_cards(data_dir: Path, issuer: int, cards: set[int], last: dt.date) -> set[int]:
    """Of ``cards`` of ``issuer``, those with a deny-list signal on a stored day up to ``last``:
    the cards on the deny list of some day up to ``last``, clearings aside. Reads back from
    ``last`` and stops once every card is found."""
    found: set[int] = set()
    for day in signal_days(data_dir, last):
        table = read_day_signals(data_dir, day)
        if table is None:
            continue
        for kind, who, card in zip(table.column("kind").to_pylist(),
                                   table.column("issuer").to_pylist(),
                                   table.column("card_id").to_pylist(), strict=True):
            if who == issuer and card in cards and RiskKind[kind] in DENY_KINDS:
                found.add(card)
        if found == cards:
            break
    return found


@contextmanager
def _denylists_locked(data_dir: Path) -> Iterator[None]:
    """One writer of deny lists at a time in a data directory. Each writer reads the clearings
    inside the lock, so the last file written always reflects every committed clearing (two
    clearings racing, or a clearing racing a day's clearing, would otherwise let the later
    writer put back a list computed before the other's commit)."""
    folder = Path(data_dir) / DENYLIST_DIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _clearances(engine: Engine | None, last: dt.date) -> list[Clearance]:
    """The recorded clearings that can apply to the deny lists of days up to ``last``."""
    if engine is None:
        return []
    with session_factory(engine)() as session:
        return clearances(session, through_by=last)


def _write_text(path: Path, text: str) -> None:
    """Write wholly or not at all (temporary name, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}{TMP_SUFFIX}")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_denylist(data_dir: Path, day: dt.date, *, engine: Engine | None = None) -> Path:
    """Write ``denylist/D.csv`` wholly or not at all, less the clearings ``engine``'s database
    holds (without an engine none is known: every caller that has one passes it)."""
    path = denylist_path(data_dir, day)
    with _denylists_locked(data_dir):
        cleared = cleared_through(_clearances(engine, day), day)
        _write_text(path, denylist_text(deny_list(data_dir, day, cleared)))
    return path


def refresh_denylists(data_dir: Path, first: dt.date, last: dt.date, engine: Engine | None
                      ) -> list[dt.date]:
    """Rewrite the stored deny lists of days ``first`` to ``last`` whose contents changed (by
    the recorded clearings, or by an earlier day's new signals); returns those days. Lists
    never written stay unwritten (a day not yet cleared gets its list, clearings applied, when
    it is). Running it again changes nothing."""
    changed: list[dt.date] = []
    read: dict[dt.date, pa.Table | None] = {}

    def signals_of(when: dt.date) -> pa.Table | None:
        if when not in read:
            read[when] = read_day_signals(data_dir, when)
        return read[when]

    with _denylists_locked(data_dir):
        found = _clearances(engine, last)
        for back in range((last - first).days, -1, -1):
            day = last - dt.timedelta(days=back)
            path = denylist_path(data_dir, day)
            if not path.is_file():
                continue
            text = denylist_text(deny_list(data_dir, day, cleared_through(found, day),
                                           signals_of=signals_of))
            if path.read_text(encoding="utf-8") != text:
                _write_text(path, text)
                changed.append(day)
    return changed


# ---------------------------------------------------------------------------------------------
# tongka risk --date D


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """One line of ``tongka risk``: signals of a kind, in total or for one issuer/operator."""

    by: str  # "kind", "issuer" or "operator"
    kind: str
    code: int | None  # the issuer or operator code; None for the kind's total
    signals: int
    cards: int  # distinct cards among them (0 for DEBIT_MISMATCH, a device signal)


def risk_summary(data_dir: Path, day: dt.date, engine: Engine | None = None
                 ) -> list[SummaryRow]:
    """The day's signals by kind, by issuer and by operator; computes and stores them (and
    the deny list) first when the day was cleared before they existed.

    A day never cleared is ``DAY_NOT_CLEARED`` (exit 3), as for statements.
    """
    signals = read_day_signals(data_dir, day)
    if signals is None:
        legs = read_day_legs(data_dir, day)  # raises DAY_NOT_CLEARED
        # straight into sorted records, as the clear reads them (clearing.sorted_day)
        write_day_signals(data_dir, day, read_sorted_day(data_dir, day, engine), legs,
                          engine=engine)
        signals = read_day_signals(data_dir, day)
        if signals is None:  # pragma: no cover - written just above
            raise StateError(f"signals of {day} could not be stored", code="RISK_NOT_STORED")
    return summarise(signals)


def summarise(signals: pa.Table) -> list[SummaryRow]:
    """Counts by kind (SPEC order), then per kind by issuer and by operator (code order)."""
    kind = signals.column("kind").to_pylist()
    issuer = signals.column("issuer").to_pylist()
    card = signals.column("card_id").to_pylist()
    operator = signals.column("operator").to_pylist()
    rows: list[SummaryRow] = []
    for k in RiskKind:
        at = [i for i, x in enumerate(kind) if x == k.name]
        if not at:
            continue
        rows.append(SummaryRow("kind", k.name, None, len(at),
                               len({(issuer[i], card[i]) for i in at if card[i] is not None})))
        for by, codes in (("issuer", issuer), ("operator", operator)):
            counts = Counter(codes[i] for i in at if codes[i] is not None)
            for code in sorted(counts):
                cards = {(issuer[i], card[i]) for i in at
                         if codes[i] == code and card[i] is not None}
                rows.append(SummaryRow(by, k.name, code, counts[code], len(cards)))
    return rows


def format_summary(day: dt.date, rows: list[SummaryRow]) -> str:
    """``tongka risk``'s text: one line per row, or a line saying the day had none."""
    if not rows:
        return f"service day {day}: no risk signal"
    lines = [f"service day {day}: risk signals (SPEC §10)",
             f"{'by':<9}{'kind':<20}{'code':>6}{'signals':>10}{'cards':>8}"]
    for r in rows:
        code = "" if r.code is None else str(r.code)
        lines.append(f"{r.by:<9}{r.kind:<20}{code:>6}{r.signals:>10,}{r.cards:>8,}")
    return "\n".join(lines)
