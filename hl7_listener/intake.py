"""Taking one HL7 v2 message in: stored before it is acknowledged, mapped once, audited (DESIGN.md 5.1).

Two steps. `receive` reads and checks the header, maps to FHIR (pure) and puts the raw bytes in
object storage. `record` then writes the message in the caller's transaction: it either finds
the message already accepted (same MSH-3/4/10: a duplicate, answered from its row and audited,
not processed again) or adds the message row, the FHIR resources, the orders, the outbox event
and the audit record (hl7_listener.commits commits several messages' `record`s at once). Only
after the commit is the ACK written. Storage down means AE and nothing half-written: the object
key derives from the message, so the sender's retry overwrites the same object.
"""

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit.log import append
from audit.records import HL7_ACCEPTED, HL7_REJECTED, AuditRecord, Outcome
from storage import fhir
from storage.fhir import store
from hl7_listener.config import MllpSettings
from integration.errors import BadEncoding, Hl7Error, MappingFailed, SenderNotAllowed
from integration.hl7v2 import Header, Parsed, decode, minimal_header, parse, read_header
from hl7_listener.acks import queue_application_ack
from hl7_listener.mapping import Mapping, Merge
from hl7_listener.message_types import map_message
from storage.orders import link_reports
from integration import topics
from integration.logs import correlation
from integration.messages import Hl7Received
from storage.db import session_scope
from storage.hl7_messages import accepted_message, dedupe_key
from storage.objects import ObjectStore, hl7_key
from storage.orders import repoint_patient, save_order
from storage.outbox import add_event
from storage.tables.hl7 import Hl7Message

log = logging.getLogger(__name__)

AGENT = "doctorai-mllp"
# Namespace of message ids derived from the sender, control id and bytes (so a retry finds its object).
_MESSAGE_NAMESPACE = uuid.UUID("5d0c7a1e-4c1f-4e0a-9b7e-6f1f3a2b8c41")


@dataclass(frozen=True)
class Answer:
    """How a message was taken: the original-mode code (AA/AE/AR), the error if any, and the header."""

    code: str
    header: Header
    message_id: str = ""
    error: Hl7Error | None = None
    duplicate: bool = False


@dataclass(frozen=True)
class Received:
    """A message whose bytes are in object storage, read and mapped, waiting for its transaction.

    `refusal` is set when it will never be taken (AR: no header, sender not allowed, not well
    formed); `mapping` or else `failure` (AE) when it was well formed.
    """

    header: Header
    message_id: str
    object_key: str
    size: int
    source_address: str
    received: datetime
    dedupe_key: str = ""
    parsed: Parsed | None = None
    mapping: Mapping | None = None
    failure: MappingFailed | None = None
    refusal: Hl7Error | None = None


def _allowed(settings: MllpSettings, header: Header) -> bool:
    entries = [e.strip() for e in settings.mllp_allowed_senders.split(",") if e.strip()]
    if not entries:
        return True
    for entry in entries:
        app, _, facility = entry.partition("|")
        if app in ("*", header.sending_application) and facility in ("*", "", header.sending_facility):
            return True
    return False


def _agent(header: Header) -> str:
    return f"hl7:{header.sending_application}|{header.sending_facility}"


