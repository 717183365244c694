"""Queries on received HL7 v2 messages: duplicates, rows, and the per-message unmapped report."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.tables import Hl7Message


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
