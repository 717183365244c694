"""Peers that break the upper layer protocol, on raw sockets: each gets an A-ABORT (or the DIMSE status
PS3.7 gives), an audit record, and the listener goes on serving everyone else."""

import io
import logging
import socket
import struct
import time
from functools import partial
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.dimse_messages import C_FIND_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from benchmarks.dicom_scu import read_pdu
from doctorai.stack import StackConfig
from integration.logs import make_handler
from storage.db import session_scope
from storage.tables.audit import AuditEvent
from storage.tables.index import Instance
from tests.dicom_listener.conftest import Listener, associate_rq, ct, send, serve
from tests.mllp_peers import wait_for

A_ABORT = 0x07


def _connect(listener: Listener) -> socket.socket:
    return socket.create_connection(("127.0.0.1", listener.settings.dicom_port), timeout=10)


def _associated(listener: Listener) -> socket.socket:
    sock = _connect(listener)
    contexts = [build_context(Verification), build_context(CTImageStorage, [ImplicitVRLittleEndian])]
    sock.sendall(associate_rq(contexts))
    assert read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
    return sock


def _p_data(context_id: int, fragments: list[tuple[int, bytes]]) -> bytes:
    items = b"".join(struct.pack(">LBB", len(value) + 2, context_id, control) + value for control, value in fragments)
    return struct.pack(">BBL", 0x04, 0, len(items)) + items


def _aborted_reasons(listener: Listener, count: int = 1) -> list[str]:
    deadline = time.monotonic() + 15
    while True:
        with session_scope(listener.engine) as s:
            rows = list(s.scalars(select(AuditEvent).where(AuditEvent.subtype == "association-aborted")))
        if len(rows) >= count or time.monotonic() > deadline:
            return [r.detail["reason"] for r in rows]
        time.sleep(0.05)


def _status(body: bytes) -> int:
    """The Status (0000,0900) of the response command in a P-DATA-TF body."""
    at = body.index(b"\x00\x00\x00\x09\x02\x00\x00\x00")  # its tag and length 2, Implicit VR
    return int(struct.unpack("<H", body[at + 8 : at + 10])[0])


def _command(message: C_STORE_RQ | C_FIND_RQ) -> bytes:
    pdvs = [pdv for p_data in message.encode_msg(1, 16384) for pdv in p_data.presentation_data_value_list]
    return b"".join(value[1:] for _, value in pdvs if value[0] & 0x01)


@pytest.mark.stack
def test_garbage_instead_of_an_association_request_is_aborted_and_audited(listener: Listener) -> None:
    with _connect(listener) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n")
        assert read_pdu(sock)[0] == A_ABORT
    with _connect(listener) as sock:
        sock.sendall(_p_data(1, [(0x03, b"\x00" * 8)]))  # P-DATA-TF before any association (PS3.8 Sta2)
        assert read_pdu(sock)[0] == A_ABORT
    reasons = _aborted_reasons(listener, 2)
    assert any("over the maximum" in r for r in reasons) and any("before A-ASSOCIATE-RQ" in r for r in reasons)
    assert send(listener.settings.dicom_port, ct()).Status == 0x0000


@pytest.mark.stack
def test_a_pdv_on_a_context_never_accepted_is_aborted(listener: Listener) -> None:
    with _associated(listener) as sock:
        sock.sendall(_p_data(99, [(0x03, b"\x00" * 8)]))
        assert read_pdu(sock)[0] == A_ABORT
    assert any("context 99" in r for r in _aborted_reasons(listener))


@pytest.mark.stack
def test_a_request_we_do_not_serve_gets_unrecognized_operation(listener: Listener) -> None:
    identifier = b"\x10\x00\x20\x00\x00\x00\x00\x00"  # an empty PatientID: the data set is read and dropped
    find = C_FIND()
    find.MessageID, find.AffectedSOPClassUID, find.Priority = 5, Verification, 2
    find.Identifier = io.BytesIO(identifier)
    message = C_FIND_RQ()
    message.primitive_to_message(find)
    with _associated(listener) as sock:
        sock.sendall(_p_data(1, [(0x03, _command(message)), (0x02, identifier)]))
        pdu_type, body = read_pdu(sock)
        assert pdu_type == 0x04 and _status(body) == 0x0211
        sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RQ
        assert read_pdu(sock)[0] == 0x06


