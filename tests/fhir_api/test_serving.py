"""Slow clients over real sockets against the API as `python -m fhir_api` serves it (issue 18).

A client that dribbles its request head, stalls its body or just holds a connection open is cut
off within the configured deadlines, connections past the cap are refused at once, and a client
that behaves is served all the while.
"""

import socket
import time
from collections.abc import Iterator

import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from fhir_api import serving as served
from fhir_api.app import create_app
from fhir_api.auth.tokens import issue_token
from fhir_api.config import ApiSettings
from storage.config import StorageSettings
from storage.db import migrate
from tests.fhir_api.conftest import serving
from tests.raw_http import Answer, closed_by_server, connect, read_answer, send

SETTINGS = ApiSettings(
    jwt_secret="serving-test-secret-0123456789abcdef",
    http_header_timeout_seconds=1.0,
    http_body_timeout_seconds=1.0,
    http_max_connections=8,
    rate_limit_per_second=0,
)
# Far longer than any deadline above: a connection still open after this was held.
PATIENCE = 15.0


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = f"sqlite:///{tmp_path_factory.mktemp('serving') / 'doctorai.db'}"
    migrate(database)
    app = create_app(SETTINGS, StorageSettings(database_url=database, s3_endpoint="127.0.0.1:1"))
    with serving(app, served.config(app, SETTINGS)) as base:
        yield base


def _bearer() -> dict[str, str]:
    token = issue_token(SETTINGS, subject="slow", scopes=["system/*.cruds"], roles=["admin"])
    return {"Authorization": f"Bearer {token}"}


def _dribble(sock: socket.socket, data: bytes) -> bytes:
    """Send `data` a byte at a time, a tenth of a second apart, until the server answers or closes."""
    sock.settimeout(0.1)
    started = time.monotonic()
    for byte in data:
        assert time.monotonic() - started < PATIENCE, "the server held a dribbling client"
        try:
            sock.sendall(bytes([byte]))
            answer = sock.recv(65536)
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return b""
        return answer
    raise AssertionError("the whole dribble was taken in")


def _healthy(url: str) -> Answer:
    with connect(url) as sock:
        send(sock, "GET", "/healthz")
        return read_answer(sock)


def test_a_dribbled_head_is_cut_off_while_others_are_served(url: str) -> None:
    slow = [connect(url) for _ in range(4)]
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        assert _healthy(url).status == 200  # the slow ones hold no one up
        answer = _dribble(slow[0], b"X-Slow: " + b"a" * 10_000)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        for sock in slow[1:]:
            sock.settimeout(PATIENCE)
            assert closed_by_server(sock)
    finally:
        for sock in slow:
            sock.close()


def test_a_connection_that_sends_nothing_is_closed(url: str) -> None:
    with connect(url, timeout=PATIENCE) as sock:
        assert closed_by_server(sock)


def test_the_next_head_on_a_kept_connection_has_the_same_deadline(url: str) -> None:
    with connect(url) as sock:
        send(sock, "GET", "/healthz")
        assert read_answer(sock).status == 200
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        assert _dribble(sock, b"Host: " + b"b" * 10_000).startswith(b"HTTP/1.1 408")


def test_connections_past_the_cap_are_refused_at_once(url: str) -> None:
    held = [connect(url) for _ in range(SETTINGS.http_max_connections)]
    try:
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # a head begun: they count
        with connect(url) as extra:
            refused = read_answer(extra)
            assert refused.status == 503 and refused.headers["connection"] == "close"
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, connections are served again.
    deadline = time.monotonic() + PATIENCE
    while (answer := _try_health(url)) != 200:
        assert time.monotonic() < deadline, f"still refused: {answer}"
        time.sleep(0.05)


def _try_health(url: str) -> int:
    try:
        return _healthy(url).status
    except ConnectionError:
        return 0


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [("POST", "/fhir/Patient", "application/fhir+json"), ("PUT", "/admin/peers/SLOW", "application/problem+json")],
)
def test_a_stalled_body_gets_408_and_the_connection_closed(url: str, method: str, path: str, kind: str) -> None:
    content_type = "application/fhir+json" if path.startswith("/fhir") else "application/json"
    with connect(url, timeout=PATIENCE) as sock:
        headers = {**_bearer(), "Content-Type": content_type, "Content-Length": "100"}
        send(sock, method, path, headers, b'{"resourceType":')  # 16 of the 100 bytes promised
        answer = read_answer(sock)
        assert answer.status == 408, answer
        assert answer.headers["content-type"].startswith(kind)
        assert answer.headers["connection"] == "close" and answer.headers["x-content-type-options"] == "nosniff"
        if kind == "application/fhir+json":
            assert OperationOutcome.model_validate_json(answer.body).issue[0].code == "timeout"
        assert closed_by_server(sock)


def test_a_body_that_keeps_coming_is_not_cut_off(url: str) -> None:
    body = b'{"resourceType":"Patient","gender":"female"}'
    with connect(url, timeout=PATIENCE) as sock:
        send(sock, "POST", "/fhir/Patient", {**_bearer(), "Content-Type": "application/fhir+json", "Content-Length": str(len(body))})
        for i in range(0, len(body), 8):  # pieces well within the deadline of each other
            sock.sendall(body[i : i + 8])
            time.sleep(0.05)
        assert read_answer(sock).status == 201
