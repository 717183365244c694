"""The router: does what the stored routing rules decide for `study.ready` (inference jobs through
the outbox, forwards to destinations, hold or drop) and turns stored reports with text into text
model jobs, exactly once per input. Jobs run the model's active version in the registry. A study
whose HL7 order was cancelled (issue 4) is not routed at all."""

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit.log import append
from audit.records import STUDY_ROUTED, AuditRecord
from integration import topics
from integration.errors import StudyNotFound
from integration.facts import study_facts, with_tags
from integration.messages import FhirReceived, Hl7Received, InferenceRequest, InstanceRef, StudyReady, TextInput
from integration.rules import (
    ForwardTo,
    Plan,
    Rule,
    RunModel,
    StudyFacts,
    evaluate,
    load_rules,
    reads_tags,
    report_models,
)
from storage import fhir
from storage.db import session_scope
from storage.fhir import store
from storage.fhir.systems import JOB_SYSTEM
from storage.destinations import destination_by_name
from storage.forwards import ForwardItem, queue_forward
from storage.objects import ObjectStore
from storage.orders import CANCELLED, order_for_accession
from storage.outbox import add_event
from storage.instances import correlation_id_for_study, study_instances
from storage.jobs import create_job
from storage.model_packages import active_model_version
from storage.tables.fhir import FhirResource
from storage.tables.hl7 import Order
from storage.tables.index import Study

log = logging.getLogger(__name__)

AGENT = "doctorai-router"


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
    rule: str = "",
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
        session,
        job_id=str(uuid.uuid4()),
        study_uid=study_uid,
        revision=revision,
        model=action.model,
        model_version=version,
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
            **({"rule": rule} if rule else {}),
        },
    )
    return request


def _rules(session: Session) -> list[Rule]:
    # Read per event, not cached: one small indexed read, and an edit applies to the next study.
    return [rule for _, rule in load_rules(session)]


def _facts(
    engine: Engine, objects: ObjectStore, *, study_uid: str, reason: str | None, tags: bool, link_order: bool = True
) -> StudyFacts:
    """A stored study's facts (raises StudyNotFound). The object store is read only when `tags`,
    outside the transaction, so SQLite's write lock is never held across network reads."""
    with session_scope(engine) as session:
        row = session.get(Study, study_uid)
        if row is None:
            raise StudyNotFound(f"study {study_uid} is not in the index")
        facts = study_facts(session, row, reason=row.ready_reason if reason is None else reason)
        if not link_order:
            session.rollback()  # a dry run changes nothing, not even an order's link to the study
    return with_tags(objects, facts) if tags else facts


def _set_status(session: Session, study: StudyReady, status: str) -> None:
    row = session.get(Study, study.study_uid, with_for_update=True)
    # Only the revision being routed: a study receiving again is on its way to its next revision.
    if row is not None and row.revision == study.revision and row.status == "ready":
        row.status = status


def _queue_forwards(session: Session, study: StudyReady, forwards: Sequence[ForwardTo]) -> None:
    """Queue the study's instances for each destination (storage.forwards, issue 7), audited."""
    stored = {i.sop_uid: i for i, _ in study_instances(session, study_uid=study.study_uid)}
    for forward in forwards:
        detail = {
            "revision": str(study.revision),
            "model": "",
            "destination": forward.destination,
            "rule": forward.rule,
        }
        destination = destination_by_name(session, name=forward.destination)
        if destination is None:
            _audit(session, study.correlation_id, study.study_uid, {**detail, "reason": "unknown destination"})
            continue
        if not destination.enabled or destination.kind != "dicom":
            # Only DICOM nodes take studies; mllp, fhir and webhook destinations take results.
            reason = "destination disabled" if not destination.enabled else f"{destination.kind} destination"
            _audit(session, study.correlation_id, study.study_uid, {**detail, "reason": reason})
            continue
        items = [
            ForwardItem(
                sop_uid=i.sop_uid,
                object_key=stored[i.sop_uid].object_key,
                sop_class_uid=i.sop_class_uid,
                transfer_syntax_uid=stored[i.sop_uid].transfer_syntax_uid,
            )
            for i in forward.instances
            if i.sop_uid in stored
        ]
        queued = queue_forward(
            session,
            destination_id=destination.id,
            study_uid=study.study_uid,
            revision=study.revision,
            correlation_id=study.correlation_id,
            rule=forward.rule,
            instances=items,
        )
        if queued is not None:  # None: this revision was queued for it already (a replayed event)
            _audit(
                session,
                study.correlation_id,
                study.study_uid,
                {**detail, "forward": "queued", "instances": str(len(items))},
            )


def skip_cancelled(engine: Engine, study: StudyReady) -> bool:
    """Link the study to its order (by accession number and patient); True, audited, when that order is cancelled."""
    with session_scope(engine) as session:
        order = order_for_accession(session, accession_number=study.accession_number, patient_id=study.patient_id)
        if order is None:
            return False
        if order.study_uid is None:
            order.study_uid = study.study_uid
            order.updated_at = datetime.now(UTC)
        if order.status not in CANCELLED:
            return False
        detail = {"revision": str(study.revision), "model": "", "reason": "order cancelled"}
        _audit(
            session,
            study.correlation_id,
            study.study_uid,
            {**detail, "service_request": order.service_request_id, "order_status": order.status},
        )
    log.info("study %s not routed: its order %s is cancelled", study.correlation_id, order.service_request_id)
    return True


