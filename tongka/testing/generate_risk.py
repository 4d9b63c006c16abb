"""Plant each SPEC §10 risk signal into a generated day, with the truth of what was planted.

Takes a generated day's accepted taps (``tongka.testing.generate.generate(...)``, filtered by its
``accepted_mask``) and returns them with purses, clones, replays, backward counters and a stale
reader planted, plus the set of signals they must raise, so tests can measure precision and
recall: every planted case found, nothing else flagged. Every planted tap is a well-formed
canonical tap that acceptance accepts and pricing prices (a clone rides a real station, a
stale reader charges one fen less than the tariff), so the planted day also settles.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from clearing.risk import RiskKind, stop_coordinates
from clearing.risk_reference import haversine_metres
from clearing.service_day import service_day_of
from clearing.taps import BALANCE_UNKNOWN, FULL_TAP_SCHEMA, TAP_COLUMNS, TapType
from tariffs.vocab import Media

DAY_MS = 86_400_000
CLONE_MIN_METRES = 10_000  # a clone this far away a minute later rides at 600 km/h
CLONE_GAP_MS = 60_000
STALE_READER_LEGS = 30  # boardings moved onto the planted stale reader (SPEC §10: >= 20)
STALE_DEVICE_ID = 990_000_001  # a device id no generated reader uses
REPLAY_DAYS_BACK = 3  # the earlier day the replayed taps were first accepted on

Truth = tuple[str, int, int]  # (RiskKind name, issuer, card_id); DEBIT_MISMATCH: operator, device


@dataclass(frozen=True)
class PlantedDay:
    """A day with planted signals: its taps, the earlier day's taps it replays, the truth."""

    day: dt.date
    taps: pa.Table  # FULL_TAP_SCHEMA: balance_fen set for every stored-value card tap
    earlier_day: dt.date
    earlier: pa.Table  # taps first accepted on ``earlier_day`` (same card keys as replays)
    truth: frozenset[Truth] = field(default_factory=frozenset)


def with_balances(taps: pa.Table, seed: int) -> pa.Table:
    """The taps with a consistent ``balance_fen`` on every stored-value tap of a medium with a
    purse (not QR): per card in counter order, each balance is the previous one minus the
    tap's debit, with a top-up only where counters skip (so no clean card breaks a balance)."""
    cols = {c: taps.column(c).to_numpy() for c in ("issuer", "card_id", "card_seq",
                                                    "debited_fen", "media")}
    n = taps.num_rows
    bal = np.full(n, BALANCE_UNKNOWN, dtype=np.int64)
    purse = (cols["debited_fen"] >= 0) & (cols["media"] != int(Media.QR_CODE))
    rows = np.flatnonzero(purse)
    order = rows[np.lexsort((cols["card_seq"][rows], cols["card_id"][rows],
                             cols["issuer"][rows]))]
    rng = np.random.default_rng(seed)
    prev_card: tuple[int, int] | None = None
    prev_seq = 0
    balance = 0
    for r in order.tolist():
        card = (int(cols["issuer"][r]), int(cols["card_id"][r]))
        seq, debit = int(cols["card_seq"][r]), int(cols["debited_fen"][r])
        if card != prev_card:
            balance = int(rng.integers(50_000, 200_000))
        elif seq != prev_seq + 1:
            balance += int(rng.integers(0, 5_000))  # a top-up can hide in a counter gap
        balance -= debit
        bal[r] = balance
        prev_card, prev_seq = card, seq
    return _set_balance(taps, bal)


def _set_balance(taps: pa.Table, bal: np.ndarray) -> pa.Table:
    table = taps.select(list(TAP_COLUMNS)).append_column(
        FULL_TAP_SCHEMA.field("balance_fen"), pa.array(bal, pa.int64()))
    return table.cast(FULL_TAP_SCHEMA)


