"""FHIR R4 REST interactions: capabilities, read, and DiagnosticReport search.

Every read and search is audited in the same transaction that reads the data, with the
correlation id of the study it discloses (DESIGN.md section 1, "who read what").
"""

from datetime import UTC
from email.utils import format_datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import RESOURCE_READ, RESOURCE_SEARCHED, AuditRecord, Outcome
from fhir_api import fhir, search, store
from fhir_api.auth import Principal, allows
from fhir_api.capability import capability_statement
from fhir_api.config import ApiSettings
from fhir_api.deps import EngineDep, PrincipalDep, SettingsDep, client_address, get_principal
from fhir_api.errors import Forbidden, InvalidSearch, NotFound
from fhir_api.mapping import study_ids
from fhir_api.responses import fhir_response
from storage.db import session_scope
from storage.queries import correlation_id_for_study

router = APIRouter(prefix="/fhir", tags=["fhir"])

# Audit correlation ids of accesses that disclose no study.
READ_CORRELATION = "read"
SEARCH_CORRELATION = "search"


def base_url(request: Request, settings: ApiSettings) -> str:
    """The FHIR base URL for fullUrl and links: the configured public one, else the request's."""
    root = settings.public_base_url.rstrip("/") or str(request.base_url).rstrip("/")
    return f"{root}/fhir"


def require(principal: Principal, resource_type: str, interaction: str) -> None:
    """Forbidden unless the principal's scopes allow this interaction on this type."""
    if not allows(principal, resource_type, interaction):
        raise Forbidden(f"the token's scopes do not allow '{interaction}' on {resource_type}")


def _strict(prefer: str | None) -> bool:
    # RFC 7240 preferences, e.g. "Prefer: return=minimal, handling=strict" (FHIR search.html#errors).
    prefs = [p.strip().replace(" ", "") for p in (prefer or "").replace(";", ",").split(",")]
    return "handling=strict" in prefs


@router.get("/metadata")
def metadata(request: Request, settings: SettingsDep) -> Response:
    """The CapabilityStatement (open, as FHIR clients read it before authenticating)."""
    return fhir_response(capability_statement(base_url(request, settings)))


@router.get("/DiagnosticReport")
def search_reports(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    """Search DiagnosticReports: a searchset Bundle, newest first."""
    require(principal, "DiagnosticReport", "s")
    query = search.parse_query("DiagnosticReport", request.query_params.multi_items(), strict=_strict(prefer))
    with session_scope(engine) as session:
        result = search.run(session, query, may_include=lambda t: allows(principal, t, "r"))
        _audit_search(session, result, principal=principal, address=client_address(request), query=request.url.query)
    return fhir_response(search.searchset(result, query, base_url=base_url(request, settings)))


@router.get("/{resource_type}", dependencies=[Depends(get_principal)])
def search_unsupported(resource_type: str) -> Response:
    """Search on any other type is not supported (yet)."""
    raise InvalidSearch(f"search is not supported on {resource_type}")


@router.get("/{resource_type}/{resource_id}")
def read(
    resource_type: str, resource_id: str, request: Request, engine: EngineDep, principal: PrincipalDep
) -> Response:
    """Read the current version of a resource, with its ETag and Last-Modified."""
    if resource_type not in fhir.RESOURCE_CLASSES:
        raise NotFound(f"resource type {resource_type} is not supported")
    require(principal, resource_type, "r")
    address = client_address(request)
    try:
        with session_scope(engine) as session:
            resource = store.read(session, resource_type, resource_id)
            _audit_read(session, resource, principal=principal, address=address)
    except NotFound:
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
    headers = {}
    if resource.meta and resource.meta.versionId:
        headers["ETag"] = f'W/"{resource.meta.versionId}"'
    if resource.meta and resource.meta.lastUpdated:
        headers["Last-Modified"] = format_datetime(resource.meta.lastUpdated.astimezone(UTC), usegmt=True)
    return fhir_response(resource, headers=headers)


def _audit_read(session: Session, resource: fhir.Resource, *, principal: Principal, address: str) -> None:
    studies = study_ids(resource)
    audit_log.append(
        session,
        AuditRecord(
            hop=RESOURCE_READ,
            correlation_id=correlation_id_for_study(studies[0]) if studies else READ_CORRELATION,
            agent_who=principal.subject,
            agent_address=address,
            entity_what=f"{resource.get_resource_type()}/{resource.id}",
        ),
    )


def _audit_search(
    session: Session, result: search.SearchResult, *, principal: Principal, address: str, query: str
) -> None:
    # One record per study whose reports were disclosed, so each study's trail shows the access.
    by_study: dict[str, list[str]] = {}
    for report in result.matches:
        for study in study_ids(report):
            by_study.setdefault(study, []).append(report.id or "")
    records = [
        AuditRecord(
            hop=RESOURCE_SEARCHED,
            correlation_id=correlation_id_for_study(study),
            agent_who=principal.subject,
            agent_address=address,
            entity_what="DiagnosticReport",
            detail={"query": query, "total": str(result.total), "reports": ",".join(reports)},
        )
        for study, reports in by_study.items()
    ] or [
        AuditRecord(
            hop=RESOURCE_SEARCHED,
            correlation_id=SEARCH_CORRELATION,
            agent_who=principal.subject,
            agent_address=address,
            entity_what="DiagnosticReport",
            detail={"query": query, "total": str(result.total)},
        )
    ]
    for record in records:
        audit_log.append(session, record)
