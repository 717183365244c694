"""The console's aggregates (storage/overview.py) on SQLite and PostgreSQL: counts per minute,
backlogs, queue depths, latency percentiles and a model's figures per day."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from storage.db import session_scope
from storage.deliveries import queue_delivery
from storage.destinations import add_destination
from storage.instances import record_instance
from storage.jobs import create_job
from storage.overview import backlogs, latencies, model_history, per_minute, queue_depths, traffic
from storage.tables.hl7 import Hl7Message
from storage.tables.index import InstanceVersion
from storage.tables.pipeline import InferenceJob, Report
from tests.studies import received

NOON = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def _message(n: int, at: datetime) -> Hl7Message:
    return Hl7Message(id=f"m-{n}", correlation_id=f"m-{n}", received_at=at, status="accepted", ack_code="AA", unmapped={})


def test_counts_per_minute_fall_in_their_minute(db: Engine) -> None:
    with session_scope(db) as session:
        for n, at in enumerate([NOON, NOON + timedelta(seconds=59), NOON + timedelta(minutes=1, seconds=1), NOON - timedelta(hours=2)]):
            session.add(_message(n, at))
    with session_scope(db) as session:
        counts = per_minute(session, Hl7Message.received_at, since=NOON - timedelta(minutes=5))
        assert counts == {NOON: 2, NOON + timedelta(minutes=1): 1}
        assert traffic(session, since=NOON - timedelta(minutes=5))["hl7_messages"] == counts


def test_instances_per_minute_count_every_stored_version(db: Engine) -> None:
    with session_scope(db) as session:
        record_instance(session, item=received(), now=NOON + timedelta(seconds=5))
        record_instance(session, item=received(sop_uid="1.2.3.1.2", sha256="b" * 64), now=NOON + timedelta(seconds=6))
    with session_scope(db) as session:
        assert per_minute(session, InstanceVersion.received_at, since=NOON) == {NOON: 2}


def test_backlogs_and_queue_depths(db: Engine) -> None:
    with session_scope(db) as session:
        target = add_destination(session, name="ehr", kind="mllp", host="10.0.0.1", port=2575)
        for n in range(3):
            row = queue_delivery(session, destination_id=target.id, correlation_id="c", subject=f"s{n}", control_id=str(n), payload="MSH|")
            assert row is not None
            if n == 0:
                row.status = "dead"
        destination_id = target.id
    with session_scope(db) as session:
        waiting = backlogs(session)
        assert waiting["deliveries"] == 2 and waiting["dead_deliveries"] == 1 and waiting["forwards"] == 0
        assert queue_depths(session) == {destination_id: {"pending": 2, "dead": 1}}
        assert queue_depths(session, destination_id=destination_id + 1) == {}


def test_latency_percentiles_and_a_models_days(db: Engine) -> None:
    with session_scope(db) as session:
        record_instance(session, item=received(), now=NOON)
        for n, (latency, positive, status) in enumerate([(10, True, "done"), (20, False, "done"), (30, True, "done"), (0, None, "failed")]):
            job = create_job(session, job_id=f"j{n}", study_uid="1.2.3", revision=n + 1, model="chest", model_version="1")
            assert job is not None
            job.created_at = NOON + timedelta(minutes=n)
            job.status = status
            if status == "done":
                session.add(Report(job_id=f"j{n}", study_uid="1.2.3", revision=n + 1, diagnostic_report_id=f"r{n}",
                                   created_at=NOON + timedelta(seconds=latency), positive=positive, study_received_at=NOON))
        session.flush()
        assert session.get_one(InferenceJob, "j3").status == "failed"
    with session_scope(db) as session:
        [(model, figures)] = latencies(session, since=NOON - timedelta(hours=1)).items()
        # SQLite's julianday carries microseconds of rounding.
        assert model == "chest" and figures.reports == 3 and figures.p50_seconds == pytest.approx(20.0, abs=0.01)
        assert 28.0 < figures.p95_seconds <= 30.01
        [day] = model_history(session, model="chest", since=NOON - timedelta(hours=12))
        assert (day.jobs, day.failed, day.reports, day.positive) == (4, 1, 3, 2)
        assert day.start == datetime(2025, 5, 1, tzinfo=UTC)
