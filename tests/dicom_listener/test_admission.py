"""Who may associate: allowlist with host, limits per calling AE and in total, per-peer PDU length
and timeouts, oversize PDUs, unknown SOP classes. Rejections carry PS3.8 9.3.4 reasons."""

import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import MaximumLengthNotification
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from dicom_listener.admission import AssociationCounts
from doctorai.stack import StackConfig
from storage.db import session_scope
from storage.peers import Peer, save_peer
from storage.tables.audit import AuditEvent
from storage.tables.index import Instance
from tests.dicom_listener.conftest import Listener, ct, rejection, send, serve


def _associate(listener: Listener, calling: str = "TESTSCU") -> Association:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ct().file_meta.TransferSyntaxUID)
    return ae.associate("127.0.0.1", listener.settings.dicom_port, ae_title="DOCTORAI")


def _wait_aborted(assoc: Association) -> None:
    deadline = time.monotonic() + 15
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted and not assoc.is_established


def _audits(listener: Listener, subtype: str, count: int = 1) -> list[AuditEvent]:
    # The SCU hears the answer before the SCP's handler thread commits its audit row.
    deadline = time.monotonic() + 30  # generous: CI machines may be loaded
    while True:
        with session_scope(listener.engine) as s:
            rows = list(s.scalars(select(AuditEvent).where(AuditEvent.subtype == subtype)))
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _add_peer(listener: Listener, peer: Peer) -> None:
    with session_scope(listener.engine) as s:
        save_peer(s, peer)


@pytest.mark.stack
def test_allowlist_rejects_unknown_calling_ae_and_wrong_host(services: StackConfig, tmp_path: Path) -> None:
    for listener in serve(services, tmp_path, dicom_allow_unknown_peers=False):
        # calling-AE-title-not-recognized: rejected-permanent, service-user (PS3.8 Table 9-21).
        assert rejection(listener.settings.dicom_port, "STRANGER") == (1, 1, 3)
        (audit,) = _audits(listener, "association-rejected")
        assert audit.agent_who == "ae:STRANGER" and "not in dicom_peers" in audit.detail["reason"]
        _add_peer(listener, Peer(ae_title="MODALITY", host="10.9.9.9"))
        assert rejection(listener.settings.dicom_port, "MODALITY") == (1, 1, 3)
        _add_peer(listener, Peer(ae_title="MODALITY", host="127.0.0.1"))
        assoc = _associate(listener, "MODALITY")
        assert assoc.is_established
        assoc.release()


@pytest.mark.stack
def test_association_limits_per_peer_and_in_total(services: StackConfig, tmp_path: Path) -> None:
    for listener in serve(services, tmp_path, dicom_max_associations=2):
        _add_peer(listener, Peer(ae_title="ONEATATIME", max_associations=1))
        first = _associate(listener, "ONEATATIME")
        assert first.is_established
        # local-limit-exceeded: rejected-transient, service-provider presentation related.
        assert rejection(listener.settings.dicom_port, "ONEATATIME") == (2, 3, 2)
        other = _associate(listener, "OTHER")
        assert other.is_established
        assert rejection(listener.settings.dicom_port, "THIRD") == (2, 3, 2)  # 2 in total
        first.release()
        other.release()
        deadline = time.monotonic() + 10
        while listener.receiver.counts.active() and time.monotonic() < deadline:
            time.sleep(0.05)
        again = _associate(listener, "ONEATATIME")
        assert again.is_established
        assert again.send_c_echo().Status == 0x0000
        again.release()


@pytest.mark.stack
def test_oversize_pdu_aborts_the_association_and_stores_nothing(services: StackConfig, tmp_path: Path) -> None:
    for listener in serve(services, tmp_path, dicom_max_pdu=16384):
        assoc = _associate(listener)
        assert assoc.is_established and assoc.acceptor.maximum_length == 16384
        # Ignore the Maximum Length we announced and send the 39 KB dataset in one P-DATA-TF.
        (limit,) = [i for i in assoc.acceptor.user_information if isinstance(i, MaximumLengthNotification)]
        limit.maximum_length_received = 1 << 20
        status = assoc.send_c_store(ct())
        assert "Status" not in status
        _wait_aborted(assoc)
        (audit,) = _audits(listener, "association-aborted")
        assert "over the maximum of 16384" in audit.detail["reason"]
        with session_scope(listener.engine) as s:
            assert s.scalars(select(Instance)).first() is None
        # The listener carries on: a well-behaved sender stores the same instance.
        assert send(listener.settings.dicom_port, ct()).Status == 0x0000


@pytest.mark.stack
def test_per_peer_network_timeout_ends_an_idle_association(listener: Listener) -> None:
    _add_peer(listener, Peer(ae_title="SLEEPY", network_timeout=0.5))
    assoc = _associate(listener, "SLEEPY")
    assert assoc.is_established
    _wait_aborted(assoc)


@pytest.mark.stack
@pytest.mark.parametrize("accept", [False, True])
def test_unknown_sop_class_is_a_setting(services: StackConfig, tmp_path: Path, accept: bool) -> None:
    for listener in serve(services, tmp_path, dicom_accept_unknown_sop_classes=accept):
        private = "1.2.826.0.1.3680043.8.498.1"  # not in pynetdicom's storage list
        ds = ct()
        ds.SOPClassUID, ds.SOPInstanceUID = private, generate_uid()
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(private, ds.file_meta.TransferSyntaxUID)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", listener.settings.dicom_port, ae_title="DOCTORAI")
        assert assoc.is_established
        try:
            if accept:
                assert assoc.send_c_store(ds).Status == 0x0000
            else:
                assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [Verification]
        finally:
            assoc.release()


def test_counts_are_shared_per_calling_ae_and_a_dead_workers_row_is_dropped() -> None:
    counts = AssociationCounts(2)
    assert counts.acquire("A", total_limit=3, peer_limit=2) is None
    counts.worker = 1
    assert counts.acquire("A", total_limit=3, peer_limit=2) is None
    assert counts.acquire("A", total_limit=3, peer_limit=2) is not None  # 2 of A over both rows
    assert counts.acquire("B", total_limit=3, peer_limit=2) is None
    assert counts.acquire("C", total_limit=3, peer_limit=2) is not None  # 3 in total
    counts.forget_worker(1)
    assert counts.active() == 1
    counts.worker = 0
    counts.release("A")
    assert counts.active() == 0
