"""/admin/hl7/messages: HL7 v2 messages as received, how each was answered, and what the FHIR
mapping did not use (issue 4: no field is dropped silently). A message's raw segments are read
from object storage on request, and that read is audited (it carries patient data)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from fhir_api.deps import EngineDep
from audit.records import ADMIN_INSPECTION
from fhir_api.admin.access import ActorDep, audit_read
from fhir_api.admin.paging import Page, Paging, sorted_by
from fhir_api.deps import ObjectStoreDep
from fhir_api.errors import NotFound
from integration.hl7v2 import decode
from storage.db import read_scope, session_scope
from storage.hl7_messages import DEFAULT_MESSAGE_ORDER, MESSAGE_SORTS, list_messages, message
from storage.tables.hl7 import Hl7Message

router = APIRouter(prefix="/hl7/messages", tags=["hl7"])


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


class SegmentOut(BaseModel):
    """One segment as received: its name and its fields, numbered from 1 (MSH-1 is the field separator)."""

    name: str
    fields: list[str]


class MessageDetail(MessageOut):
    """One message with its unmapped report (`SEG[n]-field[repetition].component` -> value) and,
    when asked, its segments as received."""

    unmapped: dict[str, str]
    segments: list[SegmentOut] = []


def _segments(raw: bytes) -> list[SegmentOut]:
    """The segments of a raw message, fields split on its field separator (HL7 v2 2.5.4)."""
    text = decode(raw)
    separator = text[3:4] if text.startswith("MSH") else "|"
    found = []
    for line in text.split("\r"):  # decode ends every segment with CR
        if not line.strip():
            continue
        name, *fields = line.split(separator)
        # MSH-1 is the separator itself, so MSH-2 is the first field after it.
        found.append(SegmentOut(name=name, fields=[separator, *fields] if name == "MSH" else fields))
    return found


def _fields(row: Hl7Message) -> dict[str, object]:
    return {
        **{name: getattr(row, name) for name in MessageOut.model_fields if name != "unmapped_fields"},
        "unmapped_fields": len(row.unmapped or {}),
    }


@router.get("")
def search_messages(
    engine: EngineDep,
    paging: Annotated[Paging, Depends(sorted_by(MESSAGE_SORTS, DEFAULT_MESSAGE_ORDER))],
    status: str | None = None,
    sender: Annotated[str | None, Query(description='MSH-3, or "MSH-3^MSH-4"')] = None,
    message_type: Annotated[str | None, Query(alias="type", description='MSH-9.1, or "ADT^A08"')] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    unmapped: Annotated[bool, Query(description="only messages with fields the mapping did not use")] = False,
) -> Page[MessageOut]:
    """Received messages by status, sender, type and time received; newest first unless sorted otherwise."""
    with read_scope(engine) as session:
        rows, total = list_messages(
            session,
            status=status,
            sender=sender,
            message_type=message_type,
            since=since,
            until=until,
            with_unmapped=unmapped,
            order=paging.order,
            limit=paging.limit,
            offset=paging.offset,
        )
        return paging.of([MessageOut.model_validate(_fields(r)) for r in rows], total)


@router.get("/{message_id}")
def read_message(
    engine: EngineDep,
    objects: ObjectStoreDep,
    actor: ActorDep,
    message_id: str,
    segments: Annotated[bool, Query(description="also the message itself, segment by segment (audited)")] = False,
) -> MessageDetail:
    """One message with its unmapped report and, with `segments`, the message as received.

    Reading it is audited either way: the unmapped report holds field values of the message (names,
    dates, notes), as the segments do.
    """
    with read_scope(engine) as session:
        row = message(session, message_id=message_id)
        if row is None:
            raise NotFound(f"no HL7 message {message_id}")
        detail = MessageDetail.model_validate({**_fields(row), "unmapped": dict(row.unmapped or {})})
    if segments and detail.object_key:
        detail.segments = _segments(objects.get_bytes(detail.object_key))
    with session_scope(engine) as session:
        read = {
            "hl7_message": detail.id,
            "control_id": detail.control_id[:64],
            "disclosed": "unmapped fields, segments" if detail.segments else "unmapped fields",
        }
        audit_read(session, actor, hop=ADMIN_INSPECTION, correlation_id=detail.correlation_id, detail=read)
    return detail
