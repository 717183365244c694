"""The HTTP API application: `create_app()` and the lifespan that builds its collaborators."""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy import Engine
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from storage import fhir
from fhir_api import metrics
from storage.fhir import store
from fhir_api.admin.app import create_admin_app
from fhir_api.console import routes as console_routes
from fhir_api.config import ApiSettings, check_production, get_settings
from fhir_api.errors import FhirError, from_storage
from fhir_api.last_resort import LastResort
from fhir_api.responses import error_problem, error_response, outcome_response, problem_response
from fhir_api.security import BodyLimit, Gate, NoNul, SecurityHeaders
from fhir_api.serving import BodyDeadline
from fhir_api.fhir.routes import audit as audit_routes
from fhir_api.auth import routes as auth_routes
from fhir_api.auth.revocation import Revocations
from fhir_api.fhir.routes import read as fhir_routes
from fhir_api.fhir.routes import write as fhir_write_routes
from fhir_api.dicomweb import qido
from integration.heartbeats import Heartbeat
from fhir_api import probes
from integration.health import Readiness, dependency_checks
from fhir_api.dicomweb import stow, wado
from integration.instances import indexer
from storage.group_commit import GroupCommit
from storage.config import StorageSettings
from storage.config import get_settings as get_storage_settings
from storage.db import make_engine, session_scope
from storage.errors import StorageError, StorageUnavailable
from storage.objects import make_object_store

log = logging.getLogger(__name__)

# Seconds a client should wait before retrying when storage is down (RFC 9110 section 10.2.3).
_RETRY_AFTER = "5"


def _interaction(request: Request) -> tuple[str, str] | None:
    """(interaction, resource type) of a FHIR request, for metrics; None for other paths."""
    route = request.scope.get("route")
    path = getattr(route, "path", "")
    if path == "/fhir/metadata":
        return "capabilities", "CapabilityStatement"
    if path in ("/fhir", "/fhir/"):
        return "batch-transaction", "Bundle"
    if path.startswith("/fhir/"):
        kind = request.path_params.get("resource_type", "")
        label = kind if kind in fhir.RESOURCE_CLASSES else "other"
        return _INTERACTIONS.get((request.method, path.removeprefix("/fhir/{resource_type}")), "other"), label
    if request.url.path.startswith("/fhir"):
        return "unknown", "other"
    return None


# (method, path after /fhir/{resource_type}) -> FHIR interaction name (http.html).
_INTERACTIONS = {
    ("GET", ""): "search-type",
    ("POST", "/_search"): "search-type",
    ("POST", ""): "create",
    ("PUT", ""): "update",
    ("DELETE", ""): "delete",
    ("GET", "/_history"): "history-type",
    ("GET", "/{resource_id}"): "read",
    ("PUT", "/{resource_id}"): "update",
    ("DELETE", "/{resource_id}"): "delete",
    ("GET", "/{resource_id}/_history"): "history-instance",
    ("GET", "/{resource_id}/_history/{version_id}"): "vread",
}


