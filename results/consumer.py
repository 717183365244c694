"""The FHIR-store consumer: study.ready -> Patient + ImagingStudy, inference.result -> DiagnosticReport.

Run as `python -m results` (results/__main__.py). Consumer group "doctorai-fhir-store". Offsets are committed
(by integration.kafka.consume) only after the resources, the report row and the audit record
committed; a replayed result finds its report row and does nothing (DESIGN.md 5.3).
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TypeVar

from aiokafka import ConsumerRecord
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audit import log as audit_log
from audit.records import REPORT_AMENDED, REPORT_CREATED, AuditRecord, Outcome
from results import metrics
from storage.fhir import store
from results.errors import ConcurrentWrite, InvalidResult
from results.mapping import imaging_study_from_index, patient_from_study, report_from_result, study_effective
from storage.orders import with_order
from results.oru import queue_oru
from results.pushes import queue_report_exports
from results.instances import store_outputs, store_sr
from results.sr_queue import queue_sr_exports
from integration import topics
from integration.config import Hl7Identity, IntegrationSettings
from integration.errors import InvalidMessage
from integration.kafka import unqualified
from integration.messages import InferenceResult, StudyReady
from storage.db import session_scope
from storage.objects import ObjectStore
from storage.instances import correlation_id_for_study, study_instances
from storage.tables.audit import AuditEvent
from storage.tables.index import Study
from storage.tables.pipeline import InferenceJob, Report

log = logging.getLogger(__name__)

GROUP_ID = "doctorai-fhir-store"
AGENT = "doctorai-results"
TOPICS = (topics.STUDY_READY, topics.INFERENCE_RESULT)

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


@dataclass(frozen=True)
class Exports:
    """What a new report needs to go out beside the FHIR store; built once in results/__main__.py."""

    # MSH-3/MSH-4 of the ORU^R01 sent to MLLP destinations (results/oru.py).
    identity: Hl7Identity
    # Base of the FHIR API as the EHRs see it, for the links of webhook events (results/pushes.py).
    fhir_base_url: str
    # Where the input headers are read and the SRs and SEGs written (results/instances.py); None: none.
    objects: ObjectStore | None = None


def _study(session: Session, study_uid: str) -> Study:
    study = session.get(Study, study_uid)
    if study is None:
        raise InvalidResult(f"study {study_uid} is not in the index")
    return study


def _store_patient_and_study(session: Session, study: Study) -> str:
    """Save the study's Patient (if new) and its ImagingStudy (if changed); returns the Patient reference."""
    patient = patient_from_study(study.patient_id, study_uid=study.study_uid)
    patient_id = patient.id or ""
    # A Patient may already hold more than DICOM tells us; never overwrite it from a study.
    if not store.exists(session, "Patient", patient_id):
        store.save(session, patient)
    store.save(session, imaging_study_from_index(study, study_instances(session, study_uid=study.study_uid)))
    return f"Patient/{patient_id}"


def apply_study_ready(session: Session, message: StudyReady) -> None:
    """Upsert the Patient and the ImagingStudy of a study that became ready."""
    _store_patient_and_study(session, _study(session, message.study_uid))


def _failure_recorded(session: Session, correlation_id: str, entity: str) -> bool:
    stmt = select(AuditEvent.id).where(
        AuditEvent.correlation_id == correlation_id,
        AuditEvent.subtype == REPORT_CREATED.subtype,
        AuditEvent.entity_what == entity,
    )
    return session.scalar(stmt.limit(1)) is not None


