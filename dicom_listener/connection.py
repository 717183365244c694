"""One connection: its association from A-ASSOCIATE-RQ to release or abort, served in the connection's own thread.

The acceptor side of the upper layer state machine (PS3.8 9.2) for the services we offer:
negotiate, then read P-DATA-TF PDUs, answering each request once it is complete. Data set
fragments go straight into a Spool as they arrive; nothing in this loop is shared with other
associations, so associations run in parallel as far as the storage behind them allows.

Each service is a module: Verification here, Storage (ingest.py), MPPS (steps.py), C-FIND
(query.py), C-MOVE and C-GET (retrieve.py), Storage Commitment (commitment.py). The ones that
answer with many responses, or make requests of their own on the association, talk through
exchange.py; a commitment report owed on the association goes once it is idle.
"""

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from audit.records import ASSOCIATION_ABORTED, ASSOCIATION_REJECTED
from dicom_listener import commitment, dimse, ingest, metrics, negotiation, pdus, query, retrieve, steps
from dicom_listener.association import Association
from dicom_listener.errors import OversizePdu, PeerAborted, PeerReleased, ProtocolError
from integration.errors import InstanceTooLarge
from integration.refusals import Refusals
from integration.instances.spool import Spool, file_meta
from integration import dimse_status

log = logging.getLogger(__name__)

# PS3.8 E.2 message control header: bit 0 set = command, bit 1 set = last fragment.
COMMAND = 0x01
LAST = 0x02
# A command set is a few hundred bytes; more is not a command set.
COMMAND_LIMIT = 1 << 16
# PS3.8 9.2 (Sta13): after an A-ASSOCIATE-RJ or A-ABORT the acceptor waits, with the ARTIM timer
# running, for the requestor to close the transport connection. Closing first races the peer
# reading our PDU (a peer still writing sees a reset and may never read it).
ARTIM_SECONDS = 2.0
# Requests whose data set we keep and act on; any other request's data set is read and dropped.
_WITH_DATA_SET = {
    dimse.C_STORE_RQ,
    dimse.N_CREATE_RQ,
    dimse.N_SET_RQ,
    dimse.C_FIND_RQ,
    dimse.C_MOVE_RQ,
    dimse.C_GET_RQ,
    dimse.N_ACTION_RQ,
}


@dataclass
class _Message:
    """A request being received: its command set, then (for C-STORE) its data set."""

    context_id: int
    command: bytearray = field(default_factory=bytearray)
    request: dimse.Command | None = None
    spool: Spool | None = None
    # The answer already decided while its data set still arrives (too large: the rest is dropped).
    refusal: ingest.Answer | None = None


def serve(
    sock: socket.socket, address: str, receiver: ingest.Receiver, refusals: Refusals, *, requested: Callable[[], None]
) -> None:
    """Serve one connection until the association ends; never raises. `requested` is called once its A-ASSOCIATE-RQ is in."""
    assoc = Association(sock, address)
    message: _Message | None = None
    settings = receiver.settings
    try:
        pdus.tune(sock)
        reader = assoc.reader = pdus.Reader(
            sock, seconds=settings.dicom_association_seconds, max_bytes=settings.dicom_max_association_bytes
        )
        sock.settimeout(settings.dicom_acse_timeout)
        if _associate(assoc, reader, receiver, refusals, requested):
            message = _Message(context_id=0)
            _exchange(assoc, reader, receiver, message)
    except ProtocolError as exc:
        if isinstance(exc, OversizePdu):
            metrics.OVERSIZE_PDUS.inc()
        _abort(assoc, receiver, refusals, str(exc), exc.reason)
    except TimeoutError:
        _abort(assoc, receiver, refusals, "no PDU within the timeout", pdus.REASON_NOT_SPECIFIED)
    except PeerReleased:
        _released(assoc)  # while we waited for a response of the peer's (PS3.8 9.2, Sta6 AR-2)
    except PeerAborted:
        metrics.ASSOCIATIONS.labels("aborted").inc()
    except OSError as exc:  # the peer went away (reset, closed mid-PDU) or the listener is stopping
        if assoc.policy is not None:
            log.info("connection from %s ended: %s", address, exc)
            metrics.ASSOCIATIONS.labels("aborted").inc()
        elif not assoc.calling_ae:
            refusals.note(address, f"connection ended before an association: {type(exc).__name__}", ASSOCIATION_ABORTED.subtype)
    except Exception as exc:  # a fault of ours: this association ends, the listener and the others go on
        log.exception("association from %s failed", address)
        _abort(assoc, receiver, refusals, f"internal error: {type(exc).__name__}", pdus.REASON_NOT_SPECIFIED)
    finally:
        if message is not None and message.spool is not None:
            message.spool.discard()  # a data set cut off by an abort is dropped, never stored
        ingest.closed(receiver, assoc)
        sock.close()
        commitment.ended(receiver, assoc)


def _released(assoc: Association) -> None:
    try:
        assoc.sock.sendall(pdus.release_rp())
    except OSError:
        pass  # the peer is gone already


