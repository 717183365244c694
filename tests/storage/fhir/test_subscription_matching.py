"""Subscription matching costs the same however many subscriptions cannot match (issue 18, Medium 10)."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event, select

from storage import fhir
from storage.db import session_scope
from storage.fhir import store
from storage.tables.fhir import SubscriptionDelivery


def _subscription(sid: str, criteria: str) -> fhir.Subscription:
    return fhir.Subscription.model_validate(
        {
            "resourceType": "Subscription",
            "id": sid,
            "status": "active",
            "reason": "test",
            "criteria": criteria,
            "channel": {"type": "rest-hook", "endpoint": "https://ehr.example.org/hook"},
        }
    )


def _report(rid: str, status: str) -> fhir.DiagnosticReport:
    return fhir.DiagnosticReport.model_validate(
        {"resourceType": "DiagnosticReport", "id": rid, "status": status, "code": {"text": "chest X-ray"}}
    )


@contextmanager
def _counted(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _statements_of_a_save(engine: Engine, rid: str) -> int:
    with _counted(engine) as statements, session_scope(engine) as session:
        store.save(session, _report(rid, "final"))
    return len(statements)


def test_a_save_costs_the_same_however_many_subscriptions_cannot_match(engine: Engine) -> None:
    with session_scope(engine) as session:
        store.save(session, _subscription("wanted", "DiagnosticReport?status=final"))
    with session_scope(engine) as session:
        store.save(session, _report("warm-up", "final"))  # the registry of this database is read once
    few = _statements_of_a_save(engine, "r1")
    with session_scope(engine) as session:
        for i in range(40):
            store.save(session, _subscription(f"other-type-{i}", "Patient?gender=female"))
            store.save(session, _subscription(f"same-type-{i}", f"DiagnosticReport?status=final&code=x{i}"))
    with session_scope(engine) as session:
        store.save(session, _report("warm-up-2", "final"))
    many = _statements_of_a_save(engine, "r2")
    assert many == few
    with session_scope(engine) as session:
        queued = session.execute(select(SubscriptionDelivery.subscription_id, SubscriptionDelivery.resource_id)).all()
    assert {(s, r) for s, r in queued if r in ("r1", "r2")} == {("wanted", "r1"), ("wanted", "r2")}


def test_a_new_or_changed_subscription_is_seen_by_the_next_save(engine: Engine) -> None:
    with session_scope(engine) as session:
        store.save(session, _report("before", "final"))
        store.save(session, _subscription("late", "DiagnosticReport?status=final"))
    with session_scope(engine) as session:
        store.save(session, _report("after", "final"))
        store.save(session, _subscription("late", "DiagnosticReport?status=preliminary"))
        store.save(session, _report("changed", "final"))  # the same transaction sees the change
        store.save(session, _report("preliminary", "preliminary"))
    with session_scope(engine) as session:
        store.delete(session, "Subscription", "late")
    with session_scope(engine) as session:
        store.save(session, _report("gone", "preliminary"))
    with session_scope(engine) as session:
        queued = sorted(session.scalars(select(SubscriptionDelivery.resource_id)))
    assert queued == ["after", "preliminary"]
