"""FHIR R4 REST reads: capabilities, read, vread, search (GET and POST _search) and history.

Every read and search is audited in the same transaction that reads the data, with the
correlation id of the study it discloses (DESIGN.md section 1, "who read what"). Every route
checks the token's SMART scope for its resource type and interaction.
"""

from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Header, Request, Response

from audit import log as audit_log
from audit.records import RESOURCE_READ, AuditRecord, Outcome
from fhir_api.fhir import bundles, disclosures, search, subscription_rules
from storage.fhir import store
from storage import fhir
from fhir_api.auth.tokens import ADMIN, Principal, allows
from fhir_api.fhir.capability import capability_statement
from fhir_api.fhir.interactions import version_number
from fhir_api.config import ApiSettings
from fhir_api.deps import BodyDep, EngineDep, PrincipalDep, SettingsDep, client_address, negotiate
from fhir_api.errors import BadRequest, Forbidden, NotFound, UnsupportedMediaType
from storage.fhir.index import instant
from fhir_api.responses import fhir_response, fhir_text_response
from storage.errors import ResourceGone, ResourceNotFound
from storage.db import read_scope, session_scope

router = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=[Depends(negotiate)])

HISTORY_COUNT = 50


def base_url(request: Request, settings: ApiSettings) -> str:
    """The FHIR base URL for fullUrl and links: the configured public one, else the request's."""
    root = settings.public_base_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{root}/fhir"


def supported(resource_type: str) -> None:
    """NotFound for a resource type this server does not serve."""
    if resource_type not in fhir.RESOURCE_CLASSES:
        raise NotFound(f"resource type {resource_type} is not supported")


def require(principal: Principal, resource_type: str, interaction: str) -> None:
    """Forbidden unless the principal's scopes allow this interaction (c, r, u, d, s) on this type."""
    if not allows(principal, resource_type, interaction):
        raise Forbidden(f"the token's scopes do not allow '{interaction}' on {resource_type}")


def strict(prefer: str | None) -> bool:
    """Whether the client asked for strict handling of unknown search parameters."""
    # RFC 7240 preferences, e.g. "Prefer: return=minimal, handling=strict" (FHIR search.html#errors).
    prefs = [p.strip().replace(" ", "") for p in (prefer or "").replace(";", ",").split(",")]
    return "handling=strict" in prefs


def version_headers(resource: fhir.Resource) -> dict[str, str]:
    """ETag and Last-Modified of a resource version (http.html#read)."""
    headers = {}
    if resource.meta and resource.meta.versionId:
        headers["ETag"] = bundles.etag(resource.meta.versionId)
    if resource.meta and resource.meta.lastUpdated:
        headers["Last-Modified"] = format_datetime(resource.meta.lastUpdated.astimezone(UTC), usegmt=True)
    return headers


@router.get("/metadata")
def metadata(request: Request, settings: SettingsDep) -> Response:
    """The CapabilityStatement (open, as FHIR clients read it before authenticating)."""
    return fhir_response(capability_statement(base_url(request, settings)))


def _search(
    resource_type: str,
    items: list[tuple[str, str]],
    request: Request,
    engine: EngineDep,
    settings: ApiSettings,
    principal: Principal,
    prefer: str | None,
) -> Response:
    supported(resource_type)
    require(principal, resource_type, "s")
    query = search.parse_query(resource_type, items, strict=strict(prefer))
    # The search only reads: on SQLite it runs beside the one writer instead of holding its lock,
    # so a long search never stalls C-STORE or HL7 acknowledgements (issue 18). Its audit record
    # is committed before the answer is sent, so nothing is disclosed unrecorded.
    with read_scope(engine) as session:
        result = search.run(session, query, may_read=lambda t: allows(principal, t, "r"))
    with session_scope(engine) as session:
        query_text = urlencode(items, safe="/|:,")
        who, address = principal.subject, client_address(request)
        disclosures.audit_search(session, result, resource_type, who=who, address=address, query=query_text)
    shown = subscription_rules.shown_result(result, principal.subject, ADMIN in principal.roles)
    return fhir_text_response(bundles.searchset(shown, query, base_url=base_url(request, settings)))


