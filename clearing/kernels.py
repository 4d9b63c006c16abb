# mypy: disable-error-code="return-value,arg-type,operator,call-arg"
# (numba kernels compute on numpy scalars: int64 where mypy expects int, uint64 keys)
"""The numba kernels of the fast path: SPEC §5 matching and §6 pricing over taps in card order.

Each kernel is ``@njit(cache=True)``, makes one pass, writes into arrays the caller allocated and
returns a status code instead of raising (STYLE §6); ``clearing.fast`` checks the input, calls
them in order and turns a status into an exception with a fix hint. They are the twins of
``clearing.reference`` (``match_legs`` of ``match_card_day``, ``price_legs`` of
``price_card_day``) and are tested equal to it field by field (``tongka.testing.kernel_registry``).

Taps are read as the records of ``clearing.sorting.sort_tap_records``, in card order: a card's
day is one run of records, read in order, and legs come out in ``LEG_SORT_KEYS`` order. A leg
names its taps by record position; a status names the input row. Every money value is int64
fen; no Python object is made per tap. The fare rules themselves (``apply_rate``, the version in
force, the product price, the transfer step, the daily cap) are ``tariffs.rules``' primitives,
the functions the reference prices with through ``tariffs.fares``; registered below, numba
compiles them into these kernels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit
from numba.extending import register_jitable

from clearing.kernel_tables import KernelTables
from clearing.legs import LEG_COLUMNS, NO_CHAIN, DebitKind, LegStatus
from clearing.service_day import CST_OFFSET_MS, DAY_MS, DAY_START_MS
from clearing.sorting import (
    W_CARD,
    rec_card_seq,
    rec_debit,
    rec_device,
    rec_issuer,
    rec_line,
    rec_media,
    rec_operator,
    rec_product,
    rec_row,
    rec_stop,
    rec_tap_type,
    rec_ts,
)
from clearing.taps import ACCOUNT_BASED, TapType
from tariffs import rules
from tariffs.compile import PriceKind
from tariffs.error_codes import ErrorCode
from tariffs.vocab import Product

# The fare rules are plain Python in ``tariffs.rules`` (the tariff package imports no numba);
# registering them here lets numba compile them into the kernels, inlined as the kernels' own
# helpers are. ``register_jitable`` returns the very function it registers, so these names are
# the rules themselves, and Python callers of ``tariffs.rules`` see the same objects. One call per
# rule: ``register_jitable`` pops its ``inline`` option, so a shared decorator would lose it.
apply_rate = register_jitable(inline="always")(rules.apply_rate)
product_price_fare = register_jitable(inline="always")(rules.product_price_fare)
transfer_step_fare = register_jitable(inline="always")(rules.transfer_step_fare)
capped_fare = register_jitable(inline="always")(rules.capped_fare)
version_in_force = register_jitable(inline="always")(rules.version_in_force)

# -- status codes: what a kernel could not do, and the reference would have raised on ------------
OK = 0
UNKNOWN_LINE = 1  # (operator, line) is not in the registry
NO_VERSION = 2  # no tariff version of the line's area is in force on the service day
NETWORK_NOT_PRICED = 3  # an ENTRY/EXIT leg on a flat line, or on a network the version omits
LINE_NOT_PRICED = 4  # a FLAT leg on a line with no flat fare (e.g. a FLAT tap on a metro line)
STOP_NOT_IN_NETWORK = 5  # a COMPLETE leg's stop is not a stop of the network
NO_PRICE = 6  # no ORDINARY price for the leg's mode

# The error code of each status (a PricingError's code); OK is no error, so it has none.
STATUS_NAMES: dict[int, str] = {
    OK: "OK", UNKNOWN_LINE: ErrorCode.UNKNOWN_LINE, NO_VERSION: ErrorCode.NO_VERSION,
    NETWORK_NOT_PRICED: ErrorCode.NETWORK_NOT_PRICED, LINE_NOT_PRICED: ErrorCode.LINE_NOT_PRICED,
    STOP_NOT_IN_NETWORK: ErrorCode.STOP_NOT_IN_NETWORK, NO_PRICE: ErrorCode.NO_PRICE,
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
_NO_PRICE = int(PriceKind.NONE)
_STORED = int(DebitKind.STORED_VALUE)
_ACCOUNT = int(DebitKind.ACCOUNT)
_MIXED = int(DebitKind.MIXED)
_ACCOUNT_BASED = ACCOUNT_BASED
_NO_CHAIN = NO_CHAIN
_NO_CAP = rules.NO_CAP

class LegArrays(NamedTuple):
    """The output columns, one array per LEG_SCHEMA field, in LEG_COLUMNS order."""

    service_day: np.ndarray
    card_id: np.ndarray
    issuer: np.ndarray
    product: np.ndarray
    honoured_product: np.ndarray
    media: np.ndarray
    operator: np.ndarray
    line: np.ndarray
    mode: np.ndarray
    area: np.ndarray
    network: np.ndarray
    status: np.ndarray
    board_stop: np.ndarray
    exit_stop: np.ndarray
    board_ts_ms: np.ndarray
    last_ts_ms: np.ndarray
    board_card_seq: np.ndarray
    board_device_id: np.ndarray
    version: np.ndarray
    apportionment: np.ndarray
    chain: np.ndarray
    transfer_no: np.ndarray
    base_fen: np.ndarray
    product_fare_fen: np.ndarray
    transfer_fare_fen: np.ndarray
    computed_fen: np.ndarray
    card_discount_fen: np.ndarray
    transfer_discount_fen: np.ndarray
    cap_discount_fen: np.ndarray
    charged_fen: np.ndarray
    mismatch_fen: np.ndarray
    debit_kind: np.ndarray


assert LegArrays._fields == LEG_COLUMNS, "LegArrays and Leg must list the same fields in order"


@njit(cache=True, nogil=True, inline="always")
def service_day(ts_ms: int) -> int:
    """SPEC §1: days since 1970-01-01 of the local date of ``ts - 4 h`` (floor division)."""
    return (ts_ms + CST_OFFSET_MS - DAY_START_MS) // DAY_MS


@njit(cache=True, nogil=True, inline="always")
def line_of(operator_index: np.ndarray, line_index: np.ndarray, operator: int,
            line: int) -> int:
    """Dense line of a raw (operator, line), or -1 when the registry has no such line."""
    if operator < 0 or operator >= operator_index.size:
        return -1
    o = operator_index[operator]
    if o < 0 or line < 0 or line >= line_index.shape[1]:
        return -1
    dense: int = line_index[o, line]
    return dense


@njit(cache=True, nogil=True, inline="always")
def _emit(leg_board: np.ndarray, leg_exit: np.ndarray, leg_status: np.ndarray, n_legs: int,
          board: int, exit_row: int, status: int) -> int:
    """Append one matched leg; returns the new count."""
    leg_board[n_legs] = board
    leg_exit[n_legs] = exit_row
    leg_status[n_legs] = status
    return n_legs + 1


@njit(cache=True, nogil=True)
def match_legs(rec: np.ndarray, tb: KernelTables, leg_board: np.ndarray, leg_exit: np.ndarray,
               leg_status: np.ndarray) -> tuple[int, int, int]:
    """SPEC §5 over every card-day: write (boarding record, exit record or -1, LegStatus).

    ``leg_*`` must hold one row per record (a day has at most one leg per tap). Returns
    ``(n_legs, status, row)``: ``status`` is OK or the code of the first problem, ``row`` the
    input row it concerns (-1 when OK).
    """
    # Arrays leave their namedtuples once: reading a field of a tuple of arrays costs a
    # reference-count round trip on every access inside the loop.
    operator_index = tb.operator_index
    line_index = tb.line_index
    line_area = tb.line_area
    line_network = tb.line_network
    area_version_start = tb.area_version_start
    area_version_stop = tb.area_version_stop
    version_valid_from = tb.version_valid_from
    fare_table = tb.fare_table
    fare_max_journey_ms = tb.fare_max_journey_ms

    n = rec.shape[0]
    n_legs = 0
    i = 0
    while i < n:
        card = rec[i, W_CARD]
        iss = rec_issuer(rec, i)
        day = service_day(rec_ts(rec, i))
        open_row = -1  # at most one open entry (its record)
        open_line = -1
        k = i
        while k < n:
            r = k
            if rec[r, W_CARD] != card or rec_issuer(rec, r) != iss or \
                    service_day(rec_ts(rec, r)) != day:
                break  # the next card, or this card's next service day
            ln = line_of(operator_index, line_index, rec_operator(rec, r), rec_line(rec, r))
            if ln < 0:
                return n_legs, UNKNOWN_LINE, rec_row(rec, r)
            tt = rec_tap_type(rec, r)
            if tt == _FLAT:  # rule 1
                if open_row >= 0:
                    n_legs = _emit(leg_board, leg_exit, leg_status, n_legs, open_row, -1,
                                   S_INCOMPLETE)
                    open_row = -1
                n_legs = _emit(leg_board, leg_exit, leg_status, n_legs, r, -1, S_FLAT)
            elif tt == _ENTRY:  # rule 2
                if open_row >= 0:
                    n_legs = _emit(leg_board, leg_exit, leg_status, n_legs, open_row, -1,
                                   S_INCOMPLETE)
                open_row = r
                open_line = ln
            elif open_row >= 0 and line_network[open_line] == line_network[ln]:  # rule 3
                net = line_network[open_line]
                if net < 0:
                    return n_legs, NETWORK_NOT_PRICED, rec_row(rec, open_row)
                area = line_area[open_line]
                v = version_in_force(version_valid_from, area_version_start[area],
                                     area_version_stop[area], day)
                if v < 0:
                    return n_legs, NO_VERSION, rec_row(rec, open_row)
                t = fare_table[v, net]
                if t < 0:
                    return n_legs, NETWORK_NOT_PRICED, rec_row(rec, open_row)
                within = rec_ts(rec, r) - rec_ts(rec, open_row) <= fare_max_journey_ms[t]
                n_legs = _emit(leg_board, leg_exit, leg_status, n_legs, open_row, r,
                               S_COMPLETE if within else S_OVERTIME)
                open_row = -1
            else:  # rule 4: any other tap type is an EXIT, as in the reference
                if open_row >= 0:
                    n_legs = _emit(leg_board, leg_exit, leg_status, n_legs, open_row, -1,
                                   S_INCOMPLETE)
                    open_row = -1
                n_legs = _emit(leg_board, leg_exit, leg_status, n_legs, r, -1, S_ORPHAN_EXIT)
            k += 1
        if open_row >= 0:  # rule 5
            n_legs = _emit(leg_board, leg_exit, leg_status, n_legs, open_row, -1, S_INCOMPLETE)
        i = k
    return n_legs, OK, -1


@njit(cache=True, nogil=True)
def card_day_start(rec: np.ndarray, i: int) -> int:
    """The first record at or after ``i`` that begins a card-day (``rec.shape[0]`` if none):
    where the records can be cut into parts that match and price independently."""
    n: int = rec.shape[0]
    if i <= 0:
        return 0
    while i < n:
        if rec[i, W_CARD] != rec[i - 1, W_CARD] or rec_issuer(rec, i) != rec_issuer(rec, i - 1) \
                or service_day(rec_ts(rec, i)) != service_day(rec_ts(rec, i - 1)):
            return i
        i += 1
    return n


@njit(cache=True, nogil=True)
def price_legs(n_legs: int, leg_board: np.ndarray, leg_exit: np.ndarray, leg_status: np.ndarray,
               rec: np.ndarray, tb: KernelTables, out: LegArrays) -> tuple[int, int]:
    """SPEC §6 over matched legs in card order: fill every ``out`` column of ``n_legs`` rows.

    Returns ``(status, row)`` as ``match_legs`` does.
    """
    # Arrays leave their namedtuples once: reading a field of a tuple of arrays costs a
    # reference-count round trip on every access inside the loop.
    operator_index = tb.operator_index
    line_index = tb.line_index
    line_mode = tb.line_mode
    line_network = tb.line_network
    line_area = tb.line_area
    area_codes = tb.area_codes
    network_codes = tb.network_codes
    issuer_index = tb.issuer_index
    stop_index = tb.stop_index
    network_stop_pos = tb.network_stop_pos
    area_version_start = tb.area_version_start
    area_version_stop = tb.area_version_stop
    version_valid_from = tb.version_valid_from
    apportionment = tb.apportionment
    line_fare = tb.line_fare
    fare_table = tb.fare_table
    fare_matrix = tb.fare_matrix
    fare_max = tb.fare_max
    fare_same_station = tb.fare_same_station
    accepted = tb.accepted
    concession = tb.concession
    visitor_rate_bp = tb.visitor_rate_bp
    price_kind = tb.price_kind
    price_value = tb.price_value
    transfer_steps = tb.transfer_steps
    transfer_window_ms = tb.transfer_window_ms
    transfer_from_first = tb.transfer_from_first
    transfer_allowed = tb.transfer_allowed
    step_kind = tb.step_kind
    step_value = tb.step_value
    cap_fen = tb.cap_fen
    o_service_day = out.service_day
    o_card_id = out.card_id
    o_issuer = out.issuer
    o_product = out.product
    o_honoured_product = out.honoured_product
    o_media = out.media
    o_operator = out.operator
    o_line = out.line
    o_mode = out.mode
    o_area = out.area
    o_network = out.network
    o_status = out.status
    o_board_stop = out.board_stop
    o_exit_stop = out.exit_stop
    o_board_ts_ms = out.board_ts_ms
    o_last_ts_ms = out.last_ts_ms
    o_board_card_seq = out.board_card_seq
    o_board_device_id = out.board_device_id
    o_version = out.version
    o_apportionment = out.apportionment
    o_chain = out.chain
    o_transfer_no = out.transfer_no
    o_base_fen = out.base_fen
    o_product_fare_fen = out.product_fare_fen
    o_transfer_fare_fen = out.transfer_fare_fen
    o_computed_fen = out.computed_fen
    o_card_discount_fen = out.card_discount_fen
    o_transfer_discount_fen = out.transfer_discount_fen
    o_cap_discount_fen = out.cap_discount_fen
    o_charged_fen = out.charged_fen
    o_mismatch_fen = out.mismatch_fen
    o_debit_kind = out.debit_kind

    spent = np.zeros(area_version_start.size, dtype=np.int64)  # step 5: S per area
    # the card-day being priced
    cur_card = np.uint64(0)
    cur_issuer = -1
    cur_day = 0
    # the previous leg P, and P's chain
    have_prev = False  # P exists and is not a penalty leg (a penalty leg ends any chain)
    prev_area = -1
    prev_mode: int | np.int64 = -1  # a line_mode, widened to int64 as ``mode`` is
    prev_last_ts = 0
    prev_f = 0
    chain_ordinal = 0
    chain_first_ms = 0
    chain_legs = 0
    chains_started = 0
    for k in range(n_legs):
        b = leg_board[k]
        x = leg_exit[k]
        status = leg_status[k]
        ts = rec_ts(rec, b)
        day = service_day(ts)
        iss = rec_issuer(rec, b)
        if rec[b, W_CARD] != cur_card or iss != cur_issuer or day != cur_day:
            cur_card = rec[b, W_CARD]
            cur_issuer = iss
            cur_day = day
            have_prev = False
            chains_started = 0
            spent[:] = 0  # nine areas: cheaper than tracking which ones the card touched
        prod = rec_product(rec, b)
        board_stop = rec_stop(rec, b)
        exit_stop = rec_stop(rec, x) if x >= 0 else np.int64(0)
        ln = line_of(operator_index, line_index, rec_operator(rec, b), rec_line(rec, b))
        if ln < 0:
            return UNKNOWN_LINE, rec_row(rec, b)
        area = line_area[ln]
        mode = np.int64(line_mode[ln])
        net = line_network[ln]
        v = version_in_force(version_valid_from, area_version_start[area],
                             area_version_stop[area], day)
        if v < 0:
            return NO_VERSION, rec_row(rec, b)
        last_ts = rec_ts(rec, x) if x >= 0 else ts

        o_service_day[k] = day
        o_card_id[k] = rec[b, W_CARD]
        o_issuer[k] = iss
        o_product[k] = prod
        o_media[k] = rec_media(rec, b)
        o_operator[k] = rec_operator(rec, b)
        o_line[k] = rec_line(rec, b)
        o_mode[k] = mode
        o_area[k] = area_codes[area]
        o_network[k] = network_codes[net] if net >= 0 else 0
        o_status[k] = status
        o_board_stop[k] = board_stop
        o_exit_stop[k] = exit_stop
        o_board_ts_ms[k] = ts
        o_last_ts_ms[k] = last_ts
        o_board_card_seq[k] = rec_card_seq(rec, b)
        o_board_device_id[k] = rec_device(rec, b)
        o_version[k] = version_valid_from[v]
        o_apportionment[k] = apportionment[v]

        if status != S_FLAT and status != S_COMPLETE:
            # Step 1: a penalty leg computes exactly max_fare; nothing below applies, and it
            # neither starts nor joins a chain nor counts toward a cap.
            if net < 0:
                return NETWORK_NOT_PRICED, rec_row(rec, b)
            t = fare_table[v, net]
            if t < 0:
                return NETWORK_NOT_PRICED, rec_row(rec, b)
            fare = fare_max[t]
            o_honoured_product[k] = prod
            o_chain[k] = _NO_CHAIN
            o_transfer_no[k] = 0
            o_base_fen[k] = fare
            o_product_fare_fen[k] = fare
            o_transfer_fare_fen[k] = fare
            o_computed_fen[k] = fare
            o_card_discount_fen[k] = 0
            o_transfer_discount_fen[k] = 0
            o_cap_discount_fen[k] = 0
            _charge(o_charged_fen, o_mismatch_fen, o_debit_kind, k, rec, b, x, fare)
            have_prev = False
            continue

        # Step 1: base fare
        if status == S_FLAT:
            base = line_fare[v, ln]
            if base < 0:
                return LINE_NOT_PRICED, rec_row(rec, b)
        else:
            if net < 0:
                return NETWORK_NOT_PRICED, rec_row(rec, b)
            t = fare_table[v, net]
            if t < 0:
                return NETWORK_NOT_PRICED, rec_row(rec, b)
            if board_stop == exit_stop:  # checked before any stop lookup, as in the reference
                base = fare_same_station[t]
            else:
                i_pos = _stop_pos(stop_index, network_stop_pos, net, board_stop)
                j_pos = _stop_pos(stop_index, network_stop_pos, net, exit_stop)
                if i_pos < 0:
                    return STOP_NOT_IN_NETWORK, rec_row(rec, b)
                if j_pos < 0:
                    return STOP_NOT_IN_NETWORK, rec_row(rec, x)
                base = fare_matrix[t, i_pos, j_pos]

        # Steps 2-3: honoured product and product fare
        d = iss
        di = issuer_index[d] if d < issuer_index.size else -1
        p = prod
        if di < 0 or not accepted[v, di]:  # not accepted: visitor rate, as ORDINARY
            honoured = _ORDINARY
            f = apply_rate(base, visitor_rate_bp[v])
        else:
            honoured = p if concession[v, di] else _ORDINARY
            q = honoured if honoured < _N_PRODUCTS else _ORDINARY  # no price: ORDINARY's
            kind = price_kind[v, mode, q]
            if kind == _NO_PRICE:
                return NO_PRICE, rec_row(rec, b)
            f = product_price_fare(np.int64(kind), price_value[v, mode, q], base)

        # Step 4: does this leg join P's chain?
        tf = f
        transfer_no = 0
        steps = transfer_steps[v]
        joins = False
        if (have_prev and steps > 0 and prev_area == area
                and transfer_allowed[v, prev_mode, mode]):
            start = chain_first_ms if transfer_from_first[v] else prev_last_ts
            if ts - start <= transfer_window_ms[v] and chain_legs < 1 + steps:
                joins = True
        if joins:
            transfer_no = chain_legs
            tf = transfer_step_fare(np.int64(step_kind[v, transfer_no - 1]),
                                    step_value[v, transfer_no - 1], f, base, prev_f)
            chain_legs += 1
        else:
            chain_ordinal = chains_started
            chain_first_ms = ts
            chain_legs = 1
            chains_started += 1

        # Step 5: daily cap by honoured product over the area's earlier legs, any product
        s = spent[area]
        cap = cap_fen[v, honoured] if honoured < _N_PRODUCTS else _NO_CAP
        computed = capped_fare(tf, cap, s)
        spent[area] = s + computed

        o_honoured_product[k] = honoured
        o_chain[k] = chain_ordinal
        o_transfer_no[k] = transfer_no
        o_base_fen[k] = base
        o_product_fare_fen[k] = f
        o_transfer_fare_fen[k] = tf
        o_computed_fen[k] = computed
        o_card_discount_fen[k] = base - f
        o_transfer_discount_fen[k] = f - tf
        o_cap_discount_fen[k] = tf - computed
        _charge(o_charged_fen, o_mismatch_fen, o_debit_kind, k, rec, b, x, computed)

        have_prev = True
        prev_area = area
        prev_mode = mode
        prev_last_ts = last_ts
        prev_f = f
    return OK, -1


@njit(cache=True, nogil=True, inline="always")
def _stop_pos(stop_index: np.ndarray, network_stop_pos: np.ndarray, net: int, stop: int) -> int:
    """Row/column of a raw stop in network ``net``'s fare matrix, or -1."""
    if stop >= stop_index.size:
        return -1
    s = stop_index[stop]
    if s < 0:
        return -1
    pos: int = network_stop_pos[net, s]
    return pos


@njit(cache=True, nogil=True, inline="always")
def _charge(o_charged_fen: np.ndarray, o_mismatch_fen: np.ndarray, o_debit_kind: np.ndarray,
            k: int, rec: np.ndarray, b: int, x: int, computed: int) -> None:
    """SPEC §6, stored value vs account-based: the leg's charged amount, mismatch, debit kind."""
    d0 = rec_debit(rec, b)
    d1 = rec_debit(rec, x) if x >= 0 else d0  # a one-tap leg: its tap alone decides
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
    o_charged_fen[k] = charged
    o_mismatch_fen[k] = charged - computed
    o_debit_kind[k] = kind
