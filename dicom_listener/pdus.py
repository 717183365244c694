"""The DICOM upper layer on one TCP connection: reading PDUs, writing the ones an acceptor sends (PS3.8 9.3).

A PDU is a type byte, a reserved byte and a 4-byte big-endian length, then its fields. P-DATA-TF
PDUs are never read whole: their presentation data value items are read one header at a time
and their values streamed, so memory stays flat whatever the PDU length the peer uses.
"""

import select
import socket
import ssl
import struct
import time
from collections.abc import Iterator

from dicom_listener.errors import AssociationLimit, OversizePdu, ProtocolError

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

# PS3.8 9.3.8: A-ABORT source 0 = service user, 2 = service provider; provider reasons.
ABORT_SOURCE_USER = 0x00
ABORT_SOURCE_PROVIDER = 0x02
REASON_NOT_SPECIFIED = 0x00
REASON_UNRECOGNISED_PDU = 0x01
REASON_UNEXPECTED_PDU = 0x02
REASON_INVALID_PARAMETER = 0x06

# Association PDUs other than P-DATA-TF are small (an A-ASSOCIATE-RQ with 128 contexts of long
# UIDs is some 20 KB): a larger length is garbage or an attack, refused before it is read.
OTHER_PDU_LIMIT = 1 << 20

_HEADER = struct.Struct(">BBL")
_PDV_HEADER = struct.Struct(">LBB")
# Linux only: acknowledge at once instead of delaying the ACK (see Reader).
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)


def tune(sock: socket.socket) -> None:
    """Nagle off, so a small response never waits for the peer's delayed ACK (RFC 1122 4.2.3.4)."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if _QUICKACK is not None:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


class Reader:
    """Buffered reads from one connection, with TCP_QUICKACK set again after every receive.

    A sender with Nagle's algorithm on (dcmtk's default, most modalities) holds back the last
    partial segment of a message until its previous segment is acknowledged; a delayed ACK
    (40 ms on Linux) would stall every C-STORE. The kernel clears TCP_QUICKACK as it sees fit.
    """

    # One system call takes up to a whole 128 KiB P-DATA-TF and the next PDU's header.
    SIZE = 1 << 18

    def __init__(self, sock: socket.socket, *, seconds: float = 0.0, max_bytes: int = 0) -> None:
        self._sock = sock
        self._buffer = bytearray(self.SIZE)
        self._view = memoryview(self._buffer)
        self._start = 0
        self._end = 0
        # The association's overall bounds (0: none): a peer that trickles bytes within every
        # per-read timeout still ends once it has lasted `seconds` or sent `max_bytes`.
        self._deadline = time.monotonic() + seconds if seconds else 0.0
        self._left = max_bytes or -1

    def _receive(self, into: memoryview) -> int:
        if self._deadline:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise AssociationLimit("association lasted longer than its time limit", reason=REASON_NOT_SPECIFIED)
            timeout = self._sock.gettimeout()
            if timeout is None or timeout > remaining:
                self._sock.settimeout(remaining)  # the caller sets its own timeout before each read
        if self._left == 0:
            raise AssociationLimit("association sent more than its byte limit", reason=REASON_NOT_SPECIFIED)
        if self._left > 0 and len(into) > self._left:
            into = into[: self._left]
        try:
            n = self._sock.recv_into(into)
        except TimeoutError:
            if self._deadline and time.monotonic() >= self._deadline:
                raise AssociationLimit("association lasted longer than its time limit", reason=REASON_NOT_SPECIFIED) from None
            raise
        if _QUICKACK is not None:
            self._sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        if n == 0:
            raise ConnectionResetError("the peer closed the connection")
        if self._left > 0:
            self._left -= n
        return n

    def ready(self) -> bool:
        """Whether a read would not wait: bytes are buffered here or in TLS, or the socket has some."""
        if self._end > self._start:
            return True
        if isinstance(self._sock, ssl.SSLSocket) and self._sock.pending():
            return True
        readable, _, _ = select.select([self._sock], [], [], 0)
        return bool(readable)

    def exactly(self, n: int) -> bytes:
        """The next `n` bytes (a header: n is small)."""
        if self._end - self._start < n:
            kept = self._end - self._start
            self._view[:kept] = self._view[self._start : self._end]
            self._start, self._end = 0, kept
            while self._end < n:
                self._end += self._receive(self._view[self._end :])
        data = bytes(self._view[self._start : self._start + n])
        self._start += n
        return data

    def stream(self, n: int) -> Iterator[memoryview]:
        """The next `n` bytes as successive views, each valid only until the next one is asked for."""
        while n > 0:
            if self._start == self._end:
                self._start, self._end = 0, self._receive(self._view)
            take = min(self._end - self._start, n)
            yield self._view[self._start : self._start + take]
            self._start += take
            n -= take


def read_header(reader: Reader, *, data_limit: int) -> tuple[int, int]:
    """The next PDU's type and length. Raises ProtocolError for a length over its limit (0: none)."""
    pdu_type, _, length = _HEADER.unpack(reader.exactly(6))
    limit = data_limit if pdu_type == P_DATA_TF else OTHER_PDU_LIMIT
    if limit and length > limit:
        # PS3.8 D.1: a P-DATA-TF longer than the Maximum Length we announced is a protocol error.
        raise OversizePdu(f"PDU of {length} bytes over the maximum of {limit}", reason=REASON_INVALID_PARAMETER)
    if not A_ASSOCIATE_RQ <= pdu_type <= A_ABORT:
        # PS3.8 9.3.8: a PDU type the protocol does not define is an unrecognized PDU (one it
        # defines, out of place, is an unexpected PDU: the state machine's callers say so).
        raise ProtocolError(f"unrecognized PDU type {pdu_type:#04x}", reason=REASON_UNRECOGNISED_PDU)
    return pdu_type, length


