"""The study index as instances arrive, on SQLite and PostgreSQL: indexing, versions, instance state."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from storage.db import session_scope
from storage.instances import correlation_id_for_study, instance_state, record_instance, study_instances
from storage.tables.index import InstanceVersion, Study
from tests.studies import received

ITEM = received()


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
    moved = received(
        study_uid="1.2.9", series_uid="1.2.9.1", sha256="b" * 64, object_key="dicom/1.2.9/1.2.9.1/1.2.3.1.1.b.dcm"
    )
    other = received(sop_uid="1.2.3.1.2")
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
