"""Queries on received HL7 v2 messages: duplicates, rows, and the per-message unmapped report."""

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.tables.hl7 import Hl7Message


def dedupe_key(application: str, facility: str, control_id: str) -> str:
    """The key two sends of one message share: sender (MSH-3, MSH-4) and control id (MSH-10)."""
    return f"{application}|{facility}|{control_id}"


def accepted_message(session: Session, *, key: str) -> Hl7Message | None:
    """The message already accepted under this dedupe key, if any."""
    return session.scalar(select(Hl7Message).where(Hl7Message.dedupe_key == key))


def message(session: Session, *, message_id: str) -> Hl7Message | None:
    """One message row by id."""
    return session.get(Hl7Message, message_id)


def unmapped_report(session: Session, *, message_id: str) -> dict[str, str]:
    """Every populated field of a message that the FHIR mapping did not use (path -> value).

    Raises KeyError when no such message was received.
    """
    row = session.get(Hl7Message, message_id)
    if row is None:
        raise KeyError(message_id)
    return dict(row.unmapped)


def list_messages(
    session: Session,
    *,
    status: str | None = None,
    sender: str | None = None,
    message_type: str | None = None,
    since: datetime | None = None,
    with_unmapped: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Hl7Message], int]:
    """Received messages, newest first, and how many match in all.

    `sender` is MSH-3, or "MSH-3^MSH-4"; `message_type` is MSH-9.1 or "MSH-9.1^MSH-9.2";
    `with_unmapped` keeps messages whose unmapped report is not empty.
    """
    stmt = select(Hl7Message)
    if status:
        stmt = stmt.where(Hl7Message.status == status)
    if sender:
        application, _, facility = sender.partition("^")
        stmt = stmt.where(Hl7Message.sender_application == application)
        if facility:
            stmt = stmt.where(Hl7Message.sender_facility == facility)
    if message_type:
        kind, _, trigger = message_type.upper().partition("^")
        stmt = stmt.where(Hl7Message.message_type == kind)
        if trigger:
            stmt = stmt.where(Hl7Message.trigger_event == trigger)
    if since is not None:
        stmt = stmt.where(Hl7Message.received_at >= since)
    rows = list(session.scalars(stmt.order_by(Hl7Message.received_at.desc(), Hl7Message.id)))
    if with_unmapped:
        # The report is JSON: filtered here rather than with each database's JSON operators.
        rows = [r for r in rows if r.unmapped]
        return rows[offset : offset + limit], len(rows)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    return rows[offset : offset + limit], total
