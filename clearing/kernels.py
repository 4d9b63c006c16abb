"""The numba kernels of the fast path: SPEC §5 matching and §6 pricing over 1-D tap columns.

Each kernel is ``@njit(cache=True)``, makes one pass, writes into arrays the caller allocated and
returns a status code instead of raising (STYLE §6); ``clearing.fast`` checks the input, calls
them in order and turns a status into an exception with a fix hint. They are the twins of
``clearing.reference`` (``match_legs`` of ``match_card_day``, ``price_legs`` of
``price_card_day``) and are tested equal to it field by field (``clearing.kernel_registry``).

Taps are read through ``perm``, the card order of ``clearing.sorting.sort_taps``: a card's day
is one run of ``perm``, and legs come out in ``LEG_SORT_KEYS`` order. Every money value is
int64 fen; no Python object is made per tap.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from clearing.legs import LEG_COLUMNS, NO_CHAIN, DebitKind, LegStatus
from clearing.service_day import CST_OFFSET_MS, DAY_MS, DAY_START_MS
from clearing.taps import ACCOUNT_BASED, TapType
from tariffs.compile import NO_CAP, PriceKind, StepKind
from tariffs.vocab import Product

# -- status codes: what a kernel could not do, and the reference would have raised on ------------
OK = 0
UNKNOWN_LINE = 1  # (operator, line) is not in the registry
NO_VERSION = 2  # no tariff version of the line's area is in force on the service day
NETWORK_NOT_PRICED = 3  # an ENTRY/EXIT leg on a flat line, or on a network the version omits
LINE_NOT_PRICED = 4  # a FLAT leg on a line with no flat fare (e.g. a FLAT tap on a metro line)
STOP_NOT_IN_NETWORK = 5  # a COMPLETE leg's stop is not a stop of the network
NO_PRICE = 6  # no ORDINARY price for the leg's mode

STATUS_NAMES = {
    OK: "OK", UNKNOWN_LINE: "UNKNOWN_LINE", NO_VERSION: "NO_VERSION",
    NETWORK_NOT_PRICED: "NETWORK_NOT_PRICED", LINE_NOT_PRICED: "LINE_NOT_PRICED",
    STOP_NOT_IN_NETWORK: "STOP_NOT_IN_NETWORK", NO_PRICE: "NO_PRICE",
}

# IntEnum members become plain ints here: numba freezes module globals at compile time.
_FLAT = int(TapType.FLAT)
_ENTRY = int(TapType.ENTRY)
S_FLAT = int(LegStatus.FLAT)
S_COMPLETE = int(LegStatus.COMPLETE)
S_INCOMPLETE = int(LegStatus.INCOMPLETE)
S_OVERTIME = int(LegStatus.OVERTIME)
S_ORPHAN_EXIT = int(LegStatus.ORPHAN_EXIT)
_ORDINARY = int(Product.ORDINARY)
_N_PRODUCTS = len(Product)
_RATE = int(PriceKind.RATE)
_FIXED = int(PriceKind.FIXED)
_FREE = int(StepKind.FREE)
_OFF_FEN = int(StepKind.OFF_FEN)
_PAY_RATE = int(StepKind.PAY_RATE)
_STORED = int(DebitKind.STORED_VALUE)
_ACCOUNT = int(DebitKind.ACCOUNT)
_MIXED = int(DebitKind.MIXED)
_ACCOUNT_BASED = ACCOUNT_BASED
_NO_CHAIN = NO_CHAIN
_NO_CAP = NO_CAP

# The output columns, one array per LEG_SCHEMA field, in LEG_COLUMNS order.
LegArrays = namedtuple("LegArrays", LEG_COLUMNS)  # type: ignore[misc]


@njit(cache=True, nogil=True, inline="always")
def service_day(ts_ms: np.int64) -> np.int64:
    """SPEC §1: days since 1970-01-01 of the local date of ``ts - 4 h`` (floor division)."""
    return (ts_ms + CST_OFFSET_MS - DAY_START_MS) // DAY_MS


@njit(cache=True, nogil=True, inline="always")
def apply_rate(amount: np.int64, bp: np.int64) -> np.int64:
    """SPEC §1, the twin of ``tariffs.fares.apply_rate``: int64 floor, rounded half up."""
    return (amount * (10_000 - bp) + 5_000) // 10_000


@njit(cache=True, nogil=True, inline="always")
def line_of(tb, operator: np.int64, line: np.int64) -> np.int64:
    """Dense line of a raw (operator, line), or -1 when the registry has no such line."""
    if operator < 0 or operator >= tb.operator_index.size:
        return -1
    o = tb.operator_index[operator]
    if o < 0 or line < 0 or line >= tb.line_index.shape[1]:
        return -1
    return tb.line_index[o, line]


@njit(cache=True, nogil=True, inline="always")
def version_of(tb, area: np.int64, day: np.int64) -> np.int64:
    """SPEC §6: the dense version of ``area`` in force on ``day`` (the last valid_from <= day)."""
    found = -1
    for v in range(tb.area_version_start[area], tb.area_version_stop[area]):
        if tb.version_valid_from[v] <= day:
            found = v
    return found


@njit(cache=True, nogil=True)
def match_legs(perm, card_id, issuer, ts_ms, tap_type, operator, line, tb,
               leg_board, leg_exit, leg_status):
    """SPEC §5 over every card-day: write (boarding row, exit row or -1, LegStatus) per leg.

    ``leg_*`` must hold ``len(perm)`` rows (a day has at most one leg per tap). Returns
    ``(n_legs, status, row)``: ``status`` is OK or the code of the first problem, ``row`` the
    input row it concerns (-1 when OK).
    """
    n = perm.size
    n_legs = 0
    i = 0
    while i < n:
        first = perm[i]
        card = card_id[first]
        iss = issuer[first]
        day = service_day(ts_ms[first])
        open_row = -1  # at most one open entry (its input row)
        open_line = -1
        k = i
        while k < n:
            r = perm[k]
            if card_id[r] != card or issuer[r] != iss or service_day(ts_ms[r]) != day:
                break  # the next card, or this card's next service day
            ln = line_of(tb, np.int64(operator[r]), np.int64(line[r]))
            if ln < 0:
                return n_legs, UNKNOWN_LINE, r
            tt = tap_type[r]
            if tt == _FLAT:  # rule 1
                if open_row >= 0:
                    leg_board[n_legs] = open_row
                    leg_exit[n_legs] = -1
                    leg_status[n_legs] = S_INCOMPLETE
                    n_legs += 1
                    open_row = -1
                leg_board[n_legs] = r
                leg_exit[n_legs] = -1
                leg_status[n_legs] = S_FLAT
                n_legs += 1
            elif tt == _ENTRY:  # rule 2
                if open_row >= 0:
                    leg_board[n_legs] = open_row
                    leg_exit[n_legs] = -1
                    leg_status[n_legs] = S_INCOMPLETE
                    n_legs += 1
                open_row = r
                open_line = ln
            elif open_row >= 0 and tb.line_network[open_line] == tb.line_network[ln]:  # rule 3
                net = tb.line_network[open_line]
                if net < 0:
                    return n_legs, NETWORK_NOT_PRICED, open_row
                v = version_of(tb, tb.line_area[open_line], day)
                if v < 0:
                    return n_legs, NO_VERSION, open_row
                t = tb.fare_table[v, net]
                if t < 0:
                    return n_legs, NETWORK_NOT_PRICED, open_row
                within = ts_ms[r] - ts_ms[open_row] <= tb.fare_max_journey_ms[t]  # inclusive
                leg_board[n_legs] = open_row
                leg_exit[n_legs] = r
                leg_status[n_legs] = S_COMPLETE if within else S_OVERTIME
                n_legs += 1
                open_row = -1
            else:  # rule 4: any other tap type is an EXIT, as in the reference
                if open_row >= 0:
                    leg_board[n_legs] = open_row
                    leg_exit[n_legs] = -1
                    leg_status[n_legs] = S_INCOMPLETE
                    n_legs += 1
                    open_row = -1
                leg_board[n_legs] = r
                leg_exit[n_legs] = -1
                leg_status[n_legs] = S_ORPHAN_EXIT
                n_legs += 1
            k += 1
        if open_row >= 0:  # rule 5
            leg_board[n_legs] = open_row
            leg_exit[n_legs] = -1
            leg_status[n_legs] = S_INCOMPLETE
            n_legs += 1
        i = k
    return n_legs, OK, -1


@njit(cache=True, nogil=True, inline="always")
def transfer_fare(kind: np.int64, value: np.int64, f: np.int64, base: np.int64,
                  previous_f: np.int64) -> np.int64:
    """SPEC §6.4: the k-th transfer's fare from its step-3 fare ``f`` by steps[k-1]."""
    if kind == _FREE:
        return np.int64(0)
    if kind == _OFF_FEN:
        return max(np.int64(0), f - value)
    if kind == _PAY_RATE:  # pays ``value`` bp of its base fare, never more than f
        return min(f, apply_rate(base, 10_000 - value))
    return max(np.int64(0), f - previous_f)  # difference: 扣高免低


