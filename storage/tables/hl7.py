"""HL7 v2 in: the messages as received, and the imaging orders they carry with the study each is linked to."""

from datetime import datetime

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from storage.tables.base import Base, UID, UTCDateTime


class Hl7Message(Base):
    """One HL7 v2 message as received: where its raw bytes are, how it was answered, what was not mapped."""

    __tablename__ = "hl7_messages"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    correlation_id: Mapped[str] = mapped_column(String(36), index=True)
    sender_application: Mapped[str] = mapped_column(String(180), default="")
    sender_facility: Mapped[str] = mapped_column(String(180), default="")
    source_address: Mapped[str] = mapped_column(String(64), default="")
    control_id: Mapped[str] = mapped_column(String(199), default="")  # MSH-10
    message_type: Mapped[str] = mapped_column(String(8), default="")  # MSH-9.1
    trigger_event: Mapped[str] = mapped_column(String(8), default="")  # MSH-9.2
    version: Mapped[str] = mapped_column(String(16), default="")  # MSH-12
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    object_key: Mapped[str] = mapped_column(String(256), default="")
    size: Mapped[int] = mapped_column(Integer, default=0)
    # accepted: stored and mapped; rejected: refused (AR); error: stored but not mapped (AE).
    status: Mapped[str] = mapped_column(String(16))
    ack_code: Mapped[str] = mapped_column(String(2))
    error: Mapped[str] = mapped_column(Text, default="")
    # Segment-field path -> value for every populated field the mapping did not use.
    unmapped: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # "application|facility|control id" of accepted messages, so a re-send is found, not re-processed.
    dedupe_key: Mapped[str | None] = mapped_column(String(600), nullable=True, unique=True)


class Order(Base):
    """An imaging order (ORM^O01 / OMI^O23) and the study it is linked to, by accession number."""

    __tablename__ = "orders"

    service_request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    placer_number: Mapped[str] = mapped_column(String(199), default="")  # ORC-2 / OBR-2, EI as sent
    filler_number: Mapped[str] = mapped_column(String(199), default="")  # ORC-3 / OBR-3
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)  # PID-3 first value
    # ServiceRequest.status (http://hl7.org/fhir/R4/valueset-request-status.html).
    status: Mapped[str] = mapped_column(String(16))
    order_control: Mapped[str] = mapped_column(String(2), default="")  # last ORC-1
    study_uid: Mapped[str | None] = mapped_column(UID, nullable=True, index=True)
    message_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
