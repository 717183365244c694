"""Queries on studies, on SQLite and PostgreSQL: the ones gone quiet, with timestamps in UTC."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from storage.db import session_scope
from storage.instances import record_instance
from storage.studies import studies_quiet_since
from storage.tables.index import Study
from tests.studies import received

ITEM = received()


def test_quiet_studies_and_timestamps_are_utc(db: Engine) -> None:
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    with session_scope(db) as s:
        record_instance(s, item=ITEM, now=t0)
        record_instance(s, item=received(study_uid="1.2.4", series_uid="1.2.4.1", sop_uid="1.2.4.1.1"), now=t0 + timedelta(seconds=30))
    with session_scope(db) as s:
        quiet = studies_quiet_since(s, before=t0 + timedelta(seconds=10))
        assert [q.study_uid for q in quiet] == ["1.2.3"]
        assert quiet[0].last_received_at == t0  # aware UTC on both databases
    with session_scope(db) as s:
        study = s.get(Study, "1.2.3")
        assert study is not None
        study.status = "ready"
    with session_scope(db) as s:
        record_instance(s, item=received(sop_uid="1.2.3.1.2"), now=t0 + timedelta(seconds=60))
        study = s.get(Study, "1.2.3")
        assert study is not None and study.status == "receiving"
