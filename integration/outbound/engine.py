"""The outbound engine: one task per enabled destination, sending its queue until every item is sent or dead.

Every destination kind goes through one loop: the due items of its queue (deliveries for MLLP,
FHIR and webhook destinations, forwards for DICOM ones) -> its transport sends one -> the outcome
and its audit record (DCM 110106 Export, PS3.15 A.5.3.5) are written in one transaction ->
metrics. The queues are tables, not Kafka topics: an item commits with the report or study that
caused it. Each destination has its own task and its own link (connection, HTTP client,
association thread), so one that is down, slow or refusing never holds up another; a task is
restarted when its destination's row changes or the task crashes.

A failed attempt is retried after integration.backoff's wait until `outbound_max_attempts`; an
answer that says sending again cannot help (HL7 AR/CR, HTTP 4xx) is dead at once. HL7 messages
keep their order: a failed one holds back the rest of its destination's queue (HL7 v2 2.9.2,
original mode); study forwards do not wait for each other. A circuit breaker per destination
(circuit.py) stops spending attempts on a peer that cannot be reached.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import Counter
from sqlalchemy import Engine

from integration import process
from integration.backoff import backoff
from integration.config import IntegrationSettings
from integration.outbound.circuit import Circuit
from integration.outbound.target import Target, target_of
from storage.db import session_scope
from storage.destinations import destinations
from storage.errors import StorageUnavailable

log = logging.getLogger(__name__)


class Item(Protocol):
    """A queued item as the engine needs it."""

    @property
    def id(self) -> int: ...

    @property
    def attempts(self) -> int: ...


class Answer(Protocol):
    """How one attempt ended, as the engine needs it."""

    @property
    def sent(self) -> bool: ...

    @property
    def retriable(self) -> bool: ...

    # Whether the peer was reached (a connection, an association): the circuit breaker's input;
    # None when the attempt cannot tell (connected, then no answer).
    @property
    def reached(self) -> bool | None: ...

    @property
    def error(self) -> str: ...


ItemT = TypeVar("ItemT", bound=Item)
AnswerT = TypeVar("AnswerT", bound=Answer)
ItemT_contra = TypeVar("ItemT_contra", bound=Item, contravariant=True)
AnswerT_co = TypeVar("AnswerT_co", bound=Answer, covariant=True)


class Link(Protocol[ItemT_contra, AnswerT_co]):
    """A destination's way to its peer while its task runs: a connection, an HTTP client, a thread."""

    async def send(self, item: ItemT_contra) -> AnswerT_co:
        """Send one item; the answer says how it ended (never raises for the peer's failure)."""
        ...

    async def close(self) -> None:
        """Let go of what the link holds."""
        ...


@dataclass(frozen=True)
class Queue(Generic[ItemT, AnswerT]):
    """Where a kind's items wait, as the engine reads and writes it."""

    noun: str  # what one item is called in log lines
    due: Callable[[Engine, int, int], list[ItemT]]  # (engine, destination id, limit), oldest first
    # Writes the attempt's outcome with its audit record; returns the item's status (pending, sent, dead).
    record: Callable[[Engine, Target, ItemT, AnswerT, timedelta | None], str]
    outcomes: Counter  # attempts by destination and outcome: sent, retry, dead
    batch: int
    in_order: bool  # a failed item holds back the later ones until it is sent or dead


@dataclass(frozen=True)
class Transport(Generic[ItemT, AnswerT]):
    """A destination kind as the engine sends to it: its queue, and how a link to one destination opens."""

    queue: Queue[ItemT, AnswerT]
    connect: Callable[[Target], Link[ItemT, AnswerT]]


async def run(
    engine: Engine, settings: IntegrationSettings, transports: Mapping[str, Transport[Any, Any]], stop: asyncio.Event
) -> None:
    """Send to every enabled destination of the kinds in `transports` (kind -> transport) until `stop`."""

    def targets() -> list[Target]:
        with session_scope(engine) as session:
            return [target_of(d) for d in destinations(session, enabled_only=True) if d.kind in transports]

    def start(target: Target) -> Coroutine[Any, Any, None]:
        return run_destination(engine, settings, transports[target.kind], target, stop)

    await supervise(targets, start, settings.outbound_poll_seconds * 4, stop)


