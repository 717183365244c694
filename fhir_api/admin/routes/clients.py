"""/admin/clients: the API clients of SMART Backend Services (fhir_api/auth/clients.py).

A client registers a JWK Set or a PEM public key (private_key_jwt), or gets a secret
(client_secret_basic) that is answered once, at creation, and stored only as a hash. A client is
disabled (kept, its token requests refused) or deleted; either way the audit trail keeps every
record of what it did, which names it by id.
"""

import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Response
from fastapi import Depends
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from audit.records import ADMIN_SECURITY, USER_SECURITY_ATTRIBUTES_CHANGED
from fhir_api.auth import clients
from fhir_api.admin.access import ActorDep, audit_change
from fhir_api.admin.paging import Page, Paging, page_of, sorted_by
from fhir_api.deps import EngineDep
from fhir_api.errors import InvalidState, NotFound, Unprocessable
from storage.db import session_scope
from storage.tables.access import ApiClient

router = APIRouter(prefix="/clients", tags=["clients"])
_ALERT = {"alert_type": USER_SECURITY_ATTRIBUTES_CHANGED}


class ClientIn(BaseModel):
    """A client to register; without jwks or public_key it gets a secret."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$")
    name: str = Field("", max_length=256)
    scopes: list[str] = Field(min_length=1, description="SMART system scopes it may ask for")
    jwks: str = Field("", description="its public keys as a JWK Set (JSON)")
    public_key: str = Field("", description="its public key as PEM (RSA or EC)")


class ClientOut(BaseModel):
    """A registered client; never its secret or its keys."""

    client_id: str
    name: str
    scopes: list[str]
    auth_method: str
    enabled: bool
    created_at: datetime


class ClientCreated(ClientOut):
    """A new client, with its secret (shown once) when it authenticates with one."""

    client_secret: str | None = None


def _document(row: ApiClient) -> dict[str, Any]:
    return {
        "client_id": row.client_id,
        "name": row.name,
        "scopes": row.scopes.split(),
        "auth_method": row.auth_method,
        "enabled": row.enabled,
        "created_at": row.created_at,
    }


def _found(session: Session, client_id: str) -> ApiClient:
    row = clients.get_client(session, client_id)
    if row is None:
        raise NotFound(f"no client {client_id}")
    return row


_SORTS = ("client_id", "name", "auth_method", "enabled", "created_at")


@router.get("")
def list_clients(engine: EngineDep, paging: Annotated[Paging, Depends(sorted_by(_SORTS))]) -> Page[ClientOut]:
    """The registered clients, by id unless sorted otherwise."""
    with session_scope(engine) as session:
        found = [ClientOut.model_validate(_document(row)) for row in clients.all_clients(session)]
    return page_of(found, paging, getattr)


@router.get("/{client_id}")
def read_client(client_id: str, engine: EngineDep) -> ClientOut:
    """One client."""
    with session_scope(engine) as session:
        return ClientOut.model_validate(_document(_found(session, client_id)))


@router.post("", status_code=201)
def create_client(body: ClientIn, engine: EngineDep, actor: ActorDep) -> ClientCreated:
    """Register a client (409 when the id is taken); a secret client's secret is in this answer only."""
    if body.jwks and body.public_key:
        raise Unprocessable("give jwks or public_key, not both")
    try:
        jwks = body.jwks or (clients.jwks_from_public_key(body.public_key.encode()) if body.public_key else "")
    except ValueError as exc:
        raise Unprocessable(f"public_key: {exc}") from None
    secret = "" if jwks else secrets.token_urlsafe(32)
    with session_scope(engine) as session:
        if clients.get_client(session, body.client_id) is not None:
            raise InvalidState(f"a client {body.client_id} is registered already")
        try:
            row = clients.register(
                session, client_id=body.client_id, name=body.name, scopes=body.scopes, jwks=jwks, secret=secret
            )
        except ValueError as exc:
            raise Unprocessable(str(exc)) from None
        session.flush()
        after = _document(row)
        audit_change(session, actor, hop=ADMIN_SECURITY, before=None, after=after, detail=_ALERT)
    return ClientCreated.model_validate({**after, "client_secret": secret or None})


@router.post("/{client_id}/disable")
def disable_client(client_id: str, engine: EngineDep, actor: ActorDep) -> ClientOut:
    """Refuse the client's token requests from now on."""
    with session_scope(engine) as session:
        row = _found(session, client_id)
        before = _document(row)
        clients.disable(session, row)
        after = _document(row)
        audit_change(session, actor, hop=ADMIN_SECURITY, before=before, after=after, detail=_ALERT)
    return ClientOut.model_validate(after)


@router.delete("/{client_id}", status_code=204)
def delete_client(client_id: str, engine: EngineDep, actor: ActorDep) -> Response:
    """Delete a client: its token requests are refused, its id may be registered again; its audit records stay."""
    with session_scope(engine) as session:
        before = _document(_found(session, client_id))
        clients.remove(session, client_id)
        audit_change(session, actor, hop=ADMIN_SECURITY, before=before, after=None, detail=_ALERT)
    return Response(status_code=204)
