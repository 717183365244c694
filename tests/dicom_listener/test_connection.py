"""Peers that break the upper layer protocol, on raw sockets: each gets an A-ABORT (or the DIMSE status
PS3.7 gives), an audit record, and the listener goes on serving everyone else."""

import io
import socket
import struct
import time
from pathlib import Path

import pytest
from pydicom.uid import ImplicitVRLittleEndian, generate_uid
from pynetdicom.dimse_messages import C_FIND_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_FIND, C_STORE
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from doctorai.stack import StackConfig
from storage.db import session_scope
from storage.tables.audit import AuditEvent
from storage.tables.index import Instance
from tests.dicom_listener.conftest import Listener, associate_rq, ct, send, serve

A_ABORT = 0x07


def _connect(listener: Listener) -> socket.socket:
    return socket.create_connection(("127.0.0.1", listener.settings.dicom_port), timeout=10)


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = b""
    while len(header) < 6:
        chunk = sock.recv(6 - len(header))
        if not chunk:
            raise ConnectionError("closed")
        header += chunk
    pdu_type, _, length = struct.unpack(">BBL", header)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return pdu_type, body


def _associated(listener: Listener) -> socket.socket:
    sock = _connect(listener)
    contexts = [build_context(Verification), build_context(CTImageStorage, [ImplicitVRLittleEndian])]
    sock.sendall(associate_rq(contexts))
    assert _read_pdu(sock)[0] == 0x02  # A-ASSOCIATE-AC
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
        assert _read_pdu(sock)[0] == A_ABORT
    with _connect(listener) as sock:
        sock.sendall(_p_data(1, [(0x03, b"\x00" * 8)]))  # P-DATA-TF before any association (PS3.8 Sta2)
        assert _read_pdu(sock)[0] == A_ABORT
    reasons = _aborted_reasons(listener, 2)
    assert any("over the maximum" in r for r in reasons) and any("before A-ASSOCIATE-RQ" in r for r in reasons)
    assert send(listener.settings.dicom_port, ct()).Status == 0x0000


@pytest.mark.stack
def test_a_pdv_on_a_context_never_accepted_is_aborted(listener: Listener) -> None:
    with _associated(listener) as sock:
        sock.sendall(_p_data(99, [(0x03, b"\x00" * 8)]))
        assert _read_pdu(sock)[0] == A_ABORT
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
        pdu_type, body = _read_pdu(sock)
        assert pdu_type == 0x04 and _status(body) == 0x0211
        sock.sendall(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00")  # A-RELEASE-RQ
        assert _read_pdu(sock)[0] == 0x06


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
        pdu_type, body = _read_pdu(sock)
        assert pdu_type == 0x04 and _status(body) == 0xC000
