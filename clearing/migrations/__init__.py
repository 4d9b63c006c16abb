"""The storage room's schema revisions, and the alembic environment every room's revisions run in.

The schema is one linear alembic history whose revisions live with the room that owns their
tables: ``versions/`` here (batches, quarantine, service days, withdrawal, deny-list
clearings), ``settlement/migrations/versions`` (the ledger) and ``tongka/migrations/versions``
(the service's keys, jobs and audit trail). Only the application knows every room, so it puts
the directories together (``tongka.schema``); ``env.py`` here runs them on one engine.
"""

from pathlib import Path

ENVIRONMENT = Path(__file__).resolve().parent
VERSIONS = ENVIRONMENT / "versions"
# SPEC v1.2 §8: tables of this room the engine's role may only read and append to
APPEND_ONLY_TABLES = ("risk_clearances",)  # issuers' deny-list clearings: evidence
