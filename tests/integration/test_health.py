"""The metrics port of the background processes: /metrics, /healthz and /readyz (issue 9)."""

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter

from integration.health import Check, KafkaProbe, MetricsServer, stop


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("doctorai_test_things", "Things", registry=registry).inc(3)
    # Nothing listens on this port: Kafka is unreachable, a real fault.
    checks: dict[str, Check] = {"kafka": KafkaProbe(f"127.0.0.1:{_unused_port()}"), "database": lambda: None}
    running = MetricsServer(("127.0.0.1", 0), registry=registry, checks=checks)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    yield running
    stop(running)


def test_metrics_health_and_readiness(server: MetricsServer) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    status, body = _get(f"{base}/metrics")
    assert status == 200 and b"doctorai_test_things_total 3.0" in body
    assert _get(f"{base}/healthz") == (200, b'{"status": "ok"}')
    status, body = _get(f"{base}/readyz")
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == "unavailable"
    assert answer["checks"]["database"] == "ok"
    assert answer["checks"]["kafka"].startswith("unavailable: ")
    assert _get(f"{base}/nothing")[0] == 404
