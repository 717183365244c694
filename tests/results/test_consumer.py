"""The FHIR-store consumer's database work: study.ready and inference.result into the store."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from aiokafka import ConsumerRecord
from sqlalchemy import Engine, func, select

from audit import log as audit_log
from audit.records import REPORT_CREATED, Outcome
from storage import fhir
from results import consumer
from storage.fhir import store
from results.errors import InvalidResult
from integration import topics
from integration.config import Hl7Identity, IntegrationSettings
from integration.errors import InvalidMessage
from integration.messages import InferenceResult, InstanceRef, StudyReady
from storage.db import session_scope
from storage.instances import ReceivedInstance, correlation_id_for_study
from storage.tables.fhir import FhirResource, FhirResourceVersion
from storage.tables.pipeline import Report

EXPORTS = consumer.Exports(identity=Hl7Identity(), fhir_base_url="/fhir")

MakeJob = Callable[..., InferenceResult]


def _ready(item: ReceivedInstance, revision: int = 1) -> StudyReady:
    return StudyReady(
        correlation_id=correlation_id_for_study(item.study_uid),
        study_uid=item.study_uid,
        revision=revision,
        reason="quiet-period",
        patient_id=item.patient_id,
        last_received_at=datetime.now(UTC),
        instances=[
            InstanceRef(
                series_uid=item.series_uid,
                sop_uid=item.sop_uid,
                sop_class_uid=item.sop_class_uid,
                modality=item.modality,
                body_part=item.body_part,
                instance_number=item.instance_number,
                object_key=item.object_key,
            )
        ],
    )


def _count(engine: Engine, table: type[FhirResource] | type[Report] | type[FhirResourceVersion]) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def test_study_ready_stores_patient_and_imaging_study(engine: Engine, indexed: ReceivedInstance) -> None:
    with session_scope(engine) as session:
        consumer.apply_study_ready(session, _ready(indexed))
    with session_scope(engine) as session:
        patient = store.read(session, "Patient", "9RG1")
        study = store.read(session, "ImagingStudy", indexed.study_uid)
    assert isinstance(patient, fhir.Patient) and patient.identifier is not None
    assert patient.identifier[0].value == "9RG1"
    assert isinstance(study, fhir.ImagingStudy)
    assert study.subject.reference == "Patient/9RG1"
    assert study.meta is not None and study.meta.versionId == "1" and study.meta.lastUpdated is not None
    # A replayed study.ready changes nothing, so it makes no new version.
    with session_scope(engine) as session:
        consumer.apply_study_ready(session, _ready(indexed))
    assert _count(engine, FhirResourceVersion) == 2


def test_result_makes_one_report_even_when_replayed(engine: Engine, make_job: MakeJob) -> None:
    result = make_job()
    with session_scope(engine) as session:
        first = consumer.apply_result(session, result, EXPORTS)
    with session_scope(engine) as session:
        second = consumer.apply_result(session, result, EXPORTS)
    assert first == result.job_id
    assert second is None
    with session_scope(engine) as session:
        reports = store.search(session, "DiagnosticReport", [])
        report = store.read(session, "DiagnosticReport", result.job_id)
        observation = store.read(session, "Observation", f"{result.job_id}-0")
        # Built from the index although study.ready was never consumed.
        assert store.exists(session, "ImagingStudy", result.study_uid)
        assert store.exists(session, "Patient", "9RG1")
        trail = audit_log.trail(session, correlation_id=correlation_id_for_study(result.study_uid))
    assert [r.id for r in reports] == [result.job_id]
    assert _count(engine, Report) == 1
    assert isinstance(report, fhir.DiagnosticReport) and report.status == "preliminary"
    assert isinstance(observation, fhir.Observation)
    created = [e for e in trail if e.subtype == REPORT_CREATED.subtype]
    assert len(created) == 1
    assert created[0].outcome == Outcome.SUCCESS.value
    assert created[0].agent_who == "doctorai-results"
    assert created[0].entity_what == f"DiagnosticReport/{result.job_id}"
    assert created[0].detail["job_id"] == result.job_id
    assert created[0].detail["model"] == "pneumonia-cxr"
    assert created[0].detail["model_version"] == "1.2.0"


def test_failed_result_is_audited_without_a_report(engine: Engine, make_job: MakeJob) -> None:
    result = make_job(error="cannot decode pixel data")
    for _ in range(2):
        with session_scope(engine) as session:
            assert consumer.apply_result(session, result, EXPORTS) is None
    assert _count(engine, Report) == 0
    with session_scope(engine) as session:
        assert not store.exists(session, "DiagnosticReport", result.job_id)
        trail = audit_log.trail(session, correlation_id=correlation_id_for_study(result.study_uid))
    failures = [e for e in trail if e.subtype == REPORT_CREATED.subtype]
    assert [(e.outcome, e.detail["error"]) for e in failures] == [
        (Outcome.SERIOUS_FAILURE.value, "cannot decode pixel data")
    ]


def test_report_of_a_later_revision_is_amended(engine: Engine, make_job: MakeJob) -> None:
    first, later = make_job(revision=1), make_job(revision=2)
    with session_scope(engine) as session:
        consumer.apply_result(session, first, EXPORTS)
    with session_scope(engine) as session:
        consumer.apply_result(session, later, EXPORTS)
    with session_scope(engine) as session:
        report = store.read(session, "DiagnosticReport", first.job_id)
        reports = store.search(session, "DiagnosticReport", [])
        assert not store.exists(session, "DiagnosticReport", later.job_id)
        versions = session.scalars(
            select(FhirResourceVersion.content)
            .where(FhirResourceVersion.resource_type == "DiagnosticReport")
            .order_by(FhirResourceVersion.version_id)
        ).all()
    # The report of revision 1 is amended in place (a new version), not joined by a second one.
    assert isinstance(report, fhir.DiagnosticReport) and report.status == "amended"
    assert report.meta is not None and report.meta.versionId == "2"
    assert report.identifier is not None and report.identifier[0].value == later.job_id
    assert [fhir.DiagnosticReport.model_validate_json(v).status for v in versions] == ["preliminary", "amended"]
    assert len(reports) == 1
    # A result of revision 1 replayed or arriving late changes nothing.
    before = _count(engine, FhirResourceVersion)
    with session_scope(engine) as session:
        assert consumer.apply_result(session, first, EXPORTS) is None
    assert _count(engine, FhirResourceVersion) == before


def test_late_result_of_an_older_revision_leaves_the_newer_report(engine: Engine, make_job: MakeJob) -> None:
    older, newer = make_job(revision=1), make_job(revision=2)
    with session_scope(engine) as session:
        assert consumer.apply_result(session, newer, EXPORTS) == newer.job_id
    with session_scope(engine) as session:
        assert consumer.apply_result(session, older, EXPORTS) is None
    with session_scope(engine) as session:
        report = store.read(session, "DiagnosticReport", newer.job_id)
        assert not store.exists(session, "DiagnosticReport", older.job_id)
        assert session.get(Report, older.job_id) is not None  # recorded, so a replay is a no-op
    assert isinstance(report, fhir.DiagnosticReport) and report.status == "preliminary"


def test_result_for_an_unknown_job_is_permanent_error(engine: Engine, make_job: MakeJob) -> None:
    result = make_job().model_copy(update={"job_id": "00000000-0000-4000-8000-000000000000"})
    with pytest.raises(InvalidResult) as caught, session_scope(engine) as session:
        consumer.apply_result(session, result, EXPORTS)
    assert caught.value.retriable is False


def _record(topic: str, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=f"doctorai.{topic}",
        partition=0,
        offset=0,
        timestamp=0,
        timestamp_type=0,
        key=b"k",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=[],
    )


def test_handler_stores_results_and_refuses_garbage(engine: Engine, make_job: MakeJob) -> None:
    settings = IntegrationSettings(topic_prefix="doctorai.")
    result = make_job()
    for _ in range(2):  # a redelivered record is harmless
        asyncio.run(
            consumer.handle(
                _record(topics.INFERENCE_RESULT, result.model_dump_json().encode()),
                engine=engine,
                settings=settings,
                exports=EXPORTS,
            )
        )
    assert _count(engine, Report) == 1
    with pytest.raises(InvalidMessage) as caught:
        record = _record(topics.INFERENCE_RESULT, b"{not json")
        asyncio.run(consumer.handle(record, engine=engine, settings=settings, exports=EXPORTS))
    assert caught.value.retriable is False
