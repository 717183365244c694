"""Declaring a study ready (DESIGN.md 5.4): each declaration is a new revision, announced as `study.ready`.

The DICOM listener announces studies when they are quiet or complete; an admin releases a held
study or asks for one to be routed again, or forwards it to a DICOM destination by hand. Either way the revision, the outbox row and the audit
record commit in one transaction.
"""

from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit.log import append
from audit.records import STUDY_READY, AuditRecord
from integration import topics
from integration.errors import StudyNotFound, StudyStateConflict
from integration.messages import InstanceRef, StudyReady
from storage.db import session_scope
from storage.destinations import get_destination
from storage.forwards import ForwardItem, queue_forward
from storage.outbox import add_event
from storage.instances import study_instances
from storage.tables.index import Study
from storage.tables.outbound import Forward

ReadyReason = Literal["quiet-period", "count-reached", "manual-release", "reprocess"]


def announce(session: Session, study: Study, *, reason: ReadyReason, who: str, now: datetime) -> StudyReady:
    """Mark `study` ready at its next revision and queue `study.ready` in the caller's transaction.

    `who` is the audit agent: "ae:<our AE title>" for the listener, the token subject for an admin.
    """
    study.revision += 1
    study.status = "ready"
    study.ready_reason = reason
    study.ready_at = now
    rows = study_instances(session, study_uid=study.study_uid)
    message = StudyReady(
        correlation_id=study.correlation_id,
        study_uid=study.study_uid,
        revision=study.revision,
        reason=reason,
        patient_id=study.patient_id,
        accession_number=study.accession_number,
        calling_ae=study.calling_ae,
        last_received_at=study.last_received_at,
        instances=[
            InstanceRef(
                series_uid=series.series_uid,
                sop_uid=instance.sop_uid,
                sop_class_uid=instance.sop_class_uid,
                modality=series.modality,
                body_part=series.body_part,
                instance_number=instance.instance_number,
                object_key=instance.object_key,
            )
            for instance, series in rows
        ],
    )
    add_event(session, topic=topics.STUDY_READY, key=study.study_uid, message=message)
    append(
        session,
        AuditRecord(
            hop=STUDY_READY,
            correlation_id=study.correlation_id,
            agent_who=who,
            entity_what=study.study_uid,
            detail={"revision": str(study.revision), "reason": reason, "instances": str(len(rows))},
        ),
    )
    return message


def _locked(session: Session, study_uid: str) -> Study:
    study = session.get(Study, study_uid, with_for_update=True)
    if study is None:
        raise StudyNotFound(f"study {study_uid} is not stored")
    return study


def release(session: Session, *, study_uid: str, who: str) -> StudyReady:
    """Announce a held study, or one still receiving, with reason "manual-release".

    A held study is routed again without hold rules; a receiving one is declared ready now instead
    of after its quiet period, when an operator knows it is complete (issue 3). Instances that
    arrive later open a new revision as usual.
    """
    study = _locked(session, study_uid)
    if study.status not in ("held", "receiving"):
        raise StudyStateConflict(f"study {study_uid} is {study.status}: only held or receiving studies are released")
    return announce(session, study, reason="manual-release", who=who, now=datetime.now(UTC))


def reprocess(session: Session, *, study_uid: str, who: str) -> StudyReady:
    """Announce a study again (new revision, reason "reprocess") so routing runs on what is stored now.

    A study still receiving is refused: its quiet period will announce it anyway.
    """
    study = _locked(session, study_uid)
    if study.status == "receiving":
        raise StudyStateConflict(f"study {study_uid} is still receiving; it is announced when it is quiet")
    return announce(session, study, reason="reprocess", who=who, now=datetime.now(UTC))


def release_study(engine: Engine, *, study_uid: str, who: str) -> StudyReady:
    """`release` in a transaction of its own."""
    with session_scope(engine) as session:
        return release(session, study_uid=study_uid, who=who)


def reprocess_study(engine: Engine, *, study_uid: str, who: str) -> StudyReady:
    """`reprocess` in a transaction of its own."""
    with session_scope(engine) as session:
        return reprocess(session, study_uid=study_uid, who=who)


def forward(session: Session, *, study_uid: str, destination_id: int, who: str) -> Forward:
    """Queue a stored study's current revision for a DICOM destination, as a person asked (rule
    "manual:<who>"); StudyStateConflict when the destination takes no studies or has it queued already."""
    study = session.get(Study, study_uid)
    if study is None:
        raise StudyNotFound(f"study {study_uid} is not stored")
    destination = get_destination(session, destination_id=destination_id)
    if destination is None or destination.kind != "dicom" or not destination.enabled:
        raise StudyStateConflict(f"destination {destination_id} is not an enabled DICOM destination")
    items = [
        ForwardItem(
            sop_uid=i.sop_uid,
            object_key=i.object_key,
            sop_class_uid=i.sop_class_uid,
            transfer_syntax_uid=i.transfer_syntax_uid,
        )
        for i, _ in study_instances(session, study_uid=study_uid)
    ]
    queued = queue_forward(
        session,
        destination_id=destination_id,
        study_uid=study_uid,
        revision=study.revision,
        correlation_id=study.correlation_id,
        rule=f"manual:{who}"[:64],
        instances=items,
    )
    if queued is None:
        raise StudyStateConflict(
            f"revision {study.revision} of {study_uid} is queued for {destination.name} already; retry that forward instead"
        )
    return queued
