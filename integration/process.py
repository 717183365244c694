"""The scaffold every engine process runs in: start-up, the stop signal, one stop-aware sleep, the health port.

Every `__main__` starts with `started` (logging, the production-secrets check, and the process's
one database engine and object store client), builds its other collaborators once, and runs its
work with `run` (asyncio) or `run_threads` (the DICOM listener's threads). SIGTERM and SIGINT set
the stop event the work watches, and a stop is bounded, so that no supervisor has to kill
(`doctorai up` waits 20 s, Kubernetes 30 s): work still running STOP_GRACE_SECONDS after the
signal is cancelled (the Kafka clients' own stop is bounded too, integration.kafka.running), and a
process still alive EXIT_SECONDS after the signal exits at once. What that abandons is safe to
abandon: every hop is at-least-once and idempotent (DESIGN.md 5.3), as after a crash. The last
resort is for threads nobody can interrupt: a read from a paused object store (30 s, three tries),
a database waiting on a lock, a forward in the middle of an association.
"""

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy import Engine

from audit.config import check_production as check_audit_production
from audit.config import get_settings as get_audit_settings
from integration import health, heartbeats, plaintext
from integration.config import IntegrationSettings
from integration.logs import setup_logging
from storage.config import StorageSettings, exit_if_unsafe
from storage.db import make_engine
from storage.objects import ObjectStore, make_object_store

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After the stop signal: how long the work may take to finish on its own, then how long the
# process may take in all before it exits whatever still runs.
STOP_GRACE_SECONDS = 5.0
EXIT_SECONDS = 8.0

AsyncMain = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Own:
    """What every engine process starts with: its storage and pipeline settings, and the one database
    engine and object store client it makes (what it passes on, and what its /readyz checks)."""

    storage: StorageSettings
    integration: IntegrationSettings
    engine: Engine
    objects: ObjectStore


def begin(storage: StorageSettings, integration: IntegrationSettings) -> None:
    """Every process's first step: log as DOCTORAI_LOG_FORMAT says, exit with the reason when
    production settings are unsafe, and warn of its links that carry data in clear text."""
    setup_logging(integration.log_format)
    audit = get_audit_settings()
    exit_if_unsafe(storage, lambda: check_audit_production(audit, storage))
    plaintext.warn_links(storage, integration)


@contextmanager
def started(
    storage: StorageSettings,
    integration: IntegrationSettings,
    *,
    kind: str,
    name: str = "",
    detail: heartbeats.Detail | None = None,
    checkpoints: bool = True,
) -> Iterator[Own]:
    """`begin`, then make the process's engine (`checkpoints`: storage.db.make_engine) and object store
    client, once, and beat as `kind`/`name` (integration.heartbeats) while the block runs; the engine
    is closed when the block ends."""
    begin(storage, integration)
    engine = make_engine(storage.resolved_database_url(), checkpoints=checkpoints)
    plaintext.warn_destinations(storage, engine)
    try:
        with heartbeats.beating(engine, kind=kind, name=name, detail=detail):
            yield Own(storage, integration, engine, make_object_store(storage))
    finally:
        engine.dispose()
        log.info("stopped")


class _Deadline:
    """Ends the process EXIT_SECONDS after the stop signal unless it ended by then (a daemon thread,
    so it ends with the process; it also covers the interpreter's exit, which waits for every
    thread that is not a daemon)."""

    def __init__(self) -> None:
        self.signalled = threading.Event()
        threading.Thread(target=self._watch, name="stop-deadline", daemon=True).start()

    def _watch(self) -> None:
        self.signalled.wait()
        time.sleep(EXIT_SECONDS)
        busy = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
        log.error("still running %.0fs after the stop signal (threads: %s); exiting now", EXIT_SECONDS, ", ".join(busy))
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)


def run(main: AsyncMain) -> None:
    """Run `main(stop)` on an event loop until it returns; SIGTERM and SIGINT set `stop`.

    Raises what `main` raises. Work that has not returned STOP_GRACE_SECONDS after the signal is
    cancelled, and the process ends EXIT_SECONDS after it whatever is left (a thread blocked in I/O).
    """
    asyncio.run(_until_done(main, _Deadline()))


async def _until_done(main: AsyncMain, deadline: _Deadline) -> None:
    stop = asyncio.Event()

    def stopping() -> None:
        stop.set()
        deadline.signalled.set()

    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, stopping)
    work = asyncio.create_task(main(stop))
    signalled = asyncio.create_task(stop.wait())
    await asyncio.wait([work, signalled], return_when=asyncio.FIRST_COMPLETED)
    signalled.cancel()
    if not work.done():
        await asyncio.wait([work], timeout=STOP_GRACE_SECONDS)
    if not work.done():
        log.warning("still stopping %.0fs after the stop signal; cancelling what is left", STOP_GRACE_SECONDS)
        work.cancel()
    try:
        await work
    except asyncio.CancelledError:
        if not stop.is_set():
            raise


def run_threads(main: Callable[[threading.Event], None]) -> None:
    """The threading flavour (the DICOM listener): `main(stop)` runs in this thread until it returns;
    SIGTERM and SIGINT set `stop`, and the process ends EXIT_SECONDS after the signal whatever is left."""
    stop = threading.Event()
    deadline = _Deadline()

    def stopping(_signum: int, _frame: object) -> None:
        stop.set()
        deadline.signalled.set()

    for sig in SIGNALS:
        signal.signal(sig, stopping)
    main(stop)


async def sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less when `stop` is set meanwhile; whether the process is stopping."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        return False
    return True


@contextmanager
def health_port(
    port: int, own: Own, *, alive: health.Alive = health.always_alive, registry: CollectorRegistry = REGISTRY
) -> Iterator[None]:
    """Serve /metrics, /healthz and /readyz on `port` (0: not at all) while the block runs.

    /readyz checks the process's own engine and object store, and Kafka at its bootstrap servers;
    /healthz asks `alive` (a listener says whether it still accepts connections).
    """
    server = None
    if port:
        kafka = health.KafkaProbe(own.integration.kafka_bootstrap)
        readiness = health.Readiness(health.dependency_checks(own.engine, own.objects, kafka))
        server = health.serve(own.integration.metrics_host, port, readiness=readiness, alive=alive, registry=registry)
    try:
        yield
    finally:
        health.stop(server)
