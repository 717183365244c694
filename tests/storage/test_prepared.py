"""Prepared statements write what SQLAlchemy's own execution writes, on SQLite and PostgreSQL."""

from datetime import UTC, datetime
from typing import cast

import pytest
from sqlalchemy import Engine, Table, insert, select

from storage.db import session_scope
from storage.prepared import Prepared
from storage.tables.audit import AuditEvent
from storage.tables.index import Series

_AUDIT = cast(Table, AuditEvent.__table__)


def _row(correlation_id: str) -> dict[str, object]:
    return {
        "recorded_at": datetime(2026, 12, 3, 11, 30, 15, 123456, tzinfo=UTC),
        "correlation_id": correlation_id,
        "type_code": "110104",
        "subtype": "",
        "action": "C",
        "outcome": "0",
        "agent_who": "ae:PACS",
        "agent_address": "10.0.0.7",
        "entity_what": "1.2.3",
        "detail": {"study_uid": "1.2.3", "nested": {"n": 1}},
        "prev_hash": "0" * 64,
        "hash": correlation_id * 4,
        "seal": "",  # audit.log.append gives it too (empty without an audit key)
    }


def test_rows_written_prepared_read_back_as_rows_written_by_sqlalchemy(db: Engine) -> None:
    """Dates (time zone and precision) and JSON go through the dialect's own bind processors."""
    prepared = Prepared(insert(_AUDIT))
    with session_scope(db) as s:
        s.execute(insert(_AUDIT), [_row("core")])
        prepared.run_many(s.connection(), [_row("prep"), _row("more")])
    with session_scope(db) as s:
        rows = {r.correlation_id: r for r in s.scalars(select(AuditEvent).where(AuditEvent.correlation_id.in_(["core", "prep", "more"])))}
        columns = ("recorded_at", "type_code", "agent_who", "agent_address", "detail", "prev_hash")
        assert {c: getattr(rows["prep"], c) for c in columns} == {c: getattr(rows["core"], c) for c in columns}
        assert rows["more"].id == rows["prep"].id + 1  # executemany keeps the order
        # And a prepared SELECT reads what was written, with its parameters bound by name.
        last = Prepared(select(_AUDIT.c.hash).where(_AUDIT.c.correlation_id == "prep"))
        assert last.scalar(s.connection()) == "prep" * 4
        assert Prepared(select(_AUDIT.c.hash).where(_AUDIT.c.correlation_id == "none")).scalar(s.connection()) is None


def test_a_column_whose_default_is_computed_in_python_must_be_given(db: Engine) -> None:
    """That default is SQLAlchemy's execution context's work, which a prepared statement skips."""
    with session_scope(db) as s, pytest.raises(ValueError, match="modality"):
        Prepared(insert(cast(Table, Series.__table__))).run(s.connection(), {"series_uid": "1.2", "study_uid": "1"})
