"""Inference jobs (one model run on one revision of a study) and the reports made from them."""

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.paging import Columns, Order, page
from storage.tables.pipeline import InferenceJob, Report


def create_job(
    session: Session, *, job_id: str, study_uid: str, revision: int, model: str, model_version: str
) -> InferenceJob | None:
    """Create the job for this input, or return None when it already exists (a replayed event)."""
    existing = session.scalar(
        select(InferenceJob).where(
            InferenceJob.study_uid == study_uid,
            InferenceJob.model == model,
            InferenceJob.model_version == model_version,
            InferenceJob.revision == revision,
        )
    )
    if existing is not None:
        return None
    job = InferenceJob(
        job_id=job_id,
        study_uid=study_uid,
        revision=revision,
        model=model,
        model_version=model_version,
        status="queued",
        error="",
        created_at=datetime.now(UTC),
    )
    session.add(job)
    session.flush()
    return job


def job_status(session: Session, *, job_id: str) -> str | None:
    """A job's status (queued, done, failed), or None when there is no such job."""
    return session.scalar(select(InferenceJob.status).where(InferenceJob.job_id == job_id))


def count_crash(session: Session, *, job_id: str) -> int | None:
    """Add one to the crashes of a job, returning how many it has now; None when there is no such job."""
    # One UPDATE: two workers counting crashes of one job (after a rebalance) both count.
    return session.scalar(
        update(InferenceJob)
        .where(InferenceJob.job_id == job_id)
        .values(crashes=InferenceJob.crashes + 1)
        .returning(InferenceJob.crashes)
    )


def study_jobs(session: Session, *, study_uid: str) -> list[InferenceJob]:
    """Every inference job of a study, oldest first."""
    stmt = select(InferenceJob).where(InferenceJob.study_uid == study_uid).order_by(InferenceJob.created_at)
    return list(session.scalars(stmt))


def study_reports(session: Session, *, study_uid: str) -> list[Report]:
    """Every report made for a study, oldest first."""
    return list(session.scalars(select(Report).where(Report.study_uid == study_uid).order_by(Report.created_at)))


# The columns a list of jobs may be sorted on.
JOB_SORTS: Columns = {
    "created": InferenceJob.created_at,
    "finished": InferenceJob.finished_at,
    "model": InferenceJob.model,
    "status": InferenceJob.status,
    "study": InferenceJob.study_uid,
}
DEFAULT_JOB_ORDER = (Order("created", descending=True),)


def list_jobs(
    session: Session,
    *,
    status: str | None = None,
    model: str | None = None,
    study_uid: str | None = None,
    order: Sequence[Order] = DEFAULT_JOB_ORDER,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[InferenceJob], int]:
    """One page of inference jobs (newest first unless ordered otherwise), and how many match in all."""
    stmt = select(InferenceJob)
    if status is not None:
        stmt = stmt.where(InferenceJob.status == status)
    if model is not None:
        stmt = stmt.where(InferenceJob.model == model)
    if study_uid is not None:
        stmt = stmt.where(InferenceJob.study_uid == study_uid)
    return page(
        session, stmt, columns=JOB_SORTS, order=order, tiebreak=[InferenceJob.job_id], limit=limit, offset=offset
    )
