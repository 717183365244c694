"""The forwards queue as the outbound engine uses it: study revisions (or a job's SR) for DICOM destinations.

An attempt sends the instances of a forward not yet accepted (dicom.py). Instances answered with
success or a warning are done; the others are sent again on the next attempt. The forward is
"sent" once every instance was accepted. Each attempt is written, per instance and for the
forward, with its audit record in one transaction: DCM 110106 Export (PS3.15 A.5.3.5) as
"dicom-sent"; a retried attempt is audited too (minor failure), so the trail shows every try.
"""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from audit.log import append
from audit.records import DICOM_SENT, AuditRecord, Outcome
from integration import metrics
from integration.outbound.engine import Queue
from integration.outbound.target import Target
from storage.db import session_scope
from storage.forwards import ForwardItem, finish_attempt, instance_counts, mark_instance, unsent_instances
from storage.queues import due as due_rows
from storage.tables.outbound import Forward


@dataclass(frozen=True)
class DueForward:
    """One due forward and the instances it still has to send (the rest of it is read again when recorded)."""

    id: int
    attempts: int
    items: tuple[ForwardItem, ...]


@dataclass(frozen=True)
class Stored:
    """How one instance's C-STORE ended: `status` is the response's (PS3.7 9.1.1.1.9), None without one."""

    sop_uid: str
    sent: bool
    status: int | None
    error: str = ""


@dataclass(frozen=True)
class Attempt:
    """Every instance's outcome, and why an association failed if one did (empty when none did)."""

    results: list[Stored]
    associated: bool
    association_error: str

    @property
    def sent(self) -> bool:
        """Every instance was accepted."""
        return all(r.sent for r in self.results)

    @property
    def retriable(self) -> bool:
        """Always: an instance refused now (PS3.4 B.2.3 A7xx, a peer that is down) may be taken later."""
        return True

    @property
    def reached(self) -> bool | None:
        """False when an association failed, True when one was made, None when none was tried."""
        if self.association_error:
            return False
        return True if self.associated else None

    @property
    def error(self) -> str:
        """How many instances were not accepted and why (the first reason)."""
        refused = [r for r in self.results if not r.sent]
        reason = self.association_error or next((r.error for r in refused), "")
        return f"{len(refused)} of {len(self.results)} instances not accepted: {reason}"


def due(engine: Engine, destination_id: int, limit: int) -> list[DueForward]:
    """A destination's due forwards with the instances each still has to send, oldest first."""
    with session_scope(engine) as session:
        out = []
        for f in due_rows(session, Forward, destination_id=destination_id, limit=limit):
            items = tuple(
                ForwardItem(i.sop_uid, i.object_key, i.sop_class_uid, i.transfer_syntax_uid)
                for i in unsent_instances(session, forward_id=f.id)
            )
            out.append(DueForward(f.id, f.attempts, items))
        return out


def record(engine: Engine, target: Target, forward: DueForward, attempt: Attempt, retry_in: timedelta | None) -> str:
    """Write an attempt's outcome and its audit record in one transaction; returns the forward's status."""
    with session_scope(engine) as session:
        for result in attempt.results:
            mark_instance(
                session,
                forward_id=forward.id,
                sop_uid=result.sop_uid,
                sent=result.sent,
                dicom_status=result.status,
                error=result.error,
            )
        errors = [r.error for r in attempt.results if not r.sent]
        row = finish_attempt(session, forward_id=forward.id, error=errors[0] if errors else "", retry_in=retry_in)
        counts = instance_counts(session, forward_id=forward.id)
        outcome = {"sent": Outcome.SUCCESS, "dead": Outcome.SERIOUS_FAILURE}.get(row.status, Outcome.MINOR_FAILURE)
        append(
            session,
            AuditRecord(
                hop=DICOM_SENT,
                correlation_id=row.correlation_id,
                agent_who="doctorai-forward",
                agent_address=f"{target.option('ae_title')}@{target.host}:{target.port}",
                entity_what=f"study/{row.study_uid}",
                outcome=outcome,
                detail={
                    "destination": target.name,
                    "forward_id": str(row.id),
                    "revision": str(row.revision),
                    "rule": row.rule,
                    "kind": row.kind,
                    "job_id": row.job_id,
                    "status": row.status,
                    "attempts": str(row.attempts),
                    "instances_sent": str(counts["sent"]),
                    "instances_failed": str(counts["failed"] + counts["pending"]),
                    "error": row.last_error[:200],
                },
            ),
        )
        status = row.status
    metrics.FORWARDED_INSTANCES.labels(target.name).inc(sum(r.sent for r in attempt.results))
    return status


QUEUE: Queue[DueForward, Attempt] = Queue(
    noun="forward", due=due, record=record, outcomes=metrics.FORWARDS, batch=10, in_order=False
)
