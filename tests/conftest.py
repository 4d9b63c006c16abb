"""Shared fixtures: each storage test runs on SQLite and PostgreSQL (ids sqlite, postgresql).

PostgreSQL comes from ``TONGKA_TEST_DATABASE_URL``. Without it the ``postgresql`` cases skip
with the reason; with ``CI=true`` an unset or unreachable database fails the run instead.
Each PostgreSQL test gets a schema of its own, dropped afterwards, so tests never see each
other's rows and may run in parallel.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import Engine, create_engine, text

from clearing.db import make_engine
from tongka.schema import upgrade

PG_ENV = "TONGKA_TEST_DATABASE_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


# Hypothesis profiles (TONGKA_HYPOTHESIS_PROFILE; CI=true picks "ci"). None has a wall-clock
# deadline: on a busy 2-core machine an example that takes 1 ms on replay can take 300 ms once,
# and a deadline then fails good work for no reason. CI is derandomised, so a red run can be
# reproduced and a green one does not depend on luck; "deep" (make test-deep) runs ten
# times every test's examples, randomised, to find what the fixed examples miss.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("dev", deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile(
    "ci", deadline=None, derandomize=True, print_blob=True, suppress_health_check=_SLOW_OK
)
settings.register_profile("deep", deadline=None, max_examples=1000, suppress_health_check=_SLOW_OK)
HYPOTHESIS_PROFILE = os.environ.get("TONGKA_HYPOTHESIS_PROFILE") or ("ci" if _in_ci() else "dev")
settings.load_profile(HYPOTHESIS_PROFILE)


def _pg_base_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        if _in_ci():
            pytest.fail(f"CI=true but {PG_ENV} is not set: the PostgreSQL tests must run in CI")
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of each kind."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tongka.sqlite'}"
        return
    base = _pg_base_url()
    assert base is not None
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # unreachable server
        admin.dispose()
        if _in_ci():
            pytest.fail(f"CI=true and PostgreSQL at {base} is unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {base} is unreachable: {exc}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on an empty database of each kind, migrated to the code's schema."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


DEEP_SCALE = 10  # the deep profile runs ten times each test's own number of examples


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under the deep profile, scale every hypothesis test's examples, including those whose
    ``@settings`` names an explicit ``max_examples`` (which a profile alone cannot raise)."""
    if HYPOTHESIS_PROFILE != "deep":
        return
    for item in items:
        test = getattr(item, "obj", None)
        current = getattr(test, "_hypothesis_internal_use_settings", None)
        if current is not None:
            test._hypothesis_internal_use_settings = settings(  # type: ignore[union-attr]
                current, max_examples=current.max_examples * DEEP_SCALE
            )


@pytest.fixture
def charts_as_digests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Statements without drawing their charts: a digest of each chart's data takes the
    picture's place, so pages still differ when the data does. For tests about what a page
    says (staleness, counts, identity); drawing is tested by tests/test_statements*.py, and
    takes most of a report's time (about 0.1 s a chart)."""
    import hashlib

    from settlement import statements

    monkeypatch.setattr(statements, "_render_all", lambda pending, _workers: [
        hashlib.sha256(repr(c).encode()).hexdigest() for c in pending])
