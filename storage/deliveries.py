"""Outbound deliveries: messages (ORU^R01, application ACKs, FHIR transactions, webhook events) queued per destination.

One row per message and destination, sent until acknowledged or dead; the scheduling (due,
attempts, retry of a dead one) is storage.queues'.
"""

from datetime import timedelta

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from storage.paging import Columns
from storage.queues import close_attempt, enqueue
from storage.tables.outbound import Delivery


def queue_delivery(
    session: Session, *, destination_id: int, correlation_id: str, subject: str, control_id: str, payload: str
) -> Delivery | None:
    """Queue `payload` for a destination; None when this subject was queued there already (a replay)."""
    existing = session.scalar(
        select(Delivery.id).where(Delivery.destination_id == destination_id, Delivery.subject == subject)
    )
    if existing is not None:
        return None
    row = Delivery(
        destination_id=destination_id,
        correlation_id=correlation_id,
        subject=subject,
        control_id=control_id,
        payload=payload,
        ack_code="",
    )
    return enqueue(session, row)


def mark_delivered(session: Session, *, delivery_id: int, ack_code: str) -> Delivery:
    """The destination acknowledged the delivery."""
    row = session.get_one(Delivery, delivery_id)
    row.ack_code = ack_code
    return close_attempt(row, error=None, retry_in=None)


def mark_failed(
    session: Session, *, delivery_id: int, error: str, ack_code: str, retry_in: timedelta | None
) -> Delivery:
    """An attempt failed: try again after `retry_in`, or dead-letter the delivery when it is None."""
    row = session.get_one(Delivery, delivery_id)
    row.ack_code = ack_code
    return close_attempt(row, error=error, retry_in=retry_in)


def delivery_query(
    *, status: str | None = None, destination_id: int | None = None, correlation_id: str | None = None
) -> Select[Delivery]:
    """The deliveries of one status, to one destination, of one study (its correlation id); None: any."""
    stmt = select(Delivery)
    if status is not None:
        stmt = stmt.where(Delivery.status == status)
    if destination_id is not None:
        stmt = stmt.where(Delivery.destination_id == destination_id)
    if correlation_id is not None:
        stmt = stmt.where(Delivery.correlation_id == correlation_id)
    return stmt


# The columns a list of deliveries may be sorted on (the admin API pages them with storage.paging).
DELIVERY_SORTS: Columns = {
    "id": Delivery.id,
    "created": Delivery.created_at,
    "finished": Delivery.finished_at,
    "status": Delivery.status,
    "attempts": Delivery.attempts,
    "destination": Delivery.destination_id,
}


def deliveries(
    session: Session,
    *,
    status: str | None = None,
    destination_id: int | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Delivery]:
    """Deliveries (optionally of one status, to one destination), newest first."""
    stmt = delivery_query(status=status, destination_id=destination_id).order_by(Delivery.id.desc())
    return list(session.scalars(stmt.limit(limit).offset(offset)))
