"""Kafka plumbing shared by every consumer: topics, publishing, and the consume loop.

The loop commits offsets only after the handler's work (and its audit record) committed;
retriable errors back off and retry, permanent ones go to the dead-letter topic.
"""

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, TopicAlreadyExistsError
from pydantic import BaseModel

from integration import metrics, process, topics
from integration.backoff import backoff
from integration.config import IntegrationSettings
from integration.logs import correlated
from integration.messages import DeadLetter
from storage.instances import correlation_id_for_study

log = logging.getLogger(__name__)

Handler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[None]]
# How long stopping one client may take. Against a broker that takes connections but does not answer,
# a consumer's LeaveGroup and a producer's flush would each wait out the request timeout (40 s).
CLOSE_SECONDS = 3.0

# Every event's JSON carries its correlation id near the start; a search is cheaper than a parse.
_CORRELATION = re.compile(rb'"correlation_id":"([0-9A-Za-z._:-]{1,100})"')


async def ensure_topics(settings: IntegrationSettings, names: Iterable[str]) -> None:
    """Create the topics (unqualified names) that do not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {topics.qualified(settings.topic_prefix, n) for n in names} - existing
        for name in sorted(wanted):
            try:
                await admin.create_topics([NewTopic(name, settings.topic_partitions, 1)])
            except TopicAlreadyExistsError:
                pass  # another process created it in between
    finally:
        await admin.close()


def make_producer(settings: IntegrationSettings) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (acks=all); start it in the caller."""
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)


def make_consumer(settings: IntegrationSettings, *, group_id: str, names: Iterable[str]) -> AIOKafkaConsumer:
    """A consumer-group member on these topics that never commits on its own."""
    return AIOKafkaConsumer(
        *[topics.qualified(settings.topic_prefix, n) for n in names],
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # A record whose handler keeps failing retriably is retried in place; allow that for
        # ten minutes before the group gives its partitions to another member.
        max_poll_interval_ms=600_000,
    )


async def publish(
    producer: AIOKafkaProducer, settings: IntegrationSettings, *, topic: str, key: str, message: BaseModel
) -> None:
    """Send one event and wait for the broker's acknowledgement."""
    await producer.send_and_wait(
        topics.qualified(settings.topic_prefix, topic), message.model_dump_json().encode(), key=key.encode()
    )


@asynccontextmanager
async def running(*clients: AIOKafkaConsumer | AIOKafkaProducer) -> AsyncIterator[None]:
    """Start the clients in order; when the block ends, stop them together, each within CLOSE_SECONDS.

    A client not stopped in time is left: its group's session expires and the partitions' other
    members consume what it did not commit (handlers are idempotent, DESIGN.md 5.3); what a
    producer still held was either not acknowledged to anyone or is still in the outbox.
    """
    started: list[AIOKafkaConsumer | AIOKafkaProducer] = []
    try:
        for client in clients:
            await client.start()
            started.append(client)
        yield
    finally:
        await asyncio.gather(*(_stop(client) for client in started))


async def _stop(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(client.stop(), CLOSE_SECONDS)
    except TimeoutError:
        log.warning("the Kafka %s did not stop within %.0fs; leaving it", type(client).__name__, CLOSE_SECONDS)


def unqualified(settings: IntegrationSettings, name: str) -> str:
    """A broker topic name without the deployment prefix."""
    return name.removeprefix(settings.topic_prefix)


async def consume(
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    settings: IntegrationSettings,
    *,
    handler: Handler,
    stop: asyncio.Event,
) -> None:
    """Feed every record to `handler`, committing each batch after it was handled, until `stop`."""
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=500, max_records=64)
        for records in batches.values():
            for record in records:
                await handle_record(record, producer, settings, handler=handler, stop=stop)
        if batches:
            await commit(consumer)
        await measure_lag(consumer, settings)


async def measure_lag(consumer: AIOKafkaConsumer, settings: IntegrationSettings) -> None:
    """Publish how far each assigned partition's position is behind the last fetched log end."""
    group = consumer._group_id or ""  # aiokafka exposes the group id only on this attribute
    per_topic: dict[str, int] = {}
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        if end is None:
            continue  # nothing fetched from this partition yet
        position = await consumer.position(tp)
        per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, end - position)
    for topic, lag in per_topic.items():
        metrics.CONSUMER_LAG.labels(group, unqualified(settings, topic)).set(lag)


async def commit(consumer: AIOKafkaConsumer) -> None:
    """Commit what was handled; after a rebalance the records go to the partition's new owner instead."""
    try:
        await consumer.commit()
    except CommitFailedError as exc:
        # Handlers are idempotent (DESIGN.md 5.3), so redelivery elsewhere is safe.
        log.warning("commit refused after a rebalance, records will be redelivered: %r", exc)


async def handle_record(
    record: ConsumerRecord[bytes, bytes],
    producer: AIOKafkaProducer,
    settings: IntegrationSettings,
    *,
    handler: Handler,
    stop: asyncio.Event,
) -> None:
    """Handle one record under its correlation id: retry retriable failures, dead-letter the others."""
    found = _CORRELATION.search(record.value or b"")
    with correlated(found.group(1).decode() if found else "-"):
        await _handle_record(record, producer, settings, handler=handler, stop=stop)


async def _handle_record(
    record: ConsumerRecord[bytes, bytes],
    producer: AIOKafkaProducer,
    settings: IntegrationSettings,
    *,
    handler: Handler,
    stop: asyncio.Event,
) -> None:
    failures = 0
    while True:
        try:
            await handler(record)
            return
        except Exception as exc:  # every failure is either retried or dead-lettered, never dropped
            if not getattr(exc, "retriable", False):
                await _dead_letter(record, producer, settings, error=f"{type(exc).__name__}: {exc}")
                return
            failures += 1
            wait = backoff(failures, first=settings.retry_first_delay_seconds, maximum=settings.retry_max_delay_seconds)
            delay = wait.total_seconds()
            log.warning("retriable failure on %s@%s, retrying in %.1fs: %r", record.topic, record.offset, delay, exc)
        if await process.sleep(stop, delay):
            # Stopping mid-retry: raise so this batch is not committed and is redelivered.
            raise asyncio.CancelledError("stopped while retrying")


def _correlation_id(value: str, key: str) -> str:
    """The failed message's own correlation id when it has one, else the study's (keys are study UIDs)."""
    try:
        found = json.loads(value).get("correlation_id")
    except (ValueError, AttributeError):
        found = None
    if isinstance(found, str) and found:
        return found
    return correlation_id_for_study(key) if key else "unknown"


async def _dead_letter(
    record: ConsumerRecord[bytes, bytes], producer: AIOKafkaProducer, settings: IntegrationSettings, *, error: str
) -> None:
    key = (record.key or b"").decode(errors="replace")
    value = (record.value or b"").decode(errors="replace")
    log.error("dead-lettering %s@%d:%d: %s", record.topic, record.partition, record.offset, error)
    metrics.DEAD_LETTERS.labels(unqualified(settings, record.topic)).inc()
    letter = DeadLetter(
        correlation_id=_correlation_id(value, key),
        source_topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        value=value,
        error=error,
    )
    await publish(producer, settings, topic=topics.DLQ, key=key, message=letter)
