"""Who may do what: API keys, roles and the parties they are bound to.

A key is ``tk_<key_id>_<secret>``: ``key_id`` is public (it finds the key's row and names the
key in the audit trail), the secret is 32 random bytes shown once at creation. Only a scrypt
hash of the secret is stored, so a copy of the database does not let anyone in; scrypt is slow
on purpose (about 50 ms), so a verified key is remembered by its SHA-256 for the process's life
(``KeyCache``) and a revoked key is refused at once because the row is read on every request.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass

from sqlalchemy import DateTime, Engine, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from clearing.db import Base, transaction
from clearing.errors import InputError, TongkaError

KEY_PREFIX = "tk"
SECRET_BYTES = 32  # the issue's floor: at least 32 random bytes
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # OWASP's scrypt floor; 16 MiB and ~50 ms a check


class Role(enum.StrEnum):
    """The five roles of the clearing centre (docs/service.md lists what each may do)."""

    OPERATOR = "operator"  # its own batches, quarantine, statements and payment lines
    ISSUER = "issuer"  # its own statements
    FINANCE = "finance"  # settle, close months, payments, the ledger, every statement
    AUDITOR = "auditor"  # reads everything, changes nothing
    ADMIN = "admin"  # keys only


PARTY_ROLES = (Role.OPERATOR, Role.ISSUER)  # roles bound to one operator or issuer code


class AccessError(TongkaError):
    """A request without a valid key (401)."""

    code = "AUTH_REQUIRED"
    exit_code = 2


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(24), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    party: Mapped[int | None] = mapped_column(Integer, nullable=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request: its key's public id, role and party (operator or issuer)."""

    key_id: str
    role: Role
    party: int | None = None

    @property
    def name(self) -> str:
        """``operator:3``, ``finance``: how the audit trail and the docs name a caller."""
        return f"{self.role}:{self.party}" if self.party is not None else str(self.role)

    def is_operator(self, code: int) -> bool:
        return self.role is Role.OPERATOR and self.party == code

    def is_issuer(self, code: int) -> bool:
        return self.role is Role.ISSUER and self.party == code

    @property
    def reads_all(self) -> bool:
        """Finance and auditors read every party's figures."""
        return self.role in (Role.FINANCE, Role.AUDITOR)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as ``tongka keys list`` shows it: never the secret, never its hash."""

    key_id: str
    role: Role
    party: int | None
    label: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class CreatedKey:
    info: KeyInfo
    key: str  # the whole key, shown once


def _hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def _check_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(
        secret.encode(), salt=base64.b64decode(salt_b64), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))


def _utc(when: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands times back without their zone; they were written in UTC."""
    return when.replace(tzinfo=dt.UTC) if when is not None and when.tzinfo is None else when


def _info(row: ApiKey) -> KeyInfo:
    created = _utc(row.created_at)
    assert created is not None
    return KeyInfo(row.key_id, Role(row.role), row.party, row.label, created,
                   _utc(row.revoked_at))


def create_key(engine: Engine, role: Role | str, *, party: int | None = None,
               label: str = "") -> CreatedKey:
    """A new key for ``role`` (bound to ``party`` for operators and issuers); the returned key
    is the only copy there will ever be."""
    try:
        role = Role(role)
    except ValueError:
        raise InputError(
            f"--role {role!r}: one of {', '.join(r.value for r in Role)}", code="ROLE_INVALID"
        ) from None
    if (role in PARTY_ROLES) != (party is not None):
        need = "needs --operator N or --issuer N" if role in PARTY_ROLES else "takes no party"
        raise InputError(f"a key for role {role} {need}", code="ROLE_PARTY_MISMATCH")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    now = dt.datetime.now(dt.UTC)
    with transaction(engine) as s:
        row = ApiKey(key_id=key_id, secret_hash=_hash_secret(secret), role=role.value,
                     party=party, label=label, created_at=now)
        s.add(row)
        s.flush()
        info = _info(row)
    return CreatedKey(info, f"{KEY_PREFIX}_{key_id}_{secret}")


def list_keys(engine: Engine) -> list[KeyInfo]:
    with transaction(engine) as s:
        return [_info(r) for r in s.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(engine: Engine, key_id: str) -> KeyInfo:
    """Revoke a key for good (a revoked key is never valid again); revoking twice is a no-op."""
    with transaction(engine) as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
        if row is None:
            raise InputError(f"no API key {key_id!r}", code="KEY_NOT_FOUND")
        if row.revoked_at is None:
            row.revoked_at = dt.datetime.now(dt.UTC)
        return _info(row)


def split_key(key: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class KeyCache:
    """SHA-256 of keys already verified with scrypt, so each key pays scrypt once per process.

    Holds no key: a SHA-256 of 32 random bytes cannot be reversed. Revocation is still seen at
    once, because ``authenticate`` reads the key's row on every request.
    """

    def __init__(self) -> None:
        self._verified: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def known(self, key_id: str, key: str) -> bool:
        with self._lock:
            seen = self._verified.get(key_id)
        return seen is not None and hmac.compare_digest(seen, hashlib.sha256(key.encode()).digest())

    def remember(self, key_id: str, key: str) -> None:
        with self._lock:
            self._verified[key_id] = hashlib.sha256(key.encode()).digest()


def authenticate(engine: Engine, key: str, cache: KeyCache | None = None) -> Principal:
    """The principal of a presented key; AccessError for a malformed, unknown, wrong or revoked
    key (one message for all: a caller learns nothing about which keys exist)."""
    refused = AccessError("the API key is not valid", code="AUTH_INVALID")
    parts = split_key(key)
    if parts is None:
        raise refused
    key_id, secret = parts
    with transaction(engine) as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
        if row is None or row.revoked_at is not None:
            raise refused
        stored, role, party = row.secret_hash, Role(row.role), row.party
    if cache is None or not cache.known(key_id, key):
        if not _check_secret(secret, stored):
            raise refused
        if cache is not None:
            cache.remember(key_id, key)
    return Principal(key_id, role, party)
