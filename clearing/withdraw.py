"""Batch withdrawal (SPEC v1.2 §4): a batch's rows leave their day for the archive.

A batch read with the wrong format, day or operator (or simply wrong) can never be loaded
right while it stands: its identity answers ``already_ingested``, its rows sit in the wrong
day. Withdrawing it, in one SQL transaction holding the locks ingestion takes:

1. copies its files (accepted taps, kept duplicates) to ``archive/`` under the data dir,
   and marks the batch withdrawn with the reason and time (it keeps its row: audit), its
   quarantined rows withdrawn (never deleted), which releases its identity (the unique
   index on the SHA-256 covers live batches only);
2. re-runs acceptance over the day's remaining batches in their stored order (SPEC §4): a
   row that was a duplicate of a withdrawn tap may now be accepted (and, in turn, block a
   later one); batches whose outcome changed get new files under new names;
3. marks the day for settlement (a new revision): a settled day is settled again.

Crash safety as in ingestion: new files are written whole (temporary name, fsync, rename)
before the commit, and the files they replace are removed after it. A crash before the
commit leaves the old state plus files no live batch names (the next ingestion of the day,
or ``remove_orphans``, removes them; leftover archive copies are overwritten by a re-run);
a crash after it leaves the new state plus the replaced files, which are strays likewise.

Limits: the neighbouring days' accepted taps are taken as they stand (they block the day's
rows, SPEC §4 reach), and they are not themselves re-accepted; a duplicate in a neighbouring
day of a withdrawn tap therefore stays a duplicate. Batches stored before migration 0004 did
not keep their duplicate rows: those cannot be reconsidered and stay counted as duplicates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from clearing import tapstore
from clearing.batches import Batch, BatchStatus, QuarantinedRow, QuarantineStatus, find_batch
from clearing.days import DayStatus, day_revision, day_status, lock_days, mark_needs_settlement
from clearing.db import session_factory, transaction
from clearing.errors import InputError, StateError
from clearing.files import copy as copy_file
from tariffs.error_codes import ErrorCode

MAX_REASON = 2_000


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """What withdrawing one batch did."""

    batch_id: int
    file_sha256: str
    operator: int
    service_day: dt.date
    reason: str
    withdrawn_at: dt.datetime
    accepted: int  # taps that left the day
    duplicates: int  # duplicate rows of the batch (archived when they were kept)
    quarantined: int  # quarantined rows, now marked withdrawn
    archived: tuple[str, ...]  # archive files, relative to the data dir
    reaccepted: int  # rows of the day's other batches that were duplicates and are now accepted
    now_duplicates: int  # rows that were accepted and are now duplicates (knock-on effect)
    was_settled: bool  # the day was settled: it needs settlement again (an adjustment)
    day_revision: int  # the day's revision after the withdrawal


# A test hook: called with the name of each step boundary (crash tests stop there).
_checkpoint: Callable[[str], None] = lambda _step: None  # noqa: E731


@dataclass(slots=True)
class _Files:
    """Files written before the commit (removed on failure) and replaced ones (removed after)."""

    written: list[Path]
    replaced: list[Path]


def withdraw_batch(engine: Engine, data_dir: Path, batch_ref: int | str, *,
                   reason: str) -> Withdrawal:
    """Withdraw one batch (by id or SHA-256 prefix): its rows leave the day, archived.

    Raises StateError ``BATCH_NOT_FOUND`` for an unknown batch and ``BATCH_WITHDRAWN`` for
    one already withdrawn; InputError ``WITHDRAW_REASON`` without a reason (audit needs one).
    """
    reason = reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise InputError(f"a withdrawal needs a reason of 1 to {MAX_REASON} characters",
                         code=ErrorCode.WITHDRAW_REASON)
    with session_factory(engine)() as s:  # outside the lock: only to learn the day
        found = find_batch(s, batch_ref)
        batch_id, day = found.id, found.service_day
    root = Path(data_dir)
    files = _Files([], [])
    committing = False
    try:
        with transaction(engine) as s:
            lock_days(s, [day + dt.timedelta(days=k) for k in
                          range(-tapstore.DEDUP_REACH_DAYS, tapstore.DEDUP_REACH_DAYS + 1)])
            b = s.get(Batch, batch_id)
            assert b is not None  # batches are never deleted
            s.refresh(b)  # as of the lock: another withdrawal may have committed meanwhile
            if b.status == BatchStatus.WITHDRAWN:
                raise StateError(f"batch {b.id} was already withdrawn at {b.withdrawn_at} "
                                 f"({b.withdrawn_reason})", code=ErrorCode.BATCH_WITHDRAWN)
            tapstore.remove_strays(root, [day], tapstore.committed_paths(s, [day]))
            was_settled = day_status(s, day) is DayStatus.SETTLED
            archived = _archive(s, root, b, reason, files)
            _checkpoint("archived")
            reaccepted, now_dup = _reaccept_day(s, root, day, b.id, files)
            _checkpoint("reaccepted")
            if b.accepted:  # a batch that stored no tap changes nothing to settle
                mark_needs_settlement(s, day)
            result = Withdrawal(
                batch_id=b.id, file_sha256=b.file_sha256, operator=b.operator, service_day=day,
                reason=reason, withdrawn_at=b.withdrawn_at or _now(), accepted=b.accepted,
                duplicates=b.duplicates, quarantined=b.quarantined, archived=archived,
                reaccepted=reaccepted, now_duplicates=now_dup, was_settled=was_settled,
                day_revision=day_revision(s, day))
            _checkpoint("before_commit")
            committing = True
        _checkpoint("committed")
    except BaseException:
        if not committing:
            for path in files.written:
                path.unlink(missing_ok=True)
        raise
    for path in files.replaced:  # strays now; removing them here keeps the tap store tidy
        path.unlink(missing_ok=True)
    return result


def _archive(s: Session, root: Path, b: Batch, reason: str, files: _Files) -> tuple[str, ...]:
    """Copy the batch's files to the archive and mark it and its quarantined rows withdrawn."""
    archived = []
    for attr in ("tap_path", "dup_path"):
        rel = getattr(b, attr)
        if rel is None:
            continue
        target = tapstore.archive_relpath(rel, b.id)
        files.written.append(copy_file(root / rel, root / target))
        files.replaced.append(root / rel)
        setattr(b, attr, target)
        archived.append(target)
    b.status = BatchStatus.WITHDRAWN
    b.withdrawn_at = _now()
    b.withdrawn_reason = reason
    s.execute(update(QuarantinedRow)
              .where(QuarantinedRow.batch_id == b.id,
                     QuarantinedRow.status == QuarantineStatus.OPEN)
              .values(status=QuarantineStatus.WITHDRAWN))
    # rows this batch corrected (a resubmission) are no longer corrected: open them again
    s.execute(update(QuarantinedRow)
              .where(QuarantinedRow.resubmitted_batch_id == b.id)
              .values(status=QuarantineStatus.OPEN, resubmitted_batch_id=None))
    s.flush()
    return tuple(archived)


