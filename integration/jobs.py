"""Retrying an inference job that failed, or whose request was dead-lettered (DESIGN.md 5.3, 5.5).

The job is queued again, as it was: its status back to queued, its crash count to zero, and a new
request event of the same job (same job id, model version and inputs) through the outbox. The
worker runs a request only while its job is queued, and the results consumer makes at most one
report per job (a failed result made none), so a retry can make the job's report but never a
second one. The job's open dead letters are closed as replayed by the retry.
"""

import uuid
from datetime import UTC, datetime

from pydantic import ValidationError
from sqlalchemy.orm import Session

from integration import topics
from integration.errors import JobNotFound, JobStateConflict
from integration.messages import InferenceRequest
from storage.dead_letters import open_letters, settle_letter
from storage.outbox import add_event, events
from storage.tables.pipeline import DeadLetter, InferenceJob


def _of_job(payload: str, job_id: str) -> InferenceRequest | None:
    """The request in `payload` when it is one of this job's, else None."""
    try:
        request = InferenceRequest.model_validate_json(payload)
    except ValidationError:
        return None
    return request if request.job_id == job_id else None


def _letters(session: Session, job: InferenceJob, topic: str) -> list[DeadLetter]:
    """The job's open dead letters: its requests that a worker gave up on."""
    return [row for row in open_letters(session, topic=topic, key=job.study_uid) if _of_job(row.payload, job.job_id)]


def retry(session: Session, *, job_id: str, who: str) -> InferenceRequest:
    """Queue a failed or dead-lettered job again, in the caller's transaction; the request queued.

    Raises JobNotFound, or JobStateConflict for a job that is neither failed nor dead-lettered
    (queued and on its way, or done).
    """
    job = session.get(InferenceJob, job_id, with_for_update=True)
    if job is None:
        raise JobNotFound(f"no inference job {job_id}")
    topic = topics.inference_request(job.model)
    letters = _letters(session, job, topic)
    if job.status != "failed" and not letters:
        raise JobStateConflict(f"job {job_id} is {job.status}: only failed or dead-lettered jobs are retried")
    # The router's request, as it went out: the outbox keeps every event it published.
    original = next((r for e in events(session, topic=topic, key=job.study_uid) if (r := _of_job(e.payload, job_id))), None)
    if original is None:
        raise JobStateConflict(f"job {job_id}: its request is no longer stored, so it cannot be sent again")
    job.status, job.error, job.crashes, job.finished_at = "queued", "", 0, None
    for letter in letters:
        settle_letter(letter, status="replayed", who=who, reason=f"job {job_id} retried")
    request = original.model_copy(update={"event_id": str(uuid.uuid4()), "occurred_at": datetime.now(UTC)})
    add_event(session, topic=topic, key=job.study_uid, message=request)
    return request
