"""The router: turns `study.ready` into inference jobs, through the outbox, exactly once per input."""

import logging
import uuid
from collections.abc import Sequence

from sqlalchemy import Engine

from audit.log import append
from audit.records import STUDY_ROUTED, AuditRecord
from integration import topics
from integration.messages import InferenceRequest, StudyReady
from integration.orders import skip_cancelled
from integration.rules import Rule, evaluate
from storage.db import session_scope
from storage.outbox import add_event
from storage.queries import create_job

log = logging.getLogger(__name__)


def route(engine: Engine, rules: Sequence[Rule], study: StudyReady) -> list[InferenceRequest]:
    """Create the jobs the rules ask for and queue their requests; a replayed event creates nothing new."""
    if skip_cancelled(engine, study):  # issue 4: an order cancelled over HL7 stops the study here
        return []
    plan = evaluate(rules, study)
    queued: list[InferenceRequest] = []
    with session_scope(engine) as session:
        for action, inputs in plan.items():
            job = create_job(
                session,
                job_id=str(uuid.uuid4()),
                study_uid=study.study_uid,
                revision=study.revision,
                model=action.model,
                model_version=action.version,
            )
            if job is None:
                continue  # this study revision already has its job: the event was delivered again
            request = InferenceRequest(
                correlation_id=study.correlation_id,
                job_id=job.job_id,
                study_uid=study.study_uid,
                revision=study.revision,
                model=action.model,
                model_version=action.version,
                patient_id=study.patient_id,
                inputs=inputs,
                last_received_at=study.last_received_at,
            )
            add_event(session, topic=topics.inference_request(action.model), key=study.study_uid, message=request)
            append(
                session,
                AuditRecord(
                    hop=STUDY_ROUTED,
                    correlation_id=study.correlation_id,
                    agent_who="doctorai-router",
                    entity_what=study.study_uid,
                    detail={
                        "revision": str(study.revision),
                        "model": action.model,
                        "model_version": action.version,
                        "job_id": job.job_id,
                        "inputs": str(len(inputs)),
                    },
                ),
            )
            queued.append(request)
        if not plan:
            append(
                session,
                AuditRecord(
                    hop=STUDY_ROUTED,
                    correlation_id=study.correlation_id,
                    agent_who="doctorai-router",
                    entity_what=study.study_uid,
                    detail={"revision": str(study.revision), "model": "", "reason": "no rule matched"},
                ),
            )
    return queued
