"""/admin/hl7/messages: HL7 v2 messages as received, how each was answered, and what the FHIR
mapping did not use (issue 4: no field is dropped silently)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from fhir_api.deps import EngineDep
from fhir_api.errors import NotFound
from storage.db import session_scope
from storage.hl7_messages import list_messages, message
from storage.tables.hl7 import Hl7Message

router = APIRouter(prefix="/hl7/messages", tags=["hl7"])
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0)]


class MessageOut(BaseModel):
    """One received message's envelope and outcome; its raw bytes stay in object storage."""

    id: str
    correlation_id: str
    sender_application: str  # MSH-3
    sender_facility: str  # MSH-4
    source_address: str
    control_id: str  # MSH-10
    message_type: str  # MSH-9.1
    trigger_event: str  # MSH-9.2
    version: str  # MSH-12
    received_at: datetime
    object_key: str
    size: int
    status: str  # accepted | error | rejected
    ack_code: str
    error: str
    unmapped_fields: int


class MessageDetail(MessageOut):
    """One message with its unmapped report: `SEG[n]-field[repetition].component` -> value."""

    unmapped: dict[str, str]


class MessagePage(BaseModel):
    """One page of messages and how many match in all."""

    total: int
    items: list[MessageOut]


def _fields(row: Hl7Message) -> dict[str, object]:
    return {
        **{name: getattr(row, name) for name in MessageOut.model_fields if name != "unmapped_fields"},
        "unmapped_fields": len(row.unmapped or {}),
    }


@router.get("")
def search_messages(
    engine: EngineDep,
    status: str | None = None,
    sender: Annotated[str | None, Query(description='MSH-3, or "MSH-3^MSH-4"')] = None,
    message_type: Annotated[str | None, Query(alias="type", description='MSH-9.1, or "ADT^A08"')] = None,
    since: datetime | None = None,
    unmapped: Annotated[bool, Query(description="only messages with fields the mapping did not use")] = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> MessagePage:
    """Received messages by status, sender, type and time; newest first."""
    with session_scope(engine) as session:
        rows, total = list_messages(
            session,
            status=status,
            sender=sender,
            message_type=message_type,
            since=since,
            with_unmapped=unmapped,
            limit=limit,
            offset=offset,
        )
        return MessagePage(total=total, items=[MessageOut.model_validate(_fields(r)) for r in rows])


@router.get("/{message_id}")
def read_message(engine: EngineDep, message_id: str) -> MessageDetail:
    """One message with its unmapped report."""
    with session_scope(engine) as session:
        row = message(session, message_id=message_id)
        if row is None:
            raise NotFound(f"no HL7 message {message_id}")
        return MessageDetail.model_validate({**_fields(row), "unmapped": dict(row.unmapped or {})})