def _reported(session: Session, message: InferenceResult, *, later: bool) -> Report | None:
    """The newest report of this model for an earlier (or, with `later`, a later) revision of the study."""
    stmt = (
        select(Report)
        .join(InferenceJob, InferenceJob.job_id == Report.job_id)
        .where(
            Report.study_uid == message.study_uid,
            InferenceJob.model == message.model,
            Report.revision > message.revision if later else Report.revision < message.revision,
        )
        .order_by(Report.revision.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def _record_report(session: Session, message: InferenceResult, report_id: str) -> None:
    session.add(
        Report(
            job_id=message.job_id,
            study_uid=message.study_uid,
            revision=message.revision,
            diagnostic_report_id=report_id,
            created_at=datetime.now(UTC),
            # The console's figures (storage/overview.py): a positive finding, and the latency's start.
            positive=any(f.positive for f in message.findings) if message.findings else None,
            study_received_at=message.last_received_at,
        )
    )


def apply_result(session: Session, message: InferenceResult, exports: Exports) -> str | None:
    """Store the DiagnosticReport and Observations of a result; returns the report id, None if nothing new.

    Idempotent per job: a replayed result finds its Report row and does nothing. A failed
    result (`error` set) creates no report, only a serious-failure audit record. The report is
    queued for every destination that takes results, as `exports` says. With its object store (the
    consumer always has one), the report's DICOM SR and the model's SEG join the study as instances
    of their own series (results/instances.py), and the SR goes to the DICOM destinations that take
    results (results/sr_queue.py).
    """
    if session.get(Report, message.job_id) is not None:
        return None
    study = _study(session, message.study_uid)
    correlation_id = correlation_id_for_study(study.study_uid)
    entity = f"DiagnosticReport/{message.job_id}"
    if message.error:
        if not _failure_recorded(session, correlation_id, entity):
            audit_log.append(
                session,
                AuditRecord(
                    hop=REPORT_CREATED,
                    correlation_id=correlation_id,
                    agent_who=AGENT,
                    entity_what=entity,
                    outcome=Outcome.SERIOUS_FAILURE,
                    detail={
                        "job_id": message.job_id,
                        "model": message.model,
                        "model_version": message.model_version,
                        "error": message.error,
                    },
                ),
            )
        log.warning("job %s of study %s failed; no report", message.job_id, correlation_id)
        return None
    if session.get(InferenceJob, message.job_id) is None:
        raise InvalidResult(f"job {message.job_id} is not in the index")
    newer = _reported(session, message, later=True)
    if newer is not None:
        # A result for an older revision arrived after a newer one was reported: the newer report
        # stays current; this job only records that it was superseded.
        _record_report(session, message, newer.diagnostic_report_id)
        log.info("job %s of study %s superseded by revision %d", message.job_id, correlation_id, newer.revision)
        return None
    patient_ref = _store_patient_and_study(session, study)
    # One current report per study and model (DESIGN.md 5.4): a later revision amends the
    # earlier report in place, as a new version of the same resource, instead of adding a
    # second one (FHIR R4 DiagnosticReport.status "amended": the issued report was modified).
    earlier = _reported(session, message, later=False)
    status = "amended" if earlier is not None else "preliminary"
    report_id = earlier.diagnostic_report_id if earlier is not None else message.job_id
    report, observations = report_from_result(
        message, patient_ref, effective=study_effective(study), status=status, report_id=report_id
    )
    # Issue 4: a study ordered over HL7 gets a report `basedOn` the order's ServiceRequest.
    report = with_order(session, study, report)
    for observation in observations:
        store.save(session, observation)
    store.save(session, report)
    _record_report(session, message, report_id)
    audit_log.append(
        session,
        AuditRecord(
            hop=REPORT_AMENDED if earlier is not None else REPORT_CREATED,
            correlation_id=correlation_id,
            agent_who=AGENT,
            entity_what=f"DiagnosticReport/{report_id}",
            detail={
                "job_id": message.job_id,
                "model": message.model,
                "model_version": message.model_version,
                "revision": str(message.revision),
                "status": status,
            },
        ),
    )
    # Issue 4: the report goes out as ORU^R01 to every enabled MLLP destination, in this transaction.
    queue_oru(session, report=report, result=message, study=study, settings=exports.identity)
    # Issue 7: and to every enabled FHIR server and webhook, in this transaction too.
    queue_report_exports(
        session,
        report=report,
        observations=observations,
        result=message,
        study=study,
        base_url=exports.fhir_base_url,
    )
    # Issue 17: the SR (naming the SR it amends) and the model's SEG become instances of the study;
    # issue 7: the SR goes to every DICOM destination that takes results.
    objects = exports.objects
    if objects is not None:
        store_outputs(session, objects, result=message)
        replaces = earlier.job_id if earlier is not None else None
        sr = store_sr(session, objects, result=message, study=study, replaces=replaces)
        if sr is not None:
            queue_sr_exports(session, sr, result=message, study=study)
    session.flush()
    return report_id


def observe_latency(result: InferenceResult, *, committed_at: datetime) -> None:
    """Record the end-to-end latency of a committed report and its stages, from the message's timestamps."""
    stages = {"total": (result.last_received_at, committed_at)}
    if result.ready_at is not None:
        stages["quiet-period"] = (result.last_received_at, result.ready_at)
        if result.started_at is not None:
            stages["queue"] = (result.ready_at, result.started_at)
    if result.started_at is not None and result.finished_at is not None:
        stages["inference"] = (result.started_at, result.finished_at)
    if result.finished_at is not None:
        stages["report"] = (result.finished_at, committed_at)
    for stage, (begin, end) in stages.items():
        # Clocks of different hosts may disagree by a little: never observe a negative time.
        metrics.E2E_LATENCY.labels(result.model, stage).observe(max(0.0, (end - begin).total_seconds()))


def _parse(model: type[M], payload: bytes) -> M:
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        raise InvalidMessage(f"not a {model.__name__}: {exc.error_count()} validation errors") from exc


def _in_transaction(engine: Engine, apply: Callable[[Session, M], R], message: M) -> R:
    with session_scope(engine) as session:
        return apply(session, message)


async def handle(
    record: ConsumerRecord[bytes, bytes],
    *,
    engine: Engine,
    settings: IntegrationSettings,
    exports: Exports,
) -> None:
    """Handle one consumed record; errors are retriable (storage, races) or permanent (dead-lettered)."""
    topic = unqualified(settings, record.topic)
    payload = record.value or b""
    try:
        if topic == topics.STUDY_READY:
            ready = _parse(StudyReady, payload)
            await asyncio.to_thread(_in_transaction, engine, apply_study_ready, ready)
        elif topic == topics.INFERENCE_RESULT:
            result = _parse(InferenceResult, payload)
            apply = partial(apply_result, exports=exports)
            report_id = await asyncio.to_thread(_in_transaction, engine, apply, result)
            if report_id is not None:
                metrics.REPORTS_CREATED.inc()
                observe_latency(result, committed_at=datetime.now(UTC))
                log.info("report %s created for study %s", report_id, result.correlation_id)
        else:
            raise InvalidMessage(f"unexpected topic {record.topic}")
    except IntegrityError as exc:
        # Another member wrote the same rows first (a rebalance redelivered the record): the retry
        # sees its work and does nothing.
        metrics.MESSAGES.labels(topic, "retry").inc()
        raise ConcurrentWrite(f"concurrent write: {type(exc.orig).__name__}") from exc
    except Exception:
        metrics.MESSAGES.labels(topic, "error").inc()
        raise
    metrics.MESSAGES.labels(topic, "ok").inc()

