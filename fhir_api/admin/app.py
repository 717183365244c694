"""The admin REST API: a FastAPI sub-application mounted at `/admin` (its routes in admin/routes/).

Answers are JSON; errors are RFC 9457 problem details (admin/problems.py); lists are pages
(admin/paging.py). The role table and the audit of every change are in admin/access.py. The OpenAPI document is at /admin/openapi.json, behind the
same roles.
"""

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse

from fhir_api.admin import problems
from fhir_api.admin.access import authorize
from fhir_api.admin.routes import (
    audit,
    clients,
    dead_letters,
    destinations,
    forwards,
    hl7,
    models,
    overview,
    peers,
    queues,
    rules,
    stats,
    studies,
    tokens,
    users,
)
from fhir_api.config import ApiSettings
from fhir_api.last_resort import LastResort


def create_admin_app(settings: ApiSettings) -> FastAPI:
    """The /admin sub-application; `create_app` mounts it and its lifespan hands it the engine."""
    app = FastAPI(
        title="DoctorAI admin API",
        version="0.1.0",
        description=(
            "Configuration and operations of the engine: roles admin (read and change), operator (read), "
            "auditor (the audit trail only). Credentials: a bearer token, or a console session cookie "
            "with its X-CSRF-Token header on changes. Every list answers {total, items, limit, offset}."
        ),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the roles
        servers=[{"url": "/admin"}],
        dependencies=[Depends(authorize)],
    )
    app.state.settings = settings
    problems.install_handlers(app)
    # A mounted application has its own outermost error middleware, which would answer in plain text.
    app.add_middleware(LastResort)
    for module in (
        overview,
        peers,
        destinations,
        rules,
        models,
        clients,
        studies,
        queues,
        forwards,
        dead_letters,
        hl7,
        stats,
        users,
        tokens,
        audit,
    ):
        app.include_router(module.router)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> JSONResponse:
        """The admin API's OpenAPI document."""
        return JSONResponse(app.openapi())

    return app
