"""The audit trail: hash-chained records shaped after FHIR AuditEvent, and how far each external
repository has received them."""

from datetime import datetime

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from storage.tables.base import Base, UTCDateTime


class AuditEvent(Base):
    """One audit record, shaped after FHIR AuditEvent, hash-chained to the one before it."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    correlation_id: Mapped[str] = mapped_column(String(64), index=True)
    type_code: Mapped[str] = mapped_column(String(32))
    subtype: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(1))
    outcome: Mapped[str] = mapped_column(String(2))
    agent_who: Mapped[str] = mapped_column(String(128))
    agent_address: Mapped[str] = mapped_column(String(64), default="")
    entity_what: Mapped[str] = mapped_column(String(256), default="")
    detail: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # HMAC-SHA256 of `hash` under DOCTORAI_AUDIT_KEY (audit/log.py); empty when written without a key.
    seal: Mapped[str] = mapped_column(String(64), default="", server_default="")

    # AuditEvent searches by agent and by entity (migration 0302, fhir_api/fhir/auditevents.py).
    __table_args__ = (
        Index("ix_audit_events_agent", "agent_who", "id"),
        Index("ix_audit_events_entity", "entity_what", "id"),
    )


class AuditExport(Base):
    """How far the audit trail has been delivered to one external repository (syslog collector)."""

    __tablename__ = "audit_exports"

    destination: Mapped[str] = mapped_column(String(256), primary_key=True)
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