def read_body(reader: Reader, length: int) -> bytes:
    """The whole body of a small (non P-DATA) PDU."""
    return b"".join(bytes(chunk) for chunk in reader.stream(length))


def read_pdv_header(reader: Reader) -> tuple[int, int, int]:
    """A presentation data value item's value length, context ID and message control header (PS3.8 9.3.5.1, E.2)."""
    item_length, context_id, control = _PDV_HEADER.unpack(reader.exactly(6))
    if item_length < 2:
        raise ProtocolError(f"PDV item of length {item_length}", reason=REASON_INVALID_PARAMETER)
    return item_length - 2, context_id, control


def p_data(context_id: int, value: bytes, *, max_length: int, is_command: bool = True, last: bool = True) -> bytes:
    """A command set (or a data set fragment) as P-DATA-TF PDUs of one PDV each, none longer than
    `max_length` (PS3.8 9.3.5, D.1).

    `max_length` is the Maximum Length the peer announced (0: no limit). Our command sets are a
    few hundred bytes, so this is one PDU unless the peer asked for tiny ones. `last`: the final
    PDV carries the last-fragment bit (a data set sent in several calls sets it on the last one).
    """
    room = max(max_length - 6, 1) if max_length else max(len(value), 1)  # 6: the PDV item's length, ID and control
    pdus = []
    kind = 0x01 if is_command else 0x00
    for start in range(0, max(len(value), 1), room):
        fragment = value[start : start + room]
        final = last and start + room >= len(value)
        control = kind | (0x02 if final else 0)  # command or data set; last fragment (PS3.8 E.2)
        item = _PDV_HEADER.pack(len(fragment) + 2, context_id, control) + fragment
        pdus.append(_HEADER.pack(P_DATA_TF, 0, len(item)) + item)
    return b"".join(pdus)


def release_rp() -> bytes:
    """A-RELEASE-RP (PS3.8 9.3.7)."""
    return _HEADER.pack(A_RELEASE_RP, 0, 4) + b"\x00" * 4


def abort(source: int, reason: int) -> bytes:
    """A-ABORT (PS3.8 9.3.8); the reason is significant only when the provider aborts."""
    return _HEADER.pack(A_ABORT, 0, 4) + bytes([0, 0, source, reason if source == ABORT_SOURCE_PROVIDER else 0])


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4) with its result, source and reason/diagnostic."""
    return _HEADER.pack(A_ASSOCIATE_RJ, 0, 4) + bytes([0, result, source, reason])
