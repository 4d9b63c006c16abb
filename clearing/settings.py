"""Where Tongka keeps its data and which database it talks to, from flags or the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path(".tongka")
DB_FILE = "tongka.sqlite"


class Settings(BaseSettings):
    """``TONGKA_HOME``, ``TONGKA_DATABASE_URL`` (flags override both) and ``TONGKA_INPUT_DIR``."""

    model_config = SettingsConfigDict(env_prefix="TONGKA_", extra="ignore")

    home: Path = DEFAULT_HOME
    database_url: str | None = None
    input_dir: Path | None = None  # when set, batches may only be read from under it

    def resolved_url(self) -> str:
        """The database URL; the default is a SQLite file inside the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / DB_FILE).resolve()}"
