"""Every process's heartbeat: a thread writing the process's row of `process_heartbeats` every few
seconds, so the console shows each process with its health (issue 16).

Every process beats while it runs: integration.process.started beats on the process's own engine,
the API's lifespan on its engine (`beating`). A process is healthy
while its last beat is younger than HEALTHY_WITHIN; one that stops cleanly removes its row, one
that dies leaves it to go stale. A beat that cannot be written (the database is down) is skipped:
the process is then shown as not beating, which is what an operator needs to know.
"""

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.db import session_scope
from storage.errors import StorageError
from storage.heartbeats import beat, forget, live

log = logging.getLogger(__name__)

INTERVAL = timedelta(seconds=5)
# Three beats missed, and a little more for a busy database: the process is not healthy.
HEALTHY_WITHIN = timedelta(seconds=20)
Detail = Callable[[], Mapping[str, list[str]]]


def _version() -> str:
    try:
        return version("doctorai")
    except PackageNotFoundError:
        return ""


class Heartbeat:
    """One process's beating thread, from `start` until `stop`."""

    def __init__(self, engine: Engine, *, kind: str, name: str, detail: Detail | None = None) -> None:
        self.engine = engine
        self.kind, self.name = kind, name
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.detail = detail or dict
        self.started_at = datetime.now(UTC)
        self.version = _version()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{name}", daemon=True)

    def start(self) -> None:
        """Forget this process's earlier runs on this host that died, then beat until `stop`."""
        stale = self.started_at - HEALTHY_WITHIN
        self._write(lambda session: forget(session, name=self.name, host=self.host, seen_before=stale))
        self._thread.start()

    def beat_once(self) -> None:
        """Write one beat now."""
        now = datetime.now(UTC)
        self._write(
            lambda session: beat(
                session,
                kind=self.kind,
                name=self.name,
                host=self.host,
                pid=self.pid,
                version=self.version,
                started_at=self.started_at,
                now=now,
                detail=self.detail(),
            )
        )

    def stop(self) -> None:
        """Stop beating and remove the row: a process that stopped is not one that died."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._write(lambda session: forget(session, name=self.name, host=self.host, pid=self.pid))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat_once()
            self._stop.wait(INTERVAL.total_seconds())

    def _write(self, change: Callable[..., None]) -> None:
        try:
            with session_scope(self.engine) as session:
                change(session)
        except StorageError as exc:
            log.warning("heartbeat of %s not written: %s", self.name, type(exc).__name__)


@contextmanager
def beating(engine: Engine, *, kind: str, name: str = "", detail: Detail | None = None) -> Iterator[Heartbeat]:
    """Beat for this process while the block runs (on the process's own engine); the row goes when it ends."""
    heartbeat = Heartbeat(engine, kind=kind, name=name or kind, detail=detail)
    heartbeat.start()
    try:
        yield heartbeat
    finally:
        heartbeat.stop()


def is_healthy(last_seen_at: datetime, *, now: datetime) -> bool:
    """Whether a process that last beat at `last_seen_at` counts as running."""
    return now - last_seen_at <= HEALTHY_WITHIN


def reported_open_circuits(session: Session, *, now: datetime) -> set[str]:
    """The destinations whose circuit a running integration process reports open."""
    rows = live(session, since=now - HEALTHY_WITHIN, kind="integration")
    return {name for row in rows for name in row.detail.get("open_circuits", [])}
