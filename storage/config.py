"""Settings for the object store and the database (env prefix DOCTORAI_)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


# The local stack's object-store keys: fine on a laptop, refused in production (DESIGN.md section 8).
DEFAULT_S3_ACCESS_KEY = "doctorai-local"
DEFAULT_S3_SECRET_KEY = "doctorai-local-secret"


class StorageSettings(BaseSettings):
    """Where bytes and rows live. Defaults fit the local stack that `doctorai up` starts."""

    model_config = SettingsConfigDict(env_prefix="DOCTORAI_", extra="ignore")

    # production: every process refuses to start with default or empty secrets (check_production).
    env: Literal["development", "production"] = "development"

    var_dir: Path = Path("var")
    # SQLite under var/ by default; PostgreSQL with e.g. postgresql+psycopg://user@host/db.
    database_url: str = ""
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = DEFAULT_S3_ACCESS_KEY
    s3_secret_key: str = DEFAULT_S3_SECRET_KEY
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


class ProductionConfigError(RuntimeError):
    """The settings are not safe to run in production."""


def check_production(settings: StorageSettings) -> None:
    """Refuse production mode with the default or an empty object-store key, naming the setting."""
    if settings.env != "production":
        return
    for name, value, default in (
        ("DOCTORAI_S3_ACCESS_KEY", settings.s3_access_key, DEFAULT_S3_ACCESS_KEY),
        ("DOCTORAI_S3_SECRET_KEY", settings.s3_secret_key, DEFAULT_S3_SECRET_KEY),
    ):
        if not value or value == default:
            raise ProductionConfigError(f"{name} must be set to a value of your own when DOCTORAI_ENV=production")


def exit_if_unsafe(settings: StorageSettings) -> None:
    """Every process's first start-up step: exit with the reason when production settings are unsafe."""
    try:
        check_production(settings)
    except ProductionConfigError as exc:
        raise SystemExit(f"refusing to start: {exc}") from None


@lru_cache
def get_settings() -> StorageSettings:
    """The process's storage settings, read once from the environment."""
    return StorageSettings()