def _reaccept_day(s: Session, root: Path, day: dt.date, withdrawn_id: int,
                  files: _Files) -> tuple[int, int]:
    """SPEC §4 acceptance again over the day's live batches in stored order; returns
    (duplicates now accepted, accepted taps now duplicates)."""
    batches = list(s.scalars(select(Batch).where(Batch.service_day == day,
                                                 Batch.status != BatchStatus.WITHDRAWN)
                             .order_by(Batch.day_seq)))
    loaded = [tapstore.batch_candidates(root, b.tap_path, b.dup_path) for b in batches]
    if not loaded or sum(t.num_rows for t, _ in loaded) == 0:
        return 0, 0
    candidates = pa.concat_tables([t for t, _ in loaded])
    before = np.concatenate([m for _, m in loaded])
    neighbours = [day + dt.timedelta(days=k) for k in range(-tapstore.DEDUP_REACH_DAYS,
                                                            tapstore.DEDUP_REACH_DAYS + 1) if k]
    status = tapstore.dedup(tapstore.iter_keys(root, s, neighbours), candidates,
                            np.ones(candidates.num_rows, dtype=bool))
    after = status == tapstore.ACCEPTED
    start = 0
    for b, (table, old) in zip(batches, loaded, strict=True):
        new = after[start:start + table.num_rows]
        start += table.num_rows
        if not np.array_equal(new, old):
            _rewrite(root, b, table, new, old, f"w{withdrawn_id}", files)
    s.flush()
    return int(np.count_nonzero(after & ~before)), int(np.count_nonzero(before & ~after))


def _rewrite(root: Path, b: Batch, table: pa.Table, new: np.ndarray, old: np.ndarray,
             generation: str, files: _Files) -> None:
    """Store a batch's new outcome under new file names; the old files go after the commit."""
    kept_dups_before = int(np.count_nonzero(~old))
    unkept = b.duplicates - kept_dups_before  # duplicates of batches stored before 0004
    metadata = {
        tapstore.META_DAY: b.service_day.isoformat().encode(),
        tapstore.META_OPERATOR: str(b.operator).encode(),
        tapstore.META_SHA: b.file_sha256.encode(),
        tapstore.META_DAY_SEQ: str(b.day_seq).encode(),
    }
    for rel in (b.tap_path, b.dup_path):
        if rel is not None:
            files.replaced.append(root / rel)
    tap_rel = dup_rel = None
    if new.any():
        tap_rel = tapstore.batch_relpath(b.service_day, b.operator, b.file_sha256, generation)
        files.written.append(tapstore.write_batch_taps(
            root, tap_rel, table.filter(pa.array(new)), metadata))
    if not new.all():
        dup_rel = tapstore.dup_relpath(b.service_day, b.operator, b.file_sha256, generation)
        files.written.append(tapstore.write_batch_dups(
            root, dup_rel, table.filter(pa.array(~new)), np.flatnonzero(~new), metadata))
    b.tap_path, b.dup_path = tap_rel, dup_rel
    b.accepted = int(np.count_nonzero(new))
    b.duplicates = int(np.count_nonzero(~new)) + unkept


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)

