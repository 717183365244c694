"""Settings for the object store and the database (env prefix DOCTORAI_)."""

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseSettings):
    """Where bytes and rows live. Defaults fit the local stack that `doctorai up` starts."""

    model_config = SettingsConfigDict(env_prefix="DOCTORAI_", extra="ignore")

    var_dir: Path = Path("var")
    # SQLite under var/ by default; PostgreSQL with e.g. postgresql+psycopg://user@host/db.
    database_url: str = ""
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = "doctorai-local"
    s3_secret_key: str = "doctorai-local-secret"
    s3_bucket: str = "doctorai"
    s3_region: str = "us-east-1"
    s3_secure: bool = False

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL: the configured one, or the SQLite file under `var_dir`."""
        if not self.database_url:
            return f"sqlite:///{(self.var_dir / 'doctorai.db').resolve()}"
        # Accept the plain libpq form too; SQLAlchemy needs the driver named.
        if self.database_url.startswith("postgresql://"):
            return "postgresql+psycopg://" + self.database_url.removeprefix("postgresql://")
        return self.database_url


@lru_cache
def get_settings() -> StorageSettings:
    """The process's storage settings, read once from the environment."""
    return StorageSettings()
