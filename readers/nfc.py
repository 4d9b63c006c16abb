"""Phone NFC cards: JSON Lines from the wallet platform, one virtual-card purse debit per line.

The platform relays what the handset's secure element signed: the virtual card's ASN, the
transaction and its TAC, plus the wallet account token and the handset model, which the
clearing centre does not need (the account token is personal data and is only ever kept as a
keyed token). docs/formats/nfc.md is the format.
"""

from __future__ import annotations

from readers.fields import ASN, EPOCH_MS, HEX8, INT, TAP_NAME, TEXT, TOKEN, Spec
from readers.stored import JsonStoredValueAdapter
from tariffs.vocab import Media


class NfcAdapter(JsonStoredValueAdapter):
    """``nfc``: virtual cards in phones (Huawei / Xiaomi / Apple wallets and the like)."""

    name = "nfc"
    description = "phone NFC virtual cards: JSON Lines from the wallet platform (.jsonl)"
    media: tuple[Media, ...] = (Media.NFC_PHONE,)
    marker = "virtual_asn"
    tac_field = "tac"
    specs = (
        Spec("virtual_asn", ASN, "asn"),
        Spec("issuer", INT, "issuer"),
        Spec("wallet_account", TOKEN, "wallet"),
        Spec("handset_model", TEXT, "handset"),
        Spec("card_seq", INT, "card_seq"),
        Spec("card_type", INT, "product"),
        Spec("txn", TAP_NAME, "tap"),
        Spec("amount_fen", INT, "amount"),
        Spec("balance_fen", INT, "balance"),
        Spec("operator", INT, "operator"),
        Spec("terminal_id", INT, "terminal_id"),
        Spec("terminal_seq", INT, "terminal_seq"),
        Spec("ts_ms", EPOCH_MS, "ts_ms"),
        Spec("city", INT, "city"),
        Spec("line", INT, "line"),
        Spec("stop", INT, "stop"),
        Spec("tac", HEX8, "tac"),
    )
