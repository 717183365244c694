"""The outbound sender: every enabled MLLP, FHIR and webhook destination's queued deliveries, sent until acknowledged.

The queue is the `deliveries` table, not a Kafka topic per destination: the message and its
queueing commit with the report that caused them, and each destination gets its own asyncio task,
so one destination that is down or refusing never holds up another. Within a destination messages
go one at a time in queue order (HL7 v2 original mode: wait for the ACK before the next).

Rules (HL7 v2 2.9.2): AA (or CA) -> sent. AR/CR (rejected: the same message will be rejected
again) -> dead at once. AE/CE, no answer within the timeout, a broken connection or an answer
that is not an ACK to this message -> retried with exponential backoff, dead after
`outbound_max_attempts`. Sent and dead deliveries are audited (DCM 110106 Export).

FHIR and webhook destinations (issue 7) take the same queue, one task each, with the HTTP rules
of integration/posts.py.
"""

import asyncio
import logging
import ssl
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

import httpx
from sqlalchemy import Engine

from audit.log import append
from audit.records import HL7_SENT, REPORT_SENT, AuditRecord, Hop, Outcome
from integration import metrics, posts
from integration.config import IntegrationSettings
from integration.errors import DeliveryFailed, FramingError
from integration.mllp import ack_code, exchange
from storage.db import session_scope
from storage.deliveries import destinations, due_deliveries, mark_delivered, mark_failed
from storage.errors import StorageUnavailable

log = logging.getLogger(__name__)

BATCH = 20


class Named(Hashable, Protocol):
    """A destination as a sender task needs it: hashable, so a changed row is a new target."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


@dataclass(frozen=True)
class Target:
    """A destination as the sender needs it."""

    id: int
    name: str
    host: str
    port: int
    tls: bool
    ca_file: str


@dataclass(frozen=True)
class Queued:
    """One delivery as the sender needs it."""

    id: int
    correlation_id: str
    subject: str
    control_id: str
    payload: str
    attempts: int


def _targets(engine: Engine) -> list[Target]:
    with session_scope(engine) as session:
        return [
            Target(d.id, d.name, d.host, d.port, d.tls, str((d.options or {}).get("ca_file", "")))
            for d in destinations(session, kind="mllp", enabled_only=True)
        ]


def _due(engine: Engine, destination_id: int) -> list[Queued]:
    with session_scope(engine) as session:
        return [
            Queued(d.id, d.correlation_id, d.subject, d.control_id, d.payload, d.attempts)
            for d in due_deliveries(session, destination_id=destination_id, limit=BATCH)
        ]


def _record(
    engine: Engine,
    item: Queued,
    *,
    hop: Hop,
    destination: str,
    address: str,
    code: str,
    error: str,
    retry_in: timedelta | None,
) -> None:
    """Write an attempt's outcome with its audit record, in one transaction: sent (success), failed
    and to be retried (minor failure), or dead (serious failure)."""
    with session_scope(engine) as session:
        if not error:
            mark_delivered(session, delivery_id=item.id, ack_code=code)
        else:
            mark_failed(session, delivery_id=item.id, error=error, ack_code=code, retry_in=retry_in)
        if not error:
            outcome = Outcome.SUCCESS
        else:
            outcome = Outcome.MINOR_FAILURE if retry_in is not None else Outcome.SERIOUS_FAILURE
        append(
            session,
            AuditRecord(
                hop=hop,
                correlation_id=item.correlation_id,
                agent_who="doctorai-outbound",
                agent_address=address,
                entity_what=item.subject,
                outcome=outcome,
                detail={
                    "destination": destination,
                    "control_id": item.control_id,
                    "ack": code,
                    "attempts": str(item.attempts + 1),
                    "error": error[:200],
                    "retry_in": f"{retry_in.total_seconds():g}" if retry_in is not None else "",
                },
            ),
        )


def backoff(settings: IntegrationSettings, attempts: int) -> timedelta:
    """The wait before attempt `attempts + 1`: doubling from the first delay up to the maximum."""
    delay = settings.retry_first_delay_seconds * (2 ** min(attempts, 30))
    return timedelta(seconds=min(delay, settings.retry_max_delay_seconds))


async def _connect(target: Target, timeout: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    context = None
    if target.tls:
        context = ssl.create_default_context(cafile=target.ca_file or None)
    try:
        return await asyncio.wait_for(asyncio.open_connection(target.host, target.port, ssl=context), timeout)
    except (OSError, TimeoutError) as exc:
        raise DeliveryFailed(f"cannot connect to {target.host}:{target.port}: {exc!r}", retriable=True) from exc


async def send(
    target: Target, item: Queued, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], *, timeout: float
) -> str:
    """Send one delivery and return the ACK code if it is AA/CA; raise DeliveryFailed otherwise."""
    reader, writer = connection
    answer = await exchange(reader, writer, item.payload.encode(), timeout=timeout)
    try:
        code, detail = ack_code(answer, control_id=item.control_id)
    except FramingError as exc:
        raise DeliveryFailed(str(exc), retriable=True) from exc
    if code in ("AA", "CA"):
        return code
    raise DeliveryFailed(f"{code}: {detail}"[:500], retriable=code not in ("AR", "CR"), ack_code=code)


async def _due_now(engine: Engine, destination_id: int, name: str) -> list[Queued]:
    """A destination's due deliveries; none while the database is unavailable (tried again next poll)."""
    try:
        return await asyncio.to_thread(_due, engine, destination_id)
    except StorageUnavailable as exc:
        log.warning("outbound %s paused: %r", name, exc)
        return []


