"""The append-only audit log: each row stores the SHA-256 of the row before it.

Append inside the transaction of the work it records, so the record commits with the work.
"""

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import insert, select, text
from sqlalchemy.orm import Session

from audit.records import AuditRecord
from storage.tables import AuditEvent

GENESIS = "0" * 64
# Any fixed number: serialises appenders on PostgreSQL so concurrent processes never fork the
# chain. SQLite transactions already hold the database's write lock (storage.db).
_CHAIN_LOCK = 0x0D0C_A1A0


def record_hash(row: AuditEvent) -> str:
    """The SHA-256 of a row's content and its predecessor's hash."""
    content = {
        "recorded_at": row.recorded_at.astimezone(UTC).isoformat(),
        "correlation_id": row.correlation_id,
        "type_code": row.type_code,
        "subtype": row.subtype,
        "action": row.action,
        "outcome": row.outcome,
        "agent_who": row.agent_who,
        "agent_address": row.agent_address,
        "entity_what": row.entity_what,
        "detail": row.detail,
        "prev_hash": row.prev_hash,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _lock_and_last_hash(session: Session) -> str:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CHAIN_LOCK})
    prev = session.scalar(select(AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1))
    return prev or GENESIS


def _row(record: AuditRecord, prev_hash: str, now: datetime) -> AuditEvent:
    row = AuditEvent(
        recorded_at=now,
        correlation_id=record.correlation_id,
        type_code=record.hop.type_code,
        subtype=record.hop.subtype,
        action=record.hop.action.value,
        outcome=record.outcome.value,
        agent_who=record.agent_who,
        agent_address=record.agent_address,
        entity_what=record.entity_what,
        detail=dict(record.detail),
        prev_hash=prev_hash,
    )
    row.hash = record_hash(row)
    return row


def append(session: Session, record: AuditRecord) -> AuditEvent:
    """Add `record` to the chain in the caller's transaction."""
    row = _row(record, _lock_and_last_hash(session), datetime.now(UTC))
    session.add(row)
    session.flush()
    return row


def append_many(session: Session, records: Sequence[AuditRecord]) -> None:
    """Add several records to the chain, in order, with one lock and one insert statement.

    For a step that makes many records at once (a search disclosing many studies): the same
    chain as appending them one by one, for the cost of about one append.
    """
    if not records:
        return
    prev, now = _lock_and_last_hash(session), datetime.now(UTC)
    rows = []
    for record in records:
        row = _row(record, prev, now)
        rows.append(row)
        prev = row.hash
    columns = [c.key for c in AuditEvent.__table__.columns if c.key != "id"]
    # One Core executemany (the SELECT above autoflushed pending rows first); ids follow the
    # list order, as the chain needs.
    session.execute(insert(AuditEvent), [{c: getattr(row, c) for c in columns} for row in rows])


def trail(session: Session, *, correlation_id: str) -> list[AuditEvent]:
    """Every record of one study or message, in the order written."""
    stmt = select(AuditEvent).where(AuditEvent.correlation_id == correlation_id).order_by(AuditEvent.id)
    return list(session.scalars(stmt))
