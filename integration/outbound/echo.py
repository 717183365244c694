"""Test one destination: is it there and does it answer as its kind should? (`POST /admin/destinations/{id}/echo`)

dicom: C-ECHO on an association with the Verification SOP class (PS3.7 9.1.5, PS3.4 A.4), with the
destination's AE titles and TLS. mllp: a TCP (or TLS) connection, nothing sent (a message would be
processed). fhir: GET [base]/metadata with the configured credentials (FHIR R4 http.html#capabilities).
webhook: a TCP connection to the URL's host and port, nothing posted (a POST would be an event).
"""

import json
import socket
import ssl
import time
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from integration.dimse_status import SUCCESS
from integration.outbound import http
from integration.outbound.dicom import close_socket, peer, unreachable
from integration.outbound.target import target_of
from integration.tls import client_context
from storage.tables.outbound import Destination

# A CapabilityStatement of a large server is a few hundred KB.
_METADATA_BYTES = 4 << 20


class EchoResult(BaseModel):
    """Whether the destination answered, what it said (or why not), and how long it took."""

    ok: bool
    detail: str
    seconds: float


def echo(row: Destination, *, timeout: float = 10.0) -> EchoResult:
    """Test `row` as its kind says; never raises for the destination's failure."""
    started = time.monotonic()
    options = dict(row.options or {})
    try:
        if row.kind == "dicom":
            ok, detail = _c_echo(row, timeout)
        elif row.kind == "mllp":
            ok, detail = _connect(row.host, row.port, timeout, client_context(options) if row.tls else None)
        elif row.kind == "fhir":
            ok, detail = _metadata(options, timeout)
        elif row.kind == "webhook":
            url = urlsplit(options.get("url", ""))
            port = url.port or (443 if url.scheme == "https" else 80)
            ok, detail = _connect(url.hostname or "", port, timeout, None) if url.hostname else (False, "no url")
        else:
            ok, detail = False, f"unknown destination kind {row.kind!r}"
    except (ssl.SSLError, OSError, ValueError) as exc:  # e.g. a missing CA or certificate file
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return EchoResult(ok=ok, detail=detail, seconds=round(time.monotonic() - started, 3))


def _c_echo(row: Destination, timeout: float) -> tuple[bool, str]:
    target = target_of(row)
    if not target.option("ae_title"):
        return False, "no ae_title configured"
    to = peer(target, timeout)
    error = unreachable(to)
    if error:
        return False, error
    ae = AE(ae_title=to.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    ae.add_requested_context(Verification)
    tls_args = (to.tls, to.host) if to.tls is not None else None
    assoc = ae.associate(to.host, to.port, ae_title=to.called_ae, tls_args=tls_args)
    if not assoc.is_established:
        close_socket(assoc)
        how = "rejected (A-ASSOCIATE-RJ)" if assoc.is_rejected else "aborted"
        return False, f"association with {to.called_ae}@{to.host}:{to.port} {how}"
    try:
        response = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    if "Status" not in response:
        return False, "no C-ECHO response"
    status = int(response.Status)
    return status == SUCCESS, f"C-ECHO status 0x{status:04X}"


def _connect(host: str, port: int, timeout: float, context: ssl.SSLContext | None) -> tuple[bool, str]:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if context is None:
            return True, f"connected to {host}:{port}"
        with context.wrap_socket(sock, server_hostname=host) as tls:
            return True, f"connected to {host}:{port} with {tls.version()}"


def _metadata(options: dict[str, str], timeout: float) -> tuple[bool, str]:
    base = options.get("base_url", "").rstrip("/")
    if not base:
        return False, "no base_url configured"
    # Only whether the answer is a CapabilityStatement is reported, never what the peer said, and at
    # most _METADATA_BYTES of it are read: an echo must not become a read channel (issue 18).
    try:
        with httpx.stream(
            "GET", f"{base}/metadata", headers={"Accept": http.FHIR_JSON}, auth=http.auth(options), timeout=timeout
        ) as response:
            if not response.is_success:
                return False, f"GET {base}/metadata: {http.status_reason(response.status_code)}"
            body = b""
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > _METADATA_BYTES:
                    return False, f"GET {base}/metadata: the answer is over {_METADATA_BYTES} bytes"
    except httpx.HTTPError as exc:
        return False, f"GET {base}/metadata failed: {type(exc).__name__}"
    try:
        capable = json.loads(body).get("resourceType") == "CapabilityStatement"
    except (ValueError, AttributeError):
        capable = False
    said = "a CapabilityStatement" if capable else "not a CapabilityStatement"
    return capable, f"GET {base}/metadata: HTTP {response.status_code}, {said}"
