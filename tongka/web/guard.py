"""Who may see a page, and what a page answers when something goes wrong.

A page without a session sends the browser to sign in. A page of another party answers 404,
exactly like a page that does not exist (never 403: a key must not learn that another
operator's batch exists); a page outside the key's role answers 403, like the API. Every form
that changes something must carry the session's CSRF token. Errors become HTML pages with the
stable code, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

from clearing.errors import TongkaError
from tongka.access import Principal, Role
from tongka.service.centre import Centre
from tongka.service.problems import ApiError, status_of
from tongka.web.render import page
from tongka.web.sessions import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, SessionStore, same_token

log = logging.getLogger("tongka.web")


class SignInRequired(Exception):
    """No live session: the browser is sent to the sign-in page, then back."""


class PageError(Exception):
    """A page that cannot be shown, with its HTTP status and stable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def not_found(what: str = "page") -> PageError:
    """The one answer for what does not exist and for another party's (never confirmed)."""
    return PageError(404, "NOT_FOUND", f"No such {what}.")


def forbidden(what: str) -> PageError:
    return PageError(403, "FORBIDDEN", f"Your key's role may not {what}.")


class PageRoute(APIRoute):
    """A route whose failures are pages: sign-in redirects, 403/404 pages, coded errors."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInRequired:
                target = quote(request.url.path, safe="/")
                return RedirectResponse(f"/signin?next={target}", status_code=303)
            except PageError as exc:
                return _error_page(request, exc.status, exc.code, exc.message)
            except RequestValidationError:
                if request.method in ("GET", "HEAD"):  # a malformed day or id in the path
                    return _error_page(request, 404, "NOT_FOUND", "No such page.")
                return _error_page(request, 422, "REQUEST_INVALID",
                                   "The form's fields are not valid.")
            except TongkaError as exc:
                status = status_of(exc)
                return _error_page(request, status, exc.code, str(exc.args[0]))
            except HTTPException as exc:  # e.g. a form Starlette cannot parse
                code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code,
                                                                         "REQUEST_INVALID")
                return _error_page(request, exc.status_code, code, str(exc.detail))
            except Exception as exc:  # noqa: BLE001 - logged whole; the user gets one line
                log.exception("page %s failed", request.url.path)
                return _error_page(request, 500, "INTERNAL_ERROR",
                                   f"Unexpected {type(exc).__name__}; it was logged.")

        return page_handler


def _error_page(request: Request, status: int, code: str, message: str) -> Response:
    request.state.error_code = code
    return page(request, "error.html.j2", status=status, title=f"{status} · {code}",
                code=code, message=message)


# --------------------------------------------------------------------------- dependencies


def store(request: Request) -> SessionStore:
    return request.app.state.web_sessions  # type: ignore[no-any-return]


def centre(request: Request) -> Centre:
    return request.app.state.centre  # type: ignore[no-any-return]


def signed_in(request: Request) -> Session:
    """The request's live session (recorded for the audit trail and the layout); sign in
    otherwise."""
    session = store(request).get(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired
    request.state.principal = session.principal
    request.state.web_session = session
    return session


SignedIn = Annotated[Session, Depends(signed_in)]
CentreDep = Annotated[Centre, Depends(centre)]


def check_csrf(session: Session, form: FormData | None, request: Request) -> None:
    """The form's (or the script's header's) CSRF token is the session's; 403 otherwise."""
    given = request.headers.get(CSRF_HEADER)
    if given is None and form is not None:
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not same_token(given, session.csrf):
        raise PageError(403, "CSRF_INVALID", "This form has expired or did not come from "
                        "this site: reload the page and try again.")


async def posted_form(request: Request, session: SignedIn) -> FormData:
    """A posted form whose CSRF token checked out (small forms: no file fields here)."""
    form = await request.form(max_files=0, max_fields=20)
    check_csrf(session, form, request)
    return form


PostedForm = Annotated[FormData, Depends(posted_form)]


def cookie_principal(request: Request) -> Principal | None:
    """The hook ``tongka.service.deps.caller`` calls for an API request without a key: the
    session's principal, so page scripts call the API as their user. A request that changes
    something must carry the CSRF token in ``X-CSRF-Token`` (403 CSRF_INVALID otherwise)."""
    session = store(request).get(request.cookies.get(COOKIE))
    if session is None:
        return None
    if request.method not in ("GET", "HEAD", "OPTIONS") and not same_token(
        request.headers.get(CSRF_HEADER), session.csrf
    ):
        raise ApiError(403, "CSRF_INVALID", f"a request signed in by a session cookie that "
                       f"changes something needs the session's token in {CSRF_HEADER}")
    return session.principal


# --------------------------------------------------------------------------- who sees what


def may_see_operator(principal: Principal, operator: int) -> bool:
    return principal.reads_all or principal.is_operator(operator)


def may_see_issuer(principal: Principal, issuer: int) -> bool:
    return principal.reads_all or principal.is_issuer(issuer)


def require_overseer(session: SignedIn) -> Session:
    """Finance and auditors: the calendar, the days, the ledger."""
    if not session.principal.reads_all:
        raise forbidden("see the settlement calendar or the ledger")
    return session


def require_finance(session: SignedIn) -> Session:
    """Finance only: settle days, close months."""
    if session.principal.role is not Role.FINANCE:
        raise forbidden("settle days or close months")
    return session


Overseer = Annotated[Session, Depends(require_overseer)]
Finance = Annotated[Session, Depends(require_finance)]


def form_text(form: FormData, name: str, default: str = "") -> str:
    value: Any = form.get(name, default)
    return value if isinstance(value, str) else default
