"""Settings of the DICOM listener (env prefix DOCTORAI_)."""

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class DicomSettings(BaseSettings):
    """How the listener presents itself and when a study counts as complete."""

    model_config = SettingsConfigDict(env_prefix="DOCTORAI_", extra="ignore")

    dicom_ae_title: str = "DOCTORAI"
    # Loopback by default (secure by default); 0.0.0.0 to accept a PACS on another host.
    dicom_host: str = "127.0.0.1"
    dicom_port: int = 11112
    dicom_metrics_port: int = 9101
    # A study is ready once no instance arrived for this long (DESIGN.md 5.4).
    quiet_period_seconds: float = 10.0


@lru_cache
def get_settings() -> DicomSettings:
    """The process's listener settings, read once from the environment."""
    return DicomSettings()
