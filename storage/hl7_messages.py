"""Queries on received HL7 v2 messages: duplicates, rows, and the per-message unmapped report."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import String, cast, select
from sqlalchemy.orm import Session

from storage.paging import Columns, Order, page
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


# The columns a list of messages may be sorted on.
MESSAGE_SORTS: Columns = {
    "received": Hl7Message.received_at,
    "sender": Hl7Message.sender_application,
    "type": Hl7Message.message_type,
    "status": Hl7Message.status,
    "control_id": Hl7Message.control_id,
}
DEFAULT_MESSAGE_ORDER = (Order("received", descending=True),)


def list_messages(
    session: Session,
    *,
    status: str | None = None,
    sender: str | None = None,
    message_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    with_unmapped: bool = False,
    order: Sequence[Order] = DEFAULT_MESSAGE_ORDER,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[Hl7Message], int]:
    """Received messages, newest first unless ordered otherwise, and how many match in all.

    `sender` is MSH-3, or "MSH-3^MSH-4"; `message_type` is MSH-9.1 or "MSH-9.1^MSH-9.2"; `since`
    and `until` bound the time received (inclusive); `with_unmapped` keeps messages whose unmapped
    report is not empty.
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
    if until is not None:
        stmt = stmt.where(Hl7Message.received_at <= until)
    if with_unmapped:
        # The report is JSON written by json.dumps: an empty one is the text "{}" on SQLite and PostgreSQL.
        stmt = stmt.where(cast(Hl7Message.unmapped, String) != "{}")
    return page(session, stmt, columns=MESSAGE_SORTS, order=order, tiebreak=[Hl7Message.id], limit=limit, offset=offset)
