"""Admin API errors as RFC 9457 problem details (application/problem+json), one handler per error kind."""

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fhir_api.errors import FhirError, from_storage
from fhir_api.responses import error_problem, problem_response
from integration.errors import (
    InvalidPackage,
    JobNotFound,
    JobStateConflict,
    ModelConflict,
    ModelNotFound,
    ModelRetired,
    StudyNotFound,
    StudyStateConflict,
    UnsafeArchive,
)
from storage.dead_letters import LetterResolved
from storage.destinations import DestinationExists, DestinationInUse
from storage.errors import StorageError, StorageUnavailable
from storage.queues import NotDead, NotQueued
from storage.rules import RuleExists, RuleNotFound

# Seconds a client should wait before retrying when storage is down (RFC 9110 section 10.2.3).
_RETRY_AFTER = "5"

# Errors from the layers below and the HTTP status each one is answered with.
_STATUS: dict[type[Exception], int] = {
    StudyNotFound: 404,
    StudyStateConflict: 409,
    JobNotFound: 404,
    JobStateConflict: 409,
    LetterResolved: 409,
    DestinationExists: 409,
    DestinationInUse: 409,
    RuleExists: 409,
    RuleNotFound: 404,
    NotQueued: 404,
    NotDead: 409,
    UnsafeArchive: 400,
    InvalidPackage: 422,
    ModelConflict: 409,
    ModelNotFound: 404,
    ModelRetired: 409,
}



def install_handlers(app: FastAPI) -> None:
    """Answer every error the admin routes raise as problem details."""
    @app.exception_handler(FhirError)
    async def _ours(_request: Request, exc: FhirError) -> Response:
        return error_problem(exc)

    @app.exception_handler(StorageError)
    async def _stored(_request: Request, exc: StorageError) -> Response:
        return error_problem(from_storage(exc))

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