def _linger(sock: socket.socket) -> None:
    """Wait, at most ARTIM_SECONDS, for the peer to close the connection after our A-ASSOCIATE-RJ or A-ABORT (Sta13)."""
    deadline = time.monotonic() + ARTIM_SECONDS
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(4096):  # anything it still sends is dropped (PS3.8 9.2, Sta13)
                return
    except OSError:
        pass  # reset, timed out, or closed: either way the connection ends now


def _abort(assoc: Association, receiver: ingest.Receiver, refusals: Refusals, reason: str, code: int) -> None:
    try:
        assoc.sock.sendall(pdus.abort(pdus.ABORT_SOURCE_PROVIDER, code))
        _linger(assoc.sock)
    except OSError:
        pass  # the peer is gone already; the audit record below still says why
    if assoc.calling_ae:
        log.info("aborting the association from %s: %s", assoc.address, reason)
        ingest.aborted(receiver, assoc, reason)
    else:  # nothing but bytes from an address: audited and logged in aggregate (refusals.py)
        metrics.ASSOCIATIONS.labels("aborted").inc()
        refusals.note(assoc.address, reason, ASSOCIATION_ABORTED.subtype)


def _associate(
    assoc: Association, reader: pdus.Reader, receiver: ingest.Receiver, refusals: Refusals, requested: Callable[[], None]
) -> bool:
    """Read the A-ASSOCIATE-RQ and answer it; True once the association is established."""
    pdu_type, length = pdus.read_header(reader, data_limit=0)
    if pdu_type != pdus.A_ASSOCIATE_RQ:
        # PS3.8 9.2 state Sta2: any other PDU is answered with A-ABORT (action AA-1).
        raise ProtocolError(f"PDU type {pdu_type:#04x} before A-ASSOCIATE-RQ", reason=pdus.REASON_UNEXPECTED_PDU)
    body = pdus.read_body(reader, length)
    requested()
    request = negotiation.decode_request(bytes([pdu_type, 0]) + length.to_bytes(4, "big") + body)
    assoc.calling_ae, assoc.called_ae = request.calling_ae, request.called_ae
    assoc.peer_max_pdu = request.peer_max_pdu
    refusal = negotiation.check(request, receiver.settings.dicom_ae_title) or ingest.admit(receiver, assoc)
    if refusal is not None:
        assoc.sock.sendall(pdus.associate_rj(refusal.result, refusal.source, refusal.reason))
        # Counted, and audited and logged in aggregate per source, AE and interval (integration.refusals).
        metrics.ASSOCIATIONS.labels("rejected").inc()
        refusals.note(assoc.address, refusal.why, ASSOCIATION_REJECTED.subtype, who=ingest.who(assoc))
        _linger(assoc.sock)
        return False
    assert assoc.policy is not None
    accept, assoc.contexts = negotiation.accept(
        request, max_pdu=assoc.policy.max_pdu, unrestricted=receiver.settings.dicom_accept_unknown_sop_classes
    )
    assoc.sock.sendall(accept)
    metrics.ASSOCIATIONS.labels("accepted").inc()
    return True


def _exchange(assoc: Association, reader: pdus.Reader, receiver: ingest.Receiver, message: _Message) -> None:
    """P-DATA-TF until A-RELEASE-RQ (answered) or A-ABORT (from the peer)."""
    policy = assoc.policy
    assert policy is not None
    while True:
        # Idle between messages: the network timeout; inside one: the DIMSE timeout (PS3.7 9.1.1).
        # Idle and owing a commitment report: a short wait, then the report goes (commitment.py).
        idle = message.request is None and not message.command
        owing = idle and bool(assoc.reports)
        wait = receiver.settings.dicom_commitment_idle_seconds if owing else policy.network_timeout
        assoc.sock.settimeout(wait if idle else policy.dimse_timeout)
        try:
            pdu_type, length = pdus.read_header(reader, data_limit=policy.max_pdu)
        except TimeoutError:
            if not owing:
                raise
            commitment.report_here(receiver, assoc)
            continue
        if pdu_type == pdus.P_DATA_TF:
            _p_data(assoc, reader, receiver, message, length)
        elif pdu_type == pdus.A_RELEASE_RQ:
            pdus.read_body(reader, length)
            assoc.sock.sendall(pdus.release_rp())
            return
        elif pdu_type == pdus.A_ABORT:
            pdus.read_body(reader, length)
            metrics.ASSOCIATIONS.labels("aborted").inc()
            return
        else:
            raise ProtocolError(f"unexpected PDU type {pdu_type:#04x}", reason=pdus.REASON_UNEXPECTED_PDU)


