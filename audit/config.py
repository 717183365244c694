"""Settings of the audit trail's export to a central audit repository (env prefix DOCTORAI_)."""

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.config import StorageSettings, check_signing_key


class AuditSettings(BaseSettings):
    """Who we are in audit messages and where the syslog collector is (IHE ATNA)."""

    model_config = SettingsConfigDict(env_prefix="DOCTORAI_", extra="ignore")

    # AuditSourceID of DICOM PS3.15 A.5.1 and APP-NAME of the syslog header.
    audit_source_id: str = "DOCTORAI"
    audit_enterprise_site_id: str = ""
    # Empty host: no export (the database keeps the trail either way).
    audit_syslog_host: str = ""
    # 6514 is syslog over TLS (RFC 5425); plain TCP collectors usually listen on 601 or 514.
    audit_syslog_port: int = 6514
    audit_syslog_tls: bool = True
    audit_syslog_ca_file: Path | None = None
    audit_syslog_cert_file: Path | None = None
    audit_syslog_key_file: Path | None = None
    audit_export_batch: int = 200
    # Issue 18: a secret key (32 bytes or more) every process shares. Set, each record also carries
    # an HMAC-SHA256 seal of its hash, and verification checks the seals, so someone who can write
    # to the database but lacks the key cannot rewrite the chain (recomputing its plain SHA-256
    # hashes) undetected. Empty: the chain is hashed only.
    audit_key: str = ""


def check_production(settings: AuditSettings, storage: StorageSettings) -> None:
    """In production mode, ProductionConfigError for an audit key that is set but weak or an example."""
    if storage.env == "production" and settings.audit_key:
        check_signing_key("DOCTORAI_AUDIT_KEY", settings.audit_key)


@lru_cache
def get_settings() -> AuditSettings:
    """The process's audit settings, read once from the environment."""
    return AuditSettings()
