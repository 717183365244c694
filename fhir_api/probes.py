"""Probes and metrics: /healthz and /readyz (open, for load balancers and Kubernetes) and /metrics.

/metrics needs a token with the `metrics` (or `admin`) role. Metrics hold no PHI, but they
describe the deployment, and everything on the API port but the public paths needs a token
(fhir_api/security.py). Prometheus sends a long-lived metrics-only token from a file
(`authorization: credentials_file`; `doctorai token --role metrics`).
"""

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fhir_api.auth.tokens import ADMIN, METRICS
from fhir_api.deps import PrincipalDep, ReadinessDep
from fhir_api.errors import Forbidden
from integration.health import answer

router = APIRouter(tags=["health"])
METRICS_ROLES = (METRICS, ADMIN)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(readiness: ReadinessDep) -> Response:
    """200 when the database and the object store answer, else 503 (integration.health: each check
    waited for at most a few seconds, so a hung dependency is reported, not waited on)."""
    ready, checks = await asyncio.to_thread(readiness)
    return Response(answer(ready, checks), status_code=200 if ready else 503, media_type="application/json")


@router.get("/metrics", tags=["metrics"])
def metrics(principal: PrincipalDep) -> Response:
    """The process's metrics in the Prometheus text format."""
    if not any(role in principal.roles for role in METRICS_ROLES):
        raise Forbidden("reading /metrics needs the metrics or admin role")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
