"""The study index and jobs, on SQLite and PostgreSQL."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from storage.db import session_scope
from storage.queries import (
    ReceivedInstance,
    correlation_id_for_study,
    count_crash,
    create_job,
    instance_state,
    record_instance,
    studies_quiet_since,
    study_instances,
)
from storage.tables import InferenceJob, InstanceVersion, Study

ITEM = ReceivedInstance(
    study_uid="1.2.3",
    series_uid="1.2.3.1",
    sop_uid="1.2.3.1.1",
    sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
    transfer_syntax_uid="1.2.840.10008.1.2.1",
    patient_id="P1",
    accession_number="A1",
    study_date="20040826",
    study_description="chest",
    modality="CR",
    body_part="CHEST",
    series_number=1,
    series_description="",
    instance_number=1,
    object_key="dicom/1.2.3/1.2.3.1/1.2.3.1.1.dcm",
    size=10,
    sha256="a" * 64,
    calling_ae="PACS",
    source_address="127.0.0.1",
)


def test_record_instance_creates_study_series_instance(db: Engine) -> None:
    with session_scope(db) as s:
        study = record_instance(s, item=ITEM)
        assert study.correlation_id == correlation_id_for_study("1.2.3")
    with session_scope(db) as s:
        rows = study_instances(s, study_uid="1.2.3")
        assert [(i.sop_uid, ser.modality) for i, ser in rows] == [("1.2.3.1.1", "CR")]
        assert instance_state(s, sop_uid="1.2.3.1.1", sha256="a" * 64) == "same"
        assert instance_state(s, sop_uid="1.2.3.1.1", sha256="b" * 64) == "different"
        assert instance_state(s, sop_uid="9.9", sha256="a" * 64) == "new"


def test_a_new_version_under_another_study_moves_the_instance_there(db: Engine) -> None:
    """Keep-last: the same SOP Instance UID re-sent with other bytes under another study and series
    (the modality corrected the study) is indexed there; both versions are kept."""
    moved = replace(
        ITEM, study_uid="1.2.9", series_uid="1.2.9.1", sha256="b" * 64, object_key="dicom/1.2.9/1.2.9.1/1.2.3.1.1.b.dcm"
    )
    other = replace(ITEM, sop_uid="1.2.3.1.2")
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with session_scope(db) as s:
        record_instance(s, item=ITEM, now=t0)
        record_instance(s, item=other, now=t0)
        s.get_one(Study, "1.2.3").status = "ready"
    with session_scope(db) as s:
        record_instance(s, item=moved, now=t0 + timedelta(seconds=30))
    with session_scope(db) as s:
        # The study it left receives again, to be announced without it after its quiet period.
        left = s.get_one(Study, "1.2.3")
        assert (left.status, left.last_received_at) == ("receiving", t0 + timedelta(seconds=30))
        assert [i.sop_uid for i, _ in study_instances(s, study_uid="1.2.3")] == ["1.2.3.1.2"]
        [(instance, series)] = study_instances(s, study_uid="1.2.9")
        assert (instance.sop_uid, instance.series_uid, series.study_uid) == ("1.2.3.1.1", "1.2.9.1", "1.2.9")
        assert instance.object_key == moved.object_key
        assert instance_state(s, sop_uid="1.2.3.1.1", sha256="b" * 64) == "same"
        versions = s.scalars(
            select(InstanceVersion.study_uid).where(InstanceVersion.sop_uid == "1.2.3.1.1").order_by(InstanceVersion.version)
        ).all()
        assert versions == ["1.2.3", "1.2.9"]


def test_quiet_studies_and_timestamps_are_utc(db: Engine) -> None:
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with session_scope(db) as s:
        record_instance(s, item=ITEM, now=t0)
        record_instance(s, item=replace(ITEM, study_uid="1.2.4", series_uid="1.2.4.1", sop_uid="1.2.4.1.1"), now=t0 + timedelta(seconds=30))
    with session_scope(db) as s:
        quiet = studies_quiet_since(s, before=t0 + timedelta(seconds=10))
        assert [q.study_uid for q in quiet] == ["1.2.3"]
        assert quiet[0].last_received_at == t0  # aware UTC on both databases
    with session_scope(db) as s:
        study = s.get(Study, "1.2.3")
        assert study is not None
        study.status = "ready"
    with session_scope(db) as s:
        record_instance(s, item=replace(ITEM, sop_uid="1.2.3.1.2"), now=t0 + timedelta(seconds=60))
        study = s.get(Study, "1.2.3")
        assert study is not None and study.status == "receiving"


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
