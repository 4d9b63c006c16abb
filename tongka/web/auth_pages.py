"""Signing in with an API key, signing out, and where each key starts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from tongka.access import AccessError, authenticate
from tongka.web.guard import CentreDep, PageRoute, PostedForm, SignedIn, store
from tongka.web.render import home_of, page
from tongka.web.sessions import (
    COOKIE,
    SIGNIN_AGE_S,
    SIGNIN_COOKIE,
    clear_cookie,
    set_cookie,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def safe_next(target: str | None) -> str | None:
    """A page of this site to go back to after signing in; None for anything else (another
    host, a scheme, a protocol-relative or backslashed path: no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if any(ch in target for ch in "\\\r\n\t") or target.startswith("/v1/"):
        return None
    return target


@router.get("/")
def root(request: Request) -> Response:
    session = store(request).get(request.cookies.get(COOKIE))
    return RedirectResponse(home_of(session.principal) if session else "/signin",
                            status_code=303)


@router.get("/signin")
def signin_form(request: Request, next: Annotated[str | None, Query(max_length=500)] = None
                ) -> Response:
    session = store(request).get(request.cookies.get(COOKIE))
    if session is not None:
        return RedirectResponse(safe_next(next) or home_of(session.principal), status_code=303)
    return _form(request, next=safe_next(next) or "")


def _form(request: Request, *, next: str, status: int = 200, error: str = "") -> Response:
    nonce, csrf = store(request).signin_nonce()
    response = page(request, "signin.html.j2", status=status, title="Sign in", csrf=csrf,
                    next=next, error=error)
    set_cookie(response, request, SIGNIN_COOKIE, nonce, max_age=SIGNIN_AGE_S)
    return response


@router.post("/signin")
async def signin(
    request: Request,
    centre: CentreDep,
    key: Annotated[str, Form(max_length=500)] = "",
    csrf: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """The key is checked as the API checks it (``tongka.access.authenticate``) and becomes a
    new session; it is kept nowhere (not in the cookie, not in the session, not in a log)."""
    sessions = store(request)
    if not sessions.signin_valid(request.cookies.get(SIGNIN_COOKIE), csrf):
        request.state.error_code = "CSRF_INVALID"
        return _form(request, next=safe_next(next) or "", status=403,
                     error="The sign-in form expired: enter your key again.")
    try:
        principal = await run_in_threadpool(authenticate, centre.engine, key.strip(),
                                            centre.keys)
    except AccessError as exc:
        request.state.error_code = exc.code
        return _form(request, next=safe_next(next) or "", status=401,
                     error="That API key is not valid (wrong, revoked or mistyped).")
    request.state.principal = principal
    token, _ = sessions.open(principal)
    response = RedirectResponse(safe_next(next) or home_of(principal), status_code=303)
    set_cookie(response, request, COOKIE, token)
    clear_cookie(response, request, SIGNIN_COOKIE)
    return response


@router.post("/signout")
def signout(request: Request, session: SignedIn, _form: PostedForm) -> Response:
    store(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse("/signin", status_code=303)
    clear_cookie(response, request, COOKIE)
    return response


@router.get("/account")
def account(request: Request, session: SignedIn) -> Response:
    """Admin keys manage keys only, with ``tongka keys``: no figures to show."""
    return page(request, "account.html.j2", title="Account")
