"""Storage Commitment Push Model SCP against pynetdicom requesters: the report on the requesting
association when the peer waits for it, on a new one when it releases, and later when it is
unreachable at first (the request is kept in the database). Orthanc's commitment requests are in
test_orthanc_qr.py."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]
from sqlalchemy import select, update

from dicom_listener import commitment_reports
from doctorai.stack import StackConfig
from storage.db import session_scope
from storage.peers import Peer, save_peer
from storage.tables.audit import AuditEvent
from storage.tables.index import StorageCommitment
from tests.dicom_listener.conftest import Listener, ct, send, serve
from tests.dicom_listener.test_query_retrieve import _free_port

pytestmark = pytest.mark.stack

WELL_KNOWN = "1.2.840.10008.1.20.1.1"


@dataclass
class Reports:
    """N-EVENT-REPORTs a requester received: (event type, event information)."""

    received: list[tuple[int, Dataset]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def handle(self, event: evt.Event) -> tuple[int, None]:
        self.received.append((int(event.event_type), event.event_information))
        self.arrived.set()
        return 0x0000, None


@pytest.fixture(scope="module")
def listener(services: StackConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Listener]:
    for served in serve(services, tmp_path_factory.mktemp("commitment"), dicom_commitment_idle_seconds=0.2):
        assert send(served.settings.dicom_port, ct()).Status == 0x0000
        yield served


def _references(*pairs: tuple[str, str]) -> list[Dataset]:
    items = []
    for sop_class, sop_uid in pairs:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
        items.append(item)
    return items


def _ask(listener: Listener, calling: str, transaction: str, reports: Reports | None = None) -> int:
    """One association from `calling` with one N-ACTION for CT_small and a missing instance; the
    N-ACTION-RSP status. With `reports` the association waits for the report before releasing."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(StorageCommitmentPushModel)
    handlers = [(evt.EVT_N_EVENT_REPORT, reports.handle)] if reports else []
    assoc = ae.associate("127.0.0.1", listener.settings.dicom_port, ae_title="DOCTORAI", evt_handlers=handlers)
    assert assoc.is_established
    stored = ct()
    information = Dataset()
    information.TransactionUID = transaction
    information.ReferencedSOPSequence = _references((stored.SOPClassUID, stored.SOPInstanceUID), (stored.SOPClassUID, "1.2.3.404"))
    try:
        status, _ = assoc.send_n_action(information, 1, StorageCommitmentPushModel, WELL_KNOWN)
        if reports is not None:
            assert reports.arrived.wait(10)
    finally:
        assoc.release()
    return int(status.Status)


def _check(information: Dataset, transaction: str) -> None:
    stored = ct()
    assert information.TransactionUID == transaction
    assert [i.ReferencedSOPInstanceUID for i in information.ReferencedSOPSequence] == [stored.SOPInstanceUID]
    (failed,) = information.FailedSOPSequence
    assert (failed.ReferencedSOPInstanceUID, failed.FailureReason) == ("1.2.3.404", 0x0112)


def _row(listener: Listener, transaction: str) -> StorageCommitment:
    with session_scope(listener.engine) as session:
        row = session.get(StorageCommitment, transaction)
        assert row is not None
        return row


def test_the_report_comes_on_the_requesting_association_when_the_peer_waits(listener: Listener) -> None:
    reports, transaction = Reports(), generate_uid()
    assert _ask(listener, "MODALITY", transaction, reports) == 0x0000
    ((event_type, information),) = reports.received
    assert event_type == 2  # some failed (PS3.4 J.3.3.1)
    _check(information, transaction)
    assert _row(listener, transaction).status == "reported"
    with session_scope(listener.engine) as session:
        records = session.scalars(select(AuditEvent).where(AuditEvent.entity_what == transaction)).all()
    assert [r.subtype for r in records] == ["commitment-requested", "commitment-reported"]
    assert records[1].detail["via"] == "same association" and records[1].detail["failed"] == "1"


class _Requester:
    """A pynetdicom SCP taking N-EVENT-REPORTs for storage commitment from us as association requester."""

    def __init__(self, port: int, reports: Reports) -> None:
        ae = AE(ae_title="REQUESTER")
        # We propose the SCP role for ourselves (PS3.4 J.3.3): the requester takes the SCU role.
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self.server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)])

    def stop(self) -> None:
        self.server.shutdown()


def test_a_peer_that_releases_gets_the_report_on_a_new_association(listener: Listener) -> None:
    port, reports, transaction = _free_port(), Reports(), generate_uid()
    with session_scope(listener.engine) as session:
        save_peer(session, Peer(ae_title="REQUESTER", host="127.0.0.1", port=port))
    requester = _Requester(port, reports)
    try:
        assert _ask(listener, "REQUESTER", transaction) == 0x0000  # releases at once
        assert reports.arrived.wait(15)
    finally:
        requester.stop()
    ((event_type, information),) = reports.received
    assert event_type == 2
    _check(information, transaction)
    assert _row(listener, transaction).status == "reported"


def test_a_report_that_cannot_go_is_kept_and_goes_once_the_requester_listens(listener: Listener) -> None:
    port, reports, transaction = _free_port(), Reports(), generate_uid()
    with session_scope(listener.engine) as session:
        save_peer(session, Peer(ae_title="LATE", host="127.0.0.1", port=port))
    assert _ask(listener, "LATE", transaction) == 0x0000

    def tried() -> StorageCommitment | None:
        row = _row(listener, transaction)
        return row if row.attempts and row.last_error else None

    deadline = datetime.now(UTC).timestamp() + 15
    while (row := tried()) is None:
        assert datetime.now(UTC).timestamp() < deadline
        threading.Event().wait(0.05)
    assert row.status == "pending" and "cannot connect" in row.last_error
    # As after a restart: the sweep finds it due and sends it.
    requester = _Requester(port, reports)
    try:
        with session_scope(listener.engine) as session:
            session.execute(update(StorageCommitment).where(StorageCommitment.transaction_uid == transaction).values(next_attempt_at=datetime.now(UTC)))
        sent = commitment_reports.deliver_due(listener.engine, listener.settings, listener.receiver.peers)
        assert sent == 1 and reports.arrived.wait(5)
    finally:
        requester.stop()
    assert _row(listener, transaction).status == "reported"


def test_requests_the_scp_cannot_take(listener: Listener) -> None:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate("127.0.0.1", listener.settings.dicom_port, ae_title="DOCTORAI")
    try:
        no_transaction = Dataset()
        no_transaction.ReferencedSOPSequence = _references(("1.2.840.10008.5.1.4.1.1.2", "1.2.3"))
        status, _ = assoc.send_n_action(no_transaction, 1, StorageCommitmentPushModel, WELL_KNOWN)
        assert status.Status == 0x0120  # missing attribute (PS3.7 C.5.16)
        information = Dataset()
        information.TransactionUID = generate_uid()
        information.ReferencedSOPSequence = _references(("1.2.840.10008.5.1.4.1.1.2", "1.2.3"))
        status, _ = assoc.send_n_action(information, 7, StorageCommitmentPushModel, WELL_KNOWN)
        assert status.Status == 0x0123  # no such action
    finally:
        assoc.release()
