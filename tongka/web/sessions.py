"""Browser sessions: an API key signs in once and becomes a random session token in a cookie;
every form carries the session's CSRF token.

Sessions live in the server's memory, keyed by the SHA-256 of their token, so neither the API
key nor a usable token is ever stored (a memory dump shows hashes). The cookie holds only the
token: HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and
Secure when the page came over TLS. A session ends when its user signs out, after
``IDLE_S`` without a request, after ``MAX_AGE_S`` in all, and at once when its key is
revoked (the key's row is read on every request, as ``tongka.access.authenticate`` does). One
server process holds the sessions: a restart signs everyone out, and ``tongka serve`` runs one
process (docs/web.md).

The sign-in form has no session yet; its CSRF token is an HMAC of a random nonce kept in a
short-lived cookie of its own (a signed double submit), so another site cannot sign a browser
in with the attacker's key either.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, select
from starlette.requests import Request
from starlette.responses import Response

from clearing.db import session_factory
from tongka.access import ApiKey, Principal

COOKIE = "tongka_session"
SIGNIN_COOKIE = "tongka_signin"
CSRF_FIELD = "csrf"  # the hidden input of every form
CSRF_HEADER = "X-CSRF-Token"  # page scripts send the token here
IDLE_S = 2 * 3600  # a session unused this long ends
MAX_AGE_S = 12 * 3600  # a working day, then sign in again
SIGNIN_AGE_S = 3600  # how long a sign-in form stays valid
MAX_SESSIONS = 10_000  # the oldest is dropped beyond this: memory stays bounded
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Session:
    """One signed-in browser: who it is, its CSRF token, and its notices for the next page."""

    principal: Principal
    csrf: str
    created: float
    seen: float
    notices: list[tuple[str, str]] = field(default_factory=list)  # (kind, text), shown once

    def notify(self, text: str, kind: str = "info") -> None:
        self.notices.append((kind, text))

    def take_notices(self) -> list[tuple[str, str]]:
        taken, self.notices = self.notices, []
        return taken


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class SessionStore:
    """The server's sessions (thread-safe: pages run in a thread pool)."""

    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self._signin_secret = secrets.token_bytes(32)

    # ------------------------------------------------------------ sessions

    def open(self, principal: Principal) -> tuple[str, Session]:
        """A new session (a new token every time: a token seen before sign-in is worthless)."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(principal, secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._sessions[_digest(token)] = session
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token``; None for none, an expired one or a revoked key's."""
        if not token:
            return None
        key = _digest(token)
        now = self._clock()
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                return None
            if now - session.seen > IDLE_S or now - session.created > MAX_AGE_S:
                del self._sessions[key]
                return None
        if not key_is_live(self._engine, session.principal.key_id):
            self.close(token)
            return None
        session.seen = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def __len__(self) -> int:
        return len(self._sessions)

    # ------------------------------------------------------------ the sign-in form

    def signin_nonce(self) -> tuple[str, str]:
        """(nonce for the sign-in cookie, CSRF token for the sign-in form)."""
        nonce = f"{int(time.time())}.{secrets.token_urlsafe(16)}"
        return nonce, self._sign(nonce)

    def signin_valid(self, nonce: str | None, csrf: str | None) -> bool:
        if not nonce or not same_token(csrf, self._sign(nonce)):
            return False
        issued, _, _ = nonce.partition(".")
        return issued.isdigit() and time.time() - int(issued) <= SIGNIN_AGE_S

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._signin_secret, nonce.encode(), hashlib.sha256).hexdigest()


def key_is_live(engine: Engine, key_id: str) -> bool:
    """The key still exists and is not revoked (a revoked key's sessions end at once)."""
    with session_factory(engine)() as s:
        row = s.execute(select(ApiKey.revoked_at).where(ApiKey.key_id == key_id)).first()
    return row is not None and row[0] is None


def set_cookie(response: Response, request: Request, name: str, value: str,
               max_age: int | None = None) -> None:
    """A cookie no script reads, no other site sends, and, over TLS, no plain request carries."""
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def clear_cookie(response: Response, request: Request, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
