"""Order <-> study correlation at routing time (issue 4): a study whose HL7 order was cancelled is not routed."""

import logging
from datetime import UTC, datetime

from sqlalchemy import Engine

from audit.log import append
from audit.records import STUDY_ROUTED, AuditRecord
from integration.messages import StudyReady
from storage.db import session_scope
from storage.orders import CANCELLED, order_for_accession

log = logging.getLogger(__name__)


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
        append(
            session,
            AuditRecord(
                hop=STUDY_ROUTED,
                correlation_id=study.correlation_id,
                agent_who="doctorai-router",
                entity_what=study.study_uid,
                detail={
                    "revision": str(study.revision),
                    "model": "",
                    "reason": "order cancelled",
                    "service_request": order.service_request_id,
                    "order_status": order.status,
                },
            ),
        )
    log.info("study %s not routed: its order %s is cancelled", study.correlation_id, order.service_request_id)
    return True