async def supervise(
    list_targets: Callable[[], list[Target]],
    start: Callable[[Target], Coroutine[Any, Any, None]],
    every: float,
    stop: asyncio.Event,
) -> None:
    """Keep one task per target running until `stop`; targets are read again `every` seconds, so new,
    changed or disabled destinations start or stop sending, and a crashed task is restarted."""
    tasks: dict[Target, asyncio.Task[None]] = {}
    try:
        while not stop.is_set():
            try:
                targets = set(await asyncio.to_thread(list_targets))
            except StorageUnavailable as exc:
                log.warning("outbound paused: %r", exc)
                targets = set(tasks)
            for target in list(tasks):
                task = tasks[target]
                if task.done() and not task.cancelled() and task.exception() is not None:
                    log.error("sending to %s stopped, restarting it: %r", target.name, task.exception())
                if target not in targets or task.done():
                    tasks.pop(target).cancel()
            for target in targets - set(tasks):
                tasks[target] = asyncio.create_task(start(target))
            await process.sleep(stop, every)
    finally:
        for task in tasks.values():
            task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def run_destination(
    engine: Engine,
    settings: IntegrationSettings,
    transport: Transport[ItemT, AnswerT],
    target: Target,
    stop: asyncio.Event,
) -> None:
    """Send one destination's queue until `stop`; never raises for an item's failure."""
    circuit = Circuit(settings.outbound_circuit_failures, settings.outbound_circuit_cool_down_seconds, target.name)
    link = transport.connect(target)
    try:
        while not stop.is_set():
            if circuit.allows(time.monotonic()):
                await _send_due(engine, settings, transport.queue, link, target, circuit, stop)
            await process.sleep(stop, settings.outbound_poll_seconds)
    finally:
        await link.close()


async def _send_due(
    engine: Engine,
    settings: IntegrationSettings,
    queue: Queue[ItemT, AnswerT],
    link: Link[ItemT, AnswerT],
    target: Target,
    circuit: Circuit,
    stop: asyncio.Event,
) -> None:
    """One round: the destination's due items in queue order, until one fails where later ones must wait."""
    try:
        due = await asyncio.to_thread(queue.due, engine, target.id, 1 if circuit.half_open else queue.batch)
    except StorageUnavailable as exc:
        log.warning("sending to %s paused: %r", target.name, exc)
        return
    for item in due:
        if stop.is_set():
            return
        answer = await link.send(item)
        last = not answer.retriable or item.attempts + 1 >= settings.outbound_max_attempts
        first, maximum = settings.retry_first_delay_seconds, settings.retry_max_delay_seconds
        retry_in = None if answer.sent or last else backoff(item.attempts + 1, first=first, maximum=maximum)
        try:
            status = await asyncio.to_thread(_record, queue, engine, target, item, answer, retry_in)
        except StorageUnavailable as exc:
            log.warning("%s %d to %s not recorded, will retry: %r", queue.noun, item.id, target.name, exc)
            return
        if status != "sent":
            what = f"{queue.noun} {item.id} to {target.name}"
            log.warning("%s failed (attempt %d, %s): %s", what, item.attempts + 1, status, answer.error)
        if answer.reached is False:
            circuit.failed(time.monotonic())
            return  # the peer is not there: the rest of the round would fail the same way
        if answer.reached:
            circuit.succeeded()
        if not answer.sent and queue.in_order:
            return  # later items wait for this one's retry


def _record(
    queue: Queue[ItemT, AnswerT],
    engine: Engine,
    target: Target,
    item: ItemT,
    answer: AnswerT,
    retry_in: timedelta | None,
) -> str:
    """Record the attempt, then count it. In the same thread: a task stopped meanwhile (its row
    changed, the process stops) still counts what it recorded."""
    status = queue.record(engine, target, item, answer, retry_in)
    queue.outcomes.labels(target.name, "retry" if status == "pending" else status).inc()
    return status
