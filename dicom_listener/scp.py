"""The Application Entity: which presentation contexts we accept and how we listen."""

import socket
import ssl
import threading
from functools import partial
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.events import EventHandlerType
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from dicom_listener import handlers, tls
from dicom_listener.config import DicomSettings


class ReusePortServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with SO_REUSEPORT, so several listener processes share one port.

    The kernel spreads new connections over the processes' sockets; each association then lives
    in one process, with no lock shared between processes. With TLS, the handshake runs in the
    connection's thread (tls.handshake) instead of pynetdicom's, which blocks the accepting thread.
    """

    def __init__(self, *args: Any, on_tls_refused: tls.OnRefused, **kwargs: Any) -> None:
        self.on_tls_refused = on_tls_refused
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        """Set SO_REUSEPORT, then bind as pynetdicom does."""
        assert self.socket is not None
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection; with TLS, wrap it without handshaking yet."""
        assert self.socket is not None
        conn, address = self.socket.accept()
        if self.ssl_context is not None:
            conn = self.ssl_context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, address

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """In the connection's own thread: finish the TLS handshake, then serve the association."""
        if isinstance(request, ssl.SSLSocket) and not tls.handshake(
            request, str(client_address[0]), self.ae.acse_timeout or 30.0, self.on_tls_refused
        ):
            self.shutdown_request(request)
            return
        super().process_request_thread(request, client_address)


def make_ae(settings: DicomSettings) -> AE:
    """An AE accepting Verification and every storage SOP class in every transfer syntax.

    Instances are stored exactly as received, never transcoded, so accepting a compressed
    syntax costs nothing here (PS3.4 Annex B.4.1: the SCP stores without alteration).
    """
    # Process-wide pynetdicom switches; this AE is the only one in a listener process.
    # Datasets go to a spool file as they arrive instead of into memory (event.dataset_path).
    _config.STORE_RECV_CHUNKED_DATASET = True
    # Any SOP class proposed is accepted as storage, when the setting allows unknown ones.
    _config.UNRESTRICTED_STORAGE_SERVICE = settings.dicom_accept_unknown_sop_classes
    ae = AE(ae_title=settings.dicom_ae_title)
    # Check the called AE title (PS3.8 9.3.4: reject with reason "called AE title not recognized").
    ae.require_called_aet = True
    # Our own limits (admission.py) count over every process and per calling AE; pynetdicom's
    # per-process count is only a backstop.
    ae.maximum_associations = settings.dicom_max_associations
    ae.maximum_pdu_size = settings.dicom_max_pdu
    ae.acse_timeout = settings.dicom_acse_timeout
    ae.dimse_timeout = settings.dicom_dimse_timeout
    ae.network_timeout = settings.dicom_network_timeout
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), ALL_TRANSFER_SYNTAXES)
    return ae


def start(ae: AE, settings: DicomSettings, receiver: handlers.Receiver) -> ThreadedAssociationServer:
    """Listen in the background; each association gets its own thread, as pynetdicom does."""
    bound: list[EventHandlerType] = [
        (evt.EVT_CONN_OPEN, handlers.handle_conn_open, [receiver]),
        (evt.EVT_CONN_CLOSE, handlers.handle_conn_close, [receiver]),
        (evt.EVT_C_ECHO, handlers.handle_echo),
        (evt.EVT_C_STORE, handlers.handle_store, [receiver]),
        (evt.EVT_ACCEPTED, handlers.handle_accepted),
        (evt.EVT_REJECTED, handlers.handle_rejected, [receiver]),
        (evt.EVT_ABORTED, handlers.handle_aborted, [receiver]),
    ]
    server = ae.make_server(
        (settings.dicom_host, settings.dicom_port),
        ssl_context=tls.server_context(settings),
        evt_handlers=bound,
        server_class=ReusePortServer,
        on_tls_refused=partial(handlers.handle_tls_refused, receiver),
    )
    thread = threading.Thread(target=server.serve_forever, name="dicom-acceptor", daemon=True)
    thread.start()
    ae._servers.append(server)  # as ae.start_server does: shutdown() removes it, ae.shutdown() finds it
    return server