def receive(objects: ObjectStore, settings: MllpSettings, raw: bytes, *, source_address: str) -> Received:
    """Read, check and map one message and put its bytes in object storage: all but its transaction.

    Raises StorageUnavailable when the object store cannot take it (answer AE).
    """
    received = datetime.now(UTC)
    if b"\x00" in raw:
        # NUL is no character of HL7 text (HL7 v2 2.7: printable characters of the character set
        # and the delimiters), and PostgreSQL text cannot hold it: refused (AR), addressed from
        # the header read without it, its bytes kept as sent.
        try:
            header = read_header(decode(raw.replace(b"\x00", b"")))
        except Hl7Error:
            header = minimal_header()
        refusal = BadEncoding("message holds NUL (0x00) bytes")
        return _keep(objects, raw, header, str(uuid.uuid4()), source_address, received, refusal=refusal)
    try:
        header = read_header(decode(raw))
    except Hl7Error as exc:
        return _keep(objects, raw, minimal_header(), str(uuid.uuid4()), source_address, received, refusal=exc)
    try:
        if not _allowed(settings, header):
            raise SenderNotAllowed(
                f"sending application/facility {header.sending_application}|{header.sending_facility} is not allowed",
                location=("MSH", 1, 3),
            )
        parsed = parse(raw)
    except Hl7Error as exc:
        return _keep(objects, raw, header, str(uuid.uuid4()), source_address, received, refusal=exc)
    key = dedupe_key(header.sending_application, header.sending_facility, header.control_id)
    mapping: Mapping | None = None
    failure: MappingFailed | None = None
    try:
        mapping = map_message(parsed)
    except MappingFailed as exc:
        failure = exc
    digest = hashlib.sha256(raw).hexdigest()
    # An accepted message's id (and object key) derives from sender, control id and bytes: a re-send
    # after a lost ACK overwrites the same object with the same bytes, then finds the first row.
    message_id = str(uuid.uuid5(_MESSAGE_NAMESPACE, f"{key}|{digest}")) if mapping else str(uuid.uuid4())
    return _keep(
        objects, raw, header, message_id, source_address, received,
        dedupe_key=key, parsed=parsed, mapping=mapping, failure=failure,
    )


def _keep(
    objects: ObjectStore,
    raw: bytes,
    header: Header,
    message_id: str,
    source_address: str,
    received: datetime,
    *,
    dedupe_key: str = "",
    parsed: Parsed | None = None,
    mapping: Mapping | None = None,
    failure: MappingFailed | None = None,
    refusal: Hl7Error | None = None,
) -> Received:
    """Put the bytes in object storage under the message's key; the message, ready for `record`."""
    # The message's correlation id on the rest of its log lines (the listener runs this in a thread
    # with a copy of its context, so it ends with the call).
    correlation.set(message_id)
    object_key = hl7_key(received, message_id)
    objects.put_bytes(object_key, raw, content_type="x-application/hl7-v2+er7")
    return Received(
        header=header,
        message_id=message_id,
        object_key=object_key,
        size=len(raw),
        source_address=source_address,
        received=received,
        dedupe_key=dedupe_key,
        parsed=parsed,
        mapping=mapping,
        failure=failure,
        refusal=refusal,
    )


def record(session: Session, settings: MllpSettings, message: Received) -> Answer:
    """Write one received message in the caller's transaction; the answer says which ACK to send.

    Raises IntegrityError when another transaction accepted the same message (MSH-3/4/10) first.
    """
    header = message.header
    row = Hl7Message(
        id=message.message_id,
        correlation_id=message.message_id,
        sender_application=header.sending_application[:180],
        sender_facility=header.sending_facility[:180],
        source_address=message.source_address[:64],
        control_id=header.control_id[:199],
        message_type=header.message_type[:8],
        trigger_event=header.trigger_event[:8],
        version=header.version[:16],
        received_at=message.received,
        object_key=message.object_key,
        size=message.size,
        status="rejected",
        ack_code="AR",
        error="",
        unmapped={},
        dedupe_key=None,
    )
    if message.refusal is not None:
        # Kept and audited with the reason (AR); never processed.
        row.error = str(message.refusal)
        session.add(row)
        _audit_refusal(session, header, message.message_id, message.refusal, message.source_address)
        return Answer(message.refusal.ack_code, header, message.message_id, error=message.refusal)
    earlier = _earlier(session, header, message.dedupe_key, message.source_address)
    if earlier is not None:
        return earlier
    mapping, failure = message.mapping, message.failure
    if mapping is not None and message.parsed is not None:
        row.status, row.ack_code, row.unmapped, row.dedupe_key = "accepted", "AA", mapping.unmapped, message.dedupe_key
        session.add(row)
        session.flush()
        written = apply(session, mapping, message_id=message.message_id)
        _announce(session, message.parsed, mapping, row, written)
    else:
        row.status, row.ack_code, row.error = "error", "AE", str(failure)
        session.add(row)
        _audit_refusal(session, header, message.message_id, failure, message.source_address)
    queue_application_ack(session, settings, header, message_id=message.message_id, code=row.ack_code, error=failure)
    if failure is not None:
        return Answer("AE", header, message.message_id, error=failure)
    return Answer("AA", header, message.message_id)


