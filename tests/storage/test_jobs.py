"""Inference jobs, on SQLite and PostgreSQL: one per input, crashes counted in the row."""

from sqlalchemy import Engine, select

from storage.db import session_scope
from storage.instances import record_instance
from storage.jobs import count_crash, create_job
from storage.tables.pipeline import InferenceJob
from tests.studies import received

ITEM = received()


def test_job_is_unique_per_input(db: Engine) -> None:
    with session_scope(db) as s:
        record_instance(s, item=ITEM)
    with session_scope(db) as s:
        first = create_job(s, job_id="j1", study_uid="1.2.3", revision=1, model="m", model_version="1")
        assert first is not None
    with session_scope(db) as s:
        assert create_job(s, job_id="j2", study_uid="1.2.3", revision=1, model="m", model_version="1") is None
        assert create_job(s, job_id="j3", study_uid="1.2.3", revision=2, model="m", model_version="1") is not None


def test_a_jobs_crashes_are_counted_in_its_row(db: Engine) -> None:
    with session_scope(db) as s:
        record_instance(s, item=ITEM)
        create_job(s, job_id="j1", study_uid="1.2.3", revision=1, model="m", model_version="1")
        create_job(s, job_id="j2", study_uid="1.2.3", revision=2, model="m", model_version="1")
    for expected in (1, 2):  # one transaction each, as a worker counts them
        with session_scope(db) as s:
            assert count_crash(s, job_id="j1") == expected
    with session_scope(db) as s:
        assert count_crash(s, job_id="no-such-job") is None
        assert [(j.job_id, j.crashes) for j in s.scalars(select(InferenceJob).order_by(InferenceJob.job_id))] == [
            ("j1", 2),
            ("j2", 0),
        ]
