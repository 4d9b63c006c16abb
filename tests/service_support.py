"""The service under test: a centre on each database, an in-process client, keys per role and
a small generated day split into one batch file per operator.

Import the fixtures into a test module with ``from tests.service_support import *``-free names:
``service``, ``keys``, ``day_files`` (see each fixture's docstring).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clearing.settings import Settings
from tariffs.load import TariffSet, load_tariff_set
from tongka.access import Role, create_key
from tongka.service.app import create_app
from tongka.service.centre import Centre, open_centre
from tongka.testing.generate import generate_day, write_day

DAY = dt.date(2026, 11, 24)
_TARIFFS: list[TariffSet] = []


def tariffs() -> TariffSet:
    """The default tariff set, loaded once per test process."""
    if not _TARIFFS:
        _TARIFFS.append(load_tariff_set())
    return _TARIFFS[0]


@dataclass
class Service:
    centre: Centre
    client: TestClient
    _keys: dict[tuple[Role, int | None], str] = field(default_factory=dict)

    def key(self, role: Role | str, party: int | None = None) -> str:
        """A key of ``role`` (and ``party``), created on first use."""
        role = Role(role)
        if (role, party) not in self._keys:
            self._keys[(role, party)] = create_key(self.centre.engine, role, party=party).key
        return self._keys[(role, party)]

    def auth(self, role: Role | str, party: int | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(role, party)}"}


@pytest.fixture
def service(db_url: str, tmp_path: Path) -> Iterator[Service]:
    """The service on each database (sqlite, postgresql), its worker running, in process."""
    centre = open_centre(Settings(home=tmp_path / "home", database_url=db_url),
                         tariffs=tariffs())
    with TestClient(create_app(centre), raise_server_exceptions=False) as client:
        yield Service(centre, client)
    centre.engine.dispose()


def day_files(out: Path, n_taps: int = 3_000, seed: int = 7, day: dt.date = DAY) -> list[Path]:
    """A generated day of the whole circle as one canonical batch file per operator
    (``<day>-op<N>.parquet``): the operator is in each file's name and metadata."""
    return write_day(out, generate_day(day, n_taps, seed, tariffs()), day)
