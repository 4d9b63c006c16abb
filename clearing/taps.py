"""The canonical tap (SPEC §3): the one row shape every reader adapter produces.

The Arrow schema is the bulk contract; ``TapRecord`` mirrors it for single records at the
edges (tests, error reports, API payloads), never for ten million rows one by one.
"""

from __future__ import annotations

import enum
from typing import Annotated

import pyarrow as pa
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


def taps_table(records: list[TapRecord] | list[dict]) -> pa.Table:
    """Build a canonical tap table from records or plain dicts (tests, small fixtures)."""
    rows = [r.model_dump() if isinstance(r, TapRecord) else dict(r) for r in records]
    return pa.Table.from_pylist(rows, schema=TAP_SCHEMA)


def empty_taps() -> pa.Table:
    return TAP_SCHEMA.empty_table()