def _reindex(engine: Engine) -> None:
    try:
        with session_scope(engine) as session:
            count = store.reindex_missing(session)
    except StorageUnavailable:
        # /readyz reports the database; the rows are rebuilt at the next start.
        log.warning("database unavailable at start-up; search index not checked")
        return
    if count:
        log.info("rebuilt the search index of %d FHIR resources", count)


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(FhirError)
    async def _fhir_error(request: Request, exc: FhirError) -> Response:
        # The console's own routes answer problem details, as the admin API does.
        return error_problem(exc) if request.url.path.startswith("/console") else error_response(exc)

    @app.exception_handler(StorageError)
    async def _stored(_request: Request, exc: StorageError) -> Response:
        return error_response(from_storage(exc))

    @app.exception_handler(StorageUnavailable)
    async def _storage_down(_request: Request, exc: StorageUnavailable) -> Response:
        log.warning("storage unavailable: %s", type(exc).__name__)
        return outcome_response(
            503, "transient", "storage is unavailable, retry later", headers={"Retry-After": _RETRY_AFTER}
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/console"):
            return problem_response(422, "the request does not validate")
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return outcome_response(400, "invalid", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if not request.url.path.startswith(("/fhir", "/dicomweb")):
            return await http_exception_handler(request, exc)
        code = {400: "invalid", 404: "not-found", 405: "not-supported", 408: "timeout"}.get(exc.status_code, "exception")
        return outcome_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.middleware("http")
    async def _measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        labels = _interaction(request)
        if labels is not None:
            metrics.REQUESTS.labels(labels[0], labels[1], str(response.status_code)).inc()
            metrics.REQUEST_SECONDS.labels(labels[0]).observe(time.perf_counter() - started)
        return response


def create_app(settings: ApiSettings | None = None, storage_settings: StorageSettings | None = None) -> FastAPI:
    """The API with its routes and error handlers; the lifespan connects the database and object store."""
    settings = settings or get_settings()
    storage_settings = storage_settings or get_storage_settings()
    # Revoked tokens (issue 18): the gate checks them, the admin API's revoke route adds to them.
    revocations = Revocations(settings.token_revocation_cache_seconds)
    admin = create_admin_app(settings)
    admin.state.revocations = revocations

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        check_production(settings, storage_settings)
        engine = make_engine(storage_settings.resolved_database_url())
        app.state.engine = engine
        # A mounted application's own lifespan does not run; it shares this one's engine.
        admin.state.engine = engine
        await asyncio.to_thread(_reindex, engine)
        app.state.object_store = make_object_store(storage_settings)
        admin.state.object_store = app.state.object_store  # rule dry runs read instance headers
        app.state.readiness = Readiness(dependency_checks(engine, app.state.object_store))
        # STOW-RS commits its instances' rows in groups, as the DICOM listener does (integration/instances).
        app.state.indexer = GroupCommit(engine, partial(indexer.write, who="doctorai-dicomweb"))
        # The API process's heartbeat (integration.heartbeats), for the console's list of processes.
        heartbeat = Heartbeat(engine, kind="api", name="api")
        await asyncio.to_thread(heartbeat.start)
        try:
            yield
        finally:
            await asyncio.to_thread(heartbeat.stop)
            engine.dispose()

    # No /docs or /redoc pages: they load scripts from a CDN, which the Content-Security-Policy
    # forbids; the OpenAPI document stays at /openapi.json, behind a token like every data route.
    app = FastAPI(title="DoctorAI", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    # Innermost (inside the metrics middleware, whose task group would wrap it in an exception
    # group): a body read that times out raises where the routes' error handlers see it.
    app.add_middleware(BodyDeadline, seconds=settings.http_body_timeout_seconds)
    # The same for a NUL in a body (issue 18): refused where the routes' handlers answer it.
    app.add_middleware(NoNul)
    _install_handlers(app)
    # Added innermost first: the gate, the body limit, CORS (only when origins are allowed), the
    # last-resort error answer, then the security headers outermost, so every answer, 401, 413,
    # 429 and 500 included, has them.
    app.add_middleware(Gate, settings=settings, revocations=revocations)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept", "Prefer", "If-Match", "If-None-Exist"],
            expose_headers=["Location", "ETag", "Last-Modified", "Content-Location"],
        )
    # Issue 18: an error no handler took is answered here, inside the security headers.
    app.add_middleware(LastResort)
    app.add_middleware(SecurityHeaders, hsts_max_age=settings.hsts_max_age_seconds)
    app.include_router(probes.router)
    # The SMART configuration under /fhir/.well-known must be matched before /fhir/{type}/{id}.
    app.include_router(auth_routes.router)
    # /fhir/AuditEvent before /fhir/{type}: the trail is served from audit_events, not the store.
    app.include_router(audit_routes.router)
    app.include_router(fhir_routes.router)
    app.include_router(fhir_write_routes.router)
    app.include_router(qido.router)
    app.include_router(wado.router)
    app.include_router(stow.router)
    # Issue 7: the admin API, with its own OpenAPI document at /admin/openapi.json.
    app.mount("/admin", admin)
    # Issue 16: the console, its files, and the sign-in of people.
    app.include_router(console_routes.router)
    app.mount("/console/static", console_routes.static_files(), name="console-static")
    return app
