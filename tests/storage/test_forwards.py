"""The forwards queue on SQLite and PostgreSQL: replays, due order, partial results, retry of dead ones."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from storage.db import session_scope
from storage.destinations import add_destination, destination_by_name
from storage.forwards import (
    ForwardItem,
    finish_attempt,
    forward_instances,
    instance_counts,
    list_forwards,
    mark_instance,
    queue_forward,
    unsent_instances,
)
from storage.queues import NotDead, NotQueued, due, retry_dead
from storage.tables.outbound import Forward

ITEMS = [
    ForwardItem(f"1.2.3.{n}", f"dicom/s/se/1.2.3.{n}.dcm", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    for n in (1, 2, 3)
]


def _destination(engine: Engine, name: str) -> int:
    with session_scope(engine) as session:
        row = add_destination(
            session, name=name, kind="dicom", host="127.0.0.1", port=104, options={"ae_title": "PACS"}
        )
        return row.id


def _queue(engine: Engine, destination_id: int, study_uid: str, revision: int = 1) -> int | None:
    with session_scope(engine) as session:
        row = queue_forward(
            session,
            destination_id=destination_id,
            study_uid=study_uid,
            revision=revision,
            correlation_id="c-1",
            rule="to-pacs",
            instances=ITEMS,
        )
        return None if row is None else row.id


def test_a_forward_is_queued_once_per_destination_study_and_revision(db: Engine) -> None:
    pacs, archive = _destination(db, "pacs"), _destination(db, "archive")
    first = _queue(db, pacs, "1.2.9")
    assert first is not None
    assert _queue(db, pacs, "1.2.9") is None  # a replay
    assert _queue(db, pacs, "1.2.9", revision=2) is not None
    assert _queue(db, archive, "1.2.9") is not None
    with session_scope(db) as session:
        assert [f.revision for f in list_forwards(session, destination_id=pacs)] == [2, 1]
        assert len(list_forwards(session, study_uid="1.2.9")) == 3
        assert list_forwards(session, status="sent") == []
        assert [i.status for i in forward_instances(session, forward_id=first)] == ["pending"] * 3
        assert [f.id for f in due(session, Forward, destination_id=pacs, limit=10)] == [first, first + 1]
        assert destination_by_name(session, name="archive") is not None
        assert destination_by_name(session, name="nowhere") is None


def test_only_what_failed_is_sent_again_and_a_dead_forward_can_be_retried(db: Engine) -> None:
    pacs = _destination(db, "pacs")
    forward_id = _queue(db, pacs, "1.2.9")
    assert forward_id is not None
    with session_scope(db) as session:
        mark_instance(session, forward_id=forward_id, sop_uid="1.2.3.1", sent=True, dicom_status=0)
        mark_instance(session, forward_id=forward_id, sop_uid="1.2.3.2", sent=True, dicom_status=0xB000)
        mark_instance(
            session, forward_id=forward_id, sop_uid="1.2.3.3", sent=False, dicom_status=0xA700, error="out of resources"
        )
        row = finish_attempt(session, forward_id=forward_id, error="", retry_in=timedelta(hours=1))
        assert (row.status, row.attempts, row.last_error) == ("pending", 1, "1 instances not accepted")
    with session_scope(db) as session:
        assert due(session, Forward, destination_id=pacs, limit=10) == []  # waiting for its backoff
        later = datetime.now(UTC) + timedelta(hours=2)
        assert len(due(session, Forward, destination_id=pacs, limit=10, now=later)) == 1
        assert [i.sop_uid for i in unsent_instances(session, forward_id=forward_id)] == ["1.2.3.3"]
        assert instance_counts(session, forward_id=forward_id) == {"pending": 0, "sent": 2, "failed": 1}
        row = finish_attempt(session, forward_id=forward_id, error="0xA700", retry_in=None)
        assert (row.status, row.attempts) == ("dead", 2)
        assert row.finished_at is not None
    with session_scope(db) as session:
        with pytest.raises(NotQueued):
            retry_dead(session, Forward, item_id=forward_id + 100)
        row = retry_dead(session, Forward, item_id=forward_id)
        assert (row.status, row.attempts, row.finished_at) == ("pending", 0, None)
        with pytest.raises(NotDead):
            retry_dead(session, Forward, item_id=forward_id)
        assert [i.sop_uid for i in unsent_instances(session, forward_id=forward_id)] == ["1.2.3.3"]
        mark_instance(session, forward_id=forward_id, sop_uid="1.2.3.3", sent=True, dicom_status=0)
        row = finish_attempt(session, forward_id=forward_id, error="", retry_in=timedelta(seconds=1))
        assert (row.status, row.last_error) == ("sent", "")


def test_a_result_forward_sits_beside_the_study_forward_of_the_same_revision(db: Engine) -> None:
    pacs = _destination(db, "pacs")
    study = _queue(db, pacs, "1.2.9")
    sr = [
        ForwardItem(
            "1.2.9.99", "dicom/1.2.9/1.2.9.98/1.2.9.99.dcm", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.1.2.1"
        )
    ]

    def result(job_id: str) -> int | None:
        with session_scope(db) as session:
            row = queue_forward(
                session,
                destination_id=pacs,
                study_uid="1.2.9",
                revision=1,
                correlation_id="c-1",
                rule="",
                instances=sr,
                job_id=job_id,
            )
            return None if row is None else row.id

    first = result("job-1")
    assert study is not None and first is not None
    assert result("job-1") is None  # a replayed result
    assert result("job-2") is not None  # another model's result of the same revision
    with session_scope(db) as session:
        assert [(f.kind, f.job_id) for f in list_forwards(session, destination_id=pacs)] == [
            ("result", "job-2"),
            ("result", "job-1"),
            ("study", ""),
        ]
        assert [f.id for f in list_forwards(session, kind="study")] == [study]
        assert [f.job_id for f in list_forwards(session, kind="result", limit=1)] == ["job-2"]
        assert [i.sop_uid for i in unsent_instances(session, forward_id=first)] == ["1.2.9.99"]