@router.get("/{resource_type}")
def search_type(
    resource_type: str,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    """Search a type: a searchset Bundle, newest first unless `_sort` says otherwise."""
    return _search(resource_type, request.query_params.multi_items(), request, engine, settings, principal, prefer)


@router.post("/{resource_type}/_search")
def search_post(
    resource_type: str,
    request: Request,
    body: BodyDep,
    engine: EngineDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    """Search with the parameters in a form body (and the URL), as GET does (http.html#search)."""
    return _search(resource_type, posted_search(request, body), request, engine, settings, principal, prefer)


def posted_search(request: Request, body: bytes) -> list[tuple[str, str]]:
    """The parameters of a POST _search: the URL's, then the form body's (http.html#search); 415 for another body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if body and kind != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters")
    return request.query_params.multi_items() + parse_qsl(body.decode(), keep_blank_values=True)


def _history_page(params: Any) -> tuple[int, datetime | None, tuple[datetime, str, int] | None]:
    try:
        count = search.page_size(params.get("_count", str(HISTORY_COUNT)))
        since = instant(params["_since"]) if "_since" in params else None
        before = None
        if "_before_key" in params:
            stamp, last_id, last_version = params["_before_key"].rsplit("|", 2)
            number = version_number(last_version)
            if number is None:
                raise ValueError("_before_key names no version")
            before = (instant(stamp), last_id, number)
    except ValueError as exc:
        raise BadRequest(f"invalid history parameter: {exc}") from None
    return count, since, before


def _history(
    request: Request,
    engine: EngineDep,
    settings: ApiSettings,
    principal: Principal,
    resource_type: str,
    resource_id: str | None,
) -> Response:
    params = request.query_params
    count, since, before = _history_page(params)
    with read_scope(engine) as session:
        if resource_id is not None and not store.known(session, resource_type, resource_id):
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        versions = store.history(session, resource_type, resource_id, since=since, before=before, limit=count + 1)
    shown = versions[:count]
    with session_scope(engine) as session:
        who, address = principal.subject, client_address(request)
        disclosures.audit_history(session, shown, resource_type, resource_id, who=who, address=address)
    admin = ADMIN in principal.roles
    shown = [
        replace(v, resource=subscription_rules.shown(v.resource, principal.subject, admin)) if v.resource else v
        for v in shown
    ]
    base = base_url(request, settings)
    path = f"{base}/{resource_type}" + (f"/{resource_id}" if resource_id else "") + "/_history"
    kept = [(k, v) for k, v in params.multi_items() if k not in ("_before_key", "_format")]
    next_url = None
    if len(versions) > count and shown:
        last = shown[-1]
        key = f"{last.last_updated.isoformat()}|{last.resource_id}|{last.version_id}"
        next_url = f"{path}?{urlencode([*kept, ('_before_key', key)])}"
    self_url = f"{path}?{urlencode(params.multi_items())}" if params else path
    return fhir_response(bundles.history(shown, base_url=base, self_url=self_url, next_url=next_url, total=None))


@router.get("/{resource_type}/_history")
def history_type(
    resource_type: str, request: Request, engine: EngineDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """Every version of every resource of a type, newest first (http.html#history)."""
    supported(resource_type)
    require(principal, resource_type, "s")
    return _history(request, engine, settings, principal, resource_type, None)


@router.get("/{resource_type}/{resource_id}/_history")
def history_instance(
    resource_type: str,
    resource_id: str,
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    principal: PrincipalDep,
) -> Response:
    """Every version of one resource, newest first, deletions included (http.html#history)."""
    supported(resource_type)
    require(principal, resource_type, "r")
    return _history(request, engine, settings, principal, resource_type, resource_id)


@router.get("/{resource_type}/{resource_id}")
def read(
    resource_type: str, resource_id: str, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    """Read the current version of a resource, with its ETag and Last-Modified."""
    supported(resource_type)
    require(principal, resource_type, "r")
    resource = _audited_read(engine, principal, client_address(request), resource_type, resource_id, None)
    return fhir_response(_shown(resource, principal), headers=version_headers(resource))


@router.get("/{resource_type}/{resource_id}/_history/{version_id}")
def vread(
    resource_type: str,
    resource_id: str,
    version_id: str,
    request: Request,
    engine: EngineDep,
    principal: PrincipalDep,
) -> Response:
    """Read one version of a resource (http.html#vread)."""
    supported(resource_type)
    require(principal, resource_type, "r")
    number = version_number(version_id)
    if number is None:
        raise NotFound(f"{resource_type}/{resource_id} has no version {version_id[:40]!r}")
    resource = _audited_read(engine, principal, client_address(request), resource_type, resource_id, number)
    return fhir_response(_shown(resource, principal), headers=version_headers(resource))


def _shown(resource: fhir.Resource, principal: Principal) -> fhir.Resource:
    return subscription_rules.shown(resource, principal.subject, ADMIN in principal.roles)


def _audited_read(
    engine: EngineDep, principal: Principal, address: str, resource_type: str, resource_id: str, version: int | None
) -> fhir.Resource:
    try:
        with session_scope(engine) as session:
            if version is None:
                resource = store.read(session, resource_type, resource_id)
            else:
                resource = store.vread(session, resource_type, resource_id, version)
            disclosures.audit_read(session, resource, who=principal.subject, address=address)
        return resource
    except (ResourceNotFound, ResourceGone):
        # Failed look-ups are accesses too; record them in a transaction of their own.
        with session_scope(engine) as session:
            audit_log.append(
                session,
                AuditRecord(
                    hop=RESOURCE_READ,
                    correlation_id=disclosures.READ_CORRELATION,
                    agent_who=principal.subject,
                    agent_address=address,
                    entity_what=f"{resource_type}/{resource_id}"[:256],
                    outcome=Outcome.MINOR_FAILURE,
                ),
            )
        raise
