"""/admin/jobs and /admin/deliveries: inference jobs and the outbound queue, with their state."""

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from fhir_api.admin.params import Limit, Offset, RowIdFilter
from fhir_api.deps import EngineDep
from fhir_api.admin.routes.studies import JobOut, job_out
from storage.db import session_scope
from storage.deliveries import deliveries
from storage.jobs import list_jobs

router = APIRouter(tags=["queues"])


class JobPage(BaseModel):
    """One page of jobs and how many match in all."""

    total: int
    items: list[JobOut]


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
    status: str | None = None,
    model: str | None = None,
    study_uid: str | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> JobPage:
    """Inference jobs by status (queued, done, failed), model and study; newest first."""
    with session_scope(engine) as session:
        rows, total = list_jobs(session, status=status, model=model, study_uid=study_uid, limit=limit, offset=offset)
        return JobPage(total=total, items=[job_out(j) for j in rows])


@router.get("/deliveries")
def search_deliveries(
    engine: EngineDep,
    status: str | None = None,
    destination_id: RowIdFilter = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[DeliveryOut]:
    """Outbound deliveries by status (pending, sent, dead) and destination; newest first."""
    with session_scope(engine) as session:
        rows = deliveries(session, status=status, destination_id=destination_id, limit=limit, offset=offset)
        return [DeliveryOut.model_validate(r, from_attributes=True) for r in rows]
