"""Settings of the HTTP API and the subscription deliverer (env prefix DOCTORAI_)."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from integration.instances.ingest import DuplicatePolicy
from storage.config import ProductionConfigError, StorageSettings, check_signing_key
from storage.config import check_production as check_storage_production

# Good enough for a laptop, refused in production (DESIGN.md section 8).
DEFAULT_JWT_SECRET = "doctorai-local-development-secret"


class ApiSettings(BaseSettings):
    """Where the API listens and how it checks bearer tokens."""

    model_config = SettingsConfigDict(env_prefix="DOCTORAI_", extra="ignore")

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # HS256 key shared by the token issuer (`doctorai token`) and the API.
    jwt_secret: str = DEFAULT_JWT_SECRET
    jwt_issuer: str = "doctorai"
    # Lifetime of the tokens `doctorai token` prints unless --ttl says otherwise: hours, not a year
    # (issue 18); a token can be revoked before it expires (POST /admin/tokens/revoke).
    token_ttl_seconds: int = Field(default=3600, ge=1)
    # How long the API remembers that a token is not revoked before it looks again (one indexed
    # lookup); a revocation made in another API replica or by the CLI takes effect within it.
    token_revocation_cache_seconds: float = Field(default=5.0, ge=0)
    # Base of Bundle fullUrl values and of the token URL client assertions name as their audience,
    # e.g. https://ai.hospital.example; required in production. Empty: fullUrl values are taken from
    # the request, the token URL from the address the connection reached (never the Host header).
    public_base_url: str = ""
    # Lifetime of the tokens POST /auth/token issues; SMART Backend Services recommends at most 300 s.
    client_token_ttl_seconds: int = 300
    # Subscription delivery (python -m fhir_api.subscriptions): poll interval, request timeout, and
    # exponential backoff from the first to the largest delay; a notification is retried until it is
    # acknowledged, so an endpoint down for hours still gets everything once it is back.
    subscription_poll_seconds: float = 1.0
    subscription_timeout_seconds: float = 10.0
    subscription_retry_initial_seconds: float = 5.0
    subscription_retry_max_seconds: float = 1800.0
    subscription_metrics_port: int = 9110
    # Endpoints in loopback, link-local or private ranges are refused (SSRF, issue 18) unless listed
    # here: host names, or networks in CIDR form, e.g. ["10.20.0.0/16", "ehr.hospital.internal"].
    subscription_allowed_endpoints: list[str] = []
    # HTTP hardening (fhir_api/security.py). Requests per second each client may make on average
    # (clients are token subjects, or addresses without a valid token), and the burst above it;
    # 0 turns the limit off. Each API replica counts on its own.
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 200
    # Largest request body accepted, in bytes (413 above it).
    max_body_bytes: int = 16 * 1024 * 1024
    # Slow clients (fhir_api/serving.py): seconds a connection has to send a request's head (from
    # when it connects or its previous answer ended; then 408 and closed), the longest pause
    # between pieces of a body (408), how long an idle kept-open connection is kept, and the
    # most connections served at once (more get 503 and are closed).
    http_header_timeout_seconds: float = 10.0
    http_body_timeout_seconds: float = 30.0
    http_keep_alive_seconds: int = 5
    http_max_connections: int = 500
    # POST /admin/models: most bytes a package archive may unpack to (its body is capped by
    # max_body_bytes first; larger packages go in with `doctorai models add`).
    model_upload_max_bytes: int = 512 * 1024 * 1024
    # Origins a browser may call the API from (CORS), e.g. ["https://viewer.hospital.example"]; none by default.
    cors_allow_origins: list[str] = []
    # Strict-Transport-Security max-age sent on HTTPS requests (RFC 6797); 0 sends none.
    hsts_max_age_seconds: int = 63_072_000
    # QIDO-RS: the most results one search answers (PS3.18 8.3.4.4, "maxResults"); a client pages
    # past it with offset, told how many remain by a Warning header.
    dicomweb_max_results: int = Field(default=1000, ge=1)
    # The console (issue 16): a session ends after this many seconds without a request, and after
    # this many seconds in all; an account is locked for `console_lockout_seconds` after
    # `console_lockout_failures` wrong passwords in a row; new passwords have at least this many characters.
    console_idle_timeout_seconds: int = 900
    console_session_lifetime_seconds: int = 8 * 3600
    console_lockout_failures: int = 5
    console_lockout_seconds: int = 900
    console_password_min_length: int = 12
    # STOW-RS (issue 17). Studies it stores are recorded as sent by this pseudo calling AE title:
    # routing rules match it, and its dicom_peers row (if any) gives their quiet period and
    # duplicate policy; without one, this duplicate policy applies. Each instance may be this
    # large, and is received into memory up to the spool size, into a temporary file past it.
    dicomweb_calling_ae: str = "DICOMWEB"
    dicomweb_duplicate_policy: DuplicatePolicy = "keep-last"
    dicomweb_max_instance_bytes: int = 1 << 30
    dicomweb_spool_memory_bytes: int = 8 << 20


__all__ = ["ApiSettings", "ProductionConfigError", "check_production", "get_settings"]


def check_production(settings: ApiSettings, storage: StorageSettings) -> None:
    """Refuse to start in production (DOCTORAI_ENV, a storage setting) with default, example, empty or
    weak secrets."""
    check_storage_production(storage)
    if storage.env != "production":
        return
    if settings.jwt_secret == DEFAULT_JWT_SECRET:
        raise ProductionConfigError(
            "DOCTORAI_JWT_SECRET must be set to a secret of your own when DOCTORAI_ENV=production"
        )
    check_signing_key("DOCTORAI_JWT_SECRET", settings.jwt_secret)
    # Issue 18: the audience of SMART client assertions is this URL, never the request's Host header.
    if not settings.public_base_url.startswith(("https://", "http://")):
        raise ProductionConfigError(
            "DOCTORAI_PUBLIC_BASE_URL must be set to the API's public URL (e.g. https://ai.hospital.example) "
            "when DOCTORAI_ENV=production"
        )


@lru_cache
def get_settings() -> ApiSettings:
    """The process's API settings, read once from the environment."""
    return ApiSettings()
