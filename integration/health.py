"""The metrics port every background process serves: /metrics, /healthz (alive) and /readyz.

/readyz answers 200 when the database, the object store and Kafka are reachable, else 503 with
what is not; Kubernetes readiness probes and the compose healthchecks call it.
"""

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from integration.config import get_settings as get_integration_settings
from storage.config import get_settings as get_storage_settings
from storage.db import make_engine
from storage.errors import StorageUnavailable
from storage.objects import ObjectStore, make_object_store

log = logging.getLogger(__name__)

Check = Callable[[], None]
KAFKA_TIMEOUT_SECONDS = 2.0
# Probes come every few seconds from several places; one Kafka round trip per interval is enough.
KAFKA_CACHE_SECONDS = 5.0
FAILURES = (StorageUnavailable, SQLAlchemyError, KafkaError, OSError, TimeoutError)


class MetricsServer(ThreadingHTTPServer):
    """An HTTP server holding the registry it exposes and the readiness checks it runs."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], *, registry: CollectorRegistry, checks: Mapping[str, Check]) -> None:
        super().__init__(address, _Handler)
        self.registry = registry
        self.checks = checks

    def readiness(self) -> tuple[bool, dict[str, str]]:
        """Run every check; ("ok" or why not) by name."""
        results: dict[str, str] = {}
        for name, check in self.checks.items():
            try:
                check()
                results[name] = "ok"
            except FAILURES as exc:
                log.warning("readiness check %s failed: %s", name, type(exc).__name__)
                results[name] = f"unavailable: {type(exc).__name__}"
        return all(v == "ok" for v in results.values()), results


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, b'{"status": "ok"}', "application/json")
        elif path == "/readyz":
            ready, checks = self.server.readiness()
            body = json.dumps({"status": "ready" if ready else "unavailable", "checks": checks}).encode()
            self._send(200 if ready else 503, body, "application/json")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        return  # probes every few seconds would drown the process's own log


def _database(engine: Engine) -> Check:
    def check() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    return check


def _objects(objects: ObjectStore) -> Check:
    return objects.ping


class KafkaProbe:
    """A cheap metadata request to the bootstrap servers, its outcome kept for a few seconds."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._failure: Exception | None = None

    def __call__(self) -> None:
        """Raise the last failure unless Kafka answered a metadata request recently."""
        with self._lock:
            if time.monotonic() - self._checked_at > KAFKA_CACHE_SECONDS:
                try:
                    asyncio.run(self._bootstrap_once())
                    self._failure = None
                except FAILURES as exc:
                    self._failure = exc
                self._checked_at = time.monotonic()
            if self._failure is not None:
                raise self._failure

    async def _bootstrap_once(self) -> None:
        client = AIOKafkaClient(bootstrap_servers=self._bootstrap, request_timeout_ms=int(KAFKA_TIMEOUT_SECONDS * 1000))
        try:
            await asyncio.wait_for(client.bootstrap(), KAFKA_TIMEOUT_SECONDS)
        finally:
            await client.close()


def dependency_checks() -> dict[str, Check]:
    """Checks of the database, the object store and Kafka, from the settings (their own small clients)."""
    storage = get_storage_settings()
    return {
        "database": _database(make_engine(storage.resolved_database_url())),
        "object_store": _objects(make_object_store(storage)),
        "kafka": KafkaProbe(get_integration_settings().kafka_bootstrap),
    }


def serve(port: int, *, registry: CollectorRegistry = REGISTRY) -> MetricsServer:
    """Serve /metrics, /healthz and /readyz on `port` from a daemon thread; shut the server down to stop."""
    server = MetricsServer(
        (get_integration_settings().metrics_host, port), registry=registry, checks=dependency_checks()
    )
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def stop(server: MetricsServer | None) -> None:
    """Stop serving and close the socket (no-op without a server)."""
    if server is not None:
        server.shutdown()
        server.server_close()
