"""The HL7 v2 listener over MLLP (HL7 v2 Appendix C), asyncio, optional TLS.

Many connections, many messages per connection, one at a time each (the sender waits for the ACK).
Each message is read, mapped and put in object storage in a thread of its own, then committed
together with the messages of other connections that wait at the same time (storage.group_commit,
hl7_listener.commits). This is the edge: storage outcomes and Hl7Errors become acknowledgements here (HL7 v2 2.9):
original mode AA/AE/AR; enhanced mode (MSH-15/MSH-16 valued) the commit ACK CA/CE/CR, sent as
MSH-15 asks (AL always, NE never, ER on error, SU on success).
"""

import asyncio
import ipaddress
import logging
import ssl
import time
import traceback
import uuid
from collections.abc import Callable
from functools import partial

from sqlalchemy import Engine

from hl7_listener import commits
from hl7_listener import metrics
from hl7_listener.config import MllpSettings
from integration.errors import Hl7Error, MessageRefused
from integration.hl7v2 import Header, ack, decode, minimal_header, read_header
from hl7_listener.intake import Answer, Received, receive, record_refusal
from integration.errors import MessageTooLarge
from integration.mllp import frame, read_block
from integration.refusals import Refusals
from storage.errors import StorageUnavailable
from storage.group_commit import GroupCommit
from storage.objects import ObjectStore

log = logging.getLogger(__name__)

# The listener's one group commit: connections hand it their messages (hl7_listener.commits).
Committer = GroupCommit[Received, Answer]

_COMMIT = {"AA": "CA", "AE": "CE", "AR": "CR"}


class StoragePaused(Hl7Error):
    """Storage could not take the message: AE, so the sender retries (DESIGN.md 5.1)."""

    ack_code = "AE"
    error_code = "207"


def tls_context(settings: MllpSettings) -> ssl.SSLContext | None:
    """The server TLS context, or None when no certificate is configured."""
    if not settings.mllp_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.mllp_tls_cert, settings.mllp_tls_key or None)
    if settings.mllp_tls_ca:
        context.load_verify_locations(settings.mllp_tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def address_allowed(settings: MllpSettings, address: str) -> bool:
    """Whether a peer address is on the allowlist (empty list: everyone)."""
    entries = [e.strip() for e in settings.mllp_allowed_addresses.split(",") if e.strip()]
    if not entries:
        return True
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(entry, strict=False) for entry in entries)


def acknowledgement(settings: MllpSettings, answer: Answer) -> bytes | None:
    """The ACK to write for an answer, or None when enhanced mode's MSH-15 asks for none."""
    header, code = answer.header, answer.code
    if header.enhanced_mode:
        # Enhanced mode: the accept (commit) acknowledgement (HL7 v2 2.9.3.1). The application ACK
        # MSH-16 asks for is queued to the sender's return destination (hl7_listener.acks); a
        # message kept but not mappable still answers CE with its ERR here, so a sender without a
        # return destination learns of the error too.
        code = _COMMIT[code]
        condition = header.accept_ack_type or "AL"
        if condition == "NE" or (condition == "ER" and code == "CA") or (condition == "SU" and code != "CA"):
            return None
    return ack(
        header,
        code,
        control_id=uuid.uuid4().hex[:20],
        application=settings.hl7_application,
        facility=settings.hl7_facility,
        error=answer.error if code not in ("AA", "CA") else None,
    )


def _header_of(raw: bytes) -> Header:
    try:
        return read_header(decode(raw[:4096]))
    except Hl7Error:
        return minimal_header()


async def _answer(committer: Committer, objects: ObjectStore, settings: MllpSettings, raw: bytes, peer: str) -> Answer:
    try:
        message = await asyncio.to_thread(receive, objects, settings, raw, source_address=peer)
        return await asyncio.to_thread(committer.commit, message)
    except StorageUnavailable as exc:
        log.warning("storage unavailable, answering AE: %s", type(exc).__name__)
        return Answer("AE", _header_of(raw), error=StoragePaused("storage unavailable; send again later"))
    except Exception as exc:  # the edge: a bug in one message must not end the listener (DESIGN.md 5.6)
        # The type and where, not the text: a database error's text quotes the row's values.
        where = traceback.extract_tb(exc.__traceback__)[-1]
        log.error("message from %s failed: %s at %s:%s", peer, type(exc).__name__, where.filename, where.lineno)
        return Answer("AE", _header_of(raw), error=Hl7Error(f"internal error: {type(exc).__name__}"))


def _audit_refusals(engine: Engine, peer: str, kind: str, who: str, reason: str, count: int) -> None:
    try:
        record_refusal(engine, reason=reason, source_address=peer, kind=kind, count=count)
    except StorageUnavailable as exc:
        log.warning("could not audit a refusal from %s: %s", peer, type(exc).__name__)


async def _refused(refusals: Refusals, reason: str, peer: str, kind: str) -> None:
    """Count and audit bytes refused before a message, in aggregate per source and interval (integration.refusals)."""
    metrics.HL7_FRAMING_ERRORS.labels(kind).inc()
    await asyncio.to_thread(refusals.note, peer, reason, kind)


