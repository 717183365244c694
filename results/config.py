"""Settings of the results consumer (env prefix DOCTORAI_)."""

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class ResultsSettings(BaseSettings):
    """Where the results consumer serves its metrics, and the public base of the FHIR references it exports."""

    model_config = SettingsConfigDict(env_prefix="DOCTORAI_", extra="ignore")

    # Metrics (and health) port of `python -m results`.
    results_metrics_port: int = 9103
    # Base of the FHIR API as the EHRs see it, e.g. https://ai.hospital.example (the same setting
    # the API reads): the fullUrl of what is pushed to FHIR servers and webhooks.
    public_base_url: str = ""


@lru_cache
def get_settings() -> ResultsSettings:
    """The process's results settings, read once from the environment."""
    return ResultsSettings()
