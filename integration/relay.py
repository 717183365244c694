"""The outbox relay: publishes committed events to Kafka, then marks them sent (at-least-once)."""

import asyncio
import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from sqlalchemy import Engine

from integration import metrics, process, topics
from integration.config import IntegrationSettings
from storage.db import session_scope
from storage.errors import StorageUnavailable
from storage.outbox import backlog, mark_sent, oldest_unsent, unsent

log = logging.getLogger(__name__)


def _load(engine: Engine, limit: int) -> list[tuple[int, str, str, str]]:
    with session_scope(engine) as session:
        return [(e.id, e.topic, e.key, e.payload) for e in unsent(session, limit=limit)]


def _mark(engine: Engine, ids: list[int]) -> None:
    with session_scope(engine) as session:
        mark_sent(session, ids=ids)


def _measure(engine: Engine) -> None:
    with session_scope(engine) as session:
        waiting = backlog(session)
        oldest = oldest_unsent(session)
    metrics.OUTBOX_BACKLOG.set(waiting)
    metrics.OUTBOX_OLDEST_UNSENT.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0.0)


async def relay_once(engine: Engine, producer: AIOKafkaProducer, settings: IntegrationSettings) -> int:
    """Publish one batch of unsent events in outbox order; return how many were sent."""
    batch = await asyncio.to_thread(_load, engine, settings.relay_batch_size)
    if not batch:
        return 0
    # Send all, then wait for every acknowledgement (acks=all): order per key is kept because
    # one producer sends them in sequence to the key's partition.
    pending = [
        await producer.send(topics.qualified(settings.topic_prefix, topic), payload.encode(), key=key.encode())
        for _, topic, key, payload in batch
    ]
    await asyncio.gather(*pending)
    # A crash here republishes the batch: consumers are idempotent (DESIGN.md 5.3).
    await asyncio.to_thread(_mark, engine, [event_id for event_id, *_ in batch])
    for _, topic, _, _ in batch:
        metrics.EVENTS_PUBLISHED.labels(topic).inc()
    return len(batch)


async def run(engine: Engine, producer: AIOKafkaProducer, settings: IntegrationSettings, stop: asyncio.Event) -> None:
    """Relay until `stop`; Kafka or database outages grow the outbox and are retried with backoff."""
    delay = settings.retry_first_delay_seconds
    while not stop.is_set():
        try:
            await asyncio.to_thread(_measure, engine)
            sent = await relay_once(engine, producer, settings)
            delay = settings.retry_first_delay_seconds
        except (KafkaError, StorageUnavailable) as exc:
            log.warning("relay paused %.1fs: %r", delay, exc)
            sent = 0
            await process.sleep(stop, delay)
            delay = min(delay * 2, settings.retry_max_delay_seconds)
            continue
        if sent < settings.relay_batch_size:
            await process.sleep(stop, settings.relay_poll_seconds)
