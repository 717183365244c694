"""Process heartbeats (integration/heartbeats.py): a row while the process runs, gone when it stops,
stale when it dies; and the integration process's open circuits carried in its row."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from integration.heartbeats import HEALTHY_WITHIN, Heartbeat, is_healthy, reported_open_circuits
from integration.outbound.circuit import Circuit, open_circuits
from storage.db import make_engine, session_scope
from storage.heartbeats import beat, live


def test_a_heartbeat_writes_its_row_and_removes_it_when_it_stops(engine: Engine, db_url: str) -> None:
    heartbeat = Heartbeat(make_engine(db_url), kind="results", name="results-test", detail=lambda: {"open_circuits": ["pacs"]})
    heartbeat.start()
    try:
        heartbeat.beat_once()
        with session_scope(engine) as session:
            [row] = live(session, since=datetime.now(UTC) - HEALTHY_WITHIN, kind="results")
            assert (row.name, row.pid, row.detail) == ("results-test", heartbeat.pid, {"open_circuits": ["pacs"]})
            assert is_healthy(row.last_seen_at, now=datetime.now(UTC))
    finally:
        heartbeat.stop()
    with session_scope(engine) as session:
        assert live(session, since=datetime.now(UTC) - timedelta(days=1)) == []


def test_a_dead_processes_row_goes_stale_and_its_next_run_forgets_it(engine: Engine, db_url: str) -> None:
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with session_scope(engine) as session:
        beat(session, kind="api", name="api", host=Heartbeat(engine, kind="api", name="api").host, pid=1,
             version="", started_at=long_ago, now=long_ago, detail={})
    with session_scope(engine) as session:
        [row] = live(session, since=long_ago)
        assert not is_healthy(row.last_seen_at, now=datetime.now(UTC))
    again = Heartbeat(make_engine(db_url), kind="api", name="api")
    again.start()
    again.stop()
    with session_scope(engine) as session:
        assert live(session, since=long_ago) == []


def test_open_circuits_travel_in_the_integration_heartbeat(engine: Engine) -> None:
    circuit = Circuit(threshold=1, cool_down=60, destination="heartbeat-test-pacs")
    circuit.failed(now=0.0)
    try:
        assert "heartbeat-test-pacs" in open_circuits()["open_circuits"]
        now = datetime.now(UTC)
        with session_scope(engine) as session:
            beat(session, kind="integration", name="integration", host="h", pid=2, version="", started_at=now, now=now, detail=open_circuits())
            assert "heartbeat-test-pacs" in reported_open_circuits(session, now=now)
            assert reported_open_circuits(session, now=now + timedelta(minutes=5)) == set()
    finally:
        circuit.succeeded()
    assert "heartbeat-test-pacs" not in open_circuits()["open_circuits"]
