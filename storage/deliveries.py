"""Destinations and outbound deliveries: a queue per destination, in the database.

A delivery is due when pending and its `next_attempt_at` has passed; the sender takes each
destination's due deliveries in id order, so one destination's failures never hold up another.
"""

from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.tables.outbound import Delivery, Destination, Forward

# The two outbound queue tables share their scheduling columns (status, attempts, next_attempt_at).
Queued = TypeVar("Queued", Delivery, Forward)


class DestinationExists(ValueError):
    """A destination with this name is already configured."""


class DestinationInUse(ValueError):
    """The destination has deliveries (their history would point nowhere); disable it instead."""


class DeliveryNotFound(LookupError):
    """No delivery has this id."""


class DeliveryNotDead(ValueError):
    """Only a dead delivery can be retried: a pending one retries by itself, a sent one is done."""


def add_destination(
    session: Session,
    *,
    name: str,
    kind: str,
    host: str,
    port: int,
    tls: bool = False,
    enabled: bool = True,
    options: dict[str, str] | None = None,
) -> Destination:
    """Configure a new destination (enabled unless told otherwise)."""
    if session.scalar(select(Destination.id).where(Destination.name == name)) is not None:
        raise DestinationExists(name)
    row = Destination(
        name=name,
        kind=kind,
        host=host,
        port=port,
        tls=tls,
        enabled=enabled,
        options=dict(options or {}),
        created_at=datetime.now(UTC),
    )
    session.add(row)
    session.flush()
    return row


def destination_by_name(session: Session, *, name: str) -> Destination | None:
    """The destination called `name`, if configured."""
    return session.scalar(select(Destination).where(Destination.name == name))


def destinations(session: Session, *, kind: str | None = None, enabled_only: bool = False) -> list[Destination]:
    """Configured destinations, by id."""
    stmt = select(Destination).order_by(Destination.id)
    if kind is not None:
        stmt = stmt.where(Destination.kind == kind)
    if enabled_only:
        stmt = stmt.where(Destination.enabled.is_(True))
    return list(session.scalars(stmt))


def get_destination(session: Session, *, destination_id: int) -> Destination | None:
    """One destination, or None."""
    return session.get(Destination, destination_id)


def update_destination(
    session: Session,
    *,
    row: Destination,
    name: str,
    kind: str,
    host: str,
    port: int,
    tls: bool,
    enabled: bool,
    options: dict[str, str],
) -> Destination:
    """Replace a destination's settings; its queued deliveries stay queued for it."""
    clash = select(Destination.id).where(Destination.name == name, Destination.id != row.id)
    if session.scalar(clash) is not None:
        raise DestinationExists(name)
    row.name, row.kind, row.host, row.port, row.tls, row.enabled = name, kind, host, port, tls, enabled
    row.options = dict(options)
    session.flush()
    return row


def delete_destination(session: Session, *, row: Destination) -> None:
    """Remove a destination that has no deliveries; one with history is disabled instead (DestinationInUse)."""
    used = session.scalar(select(Delivery.id).where(Delivery.destination_id == row.id).limit(1))
    if used is not None:
        raise DestinationInUse(f"destination {row.name} has deliveries; disable it instead")
    session.delete(row)
    session.flush()


def queue_delivery(
    session: Session, *, destination_id: int, correlation_id: str, subject: str, control_id: str, payload: str
) -> Delivery | None:
    """Queue `payload` for a destination; None when this subject was queued there already (a replay)."""
    existing = session.scalar(
        select(Delivery.id).where(Delivery.destination_id == destination_id, Delivery.subject == subject)
    )
    if existing is not None:
        return None
    now = datetime.now(UTC)
    row = Delivery(
        destination_id=destination_id,
        correlation_id=correlation_id,
        subject=subject,
        control_id=control_id,
        payload=payload,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        last_error="",
        ack_code="",
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def due(
    session: Session, table: type[Queued], *, destination_id: int, limit: int, now: datetime | None = None
) -> list[Queued]:
    """A destination's pending rows of a queue table (deliveries, forwards) whose time has come, oldest first."""
    stmt = (
        select(table)
        .where(
            table.destination_id == destination_id,
            table.status == "pending",
            table.next_attempt_at <= (now or datetime.now(UTC)),
        )
        .order_by(table.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def due_deliveries(session: Session, *, destination_id: int, limit: int, now: datetime | None = None) -> list[Delivery]:
    """A destination's pending deliveries whose time has come, oldest first."""
    return due(session, Delivery, destination_id=destination_id, limit=limit, now=now)


def mark_delivered(session: Session, *, delivery_id: int, ack_code: str) -> Delivery:
    """The destination acknowledged the delivery."""
    row = session.get_one(Delivery, delivery_id)
    row.status = "sent"
    row.attempts += 1
    row.ack_code = ack_code
    row.last_error = ""
    row.finished_at = datetime.now(UTC)
    return row


def mark_failed(
    session: Session, *, delivery_id: int, error: str, ack_code: str, retry_in: timedelta | None
) -> Delivery:
    """An attempt failed: try again after `retry_in`, or dead-letter the delivery when it is None."""
    row = session.get_one(Delivery, delivery_id)
    now = datetime.now(UTC)
    row.attempts += 1
    row.ack_code = ack_code
    row.last_error = error[:2000]
    if retry_in is None:
        row.status = "dead"
        row.finished_at = now
    else:
        row.next_attempt_at = now + retry_in
    return row


def deliveries(
    session: Session,
    *,
    status: str | None = None,
    destination_id: int | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[Delivery]:
    """Deliveries (optionally of one status, to one destination), newest first: what the admin sees."""
    stmt = select(Delivery).order_by(Delivery.id.desc())
    if status is not None:
        stmt = stmt.where(Delivery.status == status)
    if destination_id is not None:
        stmt = stmt.where(Delivery.destination_id == destination_id)
    return list(session.scalars(stmt.limit(limit).offset(offset)))


def retry_delivery(session: Session, *, delivery_id: int) -> Delivery:
    """Make a dead delivery pending again, due now, with a fresh count of attempts."""
    row = session.get(Delivery, delivery_id)
    if row is None:
        raise DeliveryNotFound(delivery_id)
    if row.status != "dead":
        raise DeliveryNotDead(f"delivery {delivery_id} is {row.status}, not dead")
    return requeue(row)


def requeue(row: Queued) -> Queued:
    """A dead queue row pending again, due now, with a fresh count of attempts."""
    row.status = "pending"
    row.attempts = 0
    row.next_attempt_at = datetime.now(UTC)
    row.finished_at = None
    return row
