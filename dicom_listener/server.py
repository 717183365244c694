"""The listening socket: accepts connections and serves each in a thread of its own.

Several listener processes can listen on one port (SO_REUSEPORT): the kernel spreads new
connections over them, and an association then lives in one process, sharing no lock with the
others. With TLS, the handshake runs in the connection's thread, so a peer that connects and
stays silent delays nobody else.

A connection costs a thread and a read buffer, so their number is capped (dicom_max_connections)
before either is spent. At the cap, the oldest connection that has not yet sent its whole
A-ASSOCIATE-RQ (idle junk, a slow-loris) is closed to make room, so a flood of idle connections
cannot keep a modality out; with none such, the new one is answered with a transient
A-ASSOCIATE-RJ and closed. Junk and refused connections are audited in aggregate
(integration/refusals.py).
"""

import logging
import socket
import ssl
import threading
import time
from functools import partial

from audit.records import ASSOCIATION_REJECTED
from dicom_listener import connection, ingest, metrics, pdus, tls
from dicom_listener.admission import local_limit_exceeded
from dicom_listener.config import DicomSettings
from integration.refusals import Refusals

log = logging.getLogger(__name__)

BACKLOG = 128
# How often the accepting thread looks whether it should stop.
POLL_SECONDS = 0.5


class Server:
    """One process's listening socket and the connections it is serving."""

    def __init__(self, settings: DicomSettings, receiver: ingest.Receiver) -> None:
        self._settings = settings
        self._receiver = receiver
        self._tls = tls.server_context(settings)
        self._socket = socket.create_server((settings.dicom_host, settings.dicom_port), backlog=BACKLOG, reuse_port=True)
        self._socket.settimeout(POLL_SECONDS)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        # Connections still waiting for their A-ASSOCIATE-RQ, oldest first (dicts keep insertion order),
        # and those closed to make room whose threads have not ended yet.
        self._waiting: dict[socket.socket, None] = {}
        self._evicted: set[socket.socket] = set()
        self.refusals = Refusals(partial(ingest.refusals_audit, receiver), interval=settings.dicom_refusal_audit_seconds)
        self._acceptor = threading.Thread(target=self._accept, name="dicom-acceptor", daemon=True)

    @property
    def port(self) -> int:
        """The port listened on (the settings' port, or the one the system chose for port 0)."""
        return int(self._socket.getsockname()[1])

    def start(self) -> "Server":
        """Accept connections in the background."""
        self._acceptor.start()
        return self

    def accepting(self) -> bool:
        """Whether new connections are still accepted: the process's liveness (/healthz)."""
        return self._acceptor.is_alive() and not self._stop.is_set() and self._socket.fileno() >= 0

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, address = self._socket.accept()
            except TimeoutError:
                self.refusals.flush(time.monotonic())  # idle: the ended intervals' counts
                continue
            except OSError as exc:
                if not self._stop.is_set():
                    log.error("accepting a connection failed: %s", exc)
                continue
            try:
                self._hand_over(conn, address)
            except MemoryError:
                raise  # the process is out of memory: the acceptor ends, /healthz fails, the process is restarted
            except Exception as exc:  # noqa: BLE001 (no thread for it, or a fault of ours: keep accepting)
                log.error("cannot serve a connection from %s: %s; closed it", address[0], type(exc).__name__)

    def _over_the_cap(self, conn: socket.socket, address: str) -> bool:
        """At dicom_max_connections: close the oldest connection still without its A-ASSOCIATE-RQ to make room, or
        refuse this one with a transient A-ASSOCIATE-RJ and close it (no thread, no buffer)."""
        with self._lock:
            if len(self._connections) - len(self._evicted) < self._settings.dicom_max_connections:
                return False
            oldest = next(iter(self._waiting), None)
            if oldest is not None:
                del self._waiting[oldest]
                self._evicted.add(oldest)
        if oldest is not None:
            try:
                oldest.shutdown(socket.SHUT_RDWR)  # its thread wakes, ends, and notes the refusal
            except OSError:
                pass  # closed already
            return False
        refusal = local_limit_exceeded(f"{self._settings.dicom_max_connections} connections already open")
        try:
            # PS3.8 9.3.4: rejected-transient, service-provider (presentation), local-limit-exceeded.
            # Sent before the peer's A-ASSOCIATE-RQ is read: a requestor reads it as the answer to its RQ.
            conn.setblocking(False)
            conn.send(pdus.associate_rj(refusal.result, refusal.source, refusal.reason))
        except OSError:
            pass  # a full or closed socket: the close alone tells it
        finally:
            conn.close()
        metrics.ASSOCIATIONS.labels("rejected").inc()
        self.refusals.note(address, refusal.why, ASSOCIATION_REJECTED.subtype)
        return True

    def _hand_over(self, conn: socket.socket, address: tuple[str, int]) -> None:
        """Serve a new connection in a thread of its own; close it when that cannot be."""
        if self._over_the_cap(conn, str(address[0])):
            return
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            thread = threading.Thread(
                target=self._serve, args=(conn, str(address[0])), name=f"dicom-{address[0]}:{address[1]}", daemon=True
            )
            with self._lock:
                self._connections[conn] = thread
                self._waiting[conn] = None
            thread.start()
        except BaseException:
            self._forget(conn)
            conn.close()
            raise

    def _forget(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.pop(conn, None)
            self._waiting.pop(conn, None)
            self._evicted.discard(conn)

    def _requested(self, conn: socket.socket) -> None:
        """Its A-ASSOCIATE-RQ is in: no longer a connection to close to make room."""
        with self._lock:
            self._waiting.pop(conn, None)

    def _serve(self, conn: socket.socket, address: str) -> None:
        try:
            handshake = partial(tls.handshake, conn, address, self._settings.dicom_acse_timeout, self._tls_refused)
            if isinstance(conn, ssl.SSLSocket) and not handshake():
                conn.close()
                return
            connection.serve(conn, address, self._receiver, self.refusals, requested=partial(self._requested, conn))
        finally:
            self._forget(conn)

    def _tls_refused(self, address: str, reason: str) -> None:
        """A connection whose TLS handshake failed (PS3.15 B.9): no calling AE title is known yet."""
        metrics.ASSOCIATIONS.labels("rejected").inc()
        self.refusals.note(address, reason, ASSOCIATION_REJECTED.subtype)

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, end every open connection (the peers see the TCP connection close), wait for their threads."""
        self._stop.set()
        if self._acceptor.is_alive():
            self._acceptor.join()
        self._socket.close()
        with self._lock:
            open_now = dict(self._connections)
        for conn in open_now:
            try:
                conn.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked reading it
            except OSError:
                pass  # closed already
        for thread in open_now.values():
            thread.join(timeout)
        self.refusals.flush()
