"""Request dependencies: the centre, the caller and the role checks every route declares."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tongka.access import AccessError, Principal, Role, authenticate
from tongka.service.centre import Centre
from tongka.service.problems import forbidden

bearer = HTTPBearer(auto_error=False, description="An API key from `tongka keys create`.")


def centre(request: Request) -> Centre:
    return request.app.state.centre  # type: ignore[no-any-return]


CentreDep = Annotated[Centre, Depends(centre)]

# Pages sign in with a session cookie (tongka.web); they register how to read it here.
CookieReader = Callable[[Request], Principal | None]


def caller(
    request: Request,
    the_centre: CentreDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    """The principal of the request's key (``Authorization: Bearer``) or session cookie; 401
    without either. Recorded on the request for the audit trail."""
    principal: Principal | None = None
    if credentials is not None:
        principal = authenticate(the_centre.engine, credentials.credentials, the_centre.keys)
    else:
        reader: CookieReader | None = getattr(request.app.state, "cookie_principal", None)
        principal = reader(request) if reader is not None else None
    if principal is None:
        raise AccessError("send an API key: Authorization: Bearer <key>", code="AUTH_REQUIRED")
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(caller)]


def role_in(*roles: Role, what: str) -> Callable[[Principal], Principal]:
    """A dependency that admits only ``roles`` (403 otherwise; ``what`` says what was refused)."""

    def check(principal: Caller) -> Principal:
        if principal.role not in roles:
            raise forbidden(what)
        return principal

    return check
