"""Study completeness: a study is ready once no instance arrived for the quiet period (DESIGN.md 5.4)."""

import logging
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from audit.log import append
from audit.records import STUDY_READY, AuditRecord
from dicom_listener import metrics
from integration import topics
from integration.messages import InstanceRef, StudyReady
from storage.db import session_scope
from storage.errors import StorageUnavailable
from storage.outbox import add_event
from storage.queries import studies_quiet_since, study_instances

log = logging.getLogger(__name__)


def declare_ready(engine: Engine, *, quiet_period: float, ae_title: str, now: datetime | None = None) -> list[StudyReady]:
    """Mark quiet studies ready at a new revision and queue `study.ready` for each, in one transaction."""
    now = now or datetime.now(UTC)
    announced: list[StudyReady] = []
    with session_scope(engine) as session:
        for study in studies_quiet_since(session, before=now - timedelta(seconds=quiet_period)):
            study.revision += 1
            study.status = "ready"
            study.ready_reason = "quiet-period"
            study.ready_at = now
            rows = study_instances(session, study_uid=study.study_uid)
            message = StudyReady(
                correlation_id=study.correlation_id,
                study_uid=study.study_uid,
                revision=study.revision,
                reason="quiet-period",
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
                    detail={"revision": str(study.revision), "reason": "quiet-period", "instances": str(len(rows))},
                ),
            )
            announced.append(message)
    for message in announced:
        metrics.STUDIES_READY.labels(message.reason).inc()
    return announced


def run(engine: Engine, *, quiet_period: float, ae_title: str, stop: threading.Event) -> None:
    """Sweep for quiet studies until `stop` is set; a database outage only delays the sweep."""
    interval = max(0.05, min(1.0, quiet_period / 4))
    while not stop.wait(interval):
        try:
            declare_ready(engine, quiet_period=quiet_period, ae_title=ae_title)
        except StorageUnavailable as exc:
            log.warning("quiet-period sweep postponed: %s", exc)
