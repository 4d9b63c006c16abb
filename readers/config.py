"""Reader keys from the environment: the PII tokenisation key, per-issuer TAC keys, QR issuer keys.

Everything comes from ``TONGKA_*`` variables (pydantic-settings). A clearing centre holds the
tokenisation key and the issuers' TAC verification keys and QR *public* keys; it never holds
an issuer's QR signing key, which exists here only so that ``tongka.testing.synth`` can write test
and demo data.

The **demo key set** (``ReaderConfig.demo()`` or ``TONGKA_DEMO_KEYS=1``) derives every key
from a fixed, published label. Anyone can recompute it, so tokens made with it protect
nothing: it is for the demo and the tests only, and ``is_demo`` says when it is in use.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clearing.errors import TongkaError
from tariffs.error_codes import ErrorCode

MIN_PII_KEY_BYTES = 32  # HMAC-SHA256 key: at least the hash length (RFC 2104 §3)
MIN_TAC_KEY_BYTES = 16  # the real MACs use 16-byte 3DES / SM4 keys
DEMO_LABEL = "tongka DEMO ONLY, public, never for real cards"  # every demo key derives from this
DEMO_ISSUERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 21, 30)  # the default registry's issuers


class ReaderConfigError(TongkaError):
    """A key the readers need is missing or malformed; nothing was read."""

    code = ErrorCode.READER_CONFIG


class QrKey(BaseModel):
    """One QR issuer public key, named by its key id (``kid``) in every code it signed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    issuer: Annotated[int, Field(ge=0, le=2**16 - 1)]  # the only issuer this key may sign for
    public_key: str  # 32-byte raw Ed25519 public key, hex

    @field_validator("public_key")
    @classmethod
    def _is_ed25519(cls, value: str) -> str:
        raw = _hex(value, "QR public key")
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes (64 hex digits)")
        return value.lower()


def _hex(value: str, what: str) -> bytes:
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise ValueError(f"{what} must be hex digits") from None


class ReaderConfig(BaseSettings):
    """The readers' keys. Env: ``TONGKA_PII_KEY``, ``TONGKA_TAC_KEYS``, ``TONGKA_QR_PUBLIC_KEYS``.

    ``TONGKA_TAC_KEYS`` is JSON ``{"<issuer>": "<hex key>"}``; ``TONGKA_QR_PUBLIC_KEYS`` is
    JSON ``{"<kid>": {"issuer": 1, "public_key": "<64 hex>"}}``. With ``TONGKA_DEMO_KEYS=1``
    every key not given is taken from the demo key set.
    """

    model_config = SettingsConfigDict(env_prefix="TONGKA_", extra="ignore", frozen=True)

    pii_key: SecretStr | None = None  # hex, >= 32 bytes: SPEC §3 card_id tokenisation
    tac_keys: dict[int, SecretStr] = Field(default_factory=dict)  # issuer -> hex TAC key
    qr_public_keys: dict[str, QrKey] = Field(default_factory=dict)  # kid -> issuer public key
    qr_signing_keys: dict[str, SecretStr] = Field(
        default_factory=dict
    )  # kid -> hex seed; synth only
    qr_clock_skew_ms: Annotated[int, Field(ge=0, le=3_600_000)] = (
        60_000  # scan before issue allowed
    )
    demo_keys: bool = False  # fill every missing key from the public demo key set

    @field_validator("pii_key")
    @classmethod
    def _pii_key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(_hex(value.get_secret_value(), "PII key")) < MIN_PII_KEY_BYTES:
            raise ValueError(f"the PII key must be at least {MIN_PII_KEY_BYTES} bytes of hex")
        return value

    @field_validator("tac_keys")
    @classmethod
    def _tac_keys_long_enough(cls, value: dict[int, SecretStr]) -> dict[int, SecretStr]:
        for issuer, key in value.items():
            if len(_hex(key.get_secret_value(), "TAC key")) < MIN_TAC_KEY_BYTES:
                raise ValueError(
                    f"the TAC key of issuer {issuer} must be >= {MIN_TAC_KEY_BYTES} bytes"
                )
        return value

    @classmethod
    def demo(cls) -> ReaderConfig:
        """The demo key set, for every issuer of the default registry. DEMO ONLY."""
        return cls.model_construct(
            pii_key=None,
            tac_keys={},
            qr_public_keys={},
            qr_signing_keys={},
            qr_clock_skew_ms=60_000,
            demo_keys=True,
        )

    @property
    def is_demo(self) -> bool:
        """True when missing keys are filled from the public demo key set."""
        return self.demo_keys

    # -- the keys as bytes, demo-filled when asked ------------------------------------------

    def pii_key_bytes(self) -> bytes:
        if self.pii_key is not None:
            return bytes.fromhex(self.pii_key.get_secret_value())
        if self.demo_keys:
            return _demo_pii_key()
        raise ReaderConfigError(
            "no PII tokenisation key: set TONGKA_PII_KEY (hex, >= 32 bytes), "
            "or TONGKA_DEMO_KEYS=1 for the demo"
        )

    def tac_key(self, issuer: int) -> bytes | None:
        """The issuer's TAC key, or None when the centre has none (its records are quarantined)."""
        key = self.tac_keys.get(issuer)
        if key is not None:
            return bytes.fromhex(key.get_secret_value())
        if self.demo_keys and issuer in DEMO_ISSUERS:
            return _demo_tac_key(issuer)
        return None

    def qr_key(self, kid: str) -> QrKey | None:
        key = self.qr_public_keys.get(kid)
        if key is None and self.demo_keys:
            key = _demo_qr_public().get(kid)
        return key

    def qr_signer(self, issuer: int) -> tuple[str, Ed25519PrivateKey]:
        """A (kid, signing key) for ``issuer``; for test data only (``tongka.testing.synth``)."""
        for kid, seed in sorted(self.qr_signing_keys.items()):
            key = self.qr_key(kid)
            if key is not None and key.issuer == issuer:
                return kid, Ed25519PrivateKey.from_private_bytes(
                    bytes.fromhex(seed.get_secret_value())
                )
        if self.demo_keys and issuer in DEMO_ISSUERS:
            return _demo_kid(issuer), _demo_qr_private(issuer)
        raise ReaderConfigError(f"no QR signing key for issuer {issuer} (synthetic data needs one)")


# -- the demo key set: derived from DEMO_LABEL, so the docs can state it and anyone recompute it


def _derive(purpose: str) -> bytes:
    return hashlib.sha256(f"{DEMO_LABEL}/{purpose}".encode()).digest()


def _demo_pii_key() -> bytes:
    return _derive("pii")


def _demo_tac_key(issuer: int) -> bytes:
    return _derive(f"tac/{issuer}")[:16]


def _demo_kid(issuer: int) -> str:
    return f"demo-{issuer}"


def _demo_qr_private(issuer: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_derive(f"qr/{issuer}"))


@lru_cache(maxsize=1)
def _demo_qr_public() -> dict[str, QrKey]:
    return {
        _demo_kid(i): QrKey(issuer=i, public_key=_raw_public(_demo_qr_private(i)).hex())
        for i in DEMO_ISSUERS
    }


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@lru_cache(maxsize=256)
def ed25519_public(hex_key: str) -> Ed25519PublicKey:
    """The verifier object of a configured public key, built once per key."""
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))
