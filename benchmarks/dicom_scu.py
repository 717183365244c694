"""A C-STORE SCU that sends and reads in the caller's thread, for the fault harness's data-set fuzzing.

pynetdicom's requestor runs a reactor thread beside the caller. `send_c_store` pauses it through a
flag the reactor sets just before its checkpoint and clears just after, so under load the caller can
read "paused" while the reactor is already past the checkpoint: the reactor then takes the
C-STORE-RSP off the queue, logs "Received unexpected C-STORE service message", and the caller
waits out its DIMSE timeout for an answer the listener did send (pynetdicom 3.0,
`Association._run_reactor`). The harness counted those as the listener's hangs. Here each request
is written and its response read on one socket, in order, with nothing beside it.
"""

import socket
import struct
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context

# PS3.8 9.3.1 PDU types.
A_ASSOCIATE_AC_TYPE, P_DATA_TF_TYPE, A_RELEASE_RQ_TYPE = 0x02, 0x04, 0x05
# PS3.7 Annex A: the DICOM application context; PS3.8 E.2: message control header bits.
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
COMMAND, LAST = 0x01, 0x02
OUR_MAX_PDU = 16384
# What this SCU reads at most: a PDU (our P-DATA-TF maximum is OUR_MAX_PDU; an AC or RJ is far
# smaller) and a response's command set (a few hundred bytes); more is refused, never buffered.
PDU_LIMIT = 1 << 20
COMMAND_LIMIT = 1 << 16


class Refused(ConnectionError):
    """The association was rejected or aborted, or the connection closed, before an answer."""


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """One whole PDU: its type and body (PS3.8 9.3.1). TimeoutError when the peer is silent."""
    pdu_type, _, length = struct.unpack(">BBL", _exactly(sock, 6))
    if length > PDU_LIMIT:
        raise Refused(f"a PDU of {length} bytes, over {PDU_LIMIT}")
    return pdu_type, _exactly(sock, length)


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise Refused("the connection closed")
        data += chunk
    return bytes(data)


def associate(port: int, *, abstract: str, syntax: str, calling: str, timeout: float) -> tuple[socket.socket, int]:
    """An association proposing one context (ID 1): its socket and the acceptor's maximum PDU length."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT)
    primitive.calling_ae_title, primitive.called_ae_title = calling, "DOCTORAI"
    context = build_context(abstract, [syntax])
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    ours = MaximumLengthNotification()
    ours.maximum_length_received = OUR_MAX_PDU
    primitive.user_information = [ours]
    request = A_ASSOCIATE_RQ()
    request.from_primitive(primitive)
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(request.encode())
        pdu_type, body = read_pdu(sock)
        if pdu_type != A_ASSOCIATE_AC_TYPE:
            raise Refused(f"PDU type {pdu_type:#04x} instead of an A-ASSOCIATE-AC")
        accepted = A_ASSOCIATE_AC()
        accepted.decode(bytes([pdu_type, 0]) + len(body).to_bytes(4, "big") + body)
        answer = accepted.to_primitive()
        if not any(cx.result == 0 for cx in answer.presentation_context_definition_results_list):
            raise Refused("the presentation context was not accepted")
        # PS3.8 D.1: 0 means no limit; fragments stay within ours either way.
        theirs = answer.maximum_length_received or OUR_MAX_PDU
        return sock, min(int(theirs), OUR_MAX_PDU)
    except BaseException:
        sock.close()
        raise


def c_store(sock: socket.socket, ds: Dataset, *, message_id: int, max_pdu: int, implicit_vr: bool) -> int:
    """Send `ds` by C-STORE on context 1 and return the response's Status (PS3.7 9.3.1.2).

    ValueError when pydicom cannot encode `ds`; TimeoutError when no answer comes within the
    socket's timeout; Refused when the listener aborts or closes instead."""
    encoded = encode(ds, implicit_vr, True)
    if encoded is None:
        raise ValueError("pydicom cannot encode the data set")
    request = C_STORE()
    request.MessageID, request.Priority = message_id, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    request.DataSet = BytesIO(encoded)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    for p_data in message.encode_msg(1, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        sock.sendall(pdu.encode())
    return _status(sock)


def _status(sock: socket.socket) -> int:
    """Read P-DATA-TF PDUs until the response's command set is whole; its Status (0000,0900)."""
    command = bytearray()
    while True:
        pdu_type, body = read_pdu(sock)
        if pdu_type != P_DATA_TF_TYPE:
            raise Refused(f"PDU type {pdu_type:#04x} instead of the response")
        at = 0
        while at < len(body):  # PS3.8 9.3.5: PDV items, each length, context ID, control header, fragment
            (length,) = struct.unpack(">L", body[at : at + 4])
            control, fragment = body[at + 5], body[at + 6 : at + 4 + length]
            at += 4 + length
            if control & COMMAND:
                command += fragment
                if len(command) > COMMAND_LIMIT:
                    raise Refused(f"a response command set over {COMMAND_LIMIT} bytes")
                if control & LAST:  # command sets are Implicit VR Little Endian (PS3.7 6.3.1)
                    response = read_dataset(BytesIO(bytes(command)), is_implicit_VR=True, is_little_endian=True)
                    return int(response.Status)


def release(sock: socket.socket) -> None:
    """A-RELEASE-RQ, its A-RELEASE-RP, and close (PS3.8 7.2)."""
    with sock:
        try:
            sock.sendall(struct.pack(">BBLL", A_RELEASE_RQ_TYPE, 0, 4, 0))
            read_pdu(sock)
        except (OSError, Refused):
            pass  # the listener closed first: the association is over either way
