"""The raw-format writers: canonical taps written back out as the bytes of each reader format.

Readers parse; these write. Each writer is the inverse of one adapter in ``readers/`` and uses
that format's codecs (record layouts, field names, the TAC, the QR payload), which the adapters
never import back: ``tongka.testing.synth.write_raw`` (``tongka generate --raw``), the reader
tests and the reader benchmarks are their callers. A writer takes the taps and the invented raw
identities of their cards (``Identities``, which ``tongka.testing.synth.identities`` makes).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clearing.taps import ACCOUNT_BASED
from readers.card import CardAdapter
from readers.columns import iso_times, put_compact_time
from readers.config import ReaderConfig, ReaderConfigError
from readers.fields import PRODUCT_NAMES, TAP_NAMES
from readers.nfc import NfcAdapter
from readers.qr import PAYLOAD_TAG, QrAdapter
from readers.ssc import SEPARATOR, TAG, SocialSecurityAdapter
from readers.stored import JsonStoredValueAdapter
from readers.tunion import (
    BLOCK_WIDTH,
    MAX_TS_MS,
    MAX_VALUE,
    RECORD_WIDTH,
    build_blocks,
    expected_tacs,
    tac_hex,
    txn_of_tap_type,
)
from readers.wearable import DEVICE_KINDS, WearableAdapter

HANDSETS = ("HUAWEI Mate 60", "HONOR Magic6", "Xiaomi 14", "OPPO Find X7", "vivo X100", "iPhone 15")
CODE_VALIDITY_MS = 120_000  # how long the synthetic app's QR codes stay valid


@dataclass(frozen=True, eq=False)
class Identities:
    """The invented raw identities of each tap's card, aligned with the taps."""

    asn: np.ndarray  # (n, 20) uint8 ASCII: the card's (or virtual card's) application serial number
    ss_number: np.ndarray  # (n, 18) uint8 ASCII: social-security number (ISO 7064 MOD 11-2)
    wallet: np.ndarray  # (n,) str: the phone wallet's account token
    account: np.ndarray  # (n,) str: the QR code account token
    balance: np.ndarray  # (n,) int64: purse balance after the tap, fen

    def take(self, rows: np.ndarray) -> Identities:
        return Identities(
            self.asn[rows],
            self.ss_number[rows],
            self.wallet[rows],
            self.account[rows],
            self.balance[rows],
        )


class RawWriter(Protocol):
    """Writes one raw format (its name, media and suffix are its adapter's)."""

    def writable(self, taps: pa.Table, config: ReaderConfig) -> np.ndarray:
        """Which canonical taps (of this format's media) the format can express."""
        ...

    def render(self, taps: pa.Table, ids: Identities, config: ReaderConfig) -> bytes:
        """The file bytes of ``taps``, with the cards' invented raw identities ``ids``."""
        ...


# -- the stored-value purse transaction (readers.tunion) --------------------------------------


def stored_value_columns(taps: pa.Table, balance: np.ndarray) -> dict[str, np.ndarray]:
    """T-Union fields of canonical taps: form = medium, txn type and direction from the tap type."""
    get = {
        name: taps.column(name).to_numpy().astype(np.int64)
        for name in taps.column_names
        if name != "card_id"
    }
    txn, direction = txn_of_tap_type(get["tap_type"])
    return {
        "form": get["media"],
        "issuer": get["issuer"],
        "card_seq": get["card_seq"],
        "txn_type": txn,
        "direction": direction,
        "product": get["product"],
        "amount": get["debited_fen"],
        "balance": np.asarray(balance, dtype=np.int64),
        "operator": get["operator"],
        "terminal_id": get["device_id"],
        "terminal_seq": get["device_seq"],
        "ts_ms": get["ts_ms"],
        "city": get["city"],
        "line": get["line"],
        "stop": get["stop"],
    }


def stored_value_writable(taps: pa.Table) -> np.ndarray:
    """Taps a stored-value record can express: a known tap type, a debit >= 0, values in range."""
    col = {
        name: taps.column(name).to_numpy().astype(np.int64)
        for name in (
            "issuer",
            "card_seq",
            "product",
            "debited_fen",
            "operator",
            "device_id",
            "device_seq",
            "ts_ms",
            "city",
            "line",
            "stop",
            "tap_type",
        )
    }
    ok = (
        (col["tap_type"] >= 0)
        & (col["tap_type"] <= 2)
        & (col["ts_ms"] >= 0)
        & (col["ts_ms"] <= MAX_TS_MS)
    )
    for name, field_name in (
        ("issuer", "issuer"),
        ("card_seq", "card_seq"),
        ("product", "product"),
        ("debited_fen", "amount"),
        ("operator", "operator"),
        ("device_id", "terminal_id"),
        ("device_seq", "terminal_seq"),
        ("city", "city"),
        ("line", "line"),
        ("stop", "stop"),
    ):
        ok &= (col[name] >= 0) & (col[name] <= MAX_VALUE[field_name])
    return ok


