"""``tongka denylist``: issuers clear their cards from the deny list, and anyone reads a day's.

Mounted by ``tongka.cli`` (``app.add_typer(denylist_app, name="denylist")``) and never imports
it: the data directory and database come from the ``--data-dir`` and ``--db`` flags of the
command it is mounted under (read from the click context), else from the environment
(``TONGKA_HOME``, ``TONGKA_DATABASE_URL``), as for every other command.
"""

from __future__ import annotations

import datetime as dt
import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clearing.errors import ErrorCode, StateError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from clearing.settings import Settings

denylist_app = typer.Typer(
    no_args_is_help=True,
    help="The deny list (SPEC §10): show a day's, clear an issuer's cards from it.",
)

DayOpt = Annotated[dt.datetime, typer.Option("--date", formats=["%Y-%m-%d"],
                                             help="Service day.")]


def _settings(ctx: typer.Context) -> Settings:
    """The settings with the nearest ``--data-dir`` / ``--db`` given on the command line."""
    from clearing.settings import Settings

    settings = Settings()
    found: dict[str, object] = {}
    at: typer.Context | None = ctx
    while at is not None:
        for name in ("data_dir", "db"):
            if found.get(name) is None and at.params.get(name) is not None:
                found[name] = at.params[name]
        at = at.parent  # type: ignore[assignment]
    if found.get("data_dir") is not None:
        settings = settings.model_copy(update={"home": Path(str(found["data_dir"]))})
    if found.get("db") is not None:
        settings = settings.model_copy(update={"database_url": str(found["db"])})
    return settings


def _home(settings: Settings) -> Path:
    """The data directory, which must exist: a deny list is made from stored signals."""
    if not settings.home.is_dir():
        raise StateError(
            f"no Tongka data directory at {settings.home}: nothing has been ingested there; "
            "give --data-dir or TONGKA_HOME", code=ErrorCode.NO_DATA_DIR,
        )
    return settings.home


def _engine(settings: Settings) -> Engine:
    from clearing.db import make_engine
    from tongka.schema import upgrade

    engine = make_engine(settings.resolved_url())
    upgrade(engine)
    return engine


def _actor() -> str:
    """Who clears from the command line: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "cli"


@denylist_app.command("clear")
def clear(
    ctx: typer.Context,
    issuer: Annotated[int, typer.Option("--issuer", help="The issuer whose cards these are.")],
    card: Annotated[list[str], typer.Option(
        "--card", help="A card token as the deny list shows it; repeat for several.")],
    through: Annotated[dt.datetime, typer.Option(
        "--through", formats=["%Y-%m-%d"],
        help="Clear the cards' signals of days up to this one (SPEC §10).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept with the clearing).")],
) -> None:
    """Clear an issuer's cards from the deny list: their signals of days up to --through stop
    listing them; a later signal lists them again. Recorded for good (a mistaken clearing is
    superseded by another, never deleted)."""
    from clearing.errors import InputError
    from tongka.denylist import clear_cards

    tokens = []
    for text in card:
        if not text.strip().isdigit():
            raise InputError(f"--card {text!r} is not a card token (a whole number)",
                             code=ErrorCode.DENYLIST_CARDS_INVALID)
        tokens.append(int(text))
    settings = _settings(ctx)
    engine = _engine(settings)
    try:
        result = clear_cards(engine, _home(settings), issuer, tokens, through.date(), reason,
                             _actor())
    finally:
        engine.dispose()
    if result.recorded:
        ids = ", ".join(str(c.id) for c in result.recorded)
        typer.echo(f"cleared {len(result.recorded)} card(s) of issuer {issuer} through "
                   f"{result.through} (clearing {ids})")
    if result.already:
        typer.echo(f"{len(result.already)} card(s) already cleared through {result.through}: "
                   + ", ".join(str(c) for c in result.already))
    days = ", ".join(d.isoformat() for d in result.rewritten) or "none changed"
    typer.echo(f"deny lists rewritten: {days}")


@denylist_app.command("show")
def show(
    ctx: typer.Context,
    date: DayOpt,
    issuer: Annotated[int | None, typer.Option("--issuer", help="Only this issuer's cards.")
                      ] = None,
) -> None:
    """Print a day's deny list as readers download it (CSV: issuer, card_id, kinds,
    first_signal, last_signal), clearings applied."""
    from clearing.risk_store import denylist_text
    from tongka.denylist import show_denylist

    entries = show_denylist(_home(_settings(ctx)), date.date(), issuer)
    typer.echo(denylist_text(entries), nl=False)
