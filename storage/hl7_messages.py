"""Queries on received HL7 v2 messages: duplicates, rows, and the per-message unmapped report."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Select, String, cast, select
from sqlalchemy.orm import Session

from storage.errors import AmbiguousMessage, MessageNotFound
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


def find_message(session: Session, *, ref: str, sender: str = "") -> Hl7Message:
    """The message `ref` names: our message id, else its control id (MSH-10) from `sender`
    ("MSH-3" or "MSH-3^MSH-4"; needed only when several senders used that control id).

    A control id a sender used more than once (a message sent again) names its newest message.
    Raises MessageNotFound, or AmbiguousMessage naming the senders.
    """
    row = session.get(Hl7Message, ref)
    if row is not None:
        return row
    stmt = _sent_by(select(Hl7Message).where(Hl7Message.control_id == ref), sender)
    rows = list(session.scalars(stmt.order_by(Hl7Message.received_at.desc(), Hl7Message.id)))
    if not rows:
        raise MessageNotFound(f"no HL7 message with id or control id {ref}" + (f" from {sender}" if sender else ""))
    senders = list(dict.fromkeys(f"{r.sender_application}^{r.sender_facility}" for r in rows))
    if len(senders) > 1:
        raise AmbiguousMessage(f"control id {ref} came from {', '.join(senders)}: name the sender")
    return rows[0]


def unmapped_report(session: Session, *, message_id: str, sender: str = "") -> dict[str, str]:
    """Every populated field of a message that the FHIR mapping did not use (path -> value).

    `message_id` is our id or the control id (find_message); raises MessageNotFound, AmbiguousMessage.
    """
    return dict(find_message(session, ref=message_id, sender=sender).unmapped)


def _sent_by(stmt: Select[Hl7Message], sender: str | None) -> Select[Hl7Message]:
    """Only messages of `sender`: MSH-3, or "MSH-3^MSH-4"."""
    if not sender:
        return stmt
    application, _, facility = sender.partition("^")
    stmt = stmt.where(Hl7Message.sender_application == application)
    return stmt.where(Hl7Message.sender_facility == facility) if facility else stmt


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
    stmt = _sent_by(stmt, sender)
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
