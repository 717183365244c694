"""Probes and metrics: /healthz and /readyz (open, for load balancers and Kubernetes) and /metrics.

/metrics needs a token with the `metrics` (or `admin`) role. Metrics hold no PHI, but they
describe the deployment, and everything on the API port but the public paths needs a token
(fhir_api/security.py). Prometheus sends a long-lived metrics-only token from a file
(`authorization: credentials_file`; `doctorai token --role metrics`).
"""

import asyncio
import logging
from collections.abc import Callable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from fhir_api.deps import EngineDep, ObjectStoreDep, PrincipalDep
from fhir_api.errors import Forbidden
from storage.errors import StorageUnavailable
from storage.objects import ObjectStore

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])
METRICS_ROLES = ("metrics", "admin")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def _check_database(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _check_objects(objects: ObjectStore) -> None:
    objects.ping()


async def _check(name: str, probe: Callable[[], None]) -> str:
    try:
        await asyncio.to_thread(probe)
    except (StorageUnavailable, SQLAlchemyError, OSError) as exc:
        log.warning("readiness check %s failed: %s", name, type(exc).__name__)
        return f"unavailable: {type(exc).__name__}"
    return "ok"


@router.get("/readyz")
async def readyz(engine: EngineDep, objects: ObjectStoreDep) -> JSONResponse:
    """200 when the database and the object store answer, else 503."""
    checks = {
        "database": await _check("database", lambda: _check_database(engine)),
        "object_store": await _check("object_store", lambda: _check_objects(objects)),
    }
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


@router.get("/metrics", tags=["metrics"])
def metrics(principal: PrincipalDep) -> Response:
    """The process's metrics in the Prometheus text format."""
    if not any(role in principal.roles for role in METRICS_ROLES):
        raise Forbidden("reading /metrics needs the metrics or admin role")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