async def run_destination(engine: Engine, settings: IntegrationSettings, target: Target, stop: asyncio.Event) -> None:
    """Send one destination's deliveries until `stop`; never raises for a delivery's failure."""
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    address = f"{target.host}:{target.port}"
    try:
        while not stop.is_set():
            for item in await _due_now(engine, target.id, target.name):
                if not item.payload:
                    continue
                try:
                    if connection is None:
                        connection = await _connect(target, settings.outbound_ack_timeout_seconds)
                    code = await send(target, item, connection, timeout=settings.outbound_ack_timeout_seconds)
                    await asyncio.to_thread(
                        partial(_record, engine, item, hop=HL7_SENT, destination=target.name, address=address),
                        code=code,
                        error="",
                        retry_in=None,
                    )
                    metrics.DELIVERIES.labels(target.name, "sent").inc()
                except DeliveryFailed as exc:
                    _close(connection)
                    connection = None
                    last = not exc.retriable or item.attempts + 1 >= settings.outbound_max_attempts
                    retry_in = None if last else backoff(settings, item.attempts)
                    await asyncio.to_thread(
                        partial(_record, engine, item, hop=HL7_SENT, destination=target.name, address=address),
                        code=exc.ack_code,
                        error=str(exc),
                        retry_in=retry_in,
                    )
                    metrics.DELIVERIES.labels(target.name, "dead" if last else "retry").inc()
                    log.warning(
                        "delivery %d to %s failed (attempt %d): %s", item.id, target.name, item.attempts + 1, exc
                    )
                    break  # keep this destination's order: later messages wait for this one's retry
            await pause(stop, settings.outbound_poll_seconds)
    finally:
        _close(connection)


@dataclass(frozen=True)
class HttpTarget:
    """A "fhir" or "webhook" destination as the sender needs it (options as a tuple: hashable)."""

    id: int
    name: str
    kind: str
    options: tuple[tuple[str, str], ...]


def _http_targets(engine: Engine) -> list[HttpTarget]:
    with session_scope(engine) as session:
        return [
            HttpTarget(d.id, d.name, d.kind, tuple(sorted((d.options or {}).items())))
            for kind in ("fhir", "webhook")
            for d in destinations(session, kind=kind, enabled_only=True)
        ]


async def run_http_destination(
    engine: Engine, settings: IntegrationSettings, target: HttpTarget, stop: asyncio.Event
) -> None:
    """POST one FHIR server's or webhook's deliveries until `stop`, in queue order, as the MLLP sender does."""
    options = dict(target.options)
    post = posts.post_fhir if target.kind == "fhir" else posts.post_webhook
    address = options.get("base_url") or options.get("url", "")
    record = partial(_record, hop=REPORT_SENT, destination=target.name, address=address)
    async with httpx.AsyncClient(timeout=settings.outbound_ack_timeout_seconds) as client:
        while not stop.is_set():
            for item in await _due_now(engine, target.id, target.name):
                if not item.payload:
                    continue
                try:
                    status = await post(client, options, item.payload)
                    await asyncio.to_thread(record, engine, item, code="", error="", retry_in=None)
                    metrics.DELIVERIES.labels(target.name, "sent").inc()
                    log.info("delivery %d to %s: HTTP %s", item.id, target.name, status)
                except DeliveryFailed as exc:
                    last = not exc.retriable or item.attempts + 1 >= settings.outbound_max_attempts
                    retry_in = None if last else backoff(settings, item.attempts)
                    await asyncio.to_thread(record, engine, item, code="", error=str(exc), retry_in=retry_in)
                    metrics.DELIVERIES.labels(target.name, "dead" if last else "retry").inc()
                    log.warning(
                        "delivery %d to %s failed (attempt %d): %s", item.id, target.name, item.attempts + 1, exc
                    )
                    break
            await pause(stop, settings.outbound_poll_seconds)


def _close(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if connection is not None:
        connection[1].close()


async def supervise(
    name: str,
    list_targets: Callable[[], list[T]],
    start: Callable[[T], Coroutine[Any, Any, None]],
    settings: IntegrationSettings,
    stop: asyncio.Event,
) -> None:
    """Keep one task per target running until `stop`; targets are re-read every few polls, so new,
    changed or disabled destinations start or stop sending, and a crashed task is restarted."""
    tasks: dict[T, asyncio.Task[None]] = {}
    try:
        while not stop.is_set():
            try:
                targets = set(await asyncio.to_thread(list_targets))
            except StorageUnavailable as exc:
                log.warning("%s paused: %r", name, exc)
                targets = set(tasks)
            for target in list(tasks):
                task = tasks[target]
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("%s to %s stopped, restarting it: %r", name, target.name, task.exception())
                if target not in targets or task.done():
                    tasks.pop(target).cancel()
            for target in targets - set(tasks):
                tasks[target] = asyncio.create_task(start(target))
            await pause(stop, settings.outbound_poll_seconds * 4)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def run(engine: Engine, settings: IntegrationSettings, stop: asyncio.Event) -> None:
    """One task per enabled MLLP, FHIR and webhook destination."""

    def start(target: Target | HttpTarget) -> Coroutine[Any, Any, None]:
        if isinstance(target, HttpTarget):
            return run_http_destination(engine, settings, target, stop)
        return run_destination(engine, settings, target, stop)

    def targets() -> list[Target | HttpTarget]:
        return [*_targets(engine), *_http_targets(engine)]

    await supervise("outbound", targets, start, settings, stop)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less when `stop` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
