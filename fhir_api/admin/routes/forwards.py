"""/admin/forwards and the outbound operations: forwards with their state, retries of dead forwards and
deliveries, and the echo of a destination (C-ECHO for DICOM, PS3.7 9.3.5).

A retry makes a dead forward or delivery pending again (a forward then sends only the instances
not yet accepted); it is audited under the study's correlation id. An echo changes nothing and
is not audited.
"""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import BaseModel
from fastapi import Depends
from pydantic import ConfigDict, Field
from sqlalchemy.orm import Session

from audit.records import ADMIN_OPERATION
from fhir_api.admin.params import Id, MAX_INT, QueryId
from fhir_api.admin.access import ActorDep, audit_change
from fhir_api.admin.paging import Page, Paging, sorted_by
from fhir_api.deps import EngineDep
from fhir_api.errors import NotFound
from fhir_api.admin.routes.queues import DeliveryOut
from integration import studies as study_operations
from integration.outbound.echo import EchoResult, echo
from storage.db import read_scope, session_scope
from storage.destinations import get_destination
from storage.forwards import FORWARD_SORTS, forward_query, instance_counts
from storage.paging import Order
from storage.queues import retry_dead
from storage.tables.outbound import Delivery, Forward

router = APIRouter(tags=["queues"])


class ForwardOut(BaseModel):
    """One study revision (or one job's result, as a DICOM SR) queued for a DICOM destination, and its instances by state."""

    id: int
    destination_id: int
    kind: str  # study | result
    study_uid: str
    revision: int
    job_id: str  # the job whose result a "result" forward carries; "" for a study
    correlation_id: str
    rule: str
    status: str  # pending | sent | dead
    attempts: int
    next_attempt_at: datetime
    last_error: str
    created_at: datetime
    finished_at: datetime | None
    instances: dict[str, int]


def _forward(session: Session, row: Forward) -> ForwardOut:
    columns = {name: getattr(row, name) for name in ForwardOut.model_fields if name != "instances"}
    return ForwardOut(**columns, instances=instance_counts(session, forward_id=row.id))


@router.get("/forwards")
def search_forwards(
    engine: EngineDep,
    paging: Annotated[Paging, Depends(sorted_by(FORWARD_SORTS, (Order("id", descending=True),)))],
    status: str | None = None,
    destination_id: QueryId = None,
    study_uid: str | None = None,
    kind: Literal["study", "result"] | None = None,
) -> Page[ForwardOut]:
    """Forwards by status, destination, study and kind (a study's instances or a result's SR); newest first
    unless sorted otherwise."""
    stmt = forward_query(status=status, destination_id=destination_id, study_uid=study_uid, kind=kind)
    with read_scope(engine) as session:
        rows, total = paging.rows(session, stmt, FORWARD_SORTS, [Forward.id])
        return paging.of([_forward(session, r) for r in rows], total)


class ForwardIn(BaseModel):
    """The DICOM destination to send a study to."""

    model_config = ConfigDict(extra="forbid")

    destination_id: int = Field(ge=1, le=MAX_INT)


@router.post("/studies/{study_uid}/forward", status_code=201)
def forward_study(study_uid: str, body: ForwardIn, engine: EngineDep, actor: ActorDep) -> ForwardOut:
    """Send a stored study's current revision to a DICOM destination (409 when it takes no studies or has it already)."""
    with session_scope(engine) as session:
        row = study_operations.forward(
            session, study_uid=study_uid, destination_id=body.destination_id, who=actor.subject
        )
        after = _forward(session, row)
        audit_change(
            session,
            actor,
            hop=ADMIN_OPERATION,
            before=None,
            after=after.model_dump(mode="json"),
            correlation_id=row.correlation_id,
            detail={"operation": "forward", "study_uid": study_uid, "destination": str(body.destination_id)},
        )
    return after


@router.post("/forwards/{forward_id}/retry")
def retry_dead_forward(forward_id: Id, engine: EngineDep, actor: ActorDep) -> ForwardOut:
    """Send a dead forward again: only its instances not yet accepted (404 unknown, 409 not dead)."""
    with session_scope(engine) as session:
        found = session.get(Forward, forward_id)
        before = None if found is None else _forward(session, found).model_dump(mode="json")
        row = retry_dead(session, Forward, item_id=forward_id)
        after = _forward(session, row)
        audit_change(
            session,
            actor,
            hop=ADMIN_OPERATION,
            before=before,
            after=after.model_dump(mode="json"),
            correlation_id=row.correlation_id,
            detail={"operation": "retry-forward", "forward": str(forward_id), "study_uid": row.study_uid},
        )
    return after


@router.post("/deliveries/{delivery_id}/retry")
def retry_dead_delivery(delivery_id: Id, engine: EngineDep, actor: ActorDep) -> DeliveryOut:
    """Send a dead delivery again (404 unknown, 409 not dead)."""
    with session_scope(engine) as session:
        row = retry_dead(session, Delivery, item_id=delivery_id)
        after = DeliveryOut.model_validate(row, from_attributes=True)
        audit_change(
            session,
            actor,
            hop=ADMIN_OPERATION,
            before={"status": "dead"},
            after=after.model_dump(mode="json"),
            correlation_id=row.correlation_id,
            detail={"operation": "retry-delivery", "delivery": str(delivery_id)},
        )
    return after


@router.post("/destinations/{destination_id}/echo")
def echo_destination(destination_id: Id, engine: EngineDep) -> EchoResult:
    """Test a destination as its kind says (C-ECHO, TCP connect, FHIR metadata); answers ok false rather than failing."""
    with session_scope(engine) as session:
        row = get_destination(session, destination_id=destination_id)
        if row is None:
            raise NotFound(f"no destination {destination_id}")
    return echo(row)
