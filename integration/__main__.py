"""`python -m integration`: the outbox relay, the router and the audit trail's syslog export."""

import asyncio
import logging
import signal

from aiokafka import ConsumerRecord
from prometheus_client import start_http_server

from audit import syslog
from audit.config import get_settings as get_audit_settings
from integration import kafka, relay, topics
from integration.config import get_settings
from integration.messages import StudyReady
from integration.router import route
from integration.rules import DEFAULT_RULES
from storage.config import exit_if_unsafe
from storage.config import get_settings as get_storage_settings
from storage.db import make_engine

log = logging.getLogger("integration")

ROUTER_GROUP = "doctorai-router"


async def serve() -> None:
    """Run the relay and the router until SIGTERM or SIGINT."""
    settings = get_settings()
    engine = make_engine(get_storage_settings().resolved_database_url())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await kafka.ensure_topics(settings, [topics.STUDY_READY, topics.INFERENCE_RESULT, topics.DLQ])
    producer = kafka.make_producer(settings)
    consumer = kafka.make_consumer(settings, group_id=ROUTER_GROUP, names=[topics.STUDY_READY])
    await producer.start()
    await consumer.start()

    async def on_study_ready(record: ConsumerRecord[bytes, bytes]) -> None:
        study = StudyReady.model_validate_json(record.value or b"")
        await asyncio.to_thread(route, engine, DEFAULT_RULES, study)

    try:
        if settings.integration_metrics_port:
            start_http_server(settings.integration_metrics_port, addr=settings.metrics_host)
        tasks = [
            relay.run(engine, producer, settings, stop),
            kafka.consume(consumer, producer, settings, handler=on_study_ready, stop=stop),
        ]
        audit_settings = get_audit_settings()
        collector = syslog.make_collector(audit_settings)
        if collector is not None:
            tasks.append(syslog.run(engine, collector, audit_settings, stop))
        log.info("relay, router%s running", " and audit export" if collector else "")
        await asyncio.gather(*tasks)
    finally:
        await consumer.stop()
        await producer.stop()
        engine.dispose()
        log.info("stopped")


def main() -> None:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    exit_if_unsafe(get_storage_settings())
    asyncio.run(serve())


if __name__ == "__main__":
    main()
