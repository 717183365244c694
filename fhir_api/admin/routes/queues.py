"""/admin/jobs and /admin/deliveries: inference jobs and the outbound queue, with their state; a failed
(or dead-lettered) job is retried as a new request of the same job (integration/jobs.py), audited
under the study's correlation id."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from audit.records import ADMIN_OPERATION
from fhir_api.admin.access import ActorDep, audit_change
from fhir_api.admin.paging import Page, Paging, sorted_by
from fhir_api.admin.params import QueryId
from fhir_api.admin.routes.studies import JobOut, job_out
from fhir_api.deps import EngineDep
from integration import jobs
from storage.db import read_scope, session_scope
from storage.deliveries import DELIVERY_SORTS, delivery_query
from storage.jobs import DEFAULT_JOB_ORDER, JOB_SORTS, list_jobs
from storage.paging import Order
from storage.tables.outbound import Delivery
from storage.tables.pipeline import InferenceJob

router = APIRouter(tags=["queues"])


class DeliveryOut(BaseModel):
    """One outbound delivery (its payload, which holds PHI, is not answered)."""

    id: int
    destination_id: int
    correlation_id: str
    subject: str
    control_id: str
    status: str  # pending | sent | dead
    attempts: int
    next_attempt_at: datetime
    last_error: str
    ack_code: str
    created_at: datetime
    finished_at: datetime | None


@router.get("/jobs")
def search_jobs(
    engine: EngineDep,
    paging: Annotated[Paging, Depends(sorted_by(JOB_SORTS, DEFAULT_JOB_ORDER))],
    status: str | None = None,
    model: str | None = None,
    study_uid: str | None = None,
) -> Page[JobOut]:
    """Inference jobs by status (queued, done, failed), model and study; newest first unless sorted otherwise."""
    with read_scope(engine) as session:
        rows, total = list_jobs(
            session,
            status=status,
            model=model,
            study_uid=study_uid,
            order=paging.order,
            limit=paging.limit,
            offset=paging.offset,
        )
        return paging.of([job_out(j) for j in rows], total)


@router.post("/jobs/{job_id}/retry")
def retry_job(job_id: str, engine: EngineDep, actor: ActorDep) -> JobOut:
    """Run a failed or dead-lettered job again, as a new request of the same job (404 unknown, 409 not failed)."""
    with session_scope(engine) as session:
        found = session.get(InferenceJob, job_id)
        before = None if found is None else job_out(found).model_dump(mode="json")
        request = jobs.retry(session, job_id=job_id, who=actor.subject)
        after = job_out(session.get_one(InferenceJob, job_id))
        audit_change(
            session,
            actor,
            hop=ADMIN_OPERATION,
            before=before,
            after=after.model_dump(mode="json"),
            correlation_id=request.correlation_id,
            detail={"operation": "retry-job", "job": job_id, "study_uid": request.study_uid},
        )
    return after


@router.get("/deliveries")
def search_deliveries(
    engine: EngineDep,
    paging: Annotated[Paging, Depends(sorted_by(DELIVERY_SORTS, (Order("id", descending=True),)))],
    status: str | None = None,
    destination_id: QueryId = None,
    correlation_id: Annotated[str | None, Query(max_length=64, description="a study's or message's")] = None,
) -> Page[DeliveryOut]:
    """Outbound deliveries by status (pending, sent, dead), destination and correlation id; newest first
    unless sorted otherwise."""
    stmt = delivery_query(status=status, destination_id=destination_id, correlation_id=correlation_id)
    with read_scope(engine) as session:
        rows, total = paging.rows(session, stmt, DELIVERY_SORTS, [Delivery.id])
        return paging.of([DeliveryOut.model_validate(r, from_attributes=True) for r in rows], total)
