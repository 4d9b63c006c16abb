"""Wearables (watches, bands): JSON Lines from the device vendor's transit platform.

Like a phone, a watch or band holds a virtual card in its secure element; the vendor's export
names the device kind, the virtual card's number and the purse transaction with its MAC
(the TAC of ``readers.tunion``), and writes the time as ISO 8601 with its UTC offset.
docs/formats/wearable.md is the format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from readers.columns import iso_times
from readers.fields import (
    ASN,
    HEX8,
    INT,
    ISO_MS,
    NAME,
    PRODUCT_NAME,
    PRODUCT_NAMES,
    TAP_NAME,
    TAP_NAMES,
    Spec,
)
from readers.stored import JsonStoredValueAdapter
from readers.tunion import stored_value_writable
from tariffs.vocab import Media

if TYPE_CHECKING:
    from readers.config import ReaderConfig
    from readers.identities import Identities

DEVICE_KINDS = ("watch", "band")


class WearableAdapter(JsonStoredValueAdapter):
    """``wearable``: virtual cards in watches and bands."""

    name = "wearable"
    description = "watches and bands: JSON Lines from the device vendor's platform (.jsonl)"
    media: tuple[Media, ...] = (Media.WEARABLE,)
    marker = "device_kind"
    tac_field = "mac"
    specs = (
        Spec("device_kind", NAME, "device_kind", DEVICE_KINDS),
        Spec("card_no", ASN, "asn"),
        Spec("issuer", INT, "issuer"),
        Spec("seq", INT, "card_seq"),
        Spec("product", PRODUCT_NAME, "product"),
        Spec("tap", TAP_NAME, "tap"),
        Spec("fare_fen", INT, "amount"),
        Spec("balance_fen", INT, "balance"),
        Spec("operator", INT, "operator"),
        Spec("reader_id", INT, "terminal_id"),
        Spec("reader_seq", INT, "terminal_seq"),
        Spec("time", ISO_MS, "ts_ms"),
        Spec("city", INT, "city"),
        Spec("line", INT, "line"),
        Spec("stop", INT, "stop"),
        Spec("mac", HEX8, "tac"),
    )

    def writable(self, taps: pa.Table, config: ReaderConfig) -> np.ndarray:
        # products are written by name: only the five of SPEC §3 exist
        return stored_value_writable(taps) & (
            taps.column("product").to_numpy() < len(PRODUCT_NAMES)
        )

    def rows(self, taps: pa.Table, ids: Identities, cols: dict[str, np.ndarray]) -> list[dict]:
        c = {k: v.tolist() for k, v in cols.items()}
        tap = taps.column("tap_type").to_numpy().tolist()
        kind = (np.asarray(ids.balance) % len(DEVICE_KINDS)).tolist()
        times = iso_times(cols["ts_ms"])
        return [
            {
                "device_kind": DEVICE_KINDS[kind[i]],
                "card_no": "",
                "issuer": c["issuer"][i],
                "seq": c["card_seq"][i],
                "product": PRODUCT_NAMES[c["product"][i]],
                "tap": TAP_NAMES[tap[i]],
                "fare_fen": c["amount"][i],
                "balance_fen": c["balance"][i],
                "operator": c["operator"][i],
                "reader_id": c["terminal_id"][i],
                "reader_seq": c["terminal_seq"][i],
                "time": times[i],
                "city": c["city"][i],
                "line": c["line"][i],
                "stop": c["stop"][i],
                "mac": "",
            }
            for i in range(taps.num_rows)
        ]
