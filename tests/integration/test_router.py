"""The router on SQLite and PostgreSQL: jobs run the active version; reports with text go to text models."""

import json
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from integration.messages import InstanceRef, FhirReceived, StudyReady
from integration.router import route, route_report
from integration.rules import DEFAULT_RULES
from storage.db import session_scope
from storage.queries import (
    ReceivedInstance,
    activate_model_package,
    add_model_package,
    correlation_id_for_study,
    record_instance,
)
from storage.tables import AuditEvent, FhirResource, InferenceJob, OutboxEvent

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _index_study(db: Engine) -> None:
    item = ReceivedInstance(
        study_uid=STUDY, series_uid=STUDY + ".1", sop_uid=STUDY + ".1.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1", patient_id="P1", accession_number="", study_date="",
        study_description="", modality="CR", body_part="CHEST", series_number=1, series_description="",
        instance_number=1, object_key="k", size=1, sha256="0" * 64, calling_ae="PACS", source_address="",
    )
    with session_scope(db) as session:
        record_instance(session, item=item)


def _register(db: Engine, name: str, *versions: str, active: str) -> None:
    with session_scope(db) as session:
        for version in versions:
            row = add_model_package(session, name=name, version=version, framework="keras", manifest="{}")
            if version == active:
                activate_model_package(session, row=row)


def _ready(revision: int = 1) -> StudyReady:
    return StudyReady(
        correlation_id=correlation_id_for_study(STUDY),
        study_uid=STUDY,
        revision=revision,
        reason="quiet-period",
        last_received_at=datetime.now(UTC),
        instances=[InstanceRef(series_uid=STUDY + ".1", sop_uid=STUDY + ".1.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                               modality="CR", body_part="CHEST", object_key="k")],
    )


def test_jobs_use_the_active_version_and_unregistered_models_get_none(db: Engine) -> None:
    _index_study(db)
    assert route(db, DEFAULT_RULES, _ready(1)) == []
    with session_scope(db) as session:
        reasons = [e.detail.get("reason") for e in session.scalars(select(AuditEvent))]
    assert "no active version" in reasons

    _register(db, "chest-xray-pneumonia", "0.3.0", "0.4.0", active="0.4.0")
    [request] = route(db, DEFAULT_RULES, _ready(2))
    assert request.model_version == "0.4.0"
    assert route(db, DEFAULT_RULES, _ready(2)) == []  # replayed: the job exists
    with session_scope(db) as session:
        [job] = session.scalars(select(InferenceJob))
        assert (job.model, job.model_version, job.revision) == ("chest-xray-pneumonia", "0.4.0", 2)


def _store_report(db: Engine, report_id: str, body: dict[str, object]) -> None:
    with session_scope(db) as session:
        session.add(FhirResource(resource_type="DiagnosticReport", resource_id=report_id, version_id=1,
                                 last_updated=datetime.now(UTC), content=json.dumps(body)))


def test_a_report_with_a_conclusion_is_queued_for_triage_with_its_text(db: Engine) -> None:
    _index_study(db)
    _register(db, "report-triage", "0.1.0", active="0.1.0")
    base = {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "CXR"},
            "imagingStudy": [{"reference": f"ImagingStudy/{STUDY}"}]}
    _store_report(db, "r1", {**base, "id": "r1", "conclusion": "Large right pneumothorax."})
    _store_report(db, "r2", {**base, "id": "r2"})  # no conclusion
    _store_report(db, "r3", {**base, "id": "r3", "conclusion": "AI says", "identifier": [{"system": "urn:doctorai:job", "value": "j"}]})
    _store_report(db, "r4", {**base, "id": "r4", "conclusion": "No study", "imagingStudy": [{"reference": "ImagingStudy/9.9"}]})

    def received(report_id: str) -> FhirReceived:
        return FhirReceived(
            correlation_id="c", resource_type="DiagnosticReport", resource_id=report_id, version_id=1, interaction="create"
        )

    [request] = route_report(db, DEFAULT_RULES, received("r1"))
    assert request.model == "report-triage" and request.inputs == []
    assert [(t.ref, t.text) for t in request.texts] == [("DiagnosticReport/r1", "Large right pneumothorax.")]
    for other in ("r2", "r3", "r4", "missing"):
        assert route_report(db, DEFAULT_RULES, received(other)) == []
    assert route_report(db, DEFAULT_RULES, received("r1")) == []  # replayed
    with session_scope(db) as session:
        topics = [e.topic for e in session.scalars(select(OutboxEvent))]
    assert topics == ["inference.request.report-triage"]
