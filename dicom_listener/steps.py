"""Modality Performed Procedure Step SCP (PS3.4 F.7): N-CREATE and N-SET, and the statuses they get.

A modality reports a step it performed for an order (IHE Scheduled Workflow): N-CREATE with
status IN PROGRESS when it starts, N-SET with COMPLETED or DISCONTINUED, listing the instances
of every series it made, when it ends. Once every step of a study has ended, the study is ready
as soon as that many instances are stored (storage.steps); while one is in progress, the quiet
period alone does not declare it ready (stability.py).
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

from audit.log import append
from audit.records import PROCEDURE_STEP_CREATED, PROCEDURE_STEP_UPDATED, AuditRecord
from dicom_listener import dimse, exchange, metrics
from dicom_listener.association import Association
from dicom_listener.ingest import Answer, Receiver, audit_refusal
from integration.errors import CannotUnderstand
from integration.instances.spool import Spool
from integration.dimse_status import (
    DUPLICATE_SOP_INSTANCE,
    INVALID_ATTRIBUTE_VALUE,
    MISSING_ATTRIBUTE,
    NO_LONGER_UPDATABLE,
    NO_SUCH_OBJECT_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
)
from integration.studies import announce
from storage import steps
from storage.db import session_scope
from storage.errors import StorageUnavailable
from storage.instances import correlation_id_for_study, count_instances

log = logging.getLogger(__name__)

# The Modality Performed Procedure Step SOP Class (PS3.4 F.7.1).
MPPS = "1.2.840.10008.3.1.2.3.3"


@dataclass(frozen=True)
class Report:
    """What an N-CREATE or N-SET data set says about the step."""

    status: str
    study_uid: str
    accession_number: str
    # SOP instances its Performed Series Sequence references; None when it has no such sequence.
    instances: int | None


def _report(receiver: Receiver, assoc: Association, context_id: int, spool: Spool) -> Report:
    syntax = assoc.contexts[context_id].transfer_syntax
    ds = exchange.data_set(spool, syntax, max_bytes=receiver.settings.dicom_max_request_bytes)
    scheduled = ds.get("ScheduledStepAttributesSequence") or [Dataset()]
    series = ds.get("PerformedSeriesSequence")
    instances = None
    if series is not None:
        # Images and non-image objects (PS3.4 F.7.2.1, Table F.7.2-1), each counted once.
        referenced = {
            str(ref.get("ReferencedSOPInstanceUID", ""))
            for item in series
            for name in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence")
            for ref in item.get(name) or []
        }
        instances = len(referenced - {""})
    return Report(
        status=str(ds.get("PerformedProcedureStepStatus", "")).strip(),
        study_uid=str(scheduled[0].get("StudyInstanceUID", "")).strip(),
        accession_number=str(scheduled[0].get("AccessionNumber", "")).strip(),
        instances=instances,
    )


def _audit_record(assoc: Association, sop_uid: str, study_uid: str, report: Report, created: bool) -> AuditRecord:
    return AuditRecord(
        hop=PROCEDURE_STEP_CREATED if created else PROCEDURE_STEP_UPDATED,
        correlation_id=correlation_id_for_study(study_uid),
        agent_who=f"ae:{assoc.calling_ae}",
        agent_address=assoc.address,
        entity_what=sop_uid,
        detail={"study_uid": study_uid, "status": report.status, "instances": str(report.instances)},
    )


def _read(receiver: Receiver, assoc: Association, context_id: int, spool: Spool) -> Report | Answer:
    try:
        return _report(receiver, assoc, context_id, spool)
    except CannotUnderstand as exc:
        return Answer(PROCESSING_FAILURE, str(exc))
    except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError, OSError) as exc:
        return Answer(PROCESSING_FAILURE, f"data set cannot be parsed: {type(exc).__name__}")


def create(receiver: Receiver, assoc: Association, request: dimse.Command, context_id: int, spool: Spool) -> Answer:
    """N-CREATE: record a step that started (PS3.4 F.7.2.1)."""
    report = _read(receiver, assoc, context_id, spool)
    if isinstance(report, Answer):
        return report
    if report.status != steps.IN_PROGRESS:
        return Answer(INVALID_ATTRIBUTE_VALUE, "Performed Procedure Step Status must be IN PROGRESS")
    if not report.study_uid:
        return Answer(MISSING_ATTRIBUTE, "no Study Instance UID in Scheduled Step Attributes")
    # The SCU may leave the instance UID to us, and then learns it from our response (PS3.7 10.1.5.1.3).
    sop_uid = request.affected_sop_instance_uid or str(generate_uid())
    now = datetime.now(UTC)
    try:
        with session_scope(receiver.engine) as session:
            if steps.step(session, sop_uid=sop_uid) is not None:
                return Answer(DUPLICATE_SOP_INSTANCE, "performed procedure step exists already")
            steps.create_step(
                session,
                sop_uid=sop_uid,
                study_uid=report.study_uid,
                accession_number=report.accession_number,
                instances=report.instances,
                calling_ae=assoc.calling_ae,
                now=now,
            )
            append(session, _audit_record(assoc, sop_uid, report.study_uid, report, created=True))
    except StorageUnavailable as exc:
        log.warning("storage unavailable, answering out of resources: %s", exc)
        return Answer(OUT_OF_RESOURCES, "Storage unavailable, retry later")
    metrics.PROCEDURE_STEPS.labels(steps.IN_PROGRESS).inc()
    return Answer(SUCCESS, instance_uid=sop_uid)


def update(receiver: Receiver, assoc: Association, request: dimse.Command, context_id: int, spool: Spool) -> Answer:
    """N-SET: change a step in progress; when it ends, give its study the count of instances it made (PS3.4 F.7.2.2)."""
    report = _read(receiver, assoc, context_id, spool)
    if isinstance(report, Answer):
        return report
    if report.status and report.status not in (steps.IN_PROGRESS, *steps.FINAL):
        return Answer(INVALID_ATTRIBUTE_VALUE, f"unknown status {report.status[:32]}")
    now = datetime.now(UTC)
    announced = False
    try:
        with session_scope(receiver.engine) as session:
            row = steps.step(session, sop_uid=request.sop_instance_uid)
            if row is None:
                return Answer(NO_SUCH_OBJECT_INSTANCE, "no such performed procedure step")
            foreign = row.calling_ae != assoc.calling_ae
            if foreign:
                pass  # refused below, audited outside this transaction
            elif row.status in steps.FINAL:
                return Answer(NO_LONGER_UPDATABLE, f"performed procedure step is {row.status}")
            else:
                row.status = report.status or row.status
                if report.instances is not None:
                    row.instances = report.instances
                row.updated_at = now
                session.flush()
                append(session, _audit_record(assoc, row.sop_uid, row.study_uid, report, created=False))
                if row.status in steps.FINAL:
                    study = steps.apply_to_study(session, study_uid=row.study_uid)
                    expected = study.expected_instances if study is not None else None
                    if study is not None and study.status == "receiving" and expected == count_instances(session, study_uid=study.study_uid):
                        announce(session, study, reason="count-reached", who=f"ae:{receiver.settings.dicom_ae_title}", now=now)
                        announced = True
    except StorageUnavailable as exc:
        log.warning("storage unavailable, answering out of resources: %s", exc)
        return Answer(OUT_OF_RESOURCES, "Storage unavailable, retry later")
    if foreign:
        # Only the AE that created a step may set it (IHE RAD TF-2 4.7: the modality that sent the
        # N-CREATE sends its N-SETs). PS3.4 F.7.2.2 gives N-SET no status of its own for this;
        # 0110H Processing failure is the one it lists for a refused update, with an Error Comment.
        audit_refusal(receiver, assoc, PROCEDURE_STEP_UPDATED, via="N-SET", reason="performed procedure step created by another AE")
        return Answer(PROCESSING_FAILURE, "performed procedure step was created by another AE")
    metrics.PROCEDURE_STEPS.labels(row.status).inc()
    if announced:
        metrics.STUDIES_READY.labels("count-reached").inc()
    return Answer(SUCCESS)