@pytest.mark.stack
def test_a_connection_cut_inside_a_dataset_stores_nothing_and_leaves_no_spool(services: StackConfig, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    for listener in serve(services, tmp_path, dicom_spool_memory_bytes=0, dicom_spool_dir=str(spool)):
        uid = generate_uid()
        store = C_STORE()
        store.MessageID, store.AffectedSOPClassUID, store.AffectedSOPInstanceUID, store.Priority = 1, CTImageStorage, uid, 2
        store.DataSet = io.BytesIO(b"\x00" * 8)  # so the command says a data set follows
        message = C_STORE_RQ()
        message.primitive_to_message(store)
        with _associated(listener) as sock:
            sock.sendall(_p_data(3, [(0x03, _command(message)), (0x00, b"\x08\x00\x16\x00" + b"\x00" * 2000)]))
            deadline = time.monotonic() + 10
            while not any(spool.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert any(spool.iterdir())  # the data set was being spooled to a file
        deadline = time.monotonic() + 10
        while any(spool.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(spool.iterdir())
        with session_scope(listener.engine) as s:
            assert s.get(Instance, uid) is None
        assert send(listener.settings.dicom_port, ct()).Status == 0x0000
        assert listener.receiver.counts.active() == 0


@pytest.mark.stack
def test_a_c_store_without_a_data_set_cannot_be_understood(listener: Listener) -> None:
    store = C_STORE()
    store.MessageID, store.AffectedSOPClassUID, store.AffectedSOPInstanceUID, store.Priority = 2, CTImageStorage, generate_uid(), 2
    message = C_STORE_RQ()
    message.primitive_to_message(store)  # no DataSet: Command Data Set Type 0101H
    with _associated(listener) as sock:
        sock.sendall(_p_data(3, [(0x03, _command(message))]))
        pdu_type, body = read_pdu(sock)
        assert pdu_type == 0x04 and _status(body) == 0xC000


# Issue 18 ---------------------------------------------------------------------------------------


def _deflated_ct(zeros: int) -> Dataset:
    """CT_small in Deflated Explicit VR Little Endian with `zeros` bytes of zeros before its pixels."""
    ds = ct()
    ds.SOPInstanceUID = generate_uid()
    ds.add_new(0x00420011, "OB", b"\x00" * zeros)  # Encapsulated Document: any long value will do
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return ds


def _refused_reasons(listener: Listener) -> list[str]:
    with session_scope(listener.engine) as s:
        return [r.detail["reason"] for r in s.scalars(select(AuditEvent).where(AuditEvent.subtype == "instance-refused"))]


@pytest.mark.stack
def test_a_deflate_bomb_is_refused_as_it_inflates_and_the_listener_goes_on(services: StackConfig, tmp_path: Path) -> None:
    """Issue 18: 510 KB deflated (500 MB inflated) was acknowledged with Success after taking 1.16 GB."""
    for listener in serve(services, tmp_path, dicom_max_inflated_bytes=1 << 20):
        port = listener.settings.dicom_port
        small = _deflated_ct(1000)
        assert send(port, small).Status == 0x0000  # a deflated instance within the bound is stored
        bomb = _deflated_ct(8 << 20)  # a few KB on the wire, 8 MB inflated
        status = send(port, bomb)
        assert status.Status == 0xC000 and "inflates past 1048576 bytes" in status.ErrorComment
        with session_scope(listener.engine) as s:
            assert s.get(Instance, bomb.SOPInstanceUID) is None
        assert any("inflates past" in r for r in _refused_reasons(listener))
        assert send(port, ct()).Status == 0x0000


@pytest.mark.stack
def test_an_instance_over_the_size_limit_is_refused_while_it_arrives(services: StackConfig, tmp_path: Path) -> None:
    """Issue 18: the size of one instance was unbounded."""
    spool = tmp_path / "spool"
    spool.mkdir()
    for listener in serve(services, tmp_path, dicom_max_instance_bytes=16384, dicom_spool_memory_bytes=0, dicom_spool_dir=str(spool)):
        big = ct()  # some 39 KB
        status = send(listener.settings.dicom_port, big)
        assert status.Status == 0xA700 and "larger than 16384 bytes" in status.ErrorComment
        assert not any(spool.iterdir())  # what had arrived was dropped when the limit was passed
        with session_scope(listener.engine) as s:
            assert s.get(Instance, big.SOPInstanceUID) is None
        assert any("larger than 16384" in r for r in _refused_reasons(listener))
        # The association goes on: the next request on it is served.
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", listener.settings.dicom_port, ae_title="DOCTORAI")
        try:
            assert assoc.send_c_store(ct()).Status == 0xA700
            assert assoc.send_c_echo().Status == 0x0000
        finally:
            assoc.release()


@pytest.mark.stack
def test_an_association_ends_at_its_time_and_byte_limits(services: StackConfig, tmp_path: Path) -> None:
    """Issue 18: timeouts were per read, so a peer trickling bytes held its association forever."""
    for listener in serve(services, tmp_path, dicom_association_seconds=1.0, dicom_max_association_bytes=30000):
        with _associated(listener) as sock:
            # Idle well within the network timeout (120 s): the association's own deadline ends it.
            pdu_type, body = read_pdu(sock)
            assert pdu_type == A_ABORT and body[2] == 0x02  # by the service provider
        with _associated(listener) as sock:
            # Command fragments, none the last (PS3.8 E.2), past the association's 30000 bytes.
            for _ in range(3):
                sock.sendall(_p_data(1, [(0x01, b"\x00" * 12000)]))
            assert read_pdu(sock)[0] == A_ABORT
        reasons = _aborted_reasons(listener, 2)
        assert any("time limit" in r for r in reasons) and any("byte limit" in r for r in reasons)


def _echoes(listener: Listener) -> bool:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.settings.dicom_port, ae_title="DOCTORAI")
    try:
        return bool(assoc.is_established and assoc.send_c_echo().Status == 0)
    finally:
        assoc.release()


@pytest.mark.stack
def test_connections_over_the_cap_get_a_transient_rejection_before_any_thread(services: StackConfig, tmp_path: Path) -> None:
    """Issue 18: 500 idle TCP connections made 500 threads (+120 MB) before any association existed."""
    for listener in serve(services, tmp_path, dicom_max_connections=2):
        held = [_associated(listener), _associated(listener)]
        try:
            with _connect(listener) as third:
                pdu_type, body = read_pdu(third)
                # A-ASSOCIATE-RJ: rejected-transient, service-provider (presentation), local-limit-exceeded (PS3.8 9.3.4).
                assert pdu_type == 0x03 and body == b"\x00\x02\x03\x02"
                assert third.recv(1) == b""
        finally:
            for sock in held:
                sock.close()
        wait_for(partial(_echoes, listener), what="the held connections' slots to come back")


@pytest.mark.stack
def test_at_the_cap_idle_connections_make_room_for_a_modality(services: StackConfig, tmp_path: Path) -> None:
    """Issue 18: a flood of idle connections must not keep a well-behaved sender out."""
    for listener in serve(services, tmp_path, dicom_max_connections=2):
        idle = [_connect(listener), _connect(listener)]
        try:
            assert _echoes(listener)  # the oldest idle connection was closed to make room
            assert idle[0].recv(1) == b""
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.stack
def test_junk_connections_are_audited_in_aggregate(services: StackConfig, tmp_path: Path) -> None:
    """Issue 18: 12,169 junk TCP connections in 30 s wrote 12,169 association-aborted records and log lines."""
    for listener in serve(services, tmp_path, dicom_refusal_audit_seconds=1.0):
        for _ in range(200):
            with _connect(listener) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n")
                assert read_pdu(sock)[0] == A_ABORT

        def counted(listener: Listener = listener) -> list[int]:
            with session_scope(listener.engine) as s:
                rows = s.scalars(select(AuditEvent).where(AuditEvent.subtype == "association-aborted"))
                return [int(r.detail["count"]) for r in rows]

        wait_for(lambda: sum(counted()) == 200, what="the aggregate audit records")
        assert len(counted()) <= 10
        assert send(listener.settings.dicom_port, ct()).Status == 0x0000


@pytest.mark.stack
def test_a_malformed_association_request_is_aborted_as_invalid_without_a_traceback(
    listener: Listener, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18: a bad sub-item length raised inside pynetdicom's decoder: "internal error", with a traceback."""
    rq = bytearray(associate_rq([build_context(Verification)]))
    rq[109:111] = b"\x00\x00"  # the abstract syntax sub-item's length (PS3.8 9.3.2.2.1)
    with _connect(listener) as sock:
        sock.sendall(bytes(rq))
        pdu_type, body = read_pdu(sock)
    # A-ABORT from the service provider, invalid-PDU-parameter-value (PS3.8 9.3.8).
    assert pdu_type == A_ABORT and body[2:] == b"\x02\x06"
    (reason,) = _aborted_reasons(listener)
    assert reason.startswith("malformed A-ASSOCIATE-RQ") and "internal error" not in reason
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.stack
def test_an_association_request_without_a_presentation_context_is_rejected(listener: Listener) -> None:
    """Issue 18: an A-ASSOCIATE-RQ with no presentation context was accepted."""
    with _connect(listener) as sock:
        sock.sendall(associate_rq([]))
        pdu_type, body = read_pdu(sock)
    # Rejected-permanent, service-user, no-reason-given (PS3.8 9.3.4, Table 9-21).
    assert pdu_type == 0x03 and body == b"\x00\x01\x01\x01"


@pytest.mark.stack
def test_a_context_without_transfer_syntaxes_is_rejected_alone(listener: Listener) -> None:
    """Issue 18 (the fault harness's fuzzing): a presentation context with no Transfer Syntax sub-item
    raised inside pynetdicom's negotiation, and the association was aborted as an internal error."""
    empty = build_context(Verification)
    empty._transfer_syntax = []  # what the fuzzer's RQ decodes to: PS3.8 9.3.2.2 wants one or more
    with _connect(listener) as sock:
        sock.sendall(associate_rq([build_context(Verification), empty]))
        pdu_type, body = read_pdu(sock)
        assert pdu_type == 0x02  # A-ASSOCIATE-AC
        ac = A_ASSOCIATE_AC()
        ac.decode(bytes([pdu_type, 0]) + len(body).to_bytes(4, "big") + body)
        results = {int(cx.context_id): cx.result for cx in ac.presentation_context}
        assert results == {1: 0x00, 3: 0x04}  # transfer-syntaxes-not-supported, the other accepted
        sock.sendall(struct.pack(">BBLL", 0x05, 0, 4, 0))  # A-RELEASE-RQ: the association is alive
        assert read_pdu(sock)[0] == 0x06  # A-RELEASE-RP


@pytest.mark.stack
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's warning about the UID, as in production
def test_the_log_of_a_refused_request_is_short_and_quotes_nothing(listener: Listener) -> None:
    """Issue 18: a 109 KB log warning held raw data-set bytes."""
    stream = io.StringIO()
    handler = make_handler("text", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        rq = associate_rq([build_context(Verification)])
        # The application context name (PS3.8 9.3.2.1) as 60000 bytes of text: the decoder warns about it.
        junk = b"1.2.SECRET^PATIENT" * 3000
        item = b"\x10\x00" + struct.pack(">H", len(junk)) + junk
        body = rq[6:74] + item + rq[74 + 4 + 21 :]
        with _connect(listener) as sock:
            sock.sendall(struct.pack(">BBL", 0x01, 0, len(body)) + body)
            assert read_pdu(sock)[0] in (0x03, A_ABORT)

        def audited() -> bool:
            with session_scope(listener.engine) as s:
                return s.scalars(select(AuditEvent)).first() is not None

        wait_for(audited, what="the refusal's audit record, written after its log line")
    finally:
        root.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines and all(len(line) < 1300 for line in lines)
    assert "SECRET" not in stream.getvalue()


@pytest.mark.stack
def test_rejected_association_requests_are_audited_in_aggregate(services: StackConfig, tmp_path: Path) -> None:
    """Issue 18: refusals before an association exists are audited per source and interval, not one row each."""
    for listener in serve(services, tmp_path, dicom_refusal_audit_seconds=1.0):
        for _ in range(50):
            with _connect(listener) as sock:
                sock.sendall(associate_rq([build_context(Verification)], called="NOTUS"))
                assert read_pdu(sock)[0] == 0x03  # A-ASSOCIATE-RJ

        def rejected(listener: Listener = listener) -> list[AuditEvent]:
            with session_scope(listener.engine) as s:
                return list(s.scalars(select(AuditEvent).where(AuditEvent.subtype == "association-rejected")))

        wait_for(lambda: sum(int(r.detail["count"]) for r in rejected()) == 50, what="the aggregate audit records")
        assert len(rejected()) <= 10 and {r.agent_who for r in rejected()} == {"ae:MODALITY"}


@pytest.mark.stack
def test_a_pdu_type_the_protocol_does_not_define_is_an_unrecognized_pdu(listener: Listener) -> None:
    """Issue 18: malformed PDUs are refused as such (PS3.8 9.3.8), not as internal errors."""
    with _connect(listener) as sock:
        sock.sendall(struct.pack(">BBL", 0x47, 0, 4) + b"\x00" * 4)
        pdu_type, body = read_pdu(sock)
    assert pdu_type == A_ABORT and body[2:] == b"\x02\x01"  # service provider, unrecognized-PDU
