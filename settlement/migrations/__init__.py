"""The ledger's schema revisions (0002 tables, 0003 guards), part of the one alembic history
``tongka.schema`` assembles from every room (see ``clearing.migrations``)."""

from pathlib import Path

from settlement.ledger import LEDGER_TABLES

VERSIONS = Path(__file__).resolve().parent / "versions"
# SPEC v1.2 §8: the ledger and the settlement runs with their payment instructions are append-only
APPEND_ONLY_TABLES = LEDGER_TABLES
