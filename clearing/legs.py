"""Priced legs (SPEC §5-§6): what matching and pricing produce, one row per leg.

``Leg`` is the readable single-leg value the reference returns; ``LEG_SCHEMA`` is the Arrow
contract the fast path writes and settlement reads. Both carry the same fields in the same
order, so a list of ``Leg`` and a leg table compare field by field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields

import pyarrow as pa

from tariffs.vocab import Apportionment as Apportionment  # one enum per concept, re-exported


class LegStatus(enum.IntEnum):
    """How a leg's taps paired up (SPEC §5)."""

    FLAT = 0  # one FLAT tap on a flat-fare line
    COMPLETE = 1  # ENTRY and EXIT on one network within max_journey_minutes
    INCOMPLETE = 2  # ENTRY never closed by an EXIT on its network (penalty)
    OVERTIME = 3  # ENTRY and EXIT further apart than max_journey_minutes (penalty)
    ORPHAN_EXIT = 4  # EXIT without a matching open ENTRY (penalty)


PENALTY_STATUSES = frozenset({LegStatus.INCOMPLETE, LegStatus.OVERTIME, LegStatus.ORPHAN_EXIT})


class DebitKind(enum.IntEnum):
    """Who decided the charge (SPEC §6, stored value vs account-based)."""

    STORED_VALUE = 0  # every tap debited >= 0: charged is the readers' debits
    ACCOUNT = 1  # every tap debited -1: charged is the computed fare
    MIXED = 2  # MIXED_DEBIT: charged the non-negative debits, reported as an error


NO_CHAIN = -1  # chain of a penalty leg: penalty legs are in no chain


@dataclass(frozen=True, slots=True)
class Leg:
    service_day: int  # days since 1970-01-01
    card_id: int
    issuer: int
    product: int  # the card's product
    honoured_product: int  # SPEC §6.2-3: the product the tariff priced
    media: int
    operator: int
    line: int
    mode: int
    area: int  # tariff area: the city of the line's operator
    network: int  # 0 for flat lines
    status: int  # LegStatus
    board_stop: int
    exit_stop: int  # 0 when the leg has no EXIT
    board_ts_ms: int
    last_ts_ms: int
    board_card_seq: int
    board_device_id: int
    version: int  # valid_from (day number) of the tariff version that priced the leg
    apportionment: int  # Apportionment of that version
    chain: int  # ordinal of the leg's chain within the card's day; NO_CHAIN for penalty legs
    transfer_no: int  # 0 for a chain's first leg, k for its k-th transfer
    base_fen: int
    product_fare_fen: int  # step 3
    transfer_fare_fen: int  # step 4
    computed_fen: int  # step 5: the leg's computed fare
    card_discount_fen: int
    transfer_discount_fen: int
    cap_discount_fen: int
    charged_fen: int
    mismatch_fen: int  # charged - computed
    debit_kind: int  # DebitKind


LEG_TYPES: dict[str, pa.DataType] = {
    "service_day": pa.int32(),
    "card_id": pa.uint64(),
    "issuer": pa.uint16(),
    "product": pa.uint8(),
    "honoured_product": pa.uint8(),
    "media": pa.uint8(),
    "operator": pa.uint16(),
    "line": pa.uint32(),
    "mode": pa.uint8(),
    "area": pa.uint32(),
    "network": pa.uint16(),
    "status": pa.uint8(),
    "board_stop": pa.uint32(),
    "exit_stop": pa.uint32(),
    "board_ts_ms": pa.int64(),
    "last_ts_ms": pa.int64(),
    "board_card_seq": pa.int32(),
    "board_device_id": pa.int64(),
    "version": pa.int32(),
    "apportionment": pa.uint8(),
    "chain": pa.int32(),
    "transfer_no": pa.int16(),
    "base_fen": pa.int64(),
    "product_fare_fen": pa.int64(),
    "transfer_fare_fen": pa.int64(),
    "computed_fen": pa.int64(),
    "card_discount_fen": pa.int64(),
    "transfer_discount_fen": pa.int64(),
    "cap_discount_fen": pa.int64(),
    "charged_fen": pa.int64(),
    "mismatch_fen": pa.int64(),
    "debit_kind": pa.uint8(),
}
LEG_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Leg))
assert LEG_COLUMNS == tuple(LEG_TYPES), "Leg and LEG_TYPES must list the same fields in order"
LEG_SCHEMA = pa.schema([pa.field(n, t, nullable=False) for n, t in LEG_TYPES.items()])

# The leg columns written dictionary-encoded (``use_dictionary``): the others take a distinct
# value almost every leg, so their dictionary outgrew its page and fell back to plain pages
# after hashing every value. Plain from the start: the same values, the 10M day's legs written
# in 3.1-4.0 s instead of 5.6-7.0 s (a loaded machine) and 7% smaller (issue 13).
LEG_DICTIONARY_COLUMNS: tuple[str, ...] = tuple(
    name for name in LEG_TYPES
    if name not in {"card_id", "board_ts_ms", "last_ts_ms", "board_card_seq"})

# The leg columns the SPEC §10 signals read (``clearing.risk.mismatch_devices`` and the
# DEBIT_MISMATCH evidence): ``risk.day_signals`` selects exactly these, so a column it reads
# must be named here, and a clear keeps only these of every leg for the signals (issue 13).
SIGNAL_LEG_COLUMNS: tuple[str, ...] = (
    "operator", "board_device_id", "debit_kind", "charged_fen", "computed_fen", "status",
    "issuer", "card_id", "board_card_seq",
)

# Canonical order of a day's legs: by card, then as SPEC §5 emits them.
LEG_SORT_KEYS: tuple[str, ...] = ("card_id", "issuer", "board_ts_ms", "board_card_seq")


def legs_table(legs: list[Leg]) -> pa.Table:
    """An Arrow leg table from reference legs, in the order given."""
    # getattr per column, not dataclasses.astuple: astuple deep-copies every field.
    return pa.Table.from_arrays(
        [
            pa.array([getattr(leg, name) for leg in legs], type=LEG_TYPES[name])
            for name in LEG_COLUMNS
        ],
        schema=LEG_SCHEMA,
    )


def legs_from_table(table: pa.Table) -> list[Leg]:
    """Reference legs from an Arrow leg table (for field-by-field comparison in tests)."""
    cols = [table.column(name).to_pylist() for name in LEG_COLUMNS]
    return [Leg(*row) for row in zip(*cols, strict=True)]


def sort_legs(table: pa.Table) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in LEG_SORT_KEYS])
