"""FastAPI dependencies: the objects the lifespan built, the settings, and the caller's identity."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from fhir_api.auth.tokens import Principal, verify_token
from fhir_api.config import ApiSettings
from fhir_api.errors import NotAcceptable, Unauthorized, UnsupportedMediaType
from integration.health import Readiness
from storage.objects import ObjectStore

# auto_error=False: we answer a missing token ourselves, with an OperationOutcome and a challenge.
_bearer = HTTPBearer(auto_error=False, description="OAuth2 access token (JWT) with SMART v2 system scopes")


def get_api_settings(request: Request) -> ApiSettings:
    """The settings `create_app` was given."""
    settings: ApiSettings = request.app.state.settings
    return settings


def get_engine(request: Request) -> Engine:
    """The database engine the lifespan built."""
    engine: Engine = request.app.state.engine
    return engine


def get_object_store(request: Request) -> ObjectStore:
    """The object store the lifespan built."""
    objects: ObjectStore = request.app.state.object_store
    return objects


def get_readiness(request: Request) -> Readiness:
    """The readiness checks of the lifespan's engine and object store (/readyz)."""
    readiness: Readiness = request.app.state.readiness
    return readiness


SettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ObjectStoreDep = Annotated[ObjectStore, Depends(get_object_store)]
ReadinessDep = Annotated[Readiness, Depends(get_readiness)]


def get_principal(
    request: Request,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The principal of the request's bearer token, or of the console session the gate checked
    (fhir_api/security.py, admin API only); Unauthorized without either."""
    if credentials is not None:
        return verify_token(settings, credentials.credentials)
    signed_in: Principal | None = getattr(request.state, "principal", None)
    if signed_in is None:
        raise Unauthorized("a bearer token is required", token_given=False)
    return signed_in


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def client_address(request: Request) -> str:
    """The peer's address, for audit records."""
    return request.client.host if request.client else ""


async def raw_body(request: Request) -> bytes:
    """The request body, read before a synchronous route runs in the thread pool."""
    return await request.body()


BodyDep = Annotated[bytes, Depends(raw_body)]

# Media types we serve (http://hl7.org/fhir/R4/http.html#mime-type); XML and Turtle are not.
_JSON_TYPES = ("application/fhir+json", "application/json", "json", "application/*", "*/*")
_FORMAT_ALIASES = ("json", "application/json", "application/fhir+json")


def _media(value: str) -> str:
    return value.split(";")[0].strip().lower()


def negotiate(request: Request) -> None:
    """406 unless `_format` and Accept allow FHIR JSON (http.html#mime-type)."""
    fmt = request.query_params.get("_format")
    if fmt is not None and _media(fmt) not in _FORMAT_ALIASES:
        raise NotAcceptable(f"_format={fmt} is not served; this server speaks application/fhir+json")
    accept = request.headers.get("accept")
    if fmt is None and accept and not any(_media(part) in _JSON_TYPES for part in accept.split(",")):
        raise NotAcceptable(f"cannot answer with {accept}; this server speaks application/fhir+json")


def require_json_body(request: Request) -> None:
    """415 unless the body is declared as FHIR JSON (or plain JSON)."""
    kind = _media(request.headers.get("content-type", ""))
    if kind not in ("application/fhir+json", "application/json"):
        raise UnsupportedMediaType(f"send FHIR resources as application/fhir+json, not {kind or 'no content type'}")