def duplicate(session: Session, message: Received) -> Answer | None:
    """The answer of the accepted message this one repeats, audited; None when there is none."""
    return _earlier(session, message.header, message.dedupe_key, message.source_address)


def _earlier(session: Session, header: Header, key: str, source_address: str) -> Answer | None:
    """A duplicate's answer: the first one's code, re-sent; audited, not processed again."""
    first = accepted_message(session, key=key)
    if first is None:
        return None
    append(
        session,
        AuditRecord(
            hop=HL7_ACCEPTED,
            correlation_id=first.correlation_id,
            agent_who=_agent(header),
            agent_address=source_address,
            entity_what=f"hl7:{first.id}",
            detail={"control_id": header.control_id, "duplicate": "true", "ack": first.ack_code},
        ),
    )
    return Answer(first.ack_code, header, first.id, duplicate=True)


def _audit_refusal(
    session: Session, header: Header, message_id: str, error: Hl7Error | None, source: str
) -> None:
    append(
        session,
        AuditRecord(
            hop=HL7_REJECTED,
            correlation_id=message_id,
            agent_who=_agent(header),
            agent_address=source,
            entity_what=f"hl7:{message_id}",
            outcome=Outcome.MINOR_FAILURE,
            detail={
                "control_id": header.control_id,
                "message_type": f"{header.message_type}^{header.trigger_event}",
                "ack": error.ack_code if error else "AE",
                "error_code": error.error_code if error else "",
                "reason": str(error)[:200],
                "stored": "true",
            },
        ),
    )


def record_refusal(engine: Engine, *, reason: str, source_address: str, kind: str, count: int = 1) -> None:
    """Audit bytes refused before any message could be read (framing, size, source address), `count` times from one source."""
    correlation_id = str(uuid.uuid4())
    with session_scope(engine) as session:
        append(
            session,
            AuditRecord(
                hop=HL7_REJECTED,
                correlation_id=correlation_id,
                agent_who="hl7:unknown",
                agent_address=source_address,
                entity_what=f"mllp:{kind}",
                outcome=Outcome.MINOR_FAILURE,
                detail={"reason": reason[:200], "stored": "false", "count": str(count)},
            ),
        )


def apply(session: Session, mapping: Mapping, *, message_id: str) -> list[str]:
    """Write what the message maps to; returns the resources written as "Type/id"."""
    written = [_save_patient(session, mapping.patient, authoritative=mapping.authoritative)]
    for resource in mapping.resources:
        if isinstance(resource, fhir.DiagnosticReport):
            resource = _known_orders_only(session, resource)
        store.save(session, resource)
        written.append(f"{resource.get_resource_type()}/{resource.id}")
    for facts in mapping.orders:
        order = save_order(
            session,
            service_request_id=facts.service_request_id,
            placer_number=facts.placer_number,
            filler_number=facts.filler_number,
            accession_number=facts.accession_number,
            patient_id=facts.patient_id,
            status=facts.status,
            order_control=facts.order_control,
            message_id=message_id,
        )
        written += link_reports(session, order)
    for merge in mapping.merges:
        written += _merge(session, merge)
    return written


def _save_patient(session: Session, patient: fhir.Patient, *, authoritative: bool) -> str:
    ref = f"Patient/{patient.id}"
    if not store.exists(session, "Patient", patient.id or ""):
        store.save(session, patient)
        return ref
    if authoritative:
        # New demographics replace the old; a merge's links and inactive flag stay (A40 before A08).
        stored = store.read(session, "Patient", patient.id or "")
        keep = {"link": getattr(stored, "link", None), "active": getattr(stored, "active", None)}
        store.save(session, patient.model_copy(update={k: v for k, v in keep.items() if v is not None}))
    return ref


