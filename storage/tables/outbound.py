"""Where results and studies are sent: destinations, and the deliveries (messages) and forwards
(DICOM instances) queued for them."""

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from storage.tables.base import Base, UID, UTCDateTime


class Destination(Base):
    """Somewhere results are sent. Only kind "mllp" exists yet; dicom/fhir/webhook add their `options`."""

    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(256), default="")
    port: Mapped[int] = mapped_column(Integer, default=0)
    tls: Mapped[bool] = mapped_column(default=False)
    enabled: Mapped[bool] = mapped_column(default=True)
    options: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Delivery(Base):
    """One outbound message for one destination, retried until acknowledged or dead-lettered."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"), index=True)
    correlation_id: Mapped[str] = mapped_column(String(36), index=True)
    # What is delivered, e.g. "DiagnosticReport/<id>/_history/<version>": unique per destination.
    subject: Mapped[str] = mapped_column(String(256))
    control_id: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)  # the validated message, exactly as it is sent
    # pending -> sent | dead
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str] = mapped_column(Text, default="")
    ack_code: Mapped[str] = mapped_column(String(2), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        UniqueConstraint("destination_id", "subject", name="uq_delivery_subject"),
        Index("ix_deliveries_due", "destination_id", "status", "next_attempt_at"),
    )


class Forward(Base):
    """One revision of a study, or one job's result (a DICOM SR), queued for one DICOM destination.

    Complete when every instance was accepted.
    """

    __tablename__ = "forwards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination_id: Mapped[int] = mapped_column(ForeignKey("destinations.id"), index=True)
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    revision: Mapped[int] = mapped_column(Integer)
    correlation_id: Mapped[str] = mapped_column(String(36), index=True)
    rule: Mapped[str] = mapped_column(String(64), default="")  # the routing rule that asked for it
    # study: the study's instances (a routing rule); result: what a job made of it (its SR, issue 7).
    kind: Mapped[str] = mapped_column(String(16), default="study", server_default="study")
    # The job whose result this forward carries; "" for a study forward.
    job_id: Mapped[str] = mapped_column(String(36), default="", server_default="")
    # pending -> sent | dead (dead -> pending again when an operator retries it)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        # One study forward per revision and one result forward per job, for each destination.
        UniqueConstraint("destination_id", "study_uid", "revision", "job_id", name="uq_forward_subject"),
        Index("ix_forwards_due", "destination_id", "status", "next_attempt_at"),
    )


class ForwardInstance(Base):
    """One instance of a forward and how its last C-STORE ended."""

    __tablename__ = "forward_instances"

    forward_id: Mapped[int] = mapped_column(ForeignKey("forwards.id"), primary_key=True)
    sop_uid: Mapped[str] = mapped_column(UID, primary_key=True)
    object_key: Mapped[str] = mapped_column(String(256))
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    # pending -> sent | failed (failed ones are sent again on the forward's next attempt)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # The C-STORE response status (PS3.7 9.1.1.1.9), None when no response came.
    dicom_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