def _p_data(assoc: Association, reader: pdus.Reader, receiver: ingest.Receiver, message: _Message, length: int) -> None:
    """The PDV items of one P-DATA-TF PDU (PS3.8 9.3.5), each a command or data set fragment."""
    while length > 0:
        value_length, context_id, control = pdus.read_pdv_header(reader)
        length -= 6 + value_length
        if length < 0:
            raise ProtocolError("PDV item runs past its P-DATA-TF PDU", reason=pdus.REASON_INVALID_PARAMETER)
        if context_id not in assoc.contexts:
            raise ProtocolError(f"PDV on presentation context {context_id}, not accepted", reason=pdus.REASON_INVALID_PARAMETER)
        if control & COMMAND:
            if message.request is not None or len(message.command) + value_length > COMMAND_LIMIT:
                raise ProtocolError("command fragment out of place", reason=pdus.REASON_UNEXPECTED_PDU)
            message.context_id = context_id
            for chunk in reader.stream(value_length):
                message.command += chunk
            if control & LAST:
                _command_complete(assoc, receiver, message)
        else:
            if message.request is None or context_id != message.context_id:
                raise ProtocolError("data set fragment without its command", reason=pdus.REASON_UNEXPECTED_PDU)
            for chunk in reader.stream(value_length):
                if message.spool is not None:  # else a request we do not serve, or refused: the rest is read and dropped
                    _spool(assoc, receiver, message, chunk)
            if control & LAST:
                _respond(assoc, receiver, message)


def _spool(assoc: Association, receiver: ingest.Receiver, message: _Message, chunk: memoryview) -> None:
    """A data set fragment into its spool; past the spool's limit the request is refused there and then."""
    assert message.spool is not None and message.request is not None
    try:
        message.spool.write(chunk)
    except InstanceTooLarge as exc:
        message.spool = None  # the spool dropped what it held
        message.refusal = ingest.too_large(receiver, assoc, message.request, str(exc))


def _command_complete(assoc: Association, receiver: ingest.Receiver, message: _Message) -> None:
    request = dimse.decode(bytes(message.command))
    message.command.clear()
    message.request = request
    if request.command_field == dimse.C_CANCEL_RQ:
        message.request = None  # PS3.7 9.3.2.3: nothing to cancel, one operation at a time
        return
    if not request.has_data_set:
        _respond(assoc, receiver, message)
        return
    if request.command_field in _WITH_DATA_SET:
        head = file_meta(
            sop_class_uid=request.sop_class_uid,
            sop_instance_uid=request.sop_instance_uid,
            transfer_syntax_uid=assoc.contexts[message.context_id].transfer_syntax,
        )
        settings = receiver.settings
        storing = request.command_field == dimse.C_STORE_RQ
        message.spool = Spool(
            head,
            memory_limit=settings.dicom_spool_memory_bytes,
            directory=settings.dicom_spool_dir or None,
            max_bytes=settings.dicom_max_instance_bytes if storing else settings.dicom_max_request_bytes,
        )


def _respond(assoc: Association, receiver: ingest.Receiver, message: _Message) -> None:
    """Answer the complete request in `message`, then make it ready for the next one."""
    request = message.request
    assert request is not None
    try:
        answer = message.refusal or _serve(assoc, receiver, request, message)
    finally:
        if message.spool is not None:
            message.spool.discard()
        message.spool, message.request, message.refusal = None, None, None
    if answer is not None:
        response = dimse.response(request, answer.status, answer.comment, instance_uid=answer.instance_uid)
        assoc.sock.sendall(pdus.p_data(message.context_id, response, max_length=assoc.peer_max_pdu))


_QUERY_RETRIEVE = {
    dimse.C_FIND_RQ: (negotiation.FIND, query.find),
    dimse.C_MOVE_RQ: (negotiation.MOVE, retrieve.move),
    dimse.C_GET_RQ: (negotiation.GET, retrieve.get),
}


def _serve(assoc: Association, receiver: ingest.Receiver, request: dimse.Command, message: _Message) -> ingest.Answer | None:
    """The service the request asks for on its context; its one response, or None when it sent its own."""
    context = assoc.contexts[message.context_id]
    field, abstract, spool = request.command_field, context.abstract_syntax, message.spool
    if field == dimse.C_ECHO_RQ:
        return ingest.Answer(dimse_status.SUCCESS)  # PS3.7 9.1.5
    if field in _WITH_DATA_SET and spool is None:
        return ingest.Answer(dimse_status.CANNOT_UNDERSTAND, "request without its data set")
    if spool is not None and field == dimse.C_STORE_RQ:
        return ingest.store(receiver, assoc, request, context, spool)
    if spool is not None and abstract == steps.MPPS and field in (dimse.N_CREATE_RQ, dimse.N_SET_RQ):
        if field == dimse.N_CREATE_RQ:
            return steps.create(receiver, assoc, request, message.context_id, spool)
        return steps.update(receiver, assoc, request, message.context_id, spool)
    if spool is not None and field == dimse.N_ACTION_RQ and abstract == negotiation.STORAGE_COMMITMENT:
        return commitment.request(receiver, assoc, request, message.context_id, spool)
    # Query/Retrieve: many responses, sent by the service itself.
    models, service = _QUERY_RETRIEVE.get(field, ({}, None))
    if spool is not None and service is not None and abstract in models:
        service(receiver, assoc, request, message.context_id, spool)
        return None
    return ingest.Answer(dimse_status.UNRECOGNIZED_OPERATION, "not a request this AE serves on this context")
