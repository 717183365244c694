"""GET /fhir/AuditEvent: the audit trail for compliance officers (read and search, auditor only).

Rows of audit_events are answered as R4 AuditEvent resources (fhir_api/fhir/auditevents.py); the
trail is append-only, so create, update and delete are 405. Every use of the trail is itself
recorded (DCM 110101 Audit Log Used, as IHE ATNA asks).
"""

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Header, Request, Response
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.config import AuditSettings
from audit.config import get_settings as get_audit_settings
from audit.records import AUDIT_LOG_USED, AuditRecord
from fhir_api.fhir import auditevents, bundles
from storage import fhir
from fhir_api.auth.tokens import Principal, allows_audit
from fhir_api.deps import BodyDep, EngineDep, PrincipalDep, SettingsDep, client_address, negotiate
from fhir_api.errors import Forbidden, MethodNotAllowed, NotFound
from fhir_api.responses import fhir_response, fhir_text_response
from fhir_api.fhir.routes.read import base_url, posted_search, strict
from storage.db import session_scope

router = APIRouter(prefix="/fhir/AuditEvent", tags=["audit"], dependencies=[Depends(negotiate)])
AuditSettingsDep = Annotated[AuditSettings, Depends(get_audit_settings)]
# Correlation id of the records of audit-trail use.
AUDIT_CORRELATION = "audit"


def _require(principal: Principal, interaction: str) -> None:
    if not allows_audit(principal, interaction):
        raise Forbidden("the audit trail needs the auditor role and a system/AuditEvent scope")


def _used(session: Session, principal: Principal, address: str, what: str, detail: dict[str, str]) -> None:
    audit_log.append(
        session,
        AuditRecord(
            hop=AUDIT_LOG_USED,
            correlation_id=AUDIT_CORRELATION,
            agent_who=principal.subject,
            agent_address=address,
            entity_what=what,
            detail=detail,
        ),
    )


def _search(
    items: list[tuple[str, str]],
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    audit_settings: AuditSettings,
    principal: Principal,
    prefer: str | None,
) -> Response:
    _require(principal, "s")
    query = auditevents.parse_query(items, strict=strict(prefer))
    with session_scope(engine) as session:
        page = auditevents.search(session, query)
        resources = [
            auditevents.to_resource(
                row, source_id=audit_settings.audit_source_id, site=audit_settings.audit_enterprise_site_id
            )
            for row in page.rows
        ]
        _used(
            session,
            principal,
            client_address(request),
            auditevents.RESOURCE_TYPE,
            {"query": urlencode(items, safe="/|:,"), "total": "" if page.total is None else str(page.total)},
        )
    base = base_url(request, settings)
    entries = [(f"{base}/AuditEvent/{r.id}", fhir.dump(r), "match") for r in resources]
    return fhir_text_response(
        bundles.page_bundle(auditevents.RESOURCE_TYPE, query, entries, base_url=base, total=page.total, following=page.next_cursor)
    )


@router.get("")
def search_audit(
    request: Request,
    engine: EngineDep,
    settings: SettingsDep,
    audit_settings: AuditSettingsDep,
    principal: PrincipalDep,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    """Search the audit trail, newest first (auditevent.html#search)."""
    return _search(request.query_params.multi_items(), request, engine, settings, audit_settings, principal, prefer)


@router.post("/_search")
def search_audit_post(
    request: Request,
    body: BodyDep,
    engine: EngineDep,
    settings: SettingsDep,
    audit_settings: AuditSettingsDep,
    principal: PrincipalDep,
    prefer: Annotated[str | None, Header()] = None,
) -> Response:
    """Search the audit trail with form parameters, as GET does."""
    return _search(posted_search(request, body), request, engine, settings, audit_settings, principal, prefer)


@router.get("/{record_id}")
def read_audit(
    record_id: str, request: Request, engine: EngineDep, audit_settings: AuditSettingsDep, principal: PrincipalDep
) -> Response:
    """One audit record as an AuditEvent."""
    _require(principal, "r")
    with session_scope(engine) as session:
        row = auditevents.read(session, record_id)
        if row is None:
            raise NotFound(f"AuditEvent/{record_id} is not known")
        resource = auditevents.to_resource(
            row, source_id=audit_settings.audit_source_id, site=audit_settings.audit_enterprise_site_id
        )
        _used(session, principal, client_address(request), f"AuditEvent/{record_id}", {})
    return fhir_response(resource)


@router.post("")
@router.put("")
@router.delete("")
@router.put("/{record_id}")
@router.delete("/{record_id}")
@router.patch("/{record_id}")
def refuse_change(_principal: PrincipalDep) -> Response:
    """The audit trail is append-only: AuditEvent cannot be created, changed or deleted over the API."""
    raise MethodNotAllowed("AuditEvent is read-only: the audit trail is append-only")
