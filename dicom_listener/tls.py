"""TLS for the listener: the BCP 195 secure transport connection profile of DICOM PS3.15 B.9.

The handshake runs in each connection's own thread with the ACSE timeout, never in the thread
that accepts connections, so a peer that connects and stays silent delays nobody else.
"""

import logging
import socket
import ssl
from collections.abc import Callable

from dicom_listener.config import DicomSettings
from dicom_listener.errors import TlsMisconfigured

log = logging.getLogger(__name__)

# BCP 195 (RFC 9325 4.2): TLS 1.2 with forward-secret AEAD cipher suites only. TLS 1.3 suites
# are all AEAD and forward secret, and OpenSSL configures them separately.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

OnRefused = Callable[[str, str], None]


def server_context(settings: DicomSettings) -> ssl.SSLContext | None:
    """The listener's TLS context, or None when no certificate is configured (plain DICOM)."""
    if not settings.dicom_tls_cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # PS3.15 B.9: TLS 1.2 or later
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION  # RFC 9325 3.3, 3.5
    try:
        context.load_cert_chain(settings.dicom_tls_cert_file, settings.dicom_tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsMisconfigured(
            f"DOCTORAI_DICOM_TLS_CERT_FILE / DOCTORAI_DICOM_TLS_KEY_FILE unusable: {exc}"
        ) from exc
    if settings.dicom_tls_ca_file:
        # Mutual TLS: the peer node must present a certificate issued by this CA (PS3.15 B.9).
        try:
            context.load_verify_locations(cafile=settings.dicom_tls_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsMisconfigured(f"DOCTORAI_DICOM_TLS_CA_FILE unusable: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def handshake(conn: socket.socket, address: str, timeout: float, on_refused: OnRefused) -> bool:
    """Complete the TLS handshake of an accepted connection; False (and `on_refused`) when it fails."""
    if not isinstance(conn, ssl.SSLSocket):
        return True
    conn.settimeout(timeout)
    try:
        conn.do_handshake()
    except (ssl.SSLError, OSError) as exc:
        # Not TLS at all, no or an untrusted client certificate, no common protocol version or
        # cipher, or silence: no association can exist, so there is no A-ASSOCIATE-RJ to send.
        reason = f"TLS handshake failed: {getattr(exc, 'reason', None) or type(exc).__name__}"
        log.info("refusing a connection from %s: %s", address, reason)
        on_refused(address, reason)
        return False
    return True
