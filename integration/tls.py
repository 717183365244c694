"""TLS client contexts for outbound connections to destinations (DICOM PS3.15 B.9, BCP 195).

The same profile as the listener's side (dicom_listener/tls.py): TLS 1.2 or later, forward-secret
AEAD suites, the destination's CA (or the system store) to verify it, and an optional client
certificate for destinations that require mutual TLS.
"""

import ssl

# BCP 195 (RFC 9325 4.2), as on the listener side.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def client_context(options: dict[str, str]) -> ssl.SSLContext:
    """A context that verifies the destination against `ca_file` (or the system CAs), with `cert_file`/`key_file` if set."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=options.get("ca_file") or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION  # RFC 9325 3.3, 3.5
    if options.get("cert_file"):
        context.load_cert_chain(options["cert_file"], options.get("key_file") or None)
    return context
