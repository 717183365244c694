"""Health and metrics of every engine process: /metrics, /healthz (alive) and /readyz.

/healthz answers 200 while the process can do its job, 503 when it cannot (a listener that no
longer accepts connections): Kubernetes liveness probes restart such a process. /readyz answers
200 when the database, the object store and Kafka are reachable, else 503 with what is not;
readiness probes and the compose healthchecks call it. Every check runs against the process's
own engine and object store, in a thread of its own, and is waited for at most CHECK_SECONDS: a
dependency that hangs (a paused object store whose reads time out after 30 s, three times) is
reported as unavailable, never waited on. The API serves the same checks on its own port
(fhir_api/probes.py).
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

from storage.errors import StorageUnavailable
from storage.objects import ObjectStore

log = logging.getLogger(__name__)

Check = Callable[[], None]
Alive = Callable[[], bool]
# How long /readyz waits for a check. A healthy dependency answers in milliseconds; a probe client
# that gives up sooner (Kubernetes after 1 s by default) counts that as not ready, the same outcome.
CHECK_SECONDS = 3.0
KAFKA_TIMEOUT_SECONDS = 2.0
# Probes come every few seconds from several places; one Kafka round trip per interval is enough.
KAFKA_CACHE_SECONDS = 5.0
FAILURES = (StorageUnavailable, SQLAlchemyError, KafkaError, OSError, TimeoutError)


def always_alive() -> bool:
    """The liveness of a process with nothing that can die on its own (its loop answers the probe)."""
    return True


class _Bounded:
    """One check, run in a daemon thread and waited for at most a deadline.

    While a run hangs, the next probe does not start another beside it (a paused dependency would
    otherwise gather a thread per probe): it reports the hung run until that run ends. Daemon
    threads, so a run that never ends does not hold the process's exit either.
    """

    def __init__(self, name: str, check: Check) -> None:
        self._name = name
        self._check = check
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None
        self._failure: BaseException | None = None

    def start(self) -> None:
        """Start a run unless the previous one is still running."""
        with self._lock:
            if self._running is not None and self._running.is_alive():
                return
            self._failure = None
            self._running = threading.Thread(target=self._run, name=f"readiness-{self._name}", daemon=True)
            self._running.start()

    def _run(self) -> None:
        try:
            self._check()
        except FAILURES as exc:
            self._failure = exc

    def outcome(self, deadline: float) -> str:
        """"ok", or why not, once the run ended or the deadline (time.monotonic) passed."""
        with self._lock:
            running = self._running
        if running is not None:
            running.join(max(0.0, deadline - time.monotonic()))
            if running.is_alive():
                return f"unavailable: no answer within {CHECK_SECONDS:.0f}s"
        failure = self._failure
        return "ok" if failure is None else f"unavailable: {type(failure).__name__}"


class Readiness:
    """The process's readiness checks, run together, each within CHECK_SECONDS."""

    def __init__(self, checks: Mapping[str, Check], *, seconds: float = CHECK_SECONDS) -> None:
        self._checks = {name: _Bounded(name, check) for name, check in checks.items()}
        self._seconds = seconds

    def __call__(self) -> tuple[bool, dict[str, str]]:
        """Run every check; ("ok" or why not) by name. Returns within the deadline, blocking."""
        for check in self._checks.values():
            check.start()
        deadline = time.monotonic() + self._seconds
        results = {name: check.outcome(deadline) for name, check in self._checks.items()}
        for name, result in results.items():
            if result != "ok":
                log.warning("readiness check %s failed: %s", name, result.removeprefix("unavailable: "))
        return all(v == "ok" for v in results.values()), results


def answer(ready: bool, checks: Mapping[str, str]) -> bytes:
    """The /readyz body."""
    return json.dumps({"status": "ready" if ready else "unavailable", "checks": dict(checks)}).encode()


class MetricsServer(ThreadingHTTPServer):
    """An HTTP server holding the registry it exposes, the liveness it reports and the readiness checks it runs."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        registry: CollectorRegistry,
        readiness: Readiness,
        alive: Alive = always_alive,
    ) -> None:
        super().__init__(address, _Handler)
        self.registry = registry
        self.readiness = readiness
        self.alive = alive


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            if self.server.alive():
                self._send(200, b'{"status": "ok"}', "application/json")
            else:
                self._send(503, b'{"status": "failing"}', "application/json")
        elif path == "/readyz":
            ready, checks = self.server.readiness()
            self._send(200 if ready else 503, answer(ready, checks), "application/json")
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


def database_check(engine: Engine) -> Check:
    """A round trip to the database through the process's own engine."""

    def check() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    return check


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


def dependency_checks(engine: Engine, objects: ObjectStore, kafka: Check | None = None) -> dict[str, Check]:
    """Checks of the process's own database engine and object store, and of Kafka when given."""
    checks: dict[str, Check] = {"database": database_check(engine), "object_store": objects.ping}
    if kafka is not None:
        checks["kafka"] = kafka
    return checks


def serve(
    host: str, port: int, *, readiness: Readiness, alive: Alive = always_alive, registry: CollectorRegistry = REGISTRY
) -> MetricsServer:
    """Serve /metrics, /healthz and /readyz on `host:port` from a daemon thread; `stop` it to end."""
    server = MetricsServer((host, port), registry=registry, readiness=readiness, alive=alive)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server


def stop(server: MetricsServer | None) -> None:
    """Stop serving and close the socket (no-op without a server)."""
    if server is not None:
        server.shutdown()
        server.server_close()
