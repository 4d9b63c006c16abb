"""The canonical tap (SPEC §3): the one row shape every reader adapter produces.

The Arrow schema is the bulk contract; ``TapRecord`` mirrors it for single records at the
edges (tests, error reports, API payloads), never for ten million rows one by one.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from tariffs.vocab import Media, Product


class TapType(enum.IntEnum):
    """How a tap meets the line (SPEC §5)."""

    FLAT = 0  # single tap on a flat-fare boarding
    ENTRY = 1  # tap-in on an entry-exit network
    EXIT = 2  # tap-out on an entry-exit network


ACCOUNT_BASED = -1  # debited_fen of a tap whose charge the engine decides (QR, account-based)

TAP_SCHEMA = pa.schema(
    [
        pa.field("operator", pa.uint16(), nullable=False),
        pa.field("device_id", pa.int64(), nullable=False),
        pa.field("device_seq", pa.int64(), nullable=False),
        pa.field("card_id", pa.uint64(), nullable=False),
        pa.field("card_seq", pa.int32(), nullable=False),
        pa.field("issuer", pa.uint16(), nullable=False),
        pa.field("product", pa.uint8(), nullable=False),
        pa.field("media", pa.uint8(), nullable=False),
        pa.field("ts_ms", pa.int64(), nullable=False),
        pa.field("city", pa.uint32(), nullable=False),
        pa.field("line", pa.uint32(), nullable=False),
        pa.field("stop", pa.uint32(), nullable=False),
        pa.field("tap_type", pa.uint8(), nullable=False),
        pa.field("debited_fen", pa.int32(), nullable=False),
    ]
)
TAP_COLUMNS: tuple[str, ...] = tuple(TAP_SCHEMA.names)

# SPEC v1.2 §3: optional columns. A batch or stored file without one reads as its default, so
# every tap file written before v1.2 stays readable; pricing never reads them.
BALANCE_UNKNOWN = -1  # balance_fen of a tap whose medium reported no balance (QR, accounts)
BALANCE_FIELD = pa.field("balance_fen", pa.int64(), nullable=False)
OPTIONAL_DEFAULTS: dict[str, int] = {"balance_fen": BALANCE_UNKNOWN}
FULL_TAP_SCHEMA = TAP_SCHEMA.append(BALANCE_FIELD)  # required columns, then the optional ones
FULL_TAP_COLUMNS: tuple[str, ...] = tuple(FULL_TAP_SCHEMA.names)

U8 = Annotated[int, Field(ge=0, le=2**8 - 1)]
U16 = Annotated[int, Field(ge=0, le=2**16 - 1)]
U32 = Annotated[int, Field(ge=0, le=2**32 - 1)]
U64 = Annotated[int, Field(ge=0, le=2**64 - 1)]
I32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
I64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class TapRecord(BaseModel):
    """One canonical tap; field types are the storage widths of ``TAP_SCHEMA``."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    operator: U16
    device_id: I64
    device_seq: I64
    card_id: U64
    card_seq: I32
    issuer: U16
    product: U8 = int(Product.ORDINARY)
    media: U8 = int(Media.CARD)
    ts_ms: I64
    city: U32
    line: U32
    stop: U32
    tap_type: U8
    debited_fen: I32 = ACCOUNT_BASED
    balance_fen: I64 = BALANCE_UNKNOWN


def taps_table(records: list[TapRecord] | list[dict[str, Any]]) -> pa.Table:
    """Build a canonical tap table from records or plain dicts (tests, small fixtures).

    The optional columns (``balance_fen``) are kept when some record gives them, filled with
    their default where a record does not; a table of records without them has ``TAP_SCHEMA``.
    """
    rows = [r.model_dump(exclude_defaults=False) if isinstance(r, TapRecord) else dict(r)
            for r in records]
    given = any(r.get("balance_fen", BALANCE_UNKNOWN) != BALANCE_UNKNOWN for r in rows)
    if not given:
        return pa.Table.from_pylist(rows, schema=TAP_SCHEMA)
    for r in rows:
        r.setdefault("balance_fen", BALANCE_UNKNOWN)
    return pa.Table.from_pylist(rows, schema=FULL_TAP_SCHEMA)


def with_optional_columns(taps: pa.Table) -> pa.Table:
    """The taps with every ``FULL_TAP_SCHEMA`` column, in its order and type (SPEC v1.2 §3).

    A missing optional column is filled with its default (``balance_fen`` -1), so files and
    batches written before v1.2 read as taps without a balance; nulls in it read the same.
    Extra columns are dropped.
    """
    n = taps.num_rows
    for name, default in OPTIONAL_DEFAULTS.items():
        typ = FULL_TAP_SCHEMA.field(name).type
        if name not in taps.column_names:
            taps = taps.append_column(pa.field(name, typ, nullable=False),
                                      pa.array(np.full(n, default, dtype=np.int64), typ))
        elif taps.column(name).null_count:
            i = taps.column_names.index(name)
            taps = taps.set_column(i, pa.field(name, typ, nullable=False),
                                   pc.fill_null(taps.column(name).cast(typ), default))
    return taps.select(list(FULL_TAP_COLUMNS)).cast(FULL_TAP_SCHEMA)


def balances(taps: pa.Table) -> np.ndarray:
    """Each tap's ``balance_fen`` as int64; all -1 when the table has no such column."""
    if "balance_fen" not in taps.column_names:
        return np.full(taps.num_rows, BALANCE_UNKNOWN, dtype=np.int64)
    col = taps.column("balance_fen")
    if col.null_count:
        col = pc.fill_null(col, BALANCE_UNKNOWN)
    return np.asarray(col.to_numpy(), dtype=np.int64)


def empty_taps() -> pa.Table:
    return TAP_SCHEMA.empty_table()
