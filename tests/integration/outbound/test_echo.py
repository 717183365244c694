"""Echo of destinations against real peers: a C-ECHO SCP, an HTTP FHIR endpoint, MLLP and webhook ports."""

import asyncio
import socket
from datetime import UTC, datetime

import httpx
import pytest

from integration.errors import DeliveryFailed
from integration.outbound import http
from integration.outbound.echo import echo
from doctorai.stack import free_ports
from storage.tables.outbound import Destination
from tests.dicom_peers import StoreScp, store_scp
from tests.http_peers import http_endpoint


def _row(kind: str, *, host: str = "127.0.0.1", port: int = 0, **options: str) -> Destination:
    return Destination(
        id=1,
        name="d",
        kind=kind,
        host=host,
        port=port,
        tls=False,
        enabled=True,
        options=options,
        created_at=datetime.now(UTC),
    )


def test_dicom_echo_answers_with_the_c_echo_status() -> None:
    with store_scp(StoreScp(free_ports().dicom)) as scp:
        result = echo(_row("dicom", port=scp.port, ae_title="STORESCP"), timeout=5)
    assert result.ok and result.detail == "C-ECHO status 0x0000" and result.seconds >= 0
    down = echo(_row("dicom", port=free_ports().dicom, ae_title="STORESCP"), timeout=5)
    assert not down.ok and "cannot connect" in down.detail
    assert not echo(_row("dicom", port=1), timeout=5).ok  # no AE title configured


def test_fhir_echo_reads_the_capability_statement() -> None:
    with http_endpoint() as server:
        result = echo(_row("fhir", base_url=f"{server.url}/fhir", auth="bearer", token="t0k"), timeout=5)
        assert result.ok and "CapabilityStatement" in result.detail
        assert server.requests[0].path == "/fhir/metadata"
        assert server.requests[0].headers["Authorization"] == "Bearer t0k"
    with http_endpoint(lambda *_: (401, {"resourceType": "OperationOutcome"})) as refusing:
        result = echo(_row("fhir", base_url=refusing.url), timeout=5)
    assert not result.ok and "HTTP 401" in result.detail
    down = echo(_row("fhir", base_url=f"http://127.0.0.1:{free_ports().http}"), timeout=5)
    assert not down.ok and "failed" in down.detail


def test_mllp_and_webhook_echo_only_connect() -> None:
    # A listening socket is all an MLLP connection test needs: the echo connects and sends nothing.
    with socket.create_server(("127.0.0.1", 0)) as mllp:
        assert echo(_row("mllp", port=mllp.getsockname()[1]), timeout=5).ok
    assert not echo(_row("mllp", port=free_ports().mllp), timeout=5).ok
    with http_endpoint() as hook:
        assert echo(_row("webhook", url=f"{hook.url}/hook"), timeout=5).ok
        assert hook.requests == []  # connected, never posted
    assert not echo(_row("webhook", url=f"http://127.0.0.1:{free_ports().http}/hook"), timeout=5).ok
    assert not echo(_row("carrier-pigeon"), timeout=5).ok


# A peer's words are never kept: delivery errors and echo results are shown by the admin API, and
# a destination pointed at an internal service would otherwise read it back (issue 18).
SECRET_PAGE = {"resourceType": "Secret", "text": "internal-service-secret-page"}


def test_fhir_echo_and_http_delivery_keep_the_status_never_the_peers_words() -> None:
    with http_endpoint(lambda *_: (403, SECRET_PAGE)) as peer:
        result = echo(_row("fhir", base_url=peer.url), timeout=5)
        assert not result.ok and result.detail.endswith("HTTP 403 Forbidden")

        async def post() -> str:
            async with httpx.AsyncClient() as client:
                return await http.post_fhir(client, {"base_url": peer.url}, "{}")

        with pytest.raises(DeliveryFailed) as failed:
            asyncio.run(post())
        assert str(failed.value) == "HTTP 403 Forbidden" and not failed.value.retriable
    with http_endpoint(lambda *_: (200, SECRET_PAGE)) as peer:
        result = echo(_row("fhir", base_url=peer.url), timeout=5)
    assert not result.ok and result.detail.endswith("HTTP 200, not a CapabilityStatement")
    assert "Secret" not in result.detail
