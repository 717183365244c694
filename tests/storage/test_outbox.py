"""The outbox, on SQLite and PostgreSQL."""

from sqlalchemy import Engine

from integration.messages import Coding
from storage.db import session_scope
from storage.outbox import add_event, backlog, mark_sent, unsent


def test_events_come_out_in_order_until_sent(db: Engine) -> None:
    with session_scope(db) as s:
        for i in range(3):
            add_event(s, topic="t", key=f"k{i}", message=Coding(system="s", code=str(i), display="d"))
    with session_scope(db) as s:
        events = unsent(s, limit=2)
        assert [e.key for e in events] == ["k0", "k1"]
        assert backlog(s) == 3
        mark_sent(s, ids=[e.id for e in events])
    with session_scope(db) as s:
        assert [e.key for e in unsent(s, limit=10)] == ["k2"]
        assert Coding.model_validate_json(unsent(s, limit=1)[0].payload).code == "2"
        assert backlog(s) == 1


def test_rolled_back_work_leaves_no_event(db: Engine) -> None:
    try:
        with session_scope(db) as s:
            add_event(s, topic="t", key="k", message=Coding(system="s", code="c", display="d"))
            raise RuntimeError("the work failed")
    except RuntimeError:
        pass
    with session_scope(db) as s:
        assert backlog(s) == 0
