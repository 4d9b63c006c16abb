"""The pages' entry point: ``register(app)`` adds the sessions, the page routes and the static
files to the service (``tongka.service.app`` calls it when this package is installed).

Page URLs (docs/web.md):
  /signin, /signout, /account
  /operators/{op}, /operators/{op}/batches (POST: upload), /operators/{op}/batches/{id},
  /operators/{op}/statements, /operators/{op}/statements/{day}
  /issuers/{iss}, /issuers/{iss}/statements/{day}
  /finance, /finance/days/{day}, /finance/days/{day}/settlement (POST),
  /finance/days/{day}/overview, /finance/ledger, /finance/ledger/verify (POST),
  /finance/months, /finance/months/close (POST), /finance/parties
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from tongka.web import auth_pages, finance_pages, operator_pages, statement_pages
from tongka.web.guard import cookie_principal
from tongka.web.overview import Overviews
from tongka.web.render import STATIC
from tongka.web.sessions import SessionStore


def register(app: FastAPI) -> None:
    """Sessions in this server's memory, the session cookie accepted by the API (for page
    scripts, ``tongka.service.deps.caller``), the pages and /static."""
    app.state.web_sessions = SessionStore(app.state.centre.engine)
    app.state.web_overviews = Overviews()
    app.state.cookie_principal = cookie_principal
    for module in (auth_pages, operator_pages, statement_pages, finance_pages):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="web-static")