async def handle_connection(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    engine: Engine,
    objects: ObjectStore,
    settings: MllpSettings,
    committer: Committer,
    refusals: Refusals,
    spoke: Callable[[], None] = lambda: None,
) -> None:
    """Serve one connection until the peer closes, idles out, outlives its deadline, or breaks the framing beyond repair.

    `spoke` is called when the connection's first block has arrived (a sender, not an idle socket).
    """
    peer = str((writer.get_extra_info("peername") or ("",))[0])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.mllp_connection_seconds
    try:
        if not address_allowed(settings, peer):
            # Closed without reading a byte from a host we do not take: what it wrote first is
            # unread, so its kernel sees a reset (RFC 9293 3.6.1), and no ACK either way.
            metrics.HL7_CONNECTIONS.labels("refused").inc()
            await _refused(refusals, f"source address {peer} is not allowed", peer, "address")
            return
        metrics.HL7_CONNECTIONS.labels("accepted").inc()
        while True:
            remaining = deadline - loop.time()
            try:
                block = await asyncio.wait_for(read_block(reader), min(settings.mllp_idle_timeout_seconds, remaining))
            except TimeoutError:
                why = "idle" if remaining > settings.mllp_idle_timeout_seconds else "open for its time limit"
                log.info("closing MLLP connection from %s: %s", peer, why)
                return
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    await _refused(refusals, f"connection closed inside a block ({len(exc.partial)} bytes)", peer, "truncated")
                return
            except MessageTooLarge:
                await _oversize(reader, writer, refusals, settings, peer)
                return
            spoke()
            if block.junk.strip():
                await _refused(refusals, f"{len(block.junk)} bytes outside an MLLP block", peer, "framing")
            if block.message is None:
                continue
            started = time.perf_counter()
            answer = await _answer(committer, objects, settings, block.message, peer)
            reply = acknowledgement(settings, answer)
            if reply is not None:
                writer.write(frame(reply))
                await writer.drain()
            metrics.HL7_MESSAGES.labels(answer.header.message_type or "unknown", answer.code).inc()
            metrics.HL7_ACK_SECONDS.observe(time.perf_counter() - started)
    except (ConnectionError, ssl.SSLError) as exc:
        log.info("MLLP connection from %s ended: %s", peer, type(exc).__name__)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def _oversize(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, refusals: Refusals, settings: MllpSettings, peer: str
) -> None:
    """AR for a block over the limit, addressed from its first bytes; then the connection closes."""
    head = await reader.read(4096)  # the start of the block, still unread after the overrun
    start = head.find(b"\x0b")
    header = _header_of(head[start + 1 :] if start >= 0 else head)
    limit = settings.mllp_max_message_bytes
    error = MessageRefused(f"message exceeds {limit} bytes")
    await _refused(refusals, str(error), peer, "oversize")
    reply = acknowledgement(settings, Answer("AR", header, error=error))
    if reply is not None:
        writer.write(frame(reply))
        await writer.drain()
    metrics.HL7_MESSAGES.labels(header.message_type or "unknown", "AR").inc()


async def serve(
    settings: MllpSettings,
    *,
    engine: Engine,
    objects: ObjectStore,
    stop: asyncio.Event,
    ready: Callable[[asyncio.Server], None] | None = None,
) -> None:
    """Listen until `stop` is set, then close the server; `ready` is given the server once it is bound
    (its `is_serving` is the listener's liveness)."""
    # Open connections, oldest first, with whether each has sent a block yet.
    open_writers: dict[asyncio.StreamWriter, bool] = {}
    handlers: set[asyncio.Task[None]] = set()
    committer = Committer(engine, partial(commits.write, settings=settings))
    refusals = Refusals(partial(_audit_refusals, engine), interval=settings.mllp_refusal_audit_seconds)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(open_writers) >= settings.mllp_max_connections:
            # At the cap, the oldest connection that never sent a block makes room, so a flood of
            # idle sockets cannot keep a sender out (they still idle out on their own); with none,
            # the newcomer is closed unread (its kernel sees a reset, it sends again later).
            # Either way counted and audited in aggregate.
            metrics.HL7_CONNECTIONS.labels("over-limit").inc()
            silent = next((w for w, spoke in open_writers.items() if not spoke), None)
            victim = silent or writer
            peer = str((victim.get_extra_info("peername") or ("",))[0])
            victim.close()
            why = "closed to make room: it sent nothing" if silent else "already open"
            await _refused(refusals, f"{settings.mllp_max_connections} connections {why}", peer, "limit")
            if silent is None:
                return
            open_writers.pop(silent, None)
        if task is not None:
            handlers.add(task)
        open_writers[writer] = False

        def spoke() -> None:
            if writer in open_writers:
                open_writers[writer] = True

        try:
            await handle_connection(
                reader,
                writer,
                engine=engine,
                objects=objects,
                settings=settings,
                committer=committer,
                refusals=refusals,
                spoke=spoke,
            )
        finally:
            open_writers.pop(writer, None)
            if task is not None:
                handlers.discard(task)

    # The reader's limit bounds one block (LimitOverrunError beyond it: MessageTooLarge).
    server = await asyncio.start_server(
        connected,
        settings.mllp_host,
        settings.mllp_port,
        limit=settings.mllp_max_message_bytes + 2,
        ssl=tls_context(settings),
    )
    log.info("MLLP listener on %s:%d%s", settings.mllp_host, settings.mllp_port, " (TLS)" if settings.mllp_tls_cert else "")
    async with server:
        if ready is not None:
            ready(server)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), settings.mllp_refusal_audit_seconds)
            except TimeoutError:
                await asyncio.to_thread(refusals.flush, time.monotonic())  # the ended intervals' counts
        server.close()
        # Close idle connections so their handlers end; an exchange in progress finishes first
        # only if it is past its read (its ACK write then fails, and the sender retries).
        for writer in list(open_writers):
            writer.close()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
        await asyncio.to_thread(refusals.flush)

