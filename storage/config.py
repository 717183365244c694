"""Settings for the object store and the database (env prefix DOCTORAI_)."""

import math
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# The local stack's object-store keys: fine on a laptop, refused in production (DESIGN.md section 8).
DEFAULT_S3_ACCESS_KEY = "doctorai-local"
DEFAULT_S3_SECRET_KEY = "doctorai-local-secret"
# Issue 18: every secret value shipped as an example (deploy/env.example, deploy/k8s/secret.example.yaml)
# is refused in production like the built-in defaults; tests/storage/test_config.py checks that each
# one shipped in deploy/ is. Values carrying one of the markers are refused whatever else they say.
PLACEHOLDERS = frozenset(
    {
        DEFAULT_S3_ACCESS_KEY,
        DEFAULT_S3_SECRET_KEY,
        "change-me",
        "change-me-at-least-8",
        "change-me-postgres",
        "change-me-minio-at-least-8",
        "change-me-grafana",
        "change-me-to-a-random-string-of-at-least-32-bytes",
    }
)
_PLACEHOLDER_MARKERS = ("change-me", "changeme", "replace-me")
# A key that signs (HS256 tokens, audit checkpoints) has at least as many bytes as the hash output
# (RFC 7518 section 3.2), and at least this many bits by a character-frequency estimate.
SIGNING_KEY_MIN_BYTES = 32
SIGNING_KEY_MIN_BITS = 128


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


def is_placeholder(value: str) -> bool:
    """Whether a secret is empty, a built-in default or an example value we ship."""
    lowered = value.strip().lower()
    return not lowered or value in PLACEHOLDERS or any(marker in lowered for marker in _PLACEHOLDER_MARKERS)


def estimated_bits(value: str) -> float:
    """Entropy of a secret estimated from its character frequencies (Shannon), in bits; 0 for a
    value that repeats a shorter one ("abab..."), which the frequencies would overrate."""
    if not value or value in (value + value)[1:-1]:
        return 0.0
    counts = Counter(value).values()
    return -sum(n * math.log2(n / len(value)) for n in counts)


def check_secret(name: str, value: str) -> None:
    """ProductionConfigError, naming the setting, when a secret is empty or a shipped placeholder."""
    if is_placeholder(value):
        raise ProductionConfigError(f"{name} must be set to a value of your own when DOCTORAI_ENV=production")


def check_signing_key(name: str, value: str) -> None:
    """`check_secret`, and ProductionConfigError when the key is too short or too guessable to sign with."""
    check_secret(name, value)
    if len(value.encode()) < SIGNING_KEY_MIN_BYTES or estimated_bits(value) < SIGNING_KEY_MIN_BITS:
        raise ProductionConfigError(
            f"{name} must be a random key of at least {SIGNING_KEY_MIN_BYTES} bytes when DOCTORAI_ENV=production "
            "(e.g. `openssl rand -base64 32`)"
        )


def check_production(settings: StorageSettings) -> None:
    """Refuse production mode with a default, example or empty object-store key or database password,
    naming the setting."""
    if settings.env != "production":
        return
    check_secret("DOCTORAI_S3_ACCESS_KEY", settings.s3_access_key)
    check_secret("DOCTORAI_S3_SECRET_KEY", settings.s3_secret_key)
    if settings.database_url:
        try:
            password = make_url(settings.database_url).password
        except ArgumentError:
            password = None  # make_engine names a malformed URL
        if password is not None:
            check_secret("the password in DOCTORAI_DATABASE_URL", str(password))


def exit_if_unsafe(settings: StorageSettings, *checks: Callable[[], None]) -> None:
    """Every process's first start-up step: exit with the reason, one line, when production settings
    are unsafe (these and the other packages' `checks`, which raise ProductionConfigError)."""
    try:
        check_production(settings)
        for check in checks:
            check()
    except ProductionConfigError as exc:
        raise SystemExit(f"refusing to start: {exc}") from None


@lru_cache
def get_settings() -> StorageSettings:
    """The process's storage settings, read once from the environment."""
    return StorageSettings()
