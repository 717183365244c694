"""The messages of an association while we serve one request: our responses and requests out, and
what the peer sends meanwhile in (PS3.7 9.3, PS3.8 9.3.5).

A C-FIND, C-MOVE or C-GET answers with many responses, and the peer may cancel it between them
(C-CANCEL, PS3.7 9.3.2.3); a C-GET sends its C-STOREs on the association and reads each
C-STORE-RSP (PS3.4 C.4.3.3); a storage commitment report is an N-EVENT-REPORT whose response we
read (PS3.4 J.3.3). Identifiers and other data sets are decoded and encoded here, in the
presentation context's transfer syntax.
"""

from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom.dsutils import encode

from dicom_listener import dimse, pdus
from dicom_listener.association import Association
from dicom_listener.errors import PeerAborted, PeerReleased, ProtocolError
from integration.instances.inflate import DEFLATED, inflated
from integration.instances.spool import Spool

# PS3.8 E.2 message control header: bit 0 set = command, bit 1 set = last fragment.
COMMAND = 0x01
LAST = 0x02
# A data set goes out in reads of this size, each split into PDUs the peer takes.
_CHUNK = 1 << 18


def data_set(spool: Spool, transfer_syntax: str, *, max_bytes: int) -> Dataset:
    """The data set of a request (an identifier, an action's information, a step), decoded in its context's syntax.

    A request's data set is held whole, so it is bounded: on the wire by the spool's limit, and a
    deflated one (PS3.5 A.5) as it inflates, by `max_bytes` (CannotUnderstand past it).
    """
    with spool.open() as f:
        if transfer_syntax != DEFLATED:
            return dcmread(f, force=True)
        f.seek(spool.dataset_start)
        with inflated(f, limit=max_bytes, memory_limit=max_bytes) as plain:
            return read_dataset(plain, False, True)  # type: ignore[arg-type]


def encode_data_set(ds: Dataset, transfer_syntax: str) -> bytes:
    """A data set in a presentation context's transfer syntax (deflated and big endian included)."""
    syntax = UID(transfer_syntax)
    encoded = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if encoded is None:
        raise ValueError("the data set cannot be encoded")
    return encoded


def _send(assoc: Association, context_id: int, value: bytes, *, command: bool, last: bool = True) -> None:
    assoc.sock.sendall(pdus.p_data(context_id, value, max_length=assoc.peer_max_pdu, is_command=command, last=last))


def respond(
    assoc: Association,
    context_id: int,
    request: dimse.Command,
    status: int,
    comment: str = "",
    *,
    identifier: Dataset | None = None,
    counts: dimse.SubOperations | None = None,
) -> None:
    """Send one response to `request`, with its identifier encoded in the context's transfer syntax."""
    command = dimse.response(request, status, comment, data_set=identifier is not None, counts=counts)
    _send(assoc, context_id, command, command=True)
    if identifier is not None:
        _send(assoc, context_id, encode_data_set(identifier, assoc.contexts[context_id].transfer_syntax), command=False)


def request(assoc: Association, context_id: int, command: bytes, data: bytes | BinaryIO, length: int | None = None) -> None:
    """Send a request of ours with its data set: bytes, or `length` bytes read from a file."""
    _send(assoc, context_id, command, command=True)
    if isinstance(data, bytes):
        _send(assoc, context_id, data, command=False)
        return
    left = length or 0
    while True:
        chunk = data.read(min(_CHUNK, left))
        left -= len(chunk)
        if len(chunk) == 0 and left > 0:
            raise OSError("the stored object ended early")
        _send(assoc, context_id, chunk, command=False, last=left <= 0)
        if left <= 0:
            return


def _read_pdu(assoc: Association) -> None:
    """Read one PDU; each command it completes goes to the backlog, data sets are dropped.

    Only commands arrive while an operation is in progress (a C-CANCEL, the response to a request
    of ours); data sets they carry are read and dropped.
    """
    assert assoc.reader is not None and assoc.policy is not None
    reader = assoc.reader
    assoc.sock.settimeout(assoc.policy.dimse_timeout)
    pdu_type, length = pdus.read_header(reader, data_limit=assoc.policy.max_pdu)
    if pdu_type == pdus.A_ABORT:
        pdus.read_body(reader, length)
        raise PeerAborted("the peer aborted the association")
    if pdu_type == pdus.A_RELEASE_RQ:
        pdus.read_body(reader, length)
        raise PeerReleased("the peer released the association")
    if pdu_type != pdus.P_DATA_TF:
        raise ProtocolError(f"unexpected PDU type {pdu_type:#04x}", reason=pdus.REASON_UNEXPECTED_PDU)
    while length > 0:
        value_length, context_id, control = pdus.read_pdv_header(reader)
        length -= 6 + value_length
        if length < 0 or context_id not in assoc.contexts:
            raise ProtocolError("PDV item out of place", reason=pdus.REASON_INVALID_PARAMETER)
        value = b"".join(bytes(chunk) for chunk in reader.stream(value_length))
        if not control & COMMAND:
            if not assoc.dropping:
                raise ProtocolError("data set fragment without its command", reason=pdus.REASON_UNEXPECTED_PDU)
            assoc.dropping = not control & LAST
            continue
        assoc.incoming += value
        if control & LAST:
            command = dimse.decode(bytes(assoc.incoming))
            assoc.incoming.clear()
            assoc.dropping = command.has_data_set
            assoc.backlog.append(command)


def _take(assoc: Association) -> dimse.Command | None:
    """The next command of the backlog that is not a C-CANCEL (those are noted in `cancelled`)."""
    while assoc.backlog:
        command = assoc.backlog.popleft()
        if command.command_field == dimse.C_CANCEL_RQ:
            assoc.cancelled.add(command.message_id_being_responded_to)
            continue
        return command
    return None


def cancelled(assoc: Association, message_id: int) -> bool:
    """Whether the peer has cancelled operation `message_id`; reads what has arrived, never waits for more."""
    assert assoc.reader is not None
    while assoc.reader.ready() or assoc.incoming or assoc.dropping:
        _read_pdu(assoc)
    other = _take(assoc)
    if other is not None:
        # We perform one operation at a time (PS3.7 D.3.3.3): only a cancel may come meanwhile.
        raise ProtocolError("a request while another is in progress", reason=pdus.REASON_UNEXPECTED_PDU)
    return message_id in assoc.cancelled


def response_to(assoc: Association, message_id: int) -> dimse.Command:
    """The peer's response to our request `message_id` (waiting up to the DIMSE timeout for each PDU)."""
    while True:
        command = _take(assoc)
        if command is None:
            _read_pdu(assoc)
            continue
        if not command.is_response or command.message_id_being_responded_to != message_id:
            raise ProtocolError("a message other than the response we wait for", reason=pdus.REASON_UNEXPECTED_PDU)
        return command


def stored_data_set(f: BinaryIO) -> int:
    """Where the data set of a stored DICOM file starts: past the preamble and file meta (PS3.10 7.1)."""
    head = f.read(144)
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        raise ValueError("not a DICOM file with a File Meta Information Group Length")
    start = 144 + int.from_bytes(head[140:144], "little")
    f.seek(start)
    return start