def plant(day: dt.date, taps: pa.Table, seed: int, *, per_kind: int = 3) -> PlantedDay:
    """Plant ``per_kind`` cases of each card signal and one stale reader into a clean day.

    Cards are drawn without overlap, one kind each, so each planted card raises exactly its
    own kind: a clone rides a far Wuhan metro station a minute after its card's last tap
    (IMPOSSIBLE_TRAVEL; the registry has coordinates for Wuhan's metro only, so the "other
    city" is the other end of Wuhan), a purse is raised between consecutive counters
    (BALANCE_BREAK), a tap's counter is set below all the card's others (CARD_SEQ_BACKWARDS),
    a card's taps were first accepted ``REPLAY_DAYS_BACK`` days earlier (CARD_SEQ_REPLAY),
    and boardings of one line move to a reader that charges one fen below the tariff
    (DEBIT_MISMATCH).
    """
    rng = np.random.default_rng(seed)
    base = with_balances(taps, seed)
    cols = {c: base.column(c).to_numpy().copy() for c in FULL_TAP_SCHEMA.names}
    used: set[tuple[int, int]] = set()
    truth: set[Truth] = set()
    extra: list[dict[str, int]] = []
    card_rows = _card_rows(cols)
    truth |= _plant_balance_breaks(cols, card_rows, used, rng, per_kind)
    truth |= _plant_backwards(cols, card_rows, used, rng, per_kind)
    truth |= _plant_clones(cols, card_rows, used, rng, per_kind, extra)
    replay_rows, found = _pick_replays(cols, card_rows, used, rng, per_kind)
    truth |= found
    truth |= _plant_stale_reader(cols, card_rows, used)
    table = pa.Table.from_pydict(cols, schema=FULL_TAP_SCHEMA)
    if extra:
        table = pa.concat_tables([table, pa.Table.from_pylist(extra, schema=FULL_TAP_SCHEMA)])
    earlier_day = day - dt.timedelta(days=REPLAY_DAYS_BACK)
    earlier = _earlier_copies(base.take(pa.array(replay_rows, pa.int64())), cols)
    return PlantedDay(day, table, earlier_day, earlier, frozenset(truth))