def route(engine: Engine, objects: ObjectStore, study: StudyReady) -> list[InferenceRequest]:
    """Do what the stored rules decide for a ready study: hold it, drop it, or create the jobs and
    forwards they ask for; every decision is audited and a replayed event creates nothing new."""
    if skip_cancelled(engine, study):  # issue 4: an order cancelled over HL7 stops the study here
        return []
    revision = str(study.revision)
    with session_scope(engine) as session:
        rules = _rules(session)
    try:
        facts = _facts(engine, objects, study_uid=study.study_uid, reason=study.reason, tags=reads_tags(rules))
    except StudyNotFound:
        with session_scope(engine) as session:
            _audit(
                session,
                study.correlation_id,
                study.study_uid,
                {"revision": revision, "model": "", "reason": "study not in the index"},
            )
        return []
    plan = evaluate(rules, facts)
    queued: list[InferenceRequest] = []
    with session_scope(engine) as session:
        if plan.dropped_by or plan.held_by:
            held = not plan.dropped_by
            _set_status(session, study, "held" if held else "dropped")
            detail = {"revision": revision, "model": "", "reason": "held" if held else "dropped"}
            _audit(session, study.correlation_id, study.study_uid, {**detail, "rule": plan.held_by or plan.dropped_by})
            return []
        for run in plan.runs:
            request = _queue(
                session,
                RunModel(model=run.model),
                correlation_id=study.correlation_id,
                study_uid=study.study_uid,
                revision=study.revision,
                patient_id=study.patient_id,
                last_received_at=study.last_received_at,
                inputs=run.instances,
                texts=[],
                ready_at=study.occurred_at,
                rule=run.rule,
            )
            if request is not None:
                queued.append(request)
        if plan.forwards:
            _queue_forwards(session, study, plan.forwards)
        if not plan.runs and not plan.forwards:
            _audit(
                session,
                study.correlation_id,
                study.study_uid,
                {"revision": revision, "model": "", "reason": "no rule matched"},
            )
    return queued


def dry_run(engine: Engine, objects: ObjectStore, rule: Rule, *, study_uid: str) -> Plan:
    """What `rule` alone (enabled or not, saved or a draft) would do to a stored study now; changes nothing.

    The study is evaluated as it was last declared ready (its ready reason). Raises StudyNotFound.
    """
    facts = _facts(engine, objects, study_uid=study_uid, reason=None, tags=bool(rule.match.tags), link_order=False)
    return evaluate([rule.model_copy(update={"enabled": True})], facts)


def _report_study(session: Session, report: fhir.DiagnosticReport) -> str:
    """The StudyInstanceUID a report is about: its first ImagingStudy reference, else the study
    linked to the order it is `basedOn` (an ORU^R01 from another system names only the order)."""
    for ref in report.imagingStudy or []:
        if ref.reference and ref.reference.startswith("ImagingStudy/"):
            return ref.reference.split("/", 1)[1]
    for ref in report.basedOn or []:
        if ref.reference and ref.reference.startswith("ServiceRequest/"):
            order = session.get(Order, ref.reference.split("/", 1)[1])
            if order is not None and order.study_uid:
                return order.study_uid
    return ""


def _report_text(session: Session, report: fhir.DiagnosticReport) -> str:
    """What a report says: its conclusion, else the text values of its result Observations in
    order (an ORU^R01's TX/FT/ST OBX segments become Observation.valueString)."""
    conclusion = (report.conclusion or "").strip()
    if conclusion:
        return conclusion
    refs = [r.reference for r in report.result or [] if r.reference and r.reference.startswith("Observation/")]
    values = [fhir.Observation.model_validate_json(found.content).valueString for found in store.read_stored(session, refs)]
    return "\n".join(value.strip() for value in values if value and value.strip())


def route_report(engine: Engine, received: FhirReceived) -> list[InferenceRequest]:
    """Queue text models on a DiagnosticReport written through the FHIR API."""
    if received.resource_type != "DiagnosticReport" or received.interaction == "delete":
        return []
    return _route_report(engine, received.resource_id, version_id=received.version_id)


def route_hl7(engine: Engine, received: Hl7Received) -> list[InferenceRequest]:
    """Queue text models on the DiagnosticReports an HL7 message (an ORU^R01) created or changed."""
    queued: list[InferenceRequest] = []
    for ref in received.resources:
        resource_type, _, resource_id = ref.partition("/")
        if resource_type == "DiagnosticReport":
            queued += _route_report(engine, resource_id, version_id=None)
    return queued


def _route_report(engine: Engine, report_id: str, *, version_id: int | None) -> list[InferenceRequest]:
    """Queue text models (the stored report rules) on a stored DiagnosticReport's text.

    Jobs belong to a study, so only reports about a study in the index are routed; the
    report's version is the job's input revision, so each new version is read once.
    """
    queued: list[InferenceRequest] = []
    with session_scope(engine) as session:
        actions = report_models(_rules(session))
        if not actions:
            return []
        stored = session.get(FhirResource, ("DiagnosticReport", report_id))
        if stored is None:
            log.warning("DiagnosticReport/%s announced but not stored", report_id)
            return []
        report = fhir.DiagnosticReport.model_validate_json(stored.content)
        # Our own reports (JOB_SYSTEM identifiers): triaging them would feed the engine's output back into itself.
        if any(i.system == JOB_SYSTEM for i in report.identifier or []):
            return []
        text = _report_text(session, report)
        if not text:
            return []
        study = session.get(Study, _report_study(session, report))
        if study is None:
            log.info("DiagnosticReport/%s names no study in the index; not triaged", report_id)
            return []
        for action in actions:
            request = _queue(
                session,
                action,
                correlation_id=correlation_id_for_study(study.study_uid),
                study_uid=study.study_uid,
                revision=version_id if version_id is not None else stored.version_id,
                patient_id=study.patient_id,
                last_received_at=datetime.now(UTC),
                inputs=[],
                texts=[TextInput(ref=f"DiagnosticReport/{report_id}", text=text)],
            )
            if request is not None:
                queued.append(request)
    return queued
