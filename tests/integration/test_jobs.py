"""Retrying an inference job: a new request of the same job through the outbox, which the worker runs
(the job is queued again) and which makes the job's one report, never a second."""

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select

from integration import jobs, topics
from integration.config import Hl7Identity
from integration.errors import JobNotFound, JobStateConflict
from integration.messages import InferenceRequest, InferenceResult
from results import consumer
from storage.db import session_scope
from storage.dead_letters import Letter, save_letter
from storage.instances import ReceivedInstance
from storage.outbox import add_event
from storage.tables.pipeline import DeadLetter, InferenceJob, OutboxEvent, Report

EXPORTS = consumer.Exports(identity=Hl7Identity(), fhir_base_url="/fhir")

MakeJob = Callable[..., InferenceResult]


def _request(result: InferenceResult) -> InferenceRequest:
    """The request the router queued for the job of `result`."""
    return InferenceRequest(
        correlation_id=result.correlation_id,
        job_id=result.job_id,
        study_uid=result.study_uid,
        revision=result.revision,
        model=result.model,
        model_version=result.model_version,
        inputs=[],
        last_received_at=result.last_received_at,
    )


def _queued(engine: Engine, result: InferenceResult) -> InferenceRequest:
    request = _request(result)
    with session_scope(engine) as session:
        add_event(session, topic=topics.inference_request(result.model), key=result.study_uid, message=request)
    return request


def _dead_letter(engine: Engine, request: InferenceRequest) -> None:
    """The worker gave up on `request` and the integration process stored its dead letter."""
    with session_scope(engine) as session:
        save_letter(
            session,
            Letter(
                event_id=request.event_id,
                source_topic=topics.inference_request(request.model),
                key=request.study_uid,
                payload=request.model_dump_json(),
                error="InferenceTimeout: no answer within 120s",
                correlation_id=request.correlation_id,
            ),
        )


def _requests(engine: Engine, model: str) -> list[InferenceRequest]:
    with session_scope(engine) as session:
        stmt = select(OutboxEvent.payload).where(OutboxEvent.topic == topics.inference_request(model)).order_by(OutboxEvent.id)
        return [InferenceRequest.model_validate_json(p) for p in session.scalars(stmt)]


def test_a_failed_job_runs_again_and_makes_its_one_report(
    engine: Engine, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    succeeded = make_job()
    failed = succeeded.model_copy(update={"error": "InferenceTimeout: no answer within 120s", "findings": []})
    original = _queued(engine, succeeded)
    # The worker recorded the failure and dead-lettered the request; the failed result made no report.
    with session_scope(engine) as session:
        job = session.get_one(InferenceJob, succeeded.job_id)
        job.status, job.error, job.crashes, job.finished_at = "failed", failed.error, 2, datetime.now(UTC)
        assert consumer.apply_result(session, failed, EXPORTS) is None
    _dead_letter(engine, original)

    with session_scope(engine) as session:
        retried = jobs.retry(session, job_id=succeeded.job_id, who="pacs-admin")
    # A new request of the same job, as the router made it.
    assert _requests(engine, succeeded.model) == [original, retried]
    assert retried.event_id != original.event_id
    assert retried.model_dump(exclude={"event_id", "occurred_at"}) == original.model_dump(exclude={"event_id", "occurred_at"})
    with session_scope(engine) as session:
        job = session.get_one(InferenceJob, succeeded.job_id)
        # Queued again: the worker runs a request only while its job is queued, with its crashes counted afresh.
        assert (job.status, job.error, job.crashes, job.finished_at) == ("queued", "", 0, None)
        [letter] = session.scalars(select(DeadLetter))
        assert (letter.status, letter.resolved_by, letter.reason) == ("replayed", "pacs-admin", f"job {job.job_id} retried")
        with pytest.raises(JobStateConflict, match="queued"):
            jobs.retry(session, job_id=succeeded.job_id, who="pacs-admin")

    # The worker ran it: the result makes the job's report, and a replay of either result makes none.
    with session_scope(engine) as session:
        session.get_one(InferenceJob, succeeded.job_id).status = "done"
        assert consumer.apply_result(session, succeeded, EXPORTS) == succeeded.job_id
    with session_scope(engine) as session:
        assert consumer.apply_result(session, succeeded, EXPORTS) is None
        assert consumer.apply_result(session, failed, EXPORTS) is None
        assert [r.job_id for r in session.scalars(select(Report))] == [succeeded.job_id]
        with pytest.raises(JobStateConflict, match="done"):
            jobs.retry(session, job_id=succeeded.job_id, who="pacs-admin")


def test_a_queued_job_whose_request_was_dead_lettered_is_retried(
    engine: Engine, indexed: ReceivedInstance, make_job: MakeJob
) -> None:
    """A request can fail before its job does (a package missing from the store): the job stays queued."""
    result = make_job()
    request = _queued(engine, result)
    with session_scope(engine) as session:
        with pytest.raises(JobStateConflict):
            jobs.retry(session, job_id=result.job_id, who="pacs-admin")  # queued, on its way
    _dead_letter(engine, request)
    with session_scope(engine) as session:
        jobs.retry(session, job_id=result.job_id, who="pacs-admin")
        with pytest.raises(JobNotFound):
            jobs.retry(session, job_id="no-such-job", who="pacs-admin")
    assert [r.job_id for r in _requests(engine, result.model)] == [result.job_id] * 2
