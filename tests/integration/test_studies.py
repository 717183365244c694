"""Admin operations on studies (integration.studies): release of a held study and reprocess, each a new revision."""

import pytest
from sqlalchemy import Engine, select

from integration.errors import StudyNotFound, StudyStateConflict
from integration.messages import StudyReady
from integration.studies import release_study, reprocess_study
from storage.db import session_scope
from storage.tables.audit import AuditEvent
from storage.tables.index import Study
from storage.tables.pipeline import OutboxEvent
from tests.studies import rg1_instance, store_study

UID = "1.2.826.0.1.3680043.8.498.73001"


def test_release_announces_a_held_study_once(db: Engine) -> None:
    store_study(db, rg1_instance(), study_uid=UID, status="held", revision=2)
    ready = release_study(db, study_uid=UID, who="pacs-admin")
    assert (ready.revision, ready.reason, len(ready.instances)) == (3, "manual-release", 1)
    with session_scope(db) as session:
        assert session.get_one(Study, UID).status == "ready"
        (event,) = session.scalars(select(OutboxEvent)).all()
        (record,) = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "study-ready")).all()
    assert StudyReady.model_validate_json(event.payload) == ready
    assert record.agent_who == "pacs-admin" and record.detail["reason"] == "manual-release"
    with pytest.raises(StudyStateConflict):
        release_study(db, study_uid=UID, who="pacs-admin")
    with pytest.raises(StudyNotFound):
        release_study(db, study_uid="1.2.3", who="pacs-admin")


def test_release_declares_a_receiving_study_ready_without_its_quiet_period(db: Engine) -> None:
    store_study(db, rg1_instance(), study_uid=UID, status="receiving", revision=0)
    ready = release_study(db, study_uid=UID, who="pacs-admin")
    assert (ready.revision, ready.reason) == (1, "manual-release")
    with session_scope(db) as session:
        study = session.get_one(Study, UID)
        assert (study.status, study.ready_reason) == ("ready", "manual-release")


def test_reprocess_refuses_a_study_still_receiving(db: Engine) -> None:
    store_study(db, rg1_instance(), study_uid=UID, status="receiving", revision=0)
    with pytest.raises(StudyStateConflict):
        reprocess_study(db, study_uid=UID, who="pacs-admin")
    with session_scope(db) as session:
        session.get_one(Study, UID).status = "dropped"
    assert reprocess_study(db, study_uid=UID, who="pacs-admin").reason == "reprocess"
