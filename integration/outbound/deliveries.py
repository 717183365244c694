"""The deliveries queue as the outbound engine uses it: MLLP, FHIR and webhook messages, one at a time in order.

A message is sent, retried or dead by its destination's answer (mllp.py, http.py); each attempt
is written with its audit record in one transaction: DCM 110106 Export (PS3.15 A.5.3.5) as
"hl7-sent" for HL7 v2 over MLLP and "report-sent" for a report pushed over HTTP. A retried
failure is a minor failure, giving up a serious one, so the trail shows every try.
"""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from audit.log import append
from audit.records import HL7_SENT, REPORT_SENT, AuditRecord, Outcome
from integration import metrics
from integration.errors import DeliveryFailed
from integration.outbound.engine import Queue
from integration.outbound.target import Target
from storage.db import session_scope
from storage.deliveries import mark_delivered, mark_failed
from storage.queues import due as due_rows
from storage.tables.outbound import Delivery


@dataclass(frozen=True)
class DueDelivery:
    """One due delivery as its sender needs it (the rest of it is read again when recorded)."""

    id: int
    attempts: int
    control_id: str  # MSH-10, which the ACK's MSA-2 must name
    payload: str


@dataclass(frozen=True)
class Reply:
    """How a destination answered one message."""

    sent: bool
    code: str = ""  # MSA-1 of the HL7 acknowledgement; "" over HTTP
    error: str = ""
    retriable: bool = True
    reached: bool | None = None


def failed(exc: DeliveryFailed) -> Reply:
    """The reply of an attempt that raised DeliveryFailed."""
    return Reply(sent=False, code=exc.ack_code, error=str(exc), retriable=exc.retriable, reached=exc.reached)


def due(engine: Engine, destination_id: int, limit: int) -> list[DueDelivery]:
    """A destination's due deliveries that have something to send, oldest first."""
    with session_scope(engine) as session:
        return [
            DueDelivery(d.id, d.attempts, d.control_id, d.payload)
            for d in due_rows(session, Delivery, destination_id=destination_id, limit=limit)
            if d.payload
        ]


def _address(target: Target) -> str:
    if target.kind == "mllp":
        return f"{target.host}:{target.port}"
    return target.option("base_url") or target.option("url")


def record(engine: Engine, target: Target, item: DueDelivery, reply: Reply, retry_in: timedelta | None) -> str:
    """Write an attempt's outcome with its audit record in one transaction; returns the delivery's status."""
    with session_scope(engine) as session:
        if reply.sent:
            row = mark_delivered(session, delivery_id=item.id, ack_code=reply.code)
            outcome = Outcome.SUCCESS
        else:
            row = mark_failed(session, delivery_id=item.id, error=reply.error, ack_code=reply.code, retry_in=retry_in)
            outcome = Outcome.MINOR_FAILURE if retry_in is not None else Outcome.SERIOUS_FAILURE
        append(
            session,
            AuditRecord(
                hop=HL7_SENT if target.kind == "mllp" else REPORT_SENT,
                correlation_id=row.correlation_id,
                agent_who="doctorai-outbound",
                agent_address=_address(target),
                entity_what=row.subject,
                outcome=outcome,
                detail={
                    "destination": target.name,
                    "control_id": row.control_id,
                    "ack": reply.code,
                    "attempts": str(row.attempts),
                    "error": reply.error[:200],
                    "retry_in": f"{retry_in.total_seconds():g}" if retry_in is not None else "",
                },
            ),
        )
        return row.status


QUEUE: Queue[DueDelivery, Reply] = Queue(
    noun="delivery", due=due, record=record, outcomes=metrics.DELIVERIES, batch=20, in_order=True
)
