"""Readiness by quiet period per calling AE, and the peer settings the sweep and listener read."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from dicom_listener.config import DicomSettings
from dicom_listener.peers import PeerDirectory
from dicom_listener.stability import declare_ready
from storage.db import session_scope
from storage.peers import Peer, delete_peer, save_peer
from storage.instances import record_instance
from storage.tables.index import Study
from tests.studies import received

ITEM = received(accession_number="", study_date="20260101", study_description="", calling_ae="FAST")


def test_quiet_period_is_per_calling_ae(db: Engine) -> None:
    t0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    slow = replace(ITEM, study_uid="1.2.4", series_uid="1.2.4.1", sop_uid="1.2.4.1.1", calling_ae="SLOW")
    with session_scope(db) as s:
        record_instance(s, item=ITEM, now=t0)
        record_instance(s, item=slow, now=t0)
    later = t0 + timedelta(seconds=5)
    (ready,) = declare_ready(db, quiet_period=30, ae_title="DOCTORAI", now=later, per_ae={"FAST": 2})
    assert ready.study_uid == "1.2.3" and ready.reason == "quiet-period"
    with session_scope(db) as s:
        study = s.get(Study, "1.2.3")
        assert study is not None and study.ready_reason == "quiet-period"
    assert [r.study_uid for r in declare_ready(db, quiet_period=30, ae_title="DOCTORAI", now=t0 + timedelta(seconds=31))] == [
        "1.2.4"
    ]


def test_peer_directory_merges_rows_over_settings_and_rereads_after_its_ttl(db: Engine) -> None:
    now = [0.0]
    settings = DicomSettings(quiet_period_seconds=10, dicom_duplicate_policy="keep-last", dicom_peer_cache_seconds=5)
    directory = PeerDirectory(db, settings, clock=lambda: now[0])
    with session_scope(db) as s:
        save_peer(s, Peer(ae_title="CT1", host="10.0.0.5", quiet_period_seconds=3, duplicate_policy="reject"))
    policy = directory.policy("CT1 ")
    assert (policy.known, policy.host, policy.quiet_period, policy.duplicate_policy) == (True, "10.0.0.5", 3.0, "reject")
    assert policy.max_associations == settings.dicom_max_associations_per_peer
    assert directory.policy("OTHER").known is False
    assert directory.quiet_periods() == {"CT1": 3.0}
    with session_scope(db) as s:
        assert delete_peer(s, ae_title="CT1")
    assert directory.policy("CT1").known  # cached
    now[0] = 6.0
    assert not directory.policy("CT1").known
