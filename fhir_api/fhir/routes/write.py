"""FHIR R4 REST writes: create, update, delete (plain and conditional), and batch/transaction Bundles.

Bodies are validated with the R4B models on the way in; a 201/200 is sent only after the
change, its outbox event and its audit record are committed (DESIGN.md section 5.1).
"""

import json
from collections.abc import Callable
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage import fhir
from fhir_api.fhir import interactions, transactions
from fhir_api.auth.tokens import Principal
from fhir_api.deps import BodyDep, EngineDep, PrincipalDep, SettingsDep, client_address, negotiate, require_json_body
from fhir_api.errors import BadRequest, Conflict
from fhir_api.fhir.interactions import Actor, Written
from storage.fhir.references import study_ids
from fhir_api.responses import fhir_response
from fhir_api.fhir.routes.read import audit_read, base_url, require, supported, version_headers
from storage.db import session_scope
from storage.instances import correlation_id_for_study

router = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=[Depends(negotiate)])
JsonBody = Depends(require_json_body)


def _decode(body: bytes) -> object:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from None


def _resource(body: bytes) -> fhir.Resource:
    try:
        return fhir.parse_data(_decode(body))
    except fhir.ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:10])
        raise BadRequest(f"the resource is not valid FHIR R4: {problems}") from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _actor(request: Request, principal: Principal, resource: fhir.Resource | None = None) -> Actor:
    studies = study_ids(resource) if resource is not None else []
    correlation = correlation_id_for_study(studies[0]) if studies else str(uuid.uuid4())
    return Actor(client_id=principal.subject, address=client_address(request), correlation_id=correlation)


def _minimal(prefer: str | None) -> bool:
    return "return=minimal" in (prefer or "").replace(" ", "")


def _answer(written: Written, base: str, prefer: str | None) -> Response:
    if written.status == 204 or written.resource is None:
        return Response(status_code=204)
    headers = version_headers(written.resource)
    if written.status == 201:
        headers["Location"] = f"{base}/{written.location}"
    if _minimal(prefer):
        return Response(status_code=written.status, headers=headers)
    return fhir_response(written.resource, status_code=written.status, headers=headers)


def _committed(engine: EngineDep, work: Callable[[Session], Written]) -> Written:
    try:
        with session_scope(engine) as session:
            return work(session)
    except IntegrityError as exc:
        # Two writers made the same version at once (primary key of the history row): the client may retry.
        raise Conflict("another request changed this resource at the same time; retry") from exc


@router.post("/{resource_type}", dependencies=[JsonBody])
def create(
    resource_type: str,
    request: Request,
    body: BodyDep,
    engine: EngineDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    if_none_exist: Annotated[str | None, Header()] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    """Create: 201 with Location and ETag; with If-None-Exist, 200 and the match when one exists."""
    supported(resource_type)
    require(principal, resource_type, "c")
    resource = _resource(body)
    if resource.get_resource_type() != resource_type:
        raise BadRequest(f"the body is a {resource.get_resource_type()}, the URL names {resource_type}")
    actor = _actor(request, principal, resource)
    written = _committed(
        engine, lambda s: interactions.create(s, resource, actor=actor, if_none_exist=if_none_exist)
    )
    return _answer(written, base_url(request, settings), prefer)


@router.put("/{resource_type}/{resource_id}", dependencies=[JsonBody])
def update(
    resource_type: str,
    resource_id: str,
    request: Request,
    body: BodyDep,
    engine: EngineDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    if_match: Annotated[str | None, Header()] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    """Update (If-Match for optimistic locking), or create with the client's id: 200 or 201."""
    supported(resource_type)
    require(principal, resource_type, "u")
    resource = _resource(body)
    actor = _actor(request, principal, resource)
    written = _committed(
        engine, lambda s: interactions.update(s, resource_type, resource_id, resource, actor=actor, if_match=if_match)
    )
    return _answer(written, base_url(request, settings), prefer)


@router.put("/{resource_type}", dependencies=[JsonBody])
def conditional_update(
    resource_type: str,
    request: Request,
    body: BodyDep,
    engine: EngineDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    if_match: Annotated[str | None, Header()] = None,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    """PUT [type]?search: update the one match or create (http.html#cond-update)."""
    supported(resource_type)
    require(principal, resource_type, "u")
    resource = _resource(body)
    actor = _actor(request, principal, resource)
    query = request.url.query
    written = _committed(
        engine,
        lambda s: interactions.conditional_update(s, resource_type, query, resource, actor=actor, if_match=if_match),
    )
    return _answer(written, base_url(request, settings), prefer)


@router.delete("/{resource_type}/{resource_id}")
def delete(
    resource_type: str, resource_id: str, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    """Delete: 204; history keeps the versions and a read answers 410 Gone."""
    supported(resource_type)
    require(principal, resource_type, "d")
    actor = _actor(request, principal)
    _committed(engine, lambda s: interactions.delete(s, resource_type, resource_id, actor=actor))
    return Response(status_code=204)


@router.delete("/{resource_type}")
def conditional_delete(resource_type: str, request: Request, engine: EngineDep, principal: PrincipalDep) -> Response:
    """DELETE [type]?search: delete the one match (http.html#cdelete)."""
    supported(resource_type)
    require(principal, resource_type, "d")
    actor = _actor(request, principal)
    query = request.url.query
    _committed(engine, lambda s: interactions.conditional_delete(s, resource_type, query, actor=actor))
    return Response(status_code=204)


@router.post("", dependencies=[JsonBody])
@router.post("/", dependencies=[JsonBody], include_in_schema=False)
def bundle(
    request: Request, body: BodyDep, engine: EngineDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """A batch or transaction Bundle: a batch-response or transaction-response Bundle."""
    try:
        submitted = fhir.parse_bundle(_decode(body))
    except ValueError as exc:
        raise BadRequest(f"the body is not a valid Bundle: {str(exc)[:500]}") from None
    if submitted.type not in ("batch", "transaction"):
        raise BadRequest(f"POST to the base takes a batch or transaction Bundle, not {submitted.type!r}")
    address = client_address(request)
    ctx = transactions.Context(
        principal=principal,
        actor=_actor(request, principal),
        base_url=base_url(request, settings),
        audit_read=lambda s, r: audit_read(s, r, principal=principal, address=address),
    )
    if submitted.type == "transaction":
        try:
            answer = transactions.transaction(engine, submitted, ctx)
        except IntegrityError as exc:
            raise Conflict("another request changed these resources at the same time; retry") from exc
    else:
        answer = transactions.batch(engine, submitted, ctx)
    return fhir_response(answer)
