"""Prometheus scrape endpoint, for a token with the `metrics` (or `admin`) role.

Metrics hold no PHI, but they describe the deployment, and everything on the API port but the
public paths needs a token (fhir_api/security.py). Prometheus sends a long-lived metrics-only
token from a file (`authorization: credentials_file`; `doctorai token --role metrics`).
"""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fhir_api.deps import PrincipalDep
from fhir_api.errors import Forbidden

router = APIRouter(tags=["metrics"])
METRICS_ROLES = ("metrics", "admin")


@router.get("/metrics")
def metrics(principal: PrincipalDep) -> Response:
    """The process's metrics in the Prometheus text format."""
    if not any(role in principal.roles for role in METRICS_ROLES):
        raise Forbidden("reading /metrics needs the metrics or admin role")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