@njit(cache=True, nogil=True)
def price_legs(n_legs, leg_board, leg_exit, leg_status, operator, device_id, card_id, card_seq,
               issuer, product, media, ts_ms, line, stop, debited_fen, tb, out):
    """SPEC §6 over matched legs in card order: fill every ``out`` column of ``n_legs`` rows.

    Returns ``(status, row)`` as ``match_legs`` does.
    """
    spent = np.zeros(tb.area_version_start.size, dtype=np.int64)  # step 5: S per area
    # the card-day being priced
    cur_card = np.uint64(0)
    cur_issuer = -1
    cur_day = np.int64(0)
    # the previous leg P, and P's chain
    have_prev = False  # P exists and is not a penalty leg (a penalty leg ends any chain)
    prev_area = -1
    prev_mode = -1
    prev_last_ts = np.int64(0)
    prev_f = np.int64(0)
    chain_ordinal = 0
    chain_first_ms = np.int64(0)
    chain_legs = 0
    chains_started = 0
    for k in range(n_legs):
        b = leg_board[k]
        x = leg_exit[k]
        status = leg_status[k]
        ts = ts_ms[b]
        day = service_day(ts)
        if card_id[b] != cur_card or np.int64(issuer[b]) != cur_issuer or day != cur_day:
            cur_card = card_id[b]
            cur_issuer = np.int64(issuer[b])
            cur_day = day
            have_prev = False
            chains_started = 0
            spent[:] = 0  # nine areas: cheaper than tracking which ones the card touched
        ln = line_of(tb, np.int64(operator[b]), np.int64(line[b]))
        if ln < 0:
            return UNKNOWN_LINE, b
        area = tb.line_area[ln]
        mode = np.int64(tb.line_mode[ln])
        net = tb.line_network[ln]
        v = version_of(tb, area, day)
        if v < 0:
            return NO_VERSION, b
        last_ts = ts_ms[x] if x >= 0 else ts

        out.service_day[k] = day
        out.card_id[k] = card_id[b]
        out.issuer[k] = issuer[b]
        out.product[k] = product[b]
        out.media[k] = media[b]
        out.operator[k] = operator[b]
        out.line[k] = line[b]
        out.mode[k] = mode
        out.area[k] = tb.area_codes[area]
        out.network[k] = tb.network_codes[net] if net >= 0 else 0
        out.status[k] = status
        out.board_stop[k] = stop[b]
        out.exit_stop[k] = stop[x] if x >= 0 else 0
        out.board_ts_ms[k] = ts
        out.last_ts_ms[k] = last_ts
        out.board_card_seq[k] = card_seq[b]
        out.board_device_id[k] = device_id[b]
        out.version[k] = tb.version_valid_from[v]
        out.apportionment[k] = tb.apportionment[v]

        if status != S_FLAT and status != S_COMPLETE:
            # Step 1: a penalty leg computes exactly max_fare; nothing below applies, and it
            # neither starts nor joins a chain nor counts toward a cap.
            if net < 0:
                return NETWORK_NOT_PRICED, b
            t = tb.fare_table[v, net]
            if t < 0:
                return NETWORK_NOT_PRICED, b
            fare = tb.fare_max[t]
            out.honoured_product[k] = product[b]
            out.chain[k] = _NO_CHAIN
            out.transfer_no[k] = 0
            out.base_fen[k] = fare
            out.product_fare_fen[k] = fare
            out.transfer_fare_fen[k] = fare
            out.computed_fen[k] = fare
            out.card_discount_fen[k] = 0
            out.transfer_discount_fen[k] = 0
            out.cap_discount_fen[k] = 0
            _charge(out, k, debited_fen, b, x, fare)
            have_prev = False
            continue

        # Step 1: base fare
        if status == S_FLAT:
            base = tb.line_fare[v, ln]
            if base < 0:
                return LINE_NOT_PRICED, b
        else:
            if net < 0:
                return NETWORK_NOT_PRICED, b
            t = tb.fare_table[v, net]
            if t < 0:
                return NETWORK_NOT_PRICED, b
            if stop[b] == stop[x]:  # checked before any stop lookup, as in the reference
                base = tb.fare_same_station[t]
            else:
                i_pos = _stop_pos(tb, net, np.int64(stop[b]))
                j_pos = _stop_pos(tb, net, np.int64(stop[x]))
                if i_pos < 0:
                    return STOP_NOT_IN_NETWORK, b
                if j_pos < 0:
                    return STOP_NOT_IN_NETWORK, x
                base = tb.fare_matrix[t, i_pos, j_pos]

        # Steps 2-3: honoured product and product fare
        d = np.int64(issuer[b])
        di = tb.issuer_index[d] if d < tb.issuer_index.size else -1
        p = np.int64(product[b])
        if di < 0 or not tb.accepted[v, di]:  # not accepted: visitor rate, as ORDINARY
            honoured = _ORDINARY
            f = apply_rate(base, tb.visitor_rate_bp[v])
        else:
            honoured = p if tb.concession[v, di] else _ORDINARY
            q = honoured if honoured < _N_PRODUCTS else _ORDINARY  # no price: ORDINARY's
            kind = tb.price_kind[v, mode, q]
            value = tb.price_value[v, mode, q]
            if kind == _RATE:
                f = apply_rate(base, value)
            elif kind == _FIXED:
                f = min(base, value)
            else:
                return NO_PRICE, b

        # Step 4: does this leg join P's chain?
        tf = f
        transfer_no = 0
        steps = tb.transfer_steps[v]
        joins = False
        if (have_prev and steps > 0 and prev_area == area
                and tb.transfer_allowed[v, prev_mode, mode]):
            start = chain_first_ms if tb.transfer_from_first[v] else prev_last_ts
            if ts - start <= tb.transfer_window_ms[v] and chain_legs < 1 + steps:
                joins = True
        if joins:
            transfer_no = chain_legs
            tf = transfer_fare(np.int64(tb.step_kind[v, transfer_no - 1]),
                               tb.step_value[v, transfer_no - 1], f, base, prev_f)
            chain_legs += 1
        else:
            chain_ordinal = chains_started
            chain_first_ms = ts
            chain_legs = 1
            chains_started += 1

        # Step 5: daily cap by honoured product over the area's earlier legs, any product
        s = spent[area]
        cap = tb.cap_fen[v, honoured] if honoured < _N_PRODUCTS else _NO_CAP
        computed = tf if cap == _NO_CAP else min(tf, max(np.int64(0), cap - s))
        spent[area] = s + computed

        out.honoured_product[k] = honoured
        out.chain[k] = chain_ordinal
        out.transfer_no[k] = transfer_no
        out.base_fen[k] = base
        out.product_fare_fen[k] = f
        out.transfer_fare_fen[k] = tf
        out.computed_fen[k] = computed
        out.card_discount_fen[k] = base - f
        out.transfer_discount_fen[k] = f - tf
        out.cap_discount_fen[k] = tf - computed
        _charge(out, k, debited_fen, b, x, computed)

        have_prev = True
        prev_area = area
        prev_mode = mode
        prev_last_ts = last_ts
        prev_f = f
    return OK, -1


