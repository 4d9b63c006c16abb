"""The plain, obvious twin of the risk-signal kernels (SPEC v1.2 §10), for equality tests.

Every function here takes the same input as its fast counterpart in ``clearing.risk`` and
returns the same value, computed one card (or one stored key) at a time with dicts and
sorted lists, so that a reader can check it against the SPEC line by line.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from clearing.legs import PENALTY_STATUSES, DebitKind, Leg

EARTH_RADIUS_M = 6_371_008.8  # SPEC §10: the mean Earth radius of the haversine
MISMATCH_MIN_LEGS = 20  # SPEC §10 DEBIT_MISMATCH: at least this many mismatching legs ...
MISMATCH_SHARE_PERCENT = 1  # ... and more than this share of the device's boardings

# kinds, in the order of SPEC §10 (the integers travel in arrays; names in ``clearing.risk``)
CARD_SEQ_REPLAY = 0
CARD_SEQ_BACKWARDS = 1
BALANCE_BREAK = 2
IMPOSSIBLE_TRAVEL = 3
DEBIT_MISMATCH = 4


def haversine_metres(lat1: float, lon1: float, lat2: float, lon2: float) -> int:
    """Great-circle distance in whole metres, rounded to the nearest, halves up (SPEC §10)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    d = 2.0 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))
    return int(math.floor(d + 0.5))


def card_signals(cols: Mapping[str, np.ndarray], lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """The per-card signals of one service day's taps: rows ``(kind, tap a, tap b)``.

    ``cols`` holds the day's tap columns in table order (card_id, issuer, ts_ms, card_seq,
    debited_fen, balance_fen); ``lat``/``lon`` each tap's stop coordinates (NaN: unknown).
    ``a`` and ``b`` are table rows, the earlier and the later tap of the pair that shows the
    signal; the result is sorted by (kind, b, a).
    """
    by_card: dict[tuple[int, int], list[int]] = defaultdict(list)
    card, issuer = cols["card_id"].tolist(), cols["issuer"].tolist()
    ts, seq = cols["ts_ms"].tolist(), cols["card_seq"].tolist()
    debit, balance = cols["debited_fen"].tolist(), cols["balance_fen"].tolist()
    for row in range(len(card)):
        by_card[(issuer[row], card[row])].append(row)
    out: list[tuple[int, int, int]] = []
    for rows in by_card.values():
        ordered = sorted(rows, key=lambda r: (ts[r], seq[r], r))  # SPEC §10: (ts_ms, card_seq)
        stored = [r for r in ordered if debit[r] >= 0]
        for a, b in zip(stored, stored[1:], strict=False):
            if seq[b] < seq[a]:
                out.append((CARD_SEQ_BACKWARDS, a, b))
        by_seq = sorted(ordered, key=lambda r: seq[r])  # stable: ties stay in (ts, seq) order
        for a, b in zip(by_seq, by_seq[1:], strict=False):
            if (seq[b] - seq[a] == 1 and debit[a] >= 0 and debit[b] >= 0 and balance[a] >= 0
                    and balance[b] >= 0 and balance[b] != balance[a] - debit[b]):
                out.append((BALANCE_BREAK, a, b))
        for a, b in zip(ordered, ordered[1:], strict=False):
            if math.isnan(lat[a]) or math.isnan(lat[b]):
                continue  # a tap without coordinates is skipped, and nothing pairs across it
            d = haversine_metres(lat[a], lon[a], lat[b], lon[b])
            if 24 * d > ts[b] - ts[a]:  # faster than 150 km/h = 1/24 m per ms
                out.append((IMPOSSIBLE_TRAVEL, a, b))
    out.sort(key=lambda s: (s[0], s[2], s[1]))
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def replay_hits(today: Mapping[str, np.ndarray],
                stored: Iterable[Mapping[str, np.ndarray]]) -> list[tuple[int, int, int]]:
    """Today's taps whose card key an earlier stored tap has: ``(today row, chunk, chunk row)``.

    ``stored`` yields chunks of the card and device key columns of taps accepted two or more
    days earlier (SPEC §4, §10); the result is sorted.
    """
    rows: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(today["issuer"].tolist(), today["card_id"].tolist(),
                                today["card_seq"].tolist(), strict=True)):
        rows[key].append(i)
    out: list[tuple[int, int, int]] = []
    for c, chunk in enumerate(stored):
        keys = zip(chunk["issuer"].tolist(), chunk["card_id"].tolist(),
                   chunk["card_seq"].tolist(), strict=True)
        for j, key in enumerate(keys):
            out.extend((i, c, j) for i in rows.get(key, ()))
    return sorted(out)


def counts_as_mismatch(leg: Leg) -> bool:
    """Whether a leg counts among its boarding device's mismatching legs (SPEC §10
    DEBIT_MISMATCH): stored-value, charged differs from computed, and not a penalty leg.

    SPEC §10 counts penalty legs (INCOMPLETE, OVERTIME, ORPHAN_EXIT; SPEC §5) among "all legs
    boarded at it" (``n``). The owner's reading, adopted for both twins: they never count as
    mismatching (``m``). A penalty is the rider's missing tap, not the device charging unlike
    the tariff (a stored-value INCOMPLETE leg is charged its entry's 0 while it computes
    ``max_fare``, as SPEC §6 says it must); the signal is about a device running a stale tariff.
    """
    return (leg.status not in PENALTY_STATUSES and leg.debit_kind == DebitKind.STORED_VALUE
            and leg.charged_fen != leg.computed_fen)


def mismatch_devices(legs: list[Leg]) -> list[tuple[int, int, int, int]]:
    """SPEC §10 DEBIT_MISMATCH: ``(operator, device_id, mismatching legs, legs)`` of each
    boarding device raising it, sorted by device: at least ``MISMATCH_MIN_LEGS`` legs that
    ``counts_as_mismatch`` (``m``), and ``100 * m > n`` over all ``n`` legs boarded at it,
    penalty legs included."""
    n: dict[tuple[int, int], int] = defaultdict(int)
    m: dict[tuple[int, int], int] = defaultdict(int)
    for leg in legs:
        device = (leg.operator, leg.board_device_id)
        n[device] += 1  # penalty legs included
        if counts_as_mismatch(leg):  # penalty legs never
            m[device] += 1
    return sorted((op, dev, m[(op, dev)], n[(op, dev)]) for op, dev in n
                  if m[(op, dev)] >= MISMATCH_MIN_LEGS
                  and 100 * m[(op, dev)] > MISMATCH_SHARE_PERCENT * n[(op, dev)])
