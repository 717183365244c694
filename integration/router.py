"""The router: turns `study.ready` (and stored reports with text) into inference jobs, through the
outbox, exactly once per input. Jobs run the model's active version in the registry."""

import json
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit.log import append
from audit.records import STUDY_ROUTED, AuditRecord
from integration import topics
from integration.messages import FhirReceived, InferenceRequest, InstanceRef, StudyReady, TextInput
from integration.orders import skip_cancelled
from integration.rules import Rule, RunModel, evaluate, report_models
from storage.db import session_scope
from storage.outbox import add_event
from storage.queries import active_model_version, correlation_id_for_study, create_job, fhir_resource_json
from storage.tables import Study

log = logging.getLogger(__name__)

AGENT = "doctorai-router"
# The identifier system of the reports our own results consumer writes (fhir_api.mapping.JOB_SYSTEM):
# triaging them would feed the engine's output back into itself.
OWN_REPORT_SYSTEM = "urn:doctorai:job"


def _audit(session: Session, correlation_id: str, study_uid: str, detail: dict[str, str]) -> None:
    append(
        session,
        AuditRecord(
            hop=STUDY_ROUTED, correlation_id=correlation_id, agent_who=AGENT, entity_what=study_uid, detail=detail
        ),
    )


def _queue(
    session: Session,
    action: RunModel,
    *,
    correlation_id: str,
    study_uid: str,
    revision: int,
    patient_id: str,
    last_received_at: datetime,
    inputs: list[InstanceRef],
    texts: list[TextInput],
    ready_at: datetime | None = None,
) -> InferenceRequest | None:
    """Create the job of one model on one input and queue its request; None when there is nothing new."""
    version = active_model_version(session, name=action.model)
    if version is None:
        # A rule may name a model this site has not registered (or has retired every version of).
        _audit(
            session,
            correlation_id,
            study_uid,
            {"revision": str(revision), "model": action.model, "reason": "no active version"},
        )
        return None
    job = create_job(
        session, job_id=str(uuid.uuid4()), study_uid=study_uid, revision=revision, model=action.model, model_version=version
    )
    if job is None:
        return None  # this input already has its job: the event was delivered again
    request = InferenceRequest(
        correlation_id=correlation_id,
        job_id=job.job_id,
        study_uid=study_uid,
        revision=revision,
        model=action.model,
        model_version=version,
        patient_id=patient_id,
        inputs=inputs,
        texts=texts,
        last_received_at=last_received_at,
        ready_at=ready_at,
    )
    add_event(session, topic=topics.inference_request(action.model), key=study_uid, message=request)
    _audit(
        session,
        correlation_id,
        study_uid,
        {
            "revision": str(revision),
            "model": action.model,
            "model_version": version,
            "job_id": job.job_id,
            "inputs": str(len(inputs) + len(texts)),
        },
    )
    return request


def route(engine: Engine, rules: Sequence[Rule], study: StudyReady) -> list[InferenceRequest]:
    """Create the jobs the rules ask for and queue their requests; a replayed event creates nothing new."""
    if skip_cancelled(engine, study):  # issue 4: an order cancelled over HL7 stops the study here
        return []
    plan = evaluate(rules, study)
    queued: list[InferenceRequest] = []
    with session_scope(engine) as session:
        for action, inputs in plan.items():
            request = _queue(
                session,
                action,
                correlation_id=study.correlation_id,
                study_uid=study.study_uid,
                revision=study.revision,
                patient_id=study.patient_id,
                last_received_at=study.last_received_at,
                inputs=inputs,
                texts=[],
                ready_at=study.occurred_at,
            )
            if request is not None:
                queued.append(request)
        if not plan:
            _audit(
                session,
                study.correlation_id,
                study.study_uid,
                {"revision": str(study.revision), "model": "", "reason": "no rule matched"},
            )
    return queued


def _report_study(report: dict[str, Any]) -> str:
    """The StudyInstanceUID a report is about: the id of its first ImagingStudy reference."""
    for ref in report.get("imagingStudy") or []:
        reference = str(ref.get("reference", "")) if isinstance(ref, dict) else ""
        if reference.startswith("ImagingStudy/"):
            return reference.split("/", 1)[1]
    return ""


def route_report(engine: Engine, rules: Sequence[Rule], received: FhirReceived) -> list[InferenceRequest]:
    """Queue text models on a stored DiagnosticReport's conclusion (FHIR R4 DiagnosticReport.conclusion).

    Jobs belong to a study, so only reports about a study in the index are routed; the
    report's version is the job's input revision, so each new version is read once.
    """
    actions = report_models(rules)
    if received.resource_type != "DiagnosticReport" or received.interaction == "delete" or not actions:
        return []
    queued: list[InferenceRequest] = []
    with session_scope(engine) as session:
        content = fhir_resource_json(session, resource_type="DiagnosticReport", resource_id=received.resource_id)
        if content is None:
            log.warning("DiagnosticReport/%s announced but not stored", received.resource_id)
            return []
        report = json.loads(content)
        identifiers = report.get("identifier") or []
        text = str(report.get("conclusion") or "").strip()
        if not text or any(i.get("system") == OWN_REPORT_SYSTEM for i in identifiers if isinstance(i, dict)):
            return []
        study = session.get(Study, _report_study(report))
        if study is None:
            log.info("DiagnosticReport/%s names no study in the index; not triaged", received.resource_id)
            return []
        for action in actions:
            request = _queue(
                session,
                action,
                correlation_id=correlation_id_for_study(study.study_uid),
                study_uid=study.study_uid,
                revision=received.version_id,
                patient_id=study.patient_id,
                last_received_at=datetime.now(UTC),
                inputs=[],
                texts=[TextInput(ref=f"DiagnosticReport/{received.resource_id}", text=text)],
            )
            if request is not None:
                queued.append(request)
    return queued