@njit(cache=True, nogil=True, inline="always")
def _stop_pos(tb, net: np.int64, stop: np.int64) -> np.int64:
    """Row/column of a raw stop in network ``net``'s fare matrix, or -1."""
    if stop >= tb.stop_index.size:
        return -1
    s = tb.stop_index[stop]
    if s < 0:
        return -1
    return tb.network_stop_pos[net, s]


@njit(cache=True, nogil=True, inline="always")
def _charge(out, k, debited_fen, b, x, computed) -> None:
    """SPEC §6, stored value vs account-based: the leg's charged amount, mismatch, debit kind."""
    d0 = np.int64(debited_fen[b])
    d1 = np.int64(debited_fen[x]) if x >= 0 else d0  # a one-tap leg: its tap alone decides
    stored = d0 >= 0 and d1 >= 0
    if stored:
        charged = d0 + (d1 if x >= 0 else 0)
        kind = _STORED
    elif d0 == _ACCOUNT_BASED and d1 == _ACCOUNT_BASED:
        charged = computed
        kind = _ACCOUNT
    else:  # MIXED_DEBIT: charged the non-negative debits, reported as an error
        charged = max(d0, np.int64(0)) + (max(d1, np.int64(0)) if x >= 0 else 0)
        kind = _MIXED
    out.charged_fen[k] = charged
    out.mismatch_fen[k] = charged - computed
    out.debit_kind[k] = kind