def tac_texts(cols: dict[str, np.ndarray], asn: np.ndarray, config: ReaderConfig) -> str:
    """The 8-character hex TACs of rows to write, concatenated (the writers slice it)."""
    tacs, _ = expected_tacs(build_blocks(cols, asn), cols["issuer"], config)
    return str(tac_hex(tacs).tobytes().decode("ascii"))


# -- the writers --------------------------------------------------------------------------------


class CardWriter:
    """``card`` records (``readers.card``)."""

    def writable(self, taps: pa.Table, config: ReaderConfig) -> np.ndarray:
        return stored_value_writable(taps)

    def render(self, taps: pa.Table, ids: Identities, config: ReaderConfig) -> bytes:
        """Card records of canonical taps and their invented identities.

        An issuer without a TAC key gets TAC 00000000, which parsing reports as TAC_KEY_UNKNOWN.
        """
        cols = stored_value_columns(taps, ids.balance)
        blocks = build_blocks(cols, ids.asn)
        tacs, _ = expected_tacs(blocks, cols["issuer"], config)
        out = np.empty((len(blocks), RECORD_WIDTH + 1), dtype=np.uint8)
        out[:, :BLOCK_WIDTH] = blocks
        out[:, BLOCK_WIDTH:RECORD_WIDTH] = tac_hex(tacs)
        out[:, RECORD_WIDTH] = 0x0A
        return bytes(out.tobytes())


class _JsonStoredValueWriter:
    """A JSON Lines stored-value format (``readers.stored``); subclasses make the rows."""

    def __init__(self, adapter: JsonStoredValueAdapter) -> None:
        self.tac_field = adapter.tac_field
        self.asn_field = next(s.name for s in adapter.specs if s.role == "asn")

    def writable(self, taps: pa.Table, config: ReaderConfig) -> np.ndarray:
        return stored_value_writable(taps)

    def render(self, taps: pa.Table, ids: Identities, config: ReaderConfig) -> bytes:
        cols = stored_value_columns(taps, ids.balance)
        tac_text = tac_texts(cols, ids.asn, config)
        asn_text = ids.asn.tobytes().decode("ascii")
        out = []
        for i, row in enumerate(self.rows(taps, ids, cols)):
            row[self.tac_field] = tac_text[8 * i : 8 * i + 8]
            row[self.asn_field] = asn_text[20 * i : 20 * i + 20]
            out.append(json.dumps(row, separators=(",", ":")))
        return ("\n".join(out) + "\n").encode("utf-8") if out else b""

    def rows(
        self, taps: pa.Table, ids: Identities, cols: dict[str, np.ndarray]
    ) -> list[dict[str, Any]]:
        """One JSON object per tap, every field but the card number and the TAC."""
        raise NotImplementedError


class NfcWriter(_JsonStoredValueWriter):
    """``nfc`` lines (``readers.nfc``)."""

    def rows(
        self, taps: pa.Table, ids: Identities, cols: dict[str, np.ndarray]
    ) -> list[dict[str, Any]]:
        c = {k: v.tolist() for k, v in cols.items()}
        tap = taps.column("tap_type").to_numpy().tolist()
        handset = (np.asarray(ids.balance) % len(HANDSETS)).tolist()
        return [
            {
                "virtual_asn": "",
                "issuer": c["issuer"][i],
                "wallet_account": ids.wallet[i],
                "handset_model": HANDSETS[handset[i]],
                "card_seq": c["card_seq"][i],
                "card_type": c["product"][i],
                "txn": TAP_NAMES[tap[i]],
                "amount_fen": c["amount"][i],
                "balance_fen": c["balance"][i],
                "operator": c["operator"][i],
                "terminal_id": c["terminal_id"][i],
                "terminal_seq": c["terminal_seq"][i],
                "ts_ms": c["ts_ms"][i],
                "city": c["city"][i],
                "line": c["line"][i],
                "stop": c["stop"][i],
                "tac": "",
            }
            for i in range(taps.num_rows)
        ]


class WearableWriter(_JsonStoredValueWriter):
    """``wearable`` lines (``readers.wearable``)."""

    def writable(self, taps: pa.Table, config: ReaderConfig) -> np.ndarray:
        # products are written by name: only the five of SPEC §3 exist
        return stored_value_writable(taps) & (
            taps.column("product").to_numpy() < len(PRODUCT_NAMES)
        )

    def rows(
        self, taps: pa.Table, ids: Identities, cols: dict[str, np.ndarray]
    ) -> list[dict[str, Any]]:
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


