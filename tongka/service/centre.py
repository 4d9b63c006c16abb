"""What one running service holds: settings, the database, the data directory, the tariffs,
the reader keys, the key cache, the metrics and the job worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from clearing.db import make_engine
from clearing.settings import Settings
from readers.config import ReaderConfig, ReaderConfigError
from tariffs.load import TariffSet, load_tariff_set
from tongka.access import KeyCache
from tongka.schema import upgrade
from tongka.service.metrics import Metrics


@dataclass
class Centre:
    settings: Settings
    engine: Engine
    home: Path
    tariffs: TariffSet
    reader_config: ReaderConfig
    keys: KeyCache = field(default_factory=KeyCache)
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def seal_key(self) -> bytes | None:
        """The key quarantine seals raw records with; None without one (then no raw record is
        kept, never one in clear)."""
        try:
            return bytes(self.reader_config.pii_key_bytes())
        except ReaderConfigError:
            return None

    @property
    def inbox(self) -> Path:
        """Where uploads are spooled while they stream in (inside the data directory, so the
        finished file is renamed, never copied, and a crash leaves only a spool file)."""
        path = self.home / "inbox" / "uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path


def open_centre(settings: Settings, *, demo_keys: bool = False,
                tariffs: TariffSet | None = None) -> Centre:
    """The centre over ``settings``: the data directory created, the schema upgraded."""
    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_url())
    upgrade(engine)
    config = ReaderConfig.demo() if demo_keys else ReaderConfig()
    return Centre(settings, engine, home, tariffs or load_tariff_set(), config)
