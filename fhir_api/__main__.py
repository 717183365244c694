"""`python -m fhir_api`: serve the HTTP API (FHIR R4 at /fhir, /healthz, /readyz, /metrics)."""


import uvicorn

from fhir_api.config import ProductionConfigError, check_production, get_settings
from fhir_api.app import create_app
from integration import heartbeats
from integration.logs import setup_logging
from storage.config import get_settings as get_storage_settings


def main() -> None:
    """Check the settings, then serve until SIGTERM or SIGINT (uvicorn stops gracefully on both)."""
    setup_logging()
    settings = get_settings()
    try:
        check_production(settings, get_storage_settings())
    except ProductionConfigError as exc:
        raise SystemExit(f"refusing to start: {exc}") from None
    heartbeats.start("api")
    # No access log: request URLs carry patient identifiers (search parameters), which logs must not hold.
    uvicorn.run(
        create_app(settings), host=settings.http_host, port=settings.http_port, log_config=None, access_log=False
    )


if __name__ == "__main__":
    main()
