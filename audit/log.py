"""The append-only audit log: each row stores the SHA-256 of the row before it, and with
DOCTORAI_AUDIT_KEY set a keyed seal (HMAC-SHA256, RFC 2104) of its own hash.

Append inside the transaction of the work it records, so the record commits with the work.
"""

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, String, Table, insert, select, text
from sqlalchemy.orm import Session

from audit.config import get_settings
from audit.records import AuditRecord
from storage.prepared import Prepared
from storage.tables.audit import AuditEvent

GENESIS = "0" * 64
# Any fixed number: serialises appenders on PostgreSQL so concurrent processes never fork the
# chain. SQLite transactions already hold the database's write lock (storage.db).
_CHAIN_LOCK = 0x0D0C_A1A0
_TABLE = cast(Table, AuditEvent.__table__)
_LENGTHS = {name: cast(String, _TABLE.c[name].type).length or 0 for name in ("agent_who", "agent_address", "entity_what")}


_HASHED = ("correlation_id", "type_code", "subtype", "action", "outcome", "agent_who", "agent_address", "entity_what", "detail", "prev_hash")


def _hash(values: dict[str, Any]) -> str:
    content = {k: values[k] for k in _HASHED}
    content["recorded_at"] = values["recorded_at"].astimezone(UTC).isoformat()
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def record_hash(row: AuditEvent) -> str:
    """The SHA-256 of a row's content and its predecessor's hash."""
    return _hash({k: getattr(row, k) for k in (*_HASHED, "recorded_at")})


def seal(key: str, hash_: str) -> str:
    """The keyed seal of a record's hash: HMAC-SHA256 under the audit key (RFC 2104)."""
    return hmac.new(key.encode(), hash_.encode(), hashlib.sha256).hexdigest()


_LOCK = Prepared(text("SELECT pg_advisory_xact_lock(:k)"))
_LAST_HASH = Prepared(select(_TABLE.c.hash).order_by(_TABLE.c.id.desc()).limit(1))
_INSERT = Prepared(insert(_TABLE))


def _lock_and_last_hash(connection: Connection) -> str:
    # Prepared statements: this runs in every transaction that audits, once per C-STORE batch.
    if connection.dialect.name == "postgresql":
        _LOCK.scalar(connection, {"k": _CHAIN_LOCK})
    prev = _LAST_HASH.scalar(connection)
    return str(prev) if prev else GENESIS


def _values(record: AuditRecord, prev_hash: str, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {
        "recorded_at": now,
        "correlation_id": record.correlation_id,
        "type_code": record.hop.type_code,
        "subtype": record.hop.subtype,
        "action": record.hop.action.value,
        "outcome": record.outcome.value,
        # Cut to their columns: senders name themselves (an HL7 MSH-3, an AE title), and a name
        # past its column must not fail the very record that refuses its sender.
        "agent_who": record.agent_who[: _LENGTHS["agent_who"]],
        "agent_address": record.agent_address[: _LENGTHS["agent_address"]],
        "entity_what": record.entity_what[: _LENGTHS["entity_what"]],
        "detail": dict(record.detail),
        "prev_hash": prev_hash,
    }
    values["hash"] = _hash(values)
    key = get_settings().audit_key
    values["seal"] = seal(key, values["hash"]) if key else ""
    return values


def append(session: Session, record: AuditRecord) -> AuditEvent:
    """Add `record` to the chain in the caller's transaction."""
    session.flush()  # pending rows first, so the chain is read after them
    row = AuditEvent(**_values(record, _lock_and_last_hash(session.connection()), datetime.now(UTC)))
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
    session.flush()  # pending rows first, so the chain is read after them
    connection = session.connection()
    prev, now = _lock_and_last_hash(connection), datetime.now(UTC)
    rows = []
    for record in records:
        values = _values(record, prev, now)
        rows.append(values)
        prev = values["hash"]
    # One executemany on the session's connection, past the ORM: this runs for every stored
    # instance. Ids follow the list order, as the chain needs.
    _INSERT.run_many(connection, rows)


def trail(session: Session, *, correlation_id: str) -> list[AuditEvent]:
    """Every record of one study or message, in the order written."""
    stmt = select(AuditEvent).where(AuditEvent.correlation_id == correlation_id).order_by(AuditEvent.id)
    return list(session.scalars(stmt))
