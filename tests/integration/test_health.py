"""The metrics port of the background processes: /metrics, /healthz and /readyz (issue 9)."""

import json
import socket
import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy import Engine

from integration.health import Check, KafkaProbe, MetricsServer, Readiness, dependency_checks, serve, stop
from storage.config import StorageSettings
from storage.objects import make_object_store
from tests.probes import get


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("doctorai_test_things", "Things", registry=registry).inc(3)
    # Nothing listens on this port: Kafka is unreachable, a real fault.
    checks: dict[str, Check] = {"kafka": KafkaProbe(f"127.0.0.1:{_unused_port()}"), "database": lambda: None}
    running = MetricsServer(("127.0.0.1", 0), registry=registry, readiness=Readiness(checks))
    threading.Thread(target=running.serve_forever, daemon=True).start()
    yield running
    stop(running)


def test_metrics_health_and_readiness(server: MetricsServer) -> None:
    base = f"http://127.0.0.1:{server.server_address[1]}"
    status, body = get(f"{base}/metrics")
    assert status == 200 and b"doctorai_test_things_total 3.0" in body
    assert get(f"{base}/healthz") == (200, b'{"status": "ok"}')
    status, body = get(f"{base}/readyz")
    assert status == 503
    answer = json.loads(body)
    assert answer["status"] == "unavailable"
    assert answer["checks"]["database"] == "ok"
    assert answer["checks"]["kafka"].startswith("unavailable: ")
    assert get(f"{base}/nothing")[0] == 404


@pytest.fixture
def paused_object_store() -> Iterator[int]:
    """A port that takes TCP connections and never answers, as a SIGSTOPped S3 server does."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listening:
        yield int(listening.getsockname()[1])


def test_readiness_answers_within_its_deadline_while_the_object_store_hangs(paused_object_store: int) -> None:
    """Issue 18: /readyz hung (its client's reads time out after 30 s, three times) instead of answering 503."""
    objects = make_object_store(StorageSettings(s3_endpoint=f"127.0.0.1:{paused_object_store}"))
    checks = {"database": lambda: None, "object_store": objects.ping}
    running = serve("127.0.0.1", 0, readiness=Readiness(checks), registry=CollectorRegistry())
    try:
        url = f"http://127.0.0.1:{running.server_address[1]}/readyz"
        for _ in range(3):  # again while the first check still hangs: answered, and no thread piles up
            status, body = get(url)
            assert status == 503
            assert json.loads(body)["checks"] == {"database": "ok", "object_store": "unavailable: no answer within 3s"}
        hung = [t for t in threading.enumerate() if t.name == "readiness-object_store"]
        assert len(hung) == 1 and hung[0].daemon
    finally:
        stop(running)


def test_the_checks_use_the_engine_and_store_they_are_given(engine: Engine) -> None:
    objects = make_object_store(StorageSettings(s3_endpoint=f"127.0.0.1:{_unused_port()}"))
    ready, checks = Readiness(dependency_checks(engine, objects))()
    assert not ready
    assert checks["database"] == "ok" and checks["object_store"].startswith("unavailable: ")
    assert "kafka" not in checks  # the API's checks: it uses no Kafka


def test_liveness_comes_from_the_process(server: MetricsServer) -> None:
    """Issue 18: /healthz said ok while the DICOM listener's acceptor was dead; a process now tells it."""
    alive = threading.Event()
    alive.set()
    server.alive = alive.is_set
    base = f"http://127.0.0.1:{server.server_address[1]}"
    assert get(f"{base}/healthz") == (200, b'{"status": "ok"}')
    alive.clear()
    assert get(f"{base}/healthz") == (503, b'{"status": "failing"}')
