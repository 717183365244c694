"""Study completeness (DESIGN.md 5.4): a study is ready after its calling AE's quiet period, or as
soon as the number of instances it announced is stored. Each declaration is a new revision.
"""

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit.log import append
from audit.records import STUDY_READY, AuditRecord
from dicom_listener import metrics
from integration import topics
from integration.messages import InstanceRef, StudyReady
from storage.db import session_scope
from storage.errors import StorageUnavailable
from storage.outbox import add_event
from storage.queries import count_receiving, studies_quiet_since, study_instances
from storage.tables import Study

log = logging.getLogger(__name__)

ReadyReason = Literal["quiet-period", "count-reached", "manual-release"]


def announce(session: Session, study: Study, *, reason: ReadyReason, ae_title: str, now: datetime) -> StudyReady:
    """Mark `study` ready at its next revision and queue `study.ready` in the caller's transaction."""
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
            agent_who=f"ae:{ae_title}",
            entity_what=study.study_uid,
            detail={"revision": str(study.revision), "reason": reason, "instances": str(len(rows))},
        ),
    )
    return message


def declare_ready(
    engine: Engine,
    *,
    quiet_period: float,
    ae_title: str,
    now: datetime | None = None,
    per_ae: Mapping[str, float] | None = None,
) -> list[StudyReady]:
    """Mark quiet studies ready at a new revision and queue `study.ready` for each, in one transaction.

    `quiet_period` applies to every calling AE not named in `per_ae`. Safe to run in several
    processes at once: rows are claimed with FOR UPDATE SKIP LOCKED on PostgreSQL, and SQLite
    transactions hold the write lock.
    """
    now = now or datetime.now(UTC)
    per_ae = per_ae or {}
    shortest = min([quiet_period, *per_ae.values()])
    announced: list[StudyReady] = []
    with session_scope(engine) as session:
        for study in studies_quiet_since(session, before=now - timedelta(seconds=shortest)):
            wait = per_ae.get(study.calling_ae, quiet_period)
            if study.last_received_at < now - timedelta(seconds=wait):
                announced.append(announce(session, study, reason="quiet-period", ae_title=ae_title, now=now))
        metrics.STUDIES_WAITING.set(count_receiving(session))
    for message in announced:
        metrics.STUDIES_READY.labels(message.reason).inc()
    return announced


def run(
    engine: Engine,
    *,
    quiet_period: float,
    ae_title: str,
    stop: threading.Event,
    per_ae: Callable[[], Mapping[str, float]],
) -> None:
    """Sweep for quiet studies until `stop` is set; a database outage only delays the sweep."""
    interval = max(0.05, min(1.0, quiet_period / 4))
    while not stop.wait(interval):
        try:
            periods = per_ae()
            declare_ready(engine, quiet_period=quiet_period, ae_title=ae_title, per_ae=periods)
        except StorageUnavailable as exc:
            log.warning("quiet-period sweep postponed: %s", exc)
            continue
        # Sweep often enough for the shortest quiet period any peer has.
        interval = max(0.05, min(1.0, min([quiet_period, *periods.values()]) / 4))
