"""The service's schema revisions (0005: API keys, jobs, the audit trail), part of the one
alembic history ``tongka.schema`` assembles from every room (see ``clearing.migrations``)."""

from pathlib import Path

VERSIONS = Path(__file__).resolve().parent / "versions"
# the service's audit trail (tongka.audit) is protected like the ledger: read and append only
APPEND_ONLY_TABLES = ("audit_events",)
