"""FHIR R4 REST reads: capabilities, read, vread, search (GET and POST _search) and history.

Every read and search is audited in the same transaction that reads the data, with the
correlation id of the study it discloses (DESIGN.md section 1, "who read what"). Every route
checks the token's SMART scope for its resource type and interaction.
"""

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Header, Request, Response
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import RESOURCE_READ, RESOURCE_SEARCHED, AuditRecord, Outcome
from fhir_api.fhir import bundles, search
from storage.fhir import store
from storage import fhir
from fhir_api.auth.tokens import Principal, allows
from fhir_api.fhir.capability import capability_statement
from fhir_api.config import ApiSettings
from fhir_api.deps import BodyDep, EngineDep, PrincipalDep, SettingsDep, client_address, negotiate
from fhir_api.errors import BadRequest, Forbidden, NotFound, UnsupportedMediaType
from storage.fhir.references import patient_reference, study_ids
from fhir_api.responses import fhir_response, fhir_text_response
from storage.errors import ResourceGone, ResourceNotFound
from storage.db import session_scope
from storage.instances import correlation_id_for_study

router = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=[Depends(negotiate)])

# Audit correlation ids of accesses that disclose no study.
READ_CORRELATION = "read"
SEARCH_CORRELATION = "search"
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
    with session_scope(engine) as session:
        result = search.run(session, query, may_include=lambda t: allows(principal, t, "r"))
        audit_search(
            session, result, resource_type, principal=principal, address=client_address(request), query=urlencode(items, safe="/|:,")
        )
    return fhir_text_response(bundles.searchset(result, query, base_url=base_url(request, settings)))


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


def _history(
    request: Request,
    engine: EngineDep,
    settings: ApiSettings,
    resource_type: str,
    resource_id: str | None,
) -> Response:
    params = request.query_params
    try:
        count = min(int(params.get("_count", HISTORY_COUNT)), 100)
        since = datetime.fromisoformat(params["_since"].replace("Z", "+00:00")) if "_since" in params else None
        before = None
        if "_before_key" in params:
            stamp, last_id, last_version = params["_before_key"].rsplit("|", 2)
            before = (datetime.fromisoformat(stamp), last_id, int(last_version))
    except ValueError as exc:
        raise BadRequest(f"invalid history parameter: {exc}") from None
    if since is not None and since.tzinfo is None:
        raise BadRequest("_since must be an instant with a time zone")
    with session_scope(engine) as session:
        if resource_id is not None and not store.known(session, resource_type, resource_id):
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        versions = store.history(session, resource_type, resource_id, since=since, before=before, limit=count + 1)
    base = base_url(request, settings)
    path = f"{base}/{resource_type}" + (f"/{resource_id}" if resource_id else "") + "/_history"
    kept = [(k, v) for k, v in params.multi_items() if k not in ("_before_key", "_format")]
    next_url = None
    if len(versions) > count:
        versions = versions[:count]
        last = versions[-1]
        key = f"{last.last_updated.isoformat()}|{last.resource_id}|{last.version_id}"
        next_url = f"{path}?{urlencode([*kept, ('_before_key', key)])}"
    self_url = f"{path}?{urlencode(params.multi_items())}" if params else path
    return fhir_response(bundles.history(versions, base_url=base, self_url=self_url, next_url=next_url, total=None))


@router.get("/{resource_type}/_history")
def history_type(
    resource_type: str, request: Request, engine: EngineDep, settings: SettingsDep, principal: PrincipalDep
) -> Response:
    """Every version of every resource of a type, newest first (http.html#history)."""
    supported(resource_type)
    require(principal, resource_type, "s")
    return _history(request, engine, settings, resource_type, None)


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
    return _history(request, engine, settings, resource_type, resource_id)


@router.get("/{resource_type}/{resource_id}")
def read(
    resource_type: str, resource_id: str, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    """Read the current version of a resource, with its ETag and Last-Modified."""
    supported(resource_type)
    require(principal, resource_type, "r")
    resource = _audited_read(engine, principal, client_address(request), resource_type, resource_id, None)
    return fhir_response(resource, headers=version_headers(resource))


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
    if not version_id.isdigit():
        raise NotFound(f"{resource_type}/{resource_id} has no version {version_id!r}")
    resource = _audited_read(engine, principal, client_address(request), resource_type, resource_id, int(version_id))
    return fhir_response(resource, headers=version_headers(resource))


def _audited_read(
    engine: EngineDep, principal: Principal, address: str, resource_type: str, resource_id: str, version: int | None
) -> fhir.Resource:
    try:
        with session_scope(engine) as session:
            if version is None:
                resource = store.read(session, resource_type, resource_id)
            else:
                resource = store.vread(session, resource_type, resource_id, version)
            audit_read(session, resource, principal=principal, address=address)
        return resource
    except (ResourceNotFound, ResourceGone):
        # Failed look-ups are accesses too; record them in a transaction of their own.
        with session_scope(engine) as session:
            audit_log.append(
                session,
                AuditRecord(
                    hop=RESOURCE_READ,
                    correlation_id=READ_CORRELATION,
                    agent_who=principal.subject,
                    agent_address=address,
                    entity_what=f"{resource_type}/{resource_id}"[:256],
                    outcome=Outcome.MINOR_FAILURE,
                ),
            )
        raise


def audit_read(session: Session, resource: fhir.Resource, *, principal: Principal, address: str) -> None:
    """Record that the principal read this resource, under its study's correlation id when it has one.

    The detail names the patient the resource is about, so an AuditEvent search by patient finds it.
    """
    studies = study_ids(resource)
    patient = patient_reference(resource)
    audit_log.append(
        session,
        AuditRecord(
            hop=RESOURCE_READ,
            correlation_id=correlation_id_for_study(studies[0]) if studies else READ_CORRELATION,
            agent_who=principal.subject,
            agent_address=address,
            entity_what=f"{resource.get_resource_type()}/{resource.id}",
            detail={"patient": patient} if patient else {},
        ),
    )


def audit_search(
    session: Session,
    result: search.SearchResult,
    resource_type: str,
    *,
    principal: Principal,
    address: str,
    query: str,
) -> None:
    """Record a search: one record per (study, patient) whose resources it disclosed, else one record.

    A record under a study's correlation id joins that study's trail; each names its patient and
    the disclosed resources, so "who saw this patient's reports" is one AuditEvent search. All of
    a search's records are appended at once (one chain lock, one insert).
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for disclosed in store.disclosures(session, [*result.matches, *result.included]):
        correlation = correlation_id_for_study(disclosed.studies[0]) if disclosed.studies else SEARCH_CORRELATION
        groups.setdefault((correlation, disclosed.patient), []).append(disclosed.reference)
    total = "" if result.total is None else str(result.total)

    def record(correlation: str, detail: dict[str, str]) -> AuditRecord:
        return AuditRecord(
            hop=RESOURCE_SEARCHED,
            correlation_id=correlation,
            agent_who=principal.subject,
            agent_address=address,
            entity_what=resource_type,
            detail={"query": query, "total": total, **detail},
        )

    records = [
        record(correlation, {"resources": ",".join(refs), **({"patient": patient} if patient else {})})
        for (correlation, patient), refs in groups.items()
    ] or [record(SEARCH_CORRELATION, {})]
    audit_log.append_many(session, records)