class SscWriter:
    """``ssc`` lines (``readers.ssc``)."""

    def writable(self, taps: pa.Table, config: ReaderConfig) -> np.ndarray:
        return stored_value_writable(taps)

    def render(self, taps: pa.Table, ids: Identities, config: ReaderConfig) -> bytes:
        cols = stored_value_columns(taps, ids.balance)
        tac_text = tac_texts(cols, ids.asn, config)
        times = np.empty((taps.num_rows, 17), dtype=np.uint8)
        put_compact_time(times, 0, cols["ts_ms"])
        time_text = times.tobytes().decode("ascii")
        ssn = ids.ss_number.tobytes().decode("ascii")
        asn = ids.asn.tobytes().decode("ascii")
        c = {k: v.tolist() for k, v in cols.items()}
        tap = taps.column("tap_type").to_numpy().tolist()
        out = []
        for i in range(taps.num_rows):
            out.append(
                SEPARATOR.join(
                    (
                        TAG,
                        ssn[18 * i : 18 * i + 18],
                        asn[20 * i : 20 * i + 20],
                        str(c["issuer"][i]),
                        str(c["card_seq"][i]),
                        str(c["product"][i]),
                        TAP_NAMES[tap[i]],
                        str(c["amount"][i]),
                        str(c["balance"][i]),
                        str(c["operator"][i]),
                        str(c["terminal_id"][i]),
                        str(c["terminal_seq"][i]),
                        time_text[17 * i : 17 * i + 17],
                        str(c["city"][i]),
                        str(c["line"][i]),
                        str(c["stop"][i]),
                        tac_text[8 * i : 8 * i + 8],
                    )
                )
            )
        return ("\n".join(out) + "\n").encode("ascii") if out else b""


def encode_code(payload_text: str, key: Ed25519PrivateKey) -> str:
    """Sign a QR payload and write it as a scannable code (the issuer's side, ``readers.qr``)."""
    signed = payload_text.encode("ascii")
    b64 = base64.urlsafe_b64encode
    return b64(signed).rstrip(b"=").decode() + "." + b64(key.sign(signed)).rstrip(b"=").decode()


class QrWriter:
    """``qr`` lines of scanned, signed codes (``readers.qr``)."""

    def writable(self, taps: pa.Table, config: ReaderConfig) -> np.ndarray:
        col = {
            c: taps.column(c).to_numpy().astype(np.int64)
            for c in ("tap_type", "debited_fen", "card_seq", "ts_ms", "product")
        }
        ok: np.ndarray = (
            (col["debited_fen"] == ACCOUNT_BASED)
            & (col["tap_type"] >= 0)
            & (col["tap_type"] <= 2)
            & (col["card_seq"] >= 0)
            & (col["ts_ms"] >= CODE_VALIDITY_MS)
            & (col["ts_ms"] <= MAX_TS_MS)
        )
        return ok

    def render(self, taps: pa.Table, ids: Identities, config: ReaderConfig) -> bytes:
        c = {name: taps.column(name).to_numpy().tolist() for name in taps.column_names}
        age = (
            np.asarray(ids.balance) % 50_000 + 1_000
        ).tolist()  # the code was shown 1-51 s before
        signers: dict[int, tuple[str, Ed25519PrivateKey]] = {}
        out = []
        for i in range(taps.num_rows):
            iss = c["issuer"][i]
            if iss not in signers:
                try:
                    signers[iss] = config.qr_signer(iss)
                except ReaderConfigError:  # no key for this issuer: a code nobody can verify
                    signers[iss] = (f"unknown-{iss}", Ed25519PrivateKey.generate())
            kid, signer = signers[iss]
            issued = c["ts_ms"][i] - age[i]
            payload = "|".join(
                (
                    PAYLOAD_TAG,
                    kid,
                    str(iss),
                    ids.account[i],
                    str(c["product"][i]),
                    str(issued),
                    str(issued + CODE_VALIDITY_MS),
                    str(c["card_seq"][i]),
                )
            )
            out.append(
                json.dumps(
                    {
                        "code": encode_code(payload, signer),
                        "operator": c["operator"][i],
                        "device_id": c["device_id"][i],
                        "device_seq": c["device_seq"][i],
                        "scan_ms": c["ts_ms"][i],
                        "city": c["city"][i],
                        "line": c["line"][i],
                        "stop": c["stop"][i],
                        "tap": TAP_NAMES[c["tap_type"][i]],
                    },
                    separators=(",", ":"),
                )
            )
        return ("\n".join(out) + "\n").encode("ascii") if out else b""


# The writer of each built-in format, by its adapter's name (a plugin format has none).
WRITERS: dict[str, RawWriter] = {
    CardAdapter.name: CardWriter(),
    NfcAdapter.name: NfcWriter(NfcAdapter()),
    WearableAdapter.name: WearableWriter(WearableAdapter()),
    SocialSecurityAdapter.name: SscWriter(),
    QrAdapter.name: QrWriter(),
}


def writer_for(fmt: str) -> RawWriter:
    """The writer of raw format ``fmt``; ValueError for a format no writer writes."""
    try:
        return WRITERS[fmt]
    except KeyError:
        raise ValueError(f"reader format {fmt!r} cannot write synthetic files") from None


def render(fmt: str, taps: pa.Table, ids: Identities, config: ReaderConfig) -> bytes:
    """The bytes of a ``fmt`` file holding ``taps`` (all of them: see ``RawWriter.writable``)."""
    return writer_for(fmt).render(taps, ids, config)
