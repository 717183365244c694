"""Accepted TCP connections: Nagle off, fast reads, and the PDU length limit pynetdicom does not enforce."""

import logging
import socket
import struct
from collections.abc import Callable

from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket

log = logging.getLogger(__name__)

P_DATA_TF = 0x04
# A-ASSOCIATE, A-RELEASE and A-ABORT PDUs are small; a bigger length is an attack or garbage.
OTHER_PDU_LIMIT = 1 << 20
# An unassigned PDU type (PS3.8 9.3.1): the DUL state machine answers it with A-ABORT (AA-8).
INVALID_PDU_TYPE = 0xFF

OnOversize = Callable[[Association, int, int], None]


# Linux only: acknowledge every segment at once instead of delaying the ACK.
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def _read_exactly(sock: socket.socket, nr_bytes: int) -> bytearray:
    # One buffer and recv_into with the whole remainder, instead of pynetdicom's 4 KiB recv()
    # loop: far fewer system calls and copies for 128 KiB P-DATA PDUs.
    buffer = bytearray(nr_bytes)
    view = memoryview(buffer)
    got = 0
    while got < nr_bytes:
        n = sock.recv_into(view[got:], nr_bytes - got)
        if _QUICKACK is not None:
            # A sender with Nagle on (dcmtk's default, most modalities) holds its last partial
            # segment until we ACK; a delayed ACK (40 ms on Linux) would stall every message.
            # The kernel clears TCP_QUICKACK as it sees fit, so it is set again after each read.
            sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        if n == 0:
            del view
            return buffer[:got]  # connection closed: return what arrived, as pynetdicom does
        got += n
    return buffer


def tune(assoc: Association, on_oversize: OnOversize) -> None:
    """Set TCP_NODELAY on the association's socket and guard its PDU reads.

    Nagle's algorithm holds back small segments until the previous one is acknowledged, and the
    peer delays its ACK: every small DIMSE response would wait for the delayed-ACK timer.
    """
    transport: AssociationSocket = assoc.dul.socket  # type: ignore[assignment]
    raw = transport.socket
    if raw is None:
        return
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if _QUICKACK is not None:
        raw.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)

    def recv(nr_bytes: int) -> bytearray:
        data = _read_exactly(raw, nr_bytes)
        if nr_bytes == 6 and len(data) == 6:  # a PDU header: type, reserved, length (PS3.8 9.3.1)
            pdu_type, _, length = struct.unpack(">BBL", data)
            limit = (assoc.acceptor.maximum_length or 0) if pdu_type == P_DATA_TF else OTHER_PDU_LIMIT
            if limit and length > limit:
                # PS3.8 D.1: a P-DATA-TF PDU longer than the Maximum Length we announced is a
                # protocol error. Handing the DUL an invalid PDU type makes it abort (AA-8)
                # before it tries to allocate and read `length` bytes.
                on_oversize(assoc, length, limit)
                data[0] = INVALID_PDU_TYPE
        return data

    setattr(transport, "recv", recv)
