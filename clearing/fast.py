"""The fast path of matching and pricing (SPEC §5-§6): a thin, checking wrapper around the kernels.

``match_and_price_fast`` has the contract of ``clearing.reference.match_and_price``: accepted,
de-duplicated taps of any service days in, one ``LEG_SCHEMA`` row per leg out, sorted by
``LEG_SORT_KEYS``; it is tested equal to the reference field by field. This module is the
imperative shell: it checks column names, dtypes, nulls and lengths (raising with a fix hint),
allocates every array, runs the sort and the two kernels, and turns a kernel status code into
an exception. No Python object is made per tap.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from clearing import kernels
from clearing.errors import InputError, TongkaError
from clearing.kernel_tables import KernelTables, kernel_tables
from clearing.legs import LEG_COLUMNS, LEG_SCHEMA, LEG_TYPES
from clearing.sorting import sort_taps
from clearing.taps import TAP_SCHEMA
from tariffs.load import TariffSet

# The tap columns matching and pricing read (SPEC §3); ``city`` and ``device_seq`` served
# acceptance and de-duplication (SPEC §4) and are not needed any more.
NEEDED_COLUMNS: tuple[str, ...] = (
    "operator", "device_id", "card_id", "card_seq", "issuer", "product", "media", "ts_ms",
    "line", "stop", "tap_type", "debited_fen",
)
_LEG_DTYPES = {name: np.dtype(t.to_pandas_dtype()) for name, t in LEG_TYPES.items()}


class PricingError(TongkaError):
    """The kernels met taps the tariff set cannot price (the reference raises there too)."""

    code = "PRICING_FAILED"
    exit_code = 2


def match_and_price_fast(taps: pa.Table, tariffs: TariffSet) -> pa.Table:
    """Match and price accepted, de-duplicated taps of any service days; one row per leg.

    Same contract and same result as ``clearing.reference.match_and_price``.
    """
    cols = tap_arrays(taps)
    return match_and_price_arrays(cols, kernel_tables(tariffs))


def tap_arrays(taps: pa.Table) -> dict[str, np.ndarray]:
    """The needed tap columns as numpy arrays of the TAP_SCHEMA dtypes (zero-copy when possible).

    Raises ``InputError`` naming the column and the fix when a column is missing, of another
    type or holds nulls.
    """
    if not isinstance(taps, pa.Table):
        raise InputError(f"taps must be a pyarrow Table, not {type(taps).__name__}: build one "
                         "with clearing.taps.taps_table or read a batch Parquet file")
    out: dict[str, np.ndarray] = {}
    for name in NEEDED_COLUMNS:
        want = TAP_SCHEMA.field(name).type
        if name not in taps.column_names:
            raise InputError(f"taps have no column {name!r}: give every TAP_SCHEMA column "
                             "(clearing.taps.TAP_SCHEMA)", code="TAPS_MISSING_COLUMN")
        column = taps.column(name)
        if column.type != want:
            raise InputError(f"taps column {name!r} is {column.type}, expected {want}: cast the "
                             "table with taps.cast(clearing.taps.TAP_SCHEMA)",
                             code="TAPS_WRONG_TYPE")
        if column.null_count:
            raise InputError(f"taps column {name!r} has {column.null_count} nulls: every tap "
                             "field is required (SPEC §3); quarantine those rows at ingestion",
                             code="TAPS_NULL")
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        out[name] = array.to_numpy(zero_copy_only=False)
    lengths = {len(a) for a in out.values()}
    if len(lengths) > 1:  # a pyarrow Table cannot do this; a hand-made dict of arrays can
        raise InputError("taps columns differ in length", code="TAPS_RAGGED")
    return out


def match_and_price_arrays(cols: dict[str, np.ndarray], tb: KernelTables) -> pa.Table:
    """Sort, match and price taps given as TAP_SCHEMA-typed numpy arrays (see ``tap_arrays``)."""
    n = len(cols["card_id"])
    perm = sort_taps(cols["card_id"], cols["issuer"], cols["ts_ms"], cols["card_seq"])
    legs = match_sorted(cols, perm, tb)
    n_legs, leg_board, leg_exit, leg_status = legs
    out = kernels.LegArrays(*(np.empty(n_legs, dtype=_LEG_DTYPES[c]) for c in LEG_COLUMNS))
    status, row = kernels.price_legs(
        n_legs, leg_board, leg_exit, leg_status, cols["operator"], cols["device_id"],
        cols["card_id"], cols["card_seq"], cols["issuer"], cols["product"], cols["media"],
        cols["ts_ms"], cols["line"], cols["stop"], cols["debited_fen"], tb, out)
    _check(status, row, cols)
    del perm, legs, leg_board, leg_exit, leg_status
    assert n >= n_legs
    return pa.Table.from_arrays([pa.array(a) for a in out], schema=LEG_SCHEMA)


def match_sorted(cols: dict[str, np.ndarray], perm: np.ndarray,
                 tb: KernelTables) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """SPEC §5 on taps in card order: (n_legs, boarding rows, exit rows or -1, LegStatus)."""
    n = len(perm)
    leg_board = np.empty(n, dtype=np.int64)
    leg_exit = np.empty(n, dtype=np.int64)
    leg_status = np.empty(n, dtype=np.uint8)
    n_legs, status, row = kernels.match_legs(
        perm, cols["card_id"], cols["issuer"], cols["ts_ms"], cols["tap_type"],
        cols["operator"], cols["line"], tb, leg_board, leg_exit, leg_status)
    _check(status, row, cols)
    return n_legs, leg_board[:n_legs], leg_exit[:n_legs], leg_status[:n_legs]


_HINTS = {
    kernels.UNKNOWN_LINE: "the tap's (operator, line) is not in the registry: only taps accepted "
                          "by ingestion (SPEC §4) can be priced",
    kernels.NO_VERSION: "no tariff version of the line's area is in force on the tap's service "
                        "day: add a version with an earlier valid_from",
    kernels.NETWORK_NOT_PRICED: "an ENTRY/EXIT leg on a flat line, or on a network the tariff "
                                "version does not price: check the tap_type and the tariff's "
                                "networks",
    kernels.LINE_NOT_PRICED: "a FLAT leg on a line with no flat fare (a FLAT tap on an "
                             "entry-exit network?): check the tap_type and the tariff's line_fares",
    kernels.STOP_NOT_IN_NETWORK: "a journey's stop is not a stop of its network: only taps "
                                 "accepted by ingestion (SPEC §4) can be priced",
    kernels.NO_PRICE: "the tariff version has no ORDINARY price for the leg's mode",
}


def _check(status: int, row: int, cols: dict[str, np.ndarray]) -> None:
    if status == kernels.OK:
        return
    tap = {name: int(a[row]) for name, a in cols.items()} if row >= 0 else {}
    raise PricingError(f"cannot price input row {row} {tap}: {_HINTS[status]}",
                       code=kernels.STATUS_NAMES[status])
