"""The outbound queues' shared bookkeeping on SQLite and PostgreSQL: due order, an attempt closed, a dead item retried."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.db import session_scope
from storage.deliveries import mark_failed, queue_delivery
from storage.destinations import add_destination
from storage.queues import NotDead, NotQueued, close_attempt, due, retry_dead
from storage.tables.outbound import Delivery


def _queued(session: Session, destination_id: int, subject: str, payload: str = "x") -> Delivery:
    row = queue_delivery(
        session, destination_id=destination_id, correlation_id="c-1", subject=subject, control_id="", payload=payload
    )
    assert row is not None
    return row


def test_a_dead_delivery_can_be_retried(db: Engine) -> None:
    with session_scope(db) as session:
        target = add_destination(
            session, name="ehr", kind="fhir", host="", port=0, options={"base_url": "http://x/fhir"}
        )
        assert target.options == {"base_url": "http://x/fhir"}
        row = _queued(session, target.id, "DiagnosticReport/r1", payload="{}")
        with pytest.raises(NotDead):
            retry_dead(session, Delivery, item_id=row.id)
        mark_failed(session, delivery_id=row.id, error="HTTP 400", ack_code="", retry_in=None)
        again = retry_dead(session, Delivery, item_id=row.id)
        assert (again.status, again.attempts, again.finished_at) == ("pending", 0, None)


def test_an_attempt_ends_sent_retried_later_or_dead(db: Engine) -> None:
    with session_scope(db) as session:
        target = add_destination(session, name="lis", kind="mllp", host="127.0.0.1", port=2575)
        other = add_destination(session, name="ris", kind="mllp", host="127.0.0.1", port=2576)
        rows = [_queued(session, target.id, f"DR/{n}") for n in range(3)]
        _queued(session, other.id, "DR/0")
        assert [d.id for d in due(session, Delivery, destination_id=target.id, limit=2)] == [rows[0].id, rows[1].id]
        sent, retried, dead = rows
        close_attempt(sent, error=None, retry_in=timedelta(hours=1))  # a sent item waits for nothing
        assert (sent.status, sent.attempts, sent.last_error) == ("sent", 1, "") and sent.finished_at is not None
        close_attempt(retried, error="AE: try later", retry_in=timedelta(hours=1))
        assert (retried.status, retried.attempts, retried.last_error, retried.finished_at) == (
            "pending",
            1,
            "AE: try later",
            None,
        )
        close_attempt(dead, error="x" * 3000, retry_in=None)
        assert (dead.status, dead.attempts, len(dead.last_error)) == ("dead", 1, 2000) and dead.finished_at is not None
        session.flush()
        assert due(session, Delivery, destination_id=target.id, limit=10) == []
        later = datetime.now(UTC) + timedelta(hours=2)
        assert [d.id for d in due(session, Delivery, destination_id=target.id, limit=10, now=later)] == [retried.id]
        with pytest.raises(NotQueued):
            retry_dead(session, Delivery, item_id=dead.id + 100)
        with pytest.raises(NotDead, match=f"delivery {sent.id} is sent, not dead"):
            retry_dead(session, Delivery, item_id=sent.id)
        again = retry_dead(session, Delivery, item_id=dead.id)
        assert (again.status, again.attempts, again.finished_at) == ("pending", 0, None)
