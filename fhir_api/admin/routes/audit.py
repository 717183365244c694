"""/admin/audit: the audit trail for the console's audit page, and its chain's verification (auditor only).

The search takes the parameters of GET /fhir/AuditEvent (fhir_api/fhir/auditevents.py: date,
agent, entity, entity-identifier, patient, type, subtype, action, outcome) and answers rows as
the console shows them, in the admin API's list shape. Every search and every verification is
itself recorded (DCM 110101 Audit Log Used, IHE ATNA), as on the FHIR route.
"""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from sqlalchemy import select

from audit import log as audit_log
from audit.config import AuditSettings
from audit.config import get_settings as get_audit_settings
from audit.records import AUDIT_LOG_USED, AuditRecord
from audit.verify import verify
from fhir_api.admin.access import Actor, ActorDep
from fhir_api.admin.paging import Page, Paging, sorted_by
from fhir_api.deps import EngineDep
from fhir_api.fhir import auditevents
from storage.db import read_scope, session_scope
from storage.paging import Columns, Order
from storage.tables.audit import AuditEvent

router = APIRouter(prefix="/audit", tags=["audit"])
# Correlation id of the records of audit-trail use (as fhir_api/fhir/routes/audit.py writes them).
AUDIT_CORRELATION = "audit"
_SORTS: Columns = {"id": AuditEvent.id, "recorded": AuditEvent.recorded_at, "subtype": AuditEvent.subtype}
_PAGING = ("limit", "offset", "sort")


class AuditRecordOut(BaseModel):
    """One record of the trail."""

    id: int
    recorded_at: datetime
    correlation_id: str
    type_code: str
    subtype: str
    action: str
    outcome: str
    agent_who: str
    agent_address: str
    entity_what: str
    detail: dict[str, str]


class ChainState(BaseModel):
    """The outcome of walking the whole chain now."""

    checked_at: datetime
    records: int
    intact: bool
    broken_at: int | None
    reason: str


def _used(actor: Actor, what: str, detail: dict[str, str]) -> AuditRecord:
    return AuditRecord(
        hop=AUDIT_LOG_USED,
        correlation_id=AUDIT_CORRELATION,
        agent_who=actor.subject,
        agent_address=actor.address,
        entity_what=what,
        detail=detail,
    )


@router.get("")
def search_audit(
    request: Request,
    engine: EngineDep,
    actor: ActorDep,
    paging: Annotated[Paging, Depends(sorted_by(_SORTS, (Order("id", descending=True),)))],
) -> Page[AuditRecordOut]:
    """Records matching the AuditEvent search parameters given, newest first unless sorted otherwise (400 for
    an unknown parameter)."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in _PAGING]
    query = auditevents.parse_query(items, strict=True)
    stmt = select(AuditEvent).where(*query.conditions)
    with session_scope(engine) as session:
        rows, total = paging.rows(session, stmt, _SORTS, [AuditEvent.id])
        found = [AuditRecordOut.model_validate(r, from_attributes=True) for r in rows]
        query_text = "&".join(f"{k}={v}" for k, v in items)
        audit_log.append(session, _used(actor, "AuditEvent", {"query": query_text[:500], "total": str(total)}))
    return paging.of(found, total)


@router.get("/verification")
def verify_chain(
    engine: EngineDep, actor: ActorDep, audit_settings: Annotated[AuditSettings, Depends(get_audit_settings)]
) -> ChainState:
    """Walk the whole chain now: intact, or the first record changed, removed or reordered."""
    with read_scope(engine) as session:
        outcome = verify(session, key=audit_settings.audit_key)
    state = ChainState(
        checked_at=datetime.now(UTC),
        records=outcome.records,
        intact=outcome.intact,
        broken_at=outcome.first_break.record_id if outcome.first_break else None,
        reason=outcome.first_break.reason if outcome.first_break else "",
    )
    with session_scope(engine) as session:
        audit_log.append(session, _used(actor, "AuditEvent", {"verification": "intact" if state.intact else "broken"}))
    return state
