"""Rendering pages: the jinja2 environment (autoescaped, sharing the statement templates'
macros), the filters that write amounts and counts, and the headers every page carries."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from settlement.amounts import CURRENCY
from settlement.parties import Party, party_name
from settlement.statements import TEMPLATES as STATEMENT_TEMPLATES
from settlement.statements import money_html
from tariffs.error_codes import ErrorCode
from tariffs.registry import Registry
from tariffs.vocab import PartyRole
from tongka.access import Principal, Role
from tongka.web.sessions import CSRF_FIELD, Session

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

# Pages load their style and script from /static only; statements are framed from this origin.
PAGE_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-src 'self'; frame-ancestors 'self'; form-action 'self'; base-uri 'none'; "
            "object-src 'none'")
PAGE_HEADERS = {
    "Cache-Control": "no-store",  # a party's figures never sit in a shared or back-button cache
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "same-origin",
}


@functools.cache
def environment() -> jinja2.Environment:
    """The pages' templates, then the statements' (for their ``macros.html.j2``); autoescape
    on, so a party name or a quarantined record can never inject markup."""
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([
            jinja2.FileSystemLoader(TEMPLATES),
            jinja2.FileSystemLoader(STATEMENT_TEMPLATES),
        ]),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a misspelt field fails loudly, never renders blank
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = money_html
    env.filters["signed_money"] = lambda fen: money_html(fen, True)
    env.filters["count"] = lambda n: f"{int(n):,}"
    env.filters["code_text"] = code_text
    env.filters["breakable"] = breakable
    env.globals["currency"] = CURRENCY
    env.globals["csrf_field"] = CSRF_FIELD
    return env


_BACKTICKS = re.compile(r"`([^`]*)`")


def code_text(text: str) -> Markup:
    """A meaning from the error-code table, its `code spans` shown as code (escaped)."""
    out = Markup("")
    last = 0
    for m in _BACKTICKS.finditer(text):
        out += Markup.escape(text[last:m.start()]) + Markup("<code>{}</code>").format(m.group(1))
        last = m.end()
    return out + Markup.escape(text[last:])


def breakable(code: str) -> Markup:
    """A long code that may wrap after its underscores (and nowhere else) on a narrow screen."""
    return Markup("_<wbr>").join(Markup.escape(part) for part in code.split("_"))


def meaning(code: str) -> str:
    """What a stable error code means, from the one table docs/error-codes.md is generated
    from (``tariffs.error_codes``); a code the table lacks says so rather than guess."""
    try:
        return ErrorCode[code].meaning
    except KeyError:
        return "not in Tongka's table of error codes"


def home_of(principal: Principal) -> str:
    """The page a signed-in key starts on."""
    if principal.role is Role.OPERATOR:
        return f"/operators/{principal.party}"
    if principal.role is Role.ISSUER:
        return f"/issuers/{principal.party}"
    if principal.reads_all:
        return "/finance"
    return "/account"


def nav(principal: Principal) -> list[tuple[str, str]]:
    """(label, link) of the menu: what the role may see, nothing else."""
    if principal.role is Role.OPERATOR:
        base = f"/operators/{principal.party}"
        return [("Batches", base), ("Statements", f"{base}/statements")]
    if principal.role is Role.ISSUER:
        return [("Statements", f"/issuers/{principal.party}")]
    if principal.reads_all:
        items = [("Calendar", "/finance"), ("Ledger", "/finance/ledger"),
                 ("Parties", "/finance/parties")]
        if principal.role is Role.FINANCE:
            items.insert(2, ("Month close", "/finance/months"))
        return items
    return [("Account", "/account")]


def who(principal: Principal, registry: Registry | None) -> str:
    """How the header names the signed-in key: its party's registry name, or its role."""
    if principal.role is Role.OPERATOR and principal.party is not None:
        return f"{party_name(Party(PartyRole.OPERATOR, principal.party), registry)} · operator"
    if principal.role is Role.ISSUER and principal.party is not None:
        return f"{party_name(Party(PartyRole.ISSUER, principal.party), registry)} · issuer"
    return str(principal.role).capitalize()


def page(request: Request, template: str, *, status: int = 200, title: str,
         session: Session | None = None, **context: Any) -> HTMLResponse:
    """A page in the layout: the menu and notices of ``session``'s key, its CSRF token for the
    forms, and the security headers."""
    session = session or getattr(request.state, "web_session", None)
    csrf = context.pop("csrf", None) or (session.csrf if session else "")
    registry = request.app.state.centre.tariffs.registry
    menu = nav(session.principal) if session else []
    path = request.url.path
    here = [link for _, link in menu if path == link or path.startswith(link + "/")]
    html = environment().get_template(template).render(
        title=title,
        me=session.principal if session else None,
        me_name=who(session.principal, registry) if session else "",
        menu=menu,
        current=max(here, key=len) if here else None,
        csrf=csrf,
        notices=session.take_notices() if session else [],
        **context,
    )
    return HTMLResponse(html, status_code=status, headers={
        **PAGE_HEADERS, "Content-Security-Policy": PAGE_CSP})
