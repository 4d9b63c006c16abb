"""Reader keys come from TONGKA_* variables; the demo key set is public, derived and flagged."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pydantic import ValidationError

from readers.config import DEMO_LABEL, ReaderConfig, ReaderConfigError
from tariffs.error_codes import ErrorCode


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "TONGKA_PII_KEY",
        "TONGKA_TAC_KEYS",
        "TONGKA_QR_PUBLIC_KEYS",
        "TONGKA_QR_SIGNING_KEYS",
        "TONGKA_DEMO_KEYS",
        "TONGKA_QR_CLOCK_SKEW_MS",
    ):
        monkeypatch.delenv(var, raising=False)


def _public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def test_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = Ed25519PrivateKey.generate()
    monkeypatch.setenv("TONGKA_PII_KEY", "11" * 32)
    monkeypatch.setenv("TONGKA_TAC_KEYS", json.dumps({"1": "22" * 16, "20": "33" * 16}))
    monkeypatch.setenv(
        "TONGKA_QR_PUBLIC_KEYS",
        json.dumps({"wht-2026": {"issuer": 1, "public_key": _public_hex(signer)}}),
    )
    monkeypatch.setenv("TONGKA_QR_CLOCK_SKEW_MS", "5000")
    c = ReaderConfig()
    assert c.pii_key_bytes() == bytes.fromhex("11" * 32)
    assert c.tac_key(1) == bytes.fromhex("22" * 16) and c.tac_key(20) == bytes.fromhex("33" * 16)
    assert c.tac_key(2) is None  # no key and no demo keys: issuer 2's records are quarantined
    key = c.qr_key("wht-2026")
    assert key is not None and key.issuer == 1 and c.qr_key("demo-1") is None
    assert c.qr_clock_skew_ms == 5000 and not c.is_demo
    assert "11" * 32 not in repr(c) and "22" * 16 not in repr(c)  # secrets stay secret


def test_nothing_configured_is_a_clear_error() -> None:
    with pytest.raises(ReaderConfigError) as err:
        ReaderConfig().pii_key_bytes()
    assert err.value.code == ErrorCode.READER_CONFIG and "TONGKA_PII_KEY" in str(err.value)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("TONGKA_PII_KEY", "11" * 16),  # 16 bytes: too short for HMAC-SHA256
        ("TONGKA_PII_KEY", "zz" * 32),
        ("TONGKA_TAC_KEYS", json.dumps({"1": "22" * 8})),
        ("TONGKA_QR_PUBLIC_KEYS", json.dumps({"k": {"issuer": 1, "public_key": "ab" * 31}})),
        ("TONGKA_QR_PUBLIC_KEYS", json.dumps({"k": {"issuer": 70000, "public_key": "ab" * 32}})),
    ],
)
def test_malformed_keys_are_refused(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError):
        ReaderConfig()


def test_demo_keys_are_derived_from_the_published_label() -> None:
    demo = ReaderConfig.demo()
    assert demo.is_demo
    assert demo.pii_key_bytes() == hashlib.sha256(f"{DEMO_LABEL}/pii".encode()).digest()
    assert demo.tac_key(2) == hashlib.sha256(f"{DEMO_LABEL}/tac/2".encode()).digest()[:16]
    kid, signer = demo.qr_signer(1)
    qr = demo.qr_key(kid)
    assert (
        kid == "demo-1"
        and qr is not None
        and qr.issuer == 1
        and qr.public_key == _public_hex(signer)
    )
    assert demo.tac_key(777) is None  # only the registry's issuers


def test_demo_keys_fill_only_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TONGKA_DEMO_KEYS", "1")
    monkeypatch.setenv("TONGKA_TAC_KEYS", json.dumps({"1": "44" * 16}))
    c = ReaderConfig()
    assert c.is_demo and c.tac_key(1) == bytes.fromhex("44" * 16)
    assert c.tac_key(2) == ReaderConfig.demo().tac_key(2)
    assert c.pii_key_bytes() == ReaderConfig.demo().pii_key_bytes()


def test_configured_signing_keys_sign_for_their_issuer(monkeypatch: pytest.MonkeyPatch) -> None:
    seed = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    raw = seed.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    monkeypatch.setenv(
        "TONGKA_QR_PUBLIC_KEYS", json.dumps({"k1": {"issuer": 5, "public_key": _public_hex(seed)}})
    )
    monkeypatch.setenv("TONGKA_QR_SIGNING_KEYS", json.dumps({"k1": raw}))
    c = ReaderConfig()
    kid, key = c.qr_signer(5)
    assert kid == "k1" and _public_hex(key) == _public_hex(seed)
    with pytest.raises(ReaderConfigError):
        c.qr_signer(6)
