"""FastAPI dependencies: the objects the lifespan built, the settings, and the caller's identity."""

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine

from fhir_api.auth import Principal, verify_token
from fhir_api.config import ApiSettings
from fhir_api.errors import Unauthorized
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


SettingsDep = Annotated[ApiSettings, Depends(get_api_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
ObjectStoreDep = Annotated[ObjectStore, Depends(get_object_store)]


def get_principal(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The principal of the request's bearer token; Unauthorized without a valid one."""
    if credentials is None:
        raise Unauthorized("a bearer token is required", token_given=False)
    return verify_token(settings, credentials.credentials)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def client_address(request: Request) -> str:
    """The peer's address, for audit records."""
    return request.client.host if request.client else ""
