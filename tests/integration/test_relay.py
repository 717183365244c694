"""The outbox relay against the real broker: events arrive in order, once marked sent they stay sent."""

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from integration import kafka
from integration.config import IntegrationSettings
from integration.messages import Coding
from integration.relay import relay_once
from doctorai.stack import StackConfig
from storage.db import make_engine, migrate, session_scope
from storage.outbox import add_event, backlog


@pytest.mark.stack
def test_relay_publishes_outbox_in_order(services: StackConfig, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    settings = IntegrationSettings(kafka_bootstrap=f"127.0.0.1:{services.ports.kafka}", topic_prefix=f"r{uuid.uuid4().hex[:6]}.")
    with session_scope(engine) as s:
        for i in range(5):
            add_event(s, topic="study.ready", key="same-study", message=Coding(system="s", code=str(i), display="d"))

    async def scenario() -> list[str]:
        await kafka.ensure_topics(settings, ["study.ready"])
        producer = kafka.make_producer(settings)
        await producer.start()
        try:
            assert await relay_once(engine, producer, settings) == 5
            assert await relay_once(engine, producer, settings) == 0  # nothing is published twice
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            f"{settings.topic_prefix}study.ready",
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=f"g{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        codes: list[str] = []
        try:
            async with asyncio.timeout(60):
                while len(codes) < 5:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        codes += [Coding.model_validate_json(r.value or b"").code for r in records]
        finally:
            await consumer.stop()
        return codes

    assert asyncio.run(scenario()) == ["0", "1", "2", "3", "4"]
    with session_scope(engine) as s:
        assert backlog(s) == 0
    engine.dispose()


def test_relay_keeps_events_when_kafka_is_down(tmp_path: Path) -> None:
    """With no broker the send fails and the events stay in the outbox for the next attempt."""
    from aiokafka.errors import KafkaError

    from doctorai.stack import free_ports

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    settings = IntegrationSettings(kafka_bootstrap=f"127.0.0.1:{free_ports().kafka}")
    with session_scope(engine) as s:
        add_event(s, topic="study.ready", key="k", message=Coding(system="s", code="c", display="d"))

    async def scenario() -> None:
        producer = kafka.make_producer(settings)
        with pytest.raises(KafkaError):
            await producer.start()
            await relay_once(engine, producer, settings)
        await producer.stop()

    asyncio.run(scenario())
    with session_scope(engine) as s:
        assert backlog(s) == 1
    engine.dispose()