def _card_rows(cols: dict[str, np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Each card's rows in its SPEC §10 order (ts_ms, card_seq)."""
    order = np.lexsort((cols["card_seq"], cols["ts_ms"], cols["card_id"], cols["issuer"]))
    out: dict[tuple[int, int], list[int]] = {}
    for r in order.tolist():
        out.setdefault((int(cols["issuer"][r]), int(cols["card_id"][r])), []).append(r)
    return out


def _free(card_rows: dict[tuple[int, int], list[int]], used: set[tuple[int, int]],
          rng: np.random.Generator, ok) -> list[tuple[int, int]]:  # type: ignore[no-untyped-def]
    """Unused cards satisfying ``ok(rows)``, in a seeded random order."""
    cards = [c for c, rows in card_rows.items() if c not in used and ok(rows)]
    rng.shuffle(cards)  # type: ignore[arg-type]
    return cards


def _plant_balance_breaks(cols, card_rows, used, rng, k):  # type: ignore[no-untyped-def]
    """Raise the purse from the later of two consecutive stored-value counters onwards."""
    bal, seq = cols["balance_fen"], cols["card_seq"]

    def pairs(rows: list[int]) -> list[tuple[int, int]]:
        by_seq = sorted((r for r in rows if bal[r] >= 0), key=lambda r: seq[r])
        return [(a, b) for a, b in zip(by_seq, by_seq[1:], strict=False) if seq[b] == seq[a] + 1]

    out = set()
    for card in _free(card_rows, used, rng, lambda rows: bool(pairs(rows)))[:k]:
        a, b = pairs(card_rows[card])[0]
        raise_by = int(rng.integers(1_000, 50_000))
        for r in card_rows[card]:
            if bal[r] >= 0 and seq[r] >= seq[b]:
                bal[r] += raise_by
        used.add(card)
        out.add((RiskKind.BALANCE_BREAK.name, *card))
    return out


def _plant_backwards(cols, card_rows, used, rng, k):  # type: ignore[no-untyped-def]
    """Set a later stored-value tap's counter below all the card's others (and 2 below, so
    it has no consecutive neighbour and the purse still adds up)."""
    debit, seq = cols["debited_fen"], cols["card_seq"]

    def later(rows: list[int]) -> list[int]:
        sv = [r for r in rows if debit[r] >= 0]
        return sv[1:] if min(seq[r] for r in rows) >= 10 else []

    out = set()
    for card in _free(card_rows, used, rng, lambda rows: bool(later(rows)))[:k]:
        rows = card_rows[card]
        r = later(rows)[-1]
        seq[r] = min(int(seq[x]) for x in rows) - 3
        used.add(card)
        out.add((RiskKind.CARD_SEQ_BACKWARDS.name, *card))
    return out


def _plant_clones(cols, card_rows, used, rng, k, extra):  # type: ignore[no-untyped-def]
    """A clone taps in at a far Wuhan metro station a minute after the card's last tap."""
    coords = stop_coordinates()
    stop, tap_type = cols["stop"], cols["tap_type"]
    entries = [r for r in range(len(stop)) if int(stop[r]) in coords
               and tap_type[r] == int(TapType.ENTRY)]
    next_seq = int(cols["device_seq"].max()) + 1 if len(stop) else 1

    def far_entry(last: int) -> int | None:
        here = coords[int(stop[last])]
        for r in entries:
            there = coords[int(stop[r])]
            if haversine_metres(*here, *there) >= CLONE_MIN_METRES:
                return r
        return None

    out = set()
    candidates = _free(card_rows, used, rng,
                       lambda rows: int(stop[rows[-1]]) in coords)
    for card in candidates:
        if len(out) == k:
            break
        rows = card_rows[card]
        last = rows[-1]
        src = far_entry(last)
        if src is None:
            continue
        clone = {c: int(cols[c][src]) for c in FULL_TAP_SCHEMA.names}
        clone.update(issuer=card[0], card_id=card[1], product=int(cols["product"][last]),
                     media=int(cols["media"][last]),
                     card_seq=max(int(cols["card_seq"][x]) for x in rows) + 1,
                     ts_ms=int(cols["ts_ms"][last]) + CLONE_GAP_MS,
                     device_seq=next_seq, balance_fen=BALANCE_UNKNOWN,
                     debited_fen=0 if int(cols["debited_fen"][last]) >= 0 else -1)
        next_seq += 1
        if not _same_day(int(cols["ts_ms"][last]), clone["ts_ms"]):
            continue
        extra.append(clone)
        used.add(card)
        out.add((RiskKind.IMPOSSIBLE_TRAVEL.name, *card))
    return out


def _same_day(ts: int, later: int) -> bool:
    return service_day_of(ts) == service_day_of(later)


def _pick_replays(cols, card_rows, used, rng, k):  # type: ignore[no-untyped-def]
    """Cards one of whose taps was first accepted days earlier (its card key replayed)."""
    out = set()
    rows_out = []
    for card in _free(card_rows, used, rng, lambda rows: True)[:k]:
        rows_out.append(card_rows[card][0])
        used.add(card)
        out.add((RiskKind.CARD_SEQ_REPLAY.name, *card))
    return rows_out, out


def _earlier_copies(taps: pa.Table, cols: dict[str, np.ndarray]) -> pa.Table:
    """The replayed taps as first accepted REPLAY_DAYS_BACK days earlier: same card keys,
    their own device keys (a device key repeated days apart raises nothing, SPEC §10)."""
    shift = REPLAY_DAYS_BACK * DAY_MS
    rows = taps.to_pylist()
    for i, r in enumerate(rows):
        r["ts_ms"] -= shift
        r["device_seq"] = int(cols["device_seq"].max()) + 1_000 + i
    return pa.Table.from_pylist(rows, schema=FULL_TAP_SCHEMA)


def _plant_stale_reader(cols, card_rows, used):  # type: ignore[no-untyped-def]
    """Move stored-value FLAT boardings of one line onto a new reader that charges one fen
    less than the tariff: every one of its legs mismatches (SPEC §10: >= 20 and > 1 %)."""
    debit, tap_type = cols["debited_fen"], cols["tap_type"]
    flat = [r for r in range(len(debit)) if tap_type[r] == int(TapType.FLAT) and debit[r] > 0
            and (int(cols["issuer"][r]), int(cols["card_id"][r])) not in used]
    by_line: dict[tuple[int, int], list[int]] = {}
    for r in flat:
        by_line.setdefault((int(cols["operator"][r]), int(cols["line"][r])), []).append(r)
    if not by_line:
        return set()
    (operator, _), rows = max(by_line.items(), key=lambda kv: (len(kv[1]), kv[0]))
    rows = rows[:STALE_READER_LEGS]
    for i, r in enumerate(rows):
        cols["device_id"][r] = STALE_DEVICE_ID
        cols["device_seq"][r] = i + 1
        debit[r] -= 1
        if cols["balance_fen"][r] >= 0:  # the purse shows what the reader took
            cols["balance_fen"][r] += 1
            later = [x for x in card_rows[(int(cols["issuer"][r]), int(cols["card_id"][r]))]
                     if cols["balance_fen"][x] >= 0 and cols["card_seq"][x] > cols["card_seq"][r]]
            for x in later:
                cols["balance_fen"][x] += 1
    return {(RiskKind.DEBIT_MISMATCH.name, operator, STALE_DEVICE_ID)} if len(
        rows) >= 20 else set()


def truth_of(signals: pa.Table) -> set[Truth]:
    """The (kind, issuer, card) or (DEBIT_MISMATCH, operator, device) each signal names."""
    out = set()
    for r in signals.select(["kind", "issuer", "card_id", "operator", "device_id"]).to_pylist():
        if r["kind"] == RiskKind.DEBIT_MISMATCH.name:
            out.add((r["kind"], r["operator"], r["device_id"]))
        else:
            out.add((r["kind"], r["issuer"], r["card_id"]))
    return out
