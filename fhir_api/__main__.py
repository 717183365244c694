"""`python -m fhir_api`: serve the HTTP API (FHIR R4 at /fhir, /healthz, /readyz, /metrics)."""

import uvicorn

from fhir_api import serving
from fhir_api.app import create_app
from fhir_api.config import ProductionConfigError, check_production, get_settings
from integration import process
from integration.config import get_settings as get_integration_settings
from storage.config import get_settings as get_storage_settings


def main() -> None:
    """Check the settings, then serve until SIGTERM or SIGINT (uvicorn stops gracefully on both)."""
    settings = get_settings()
    storage = get_storage_settings()
    process.begin(storage, get_integration_settings())
    try:
        check_production(settings, storage)  # the API's own secrets (the token key) too
    except ProductionConfigError as exc:
        raise SystemExit(f"refusing to start: {exc}") from None
    # Deadlines for slow clients and a connection cap (issue 18): fhir_api/serving.py.
    uvicorn.Server(serving.config(create_app(settings, storage), settings)).run()


if __name__ == "__main__":
    main()
