"""Studies through the admin API, on SQLite and PostgreSQL: filters, one study, its timeline, release and reprocess."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from audit import log as audit_log
from audit.records import INSTANCE_STORED, AuditRecord
from integration.messages import InferenceRequest, StudyReady
from storage.db import session_scope
from storage.deliveries import queue_delivery
from storage.destinations import add_destination
from storage.forwards import ForwardItem, queue_forward
from storage.instances import ReceivedInstance, correlation_id_for_study
from storage.jobs import create_job
from storage.outbox import add_event
from storage.tables.audit import AuditEvent
from storage.tables.index import Study
from storage.tables.pipeline import InferenceJob, OutboxEvent
from tests.fhir_api.conftest import Api, api_on
from tests.studies import store_study

CT = "1.2.826.0.1.3680043.8.498.71001"
MR = "1.2.826.0.1.3680043.8.498.71002"
OLD = "1.2.826.0.1.3680043.8.498.71003"


@pytest.fixture
def api(database_url: str) -> Iterator[Api]:
    """The API on SQLite and on PostgreSQL."""
    yield from api_on(database_url)


def _outbox(api: Api) -> list[OutboxEvent]:
    with session_scope(api.engine) as session:
        return list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.id)))


def test_study_list_filters_and_pages(api: Api, rg1: ReceivedInstance) -> None:
    store_study(api.engine, rg1, study_uid=CT, status="ready", calling_ae="CT_ROOM1", modality="CT")
    store_study(api.engine, rg1, study_uid=MR, status="held", calling_ae="MR_ROOM2", modality="MR")
    store_study(api.engine, rg1, study_uid=OLD, status="ready", calling_ae="CT_ROOM1", modality="CT")
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    with session_scope(api.engine) as session:
        session.get_one(Study, OLD).last_received_at = two_days_ago
    operator = api.role("operator")

    def uids(query: str) -> list[str]:
        answer = httpx.get(f"{api.url}/admin/studies", params=query, headers=operator)
        assert answer.status_code == 200, answer.text
        return [s["study_uid"] for s in answer.json()["items"]]

    assert set(uids("")) == {CT, MR, OLD} and uids("")[-1] == OLD  # newest first
    assert uids("status=held") == [MR]
    assert uids("modality=MR") == [MR]
    assert sorted(uids("source_ae=CT_ROOM1")) == sorted([CT, OLD])
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sorted(uids(f"since={yesterday}")) == sorted([CT, MR])
    assert uids(f"until={yesterday}") == [OLD]
    assert sorted(uids(f"since={yesterday[:-1]}")) == sorted([CT, MR])  # no zone: UTC
    assert uids("source_ae=CT_ROOM1&modality=CT&status=ready&limit=1&offset=1") == [OLD]
    page = httpx.get(f"{api.url}/admin/studies", params="limit=2", headers=operator).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    assert httpx.get(f"{api.url}/admin/studies", params="since=yesterday", headers=operator).status_code == 422


def test_one_study_and_its_timeline_in_time_order(api: Api, rg1: ReceivedInstance) -> None:
    store_study(api.engine, rg1, study_uid=CT, status="ready", modality="CT")
    correlation = correlation_id_for_study(CT)
    with session_scope(api.engine) as session:
        audit_log.append(
            session,
            AuditRecord(
                hop=INSTANCE_STORED, correlation_id=correlation, agent_who="ae:CT_ROOM1", entity_what=f"{CT}.1.1"
            ),
        )
    with session_scope(api.engine) as session:
        job = create_job(session, job_id="job-1", study_uid=CT, revision=1, model="chest", model_version="1.0")
        assert job is not None
    with session_scope(api.engine) as session:
        done = session.get_one(InferenceJob, "job-1")
        done.status, done.finished_at = "done", datetime.now(UTC)
    with session_scope(api.engine) as session:
        destination = add_destination(session, name="ris", kind="mllp", host="10.0.0.5", port=2575)
        queue_delivery(
            session,
            destination_id=destination.id,
            correlation_id=correlation,
            subject="DiagnosticReport/r1/_history/1",
            control_id="c1",
            payload="MSH|...",
        )
    with session_scope(api.engine) as session:
        pacs = add_destination(session, name="pacs", kind="dicom", host="10.0.0.6", port=104, options={"ae_title": "P"})
        forward = queue_forward(
            session, destination_id=pacs.id, study_uid=CT, revision=1, correlation_id=correlation, rule="ct-to-pacs",
            instances=[ForwardItem(sop_uid=f"{CT}.1.1", object_key="k", sop_class_uid="1.2", transfer_syntax_uid="1.2")],
        )
        assert forward is not None
    admin = api.role("admin")
    assert httpx.post(f"{api.url}/admin/studies/{CT}/reprocess", headers=admin).status_code == 200

    detail = httpx.get(f"{api.url}/admin/studies/{CT}", headers=admin).json()
    assert (
        detail["instances"] == 1 and detail["series"][0]["modality"] == "CT" and detail["series"][0]["instances"] == 1
    )
    assert [(j["job_id"], j["status"]) for j in detail["jobs"]] == [("job-1", "done")]
    assert detail["revision"] == 2 and detail["ready_reason"] == "reprocess"
    # Issue 16: each time it was declared ready, from its audit records (revision 1 was stored ready here).
    assert [(r["revision"], r["reason"], r["who"]) for r in detail["revisions"]] == [(2, "reprocess", "pacs-admin")]

    timeline = httpx.get(f"{api.url}/admin/studies/{CT}/timeline", headers=admin).json()["items"]
    assert [e["what"] for e in timeline] == [
        "instance-stored",
        "job-queued",
        "job-done",
        "delivery-queued",
        "forward-queued",
        "study-ready",
        "admin-operation",
    ]
    stamps = [datetime.fromisoformat(e["at"]) for e in timeline]
    assert stamps == sorted(stamps)
    assert timeline[4]["detail"]["rule"] == "ct-to-pacs" and timeline[4]["detail"]["destination"] == "pacs"
    assert timeline[5]["detail"]["reason"] == "reprocess" and timeline[6]["detail"]["who"] == "pacs-admin"
    assert httpx.get(f"{api.url}/admin/studies/1.2.3/timeline", headers=admin).status_code == 404


def test_release_of_a_held_study_opens_a_revision_and_queues_study_ready(api: Api, rg1: ReceivedInstance) -> None:
    store_study(api.engine, rg1, study_uid=MR, status="held", revision=1)
    admin = api.role("admin", subject="reading-room-lead")
    answer = httpx.post(f"{api.url}/admin/studies/{MR}/release", headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["revision"] == 2 and answer.json()["reason"] == "manual-release"
    with session_scope(api.engine) as session:
        study = session.get_one(Study, MR)
        assert (study.status, study.revision, study.ready_reason) == ("ready", 2, "manual-release")
        record = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "admin-operation")).one()
    (event,) = _outbox(api)
    assert (event.topic, event.key) == ("study.ready", MR)
    message = StudyReady.model_validate_json(event.payload)
    assert (message.revision, message.reason, len(message.instances)) == (2, "manual-release", 1)
    assert message.event_id == answer.json()["event_id"]
    assert record.correlation_id == correlation_id_for_study(MR) and record.agent_who == "reading-room-lead"
    assert record.detail["operation"] == "release"

    again = httpx.post(f"{api.url}/admin/studies/{MR}/release", headers=admin)
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"
    assert httpx.post(f"{api.url}/admin/studies/1.2.3/release", headers=admin).status_code == 404
    assert len(_outbox(api)) == 1


def test_reprocess_routes_a_stored_study_again_but_not_one_still_receiving(api: Api, rg1: ReceivedInstance) -> None:
    store_study(api.engine, rg1, study_uid=CT, status="ready", revision=3)
    store_study(api.engine, rg1, study_uid=OLD, status="receiving", revision=0)
    admin = api.role("admin")
    answer = httpx.post(f"{api.url}/admin/studies/{CT}/reprocess", headers=admin)
    assert answer.status_code == 200 and answer.json()["revision"] == 4
    (event,) = _outbox(api)
    assert StudyReady.model_validate_json(event.payload).reason == "reprocess"
    assert httpx.post(f"{api.url}/admin/studies/{OLD}/reprocess", headers=admin).status_code == 409


def test_jobs_filter_by_status_model_and_study(api: Api, rg1: ReceivedInstance) -> None:
    store_study(api.engine, rg1, study_uid=CT, status="ready")
    store_study(api.engine, rg1, study_uid=MR, status="ready")
    with session_scope(api.engine) as session:
        for job_id, study, model in (("j1", CT, "chest"), ("j2", CT, "brain"), ("j3", MR, "chest")):
            create_job(session, job_id=job_id, study_uid=study, revision=1, model=model, model_version="1")
        session.get_one(InferenceJob, "j3").status = "failed"
    operator = api.role("operator")

    def ids(query: str) -> list[str]:
        return sorted(
            j["job_id"] for j in httpx.get(f"{api.url}/admin/jobs", params=query, headers=operator).json()["items"]
        )

    assert ids("model=chest") == ["j1", "j3"]
    assert ids(f"study_uid={CT}") == ["j1", "j2"]
    assert ids("status=failed") == ["j3"]


def test_a_failed_job_is_retried_once_as_a_new_request_and_audited(api: Api, rg1: ReceivedInstance) -> None:
    store_study(api.engine, rg1, study_uid=CT, status="ready")
    request = InferenceRequest(
        correlation_id=correlation_id_for_study(CT), job_id="j1", study_uid=CT, revision=1, model="chest",
        model_version="1", inputs=[], last_received_at=datetime.now(UTC),
    )
    with session_scope(api.engine) as session:
        create_job(session, job_id="j1", study_uid=CT, revision=1, model="chest", model_version="1")
        create_job(session, job_id="j2", study_uid=CT, revision=1, model="brain", model_version="1")
        add_event(session, topic="inference.request.chest", key=CT, message=request)
        job = session.get_one(InferenceJob, "j1")
        job.status, job.error = "failed", "InferenceTimeout"
    admin = api.role("admin")
    assert httpx.post(f"{api.url}/admin/jobs/j1/retry", headers=api.role("operator")).status_code == 403
    retried = httpx.post(f"{api.url}/admin/jobs/j1/retry", headers=admin)
    assert retried.status_code == 200, retried.text
    assert (retried.json()["job_id"], retried.json()["status"], retried.json()["error"]) == ("j1", "queued", "")
    sent_again = InferenceRequest.model_validate_json(_outbox(api)[-1].payload)
    assert (sent_again.job_id, sent_again.model_version) == ("j1", "1") and sent_again.event_id != request.event_id
    conflict = httpx.post(f"{api.url}/admin/jobs/j1/retry", headers=admin)  # queued now
    assert conflict.status_code == 409 and conflict.headers["content-type"] == "application/problem+json"
    assert httpx.post(f"{api.url}/admin/jobs/j2/retry", headers=admin).status_code == 409  # queued, never failed
    assert httpx.post(f"{api.url}/admin/jobs/nothing/retry", headers=admin).status_code == 404
    with session_scope(api.engine) as session:
        [record] = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "admin-operation"))
        assert record.correlation_id == correlation_id_for_study(CT)
        assert (record.detail["operation"], record.detail["job"]) == ("retry-job", "j1")
        assert json.loads(record.detail["before"])["status"] == "failed"
        assert json.loads(record.detail["after"])["status"] == "queued"
