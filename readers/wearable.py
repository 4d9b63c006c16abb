"""Wearables (watches, bands): JSON Lines from the device vendor's transit platform.

Like a phone, a watch or band holds a virtual card in its secure element; the vendor's export
names the device kind, the virtual card's number and the purse transaction with its MAC
(the TAC of ``readers.tunion``), and writes the time as ISO 8601 with its UTC offset.
docs/formats/wearable.md is the format.
"""

from __future__ import annotations

from readers.fields import (
    ASN,
    HEX8,
    INT,
    ISO_MS,
    NAME,
    PRODUCT_NAME,
    TAP_NAME,
    Spec,
)
from readers.stored import JsonStoredValueAdapter
from tariffs.vocab import Media

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
