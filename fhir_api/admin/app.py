"""The admin REST API (issue 7): a FastAPI sub-application mounted at `/admin`, its roles and its audit.

Every route needs a bearer token (the Gate refuses requests without one before they get here)
carrying the `admin` role, or the `operator` role for reads (GET). Answers are JSON; errors are
RFC 9457 problem details (application/problem+json). Every change writes one audit record, with
who made it, from where, on what, and the JSON before and after (secrets masked), in the
transaction of the change. The OpenAPI document is at /admin/openapi.json, behind the same roles.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit import log as audit_log
from audit.records import AuditRecord, Hop
from fhir_api.auth.tokens import ADMIN, OPERATOR, Principal
from fhir_api.config import ApiSettings
from fhir_api.deps import PrincipalDep, client_address
from fhir_api.errors import FhirError, Forbidden
from fhir_api.responses import error_problem, problem_response
from integration.errors import InvalidPackage, ModelConflict, StudyNotFound, StudyStateConflict, UnsafeArchive
from storage.dead_letters import LetterResolved
from storage.deliveries import DeliveryNotDead, DeliveryNotFound, DestinationExists, DestinationInUse
from storage.errors import StorageUnavailable
from storage.forwards import ForwardNotDead, ForwardNotFound
from storage.rules import RuleExists, RuleNotFound

# RFC 9110 section 9.2.1: the safe methods an operator may use.
READ_METHODS = frozenset({"GET", "HEAD"})
# Option keys whose values are credentials: never answered, never written to the audit trail.
SECRET_KEYS = frozenset({"token", "password", "secret"})
MASK = "********"
# Correlation id of admin records that belong to no study.
ADMIN_CORRELATION = "admin"
# Seconds a client should wait before retrying when storage is down (RFC 9110 section 10.2.3).
_RETRY_AFTER = "5"

# Errors from the layers below and the HTTP status each one is answered with.
_STATUS: dict[type[Exception], int] = {
    StudyNotFound: 404,
    StudyStateConflict: 409,
    LetterResolved: 409,
    DestinationExists: 409,
    DestinationInUse: 409,
    RuleExists: 409,
    RuleNotFound: 404,
    ForwardNotFound: 404,
    ForwardNotDead: 409,
    DeliveryNotFound: 404,
    DeliveryNotDead: 409,
    UnsafeArchive: 400,
    InvalidPackage: 422,
    ModelConflict: 409,
}


def authorize(request: Request, principal: PrincipalDep) -> Principal:
    """The caller, when its roles allow this request: admin for everything, operator for reads only."""
    roles = set(principal.roles)
    if request.method in READ_METHODS:
        if not roles & {ADMIN, OPERATOR}:
            raise Forbidden("the admin API needs the admin or operator role")
    elif ADMIN not in roles:
        raise Forbidden("changes through the admin API need the admin role")
    return principal


@dataclass(frozen=True)
class Actor:
    """Who makes an admin request, from where, and on what (method and path), for the audit trail."""

    subject: str
    address: str
    method: str
    path: str


def get_actor(request: Request, principal: Annotated[Principal, Depends(authorize)]) -> Actor:
    """The authorized caller of this request."""
    # The full path (mounted applications see it whole in scope["path"], root_path included).
    return Actor(
        subject=principal.subject, address=client_address(request), method=request.method, path=request.url.path
    )


ActorDep = Annotated[Actor, Depends(get_actor)]


def mask(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with every non-empty secret replaced by a fixed mask."""
    return {k: (MASK if k in SECRET_KEYS and v else v) for k, v in values.items()}


def audit_change(
    session: Session,
    actor: Actor,
    *,
    hop: Hop,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    correlation_id: str = ADMIN_CORRELATION,
    detail: Mapping[str, str] | None = None,
) -> None:
    """Record one admin change in the caller's transaction; `before`/`after` are masked JSON documents."""
    record_detail = {
        "method": actor.method,
        "before": json.dumps(None if before is None else mask(before), sort_keys=True, default=str),
        "after": json.dumps(None if after is None else mask(after), sort_keys=True, default=str),
        **(detail or {}),
    }
    audit_log.append(
        session,
        AuditRecord(
            hop=hop,
            correlation_id=correlation_id,
            agent_who=actor.subject,
            agent_address=actor.address,
            entity_what=actor.path[:256],
            detail=record_detail,
        ),
    )


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(FhirError)
    async def _ours(_request: Request, exc: FhirError) -> Response:
        return error_problem(exc)

    @app.exception_handler(StorageUnavailable)
    async def _storage_down(_request: Request, _exc: StorageUnavailable) -> Response:
        return problem_response(503, "storage is unavailable, retry later", headers={"Retry-After": _RETRY_AFTER})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return problem_response(422, "the request does not validate", extra={"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        return problem_response(exc.status_code, str(exc.detail), headers=exc.headers)

    for kind, status in _STATUS.items():

        async def _mapped(_request: Request, exc: Exception, status: int = status) -> Response:
            return problem_response(status, str(exc))

        app.add_exception_handler(kind, _mapped)


def create_admin_app(settings: ApiSettings) -> FastAPI:
    """The /admin sub-application; `create_app` mounts it and its lifespan hands it the engine."""
    # Imported here: the route modules import this module's dependencies.
    from fhir_api.routes import (
        admin_clients,
        admin_dead_letters,
        admin_destinations,
        admin_forwards,
        admin_hl7,
        admin_models,
        admin_peers,
        admin_queues,
        admin_rules,
        admin_stats,
        admin_studies,
    )

    app = FastAPI(
        title="DoctorAI admin API",
        version="0.1.0",
        description="Configuration and operations of the engine: roles admin (read and change) and operator (read).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the roles
        servers=[{"url": "/admin"}],
        dependencies=[Depends(authorize)],
    )
    app.state.settings = settings
    _install_handlers(app)
    for module in (
        admin_peers,
        admin_destinations,
        admin_rules,
        admin_models,
        admin_clients,
        admin_studies,
        admin_queues,
        admin_forwards,
        admin_dead_letters,
        admin_hl7,
        admin_stats,
    ):
        app.include_router(module.router)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> JSONResponse:
        """The admin API's OpenAPI document."""
        return JSONResponse(app.openapi())

    return app