def _known_orders_only(session: Session, report: fhir.DiagnosticReport) -> fhir.DiagnosticReport:
    refs = [r for r in report.basedOn or [] if r.reference and _stored(session, r.reference)]
    return report.model_copy(update={"basedOn": refs or None})


def _stored(session: Session, reference: str) -> bool:
    resource_type, _, resource_id = reference.partition("/")
    return store.exists(session, resource_type, resource_id)


def _merge(session: Session, merge: Merge) -> list[str]:
    """A40: the surviving Patient `replaces` the merged one, which becomes inactive and `replaced-by` it."""
    surviving = store.read(session, "Patient", merge.surviving_id)
    if store.exists(session, "Patient", merge.merged_id):
        merged = store.read(session, "Patient", merge.merged_id)
    else:
        merged = fhir.Patient(id=merge.merged_id, identifier=[fhir.Identifier(value=merge.merged_identifier)])
    if not isinstance(surviving, fhir.Patient) or not isinstance(merged, fhir.Patient):
        raise MappingFailed("a merge names a resource that is not a Patient")
    replaces = fhir.PatientLink(other=fhir.Reference(reference=f"Patient/{merge.merged_id}"), type="replaces")
    if not any(link.other.reference == replaces.other.reference for link in surviving.link or []):
        store.save(session, surviving.model_copy(update={"link": [*(surviving.link or []), replaces]}))
    replaced_by = fhir.PatientLink(other=fhir.Reference(reference=f"Patient/{merge.surviving_id}"), type="replaced-by")
    store.save(session, merged.model_copy(update={"active": False, "link": [replaced_by]}))
    repoint_patient(session, merged=merge.merged_identifier, surviving=merge.surviving_identifier)
    return [f"Patient/{merge.surviving_id}", f"Patient/{merge.merged_id}", *_repoint_subjects(session, merge)]


# The searchable resources that point at a patient through `subject`; each gets a new version.
# (Encounters are stored but not searchable, so the index cannot find them: they keep theirs.)
_SUBJECT_TYPES = ("ServiceRequest", "ImagingStudy", "DiagnosticReport", "Observation")


def _repoint_subjects(session: Session, merge: Merge) -> list[str]:
    """Point the merged patient's resources at the surviving one, as FHIR's patient merge does
    (https://hl7.org/fhir/R5/patient-operation-merge.html: references to the source patient are
    updated to the target). Earlier versions keep the old reference in the resource's history.
    """
    old = f"Patient/{merge.merged_id}"
    subject = fhir.Reference(reference=f"Patient/{merge.surviving_id}")
    moved: list[str] = []
    for resource_type in _SUBJECT_TYPES:
        for resource_id in store.referring(session, resource_type, "subject", [old]):
            resource = store.read(session, resource_type, resource_id)
            store.save(session, resource.model_copy(update={"subject": subject}))
            moved.append(f"{resource_type}/{resource_id}")
    return moved


def _announce(session: Session, parsed: Parsed, mapping: Mapping, row: Hl7Message, written: list[str]) -> None:
    header = parsed.header
    event = Hl7Received(
        correlation_id=row.correlation_id,
        message_id=row.id,
        sender_application=header.sending_application,
        sender_facility=header.sending_facility,
        control_id=header.control_id,
        message_type=header.message_type,
        trigger_event=header.trigger_event,
        version=header.version,
        object_key=row.object_key,
        patient_id=mapping.patient_id,
        accession_numbers=[o.accession_number for o in mapping.orders if o.accession_number],
        resources=sorted(set(written)),
    )
    add_event(session, topic=topics.HL7_RECEIVED, key=mapping.patient.id or row.id, message=event)
    append(
        session,
        AuditRecord(
            hop=HL7_ACCEPTED,
            correlation_id=row.correlation_id,
            agent_who=_agent(header),
            agent_address=row.source_address,
            entity_what=f"hl7:{row.id}",
            detail={
                "control_id": header.control_id,
                "message_type": f"{header.message_type}^{header.trigger_event}",
                "version": header.version,
                "resources": str(len(set(written))),
                "unmapped": str(len(mapping.unmapped)),
            },
        ),
    )

