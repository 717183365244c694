"""`python -m integration`: the outbox relay, the router (study.ready and fhir.received), the outbound
sender, the dead-letter store (dlq) and the audit trail's syslog export."""

import asyncio
import logging
import signal

from aiokafka import ConsumerRecord

from audit import syslog
from audit.config import get_settings as get_audit_settings
from integration import dead_letters, health, kafka, outbound, relay, topics
from integration.config import get_settings
from integration.logs import setup_logging
from integration.messages import FhirReceived, StudyReady
from integration.router import route, route_report
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
    routed = [topics.STUDY_READY, topics.FHIR_RECEIVED]
    await kafka.ensure_topics(settings, [*routed, topics.INFERENCE_RESULT, topics.HL7_RECEIVED, topics.DLQ])
    producer = kafka.make_producer(settings)
    consumer = kafka.make_consumer(settings, group_id=ROUTER_GROUP, names=routed)
    # A group of its own: dead letters are stored even while routing is failing or behind.
    letters = kafka.make_consumer(settings, group_id=dead_letters.GROUP, names=[topics.DLQ])
    await producer.start()
    await consumer.start()
    await letters.start()

    async def on_event(record: ConsumerRecord[bytes, bytes]) -> None:
        if kafka.unqualified(settings, record.topic) == topics.FHIR_RECEIVED:
            resource = FhirReceived.model_validate_json(record.value or b"")
            await asyncio.to_thread(route_report, engine, DEFAULT_RULES, resource)
            return
        study = StudyReady.model_validate_json(record.value or b"")
        await asyncio.to_thread(route, engine, DEFAULT_RULES, study)

    async def on_letter(record: ConsumerRecord[bytes, bytes]) -> None:
        await asyncio.to_thread(dead_letters.store, engine, settings, record)

    metrics_server = None
    try:
        if settings.integration_metrics_port:
            metrics_server = health.serve(settings.integration_metrics_port)
        tasks = [
            relay.run(engine, producer, settings, stop),
            kafka.consume(consumer, producer, settings, handler=on_event, stop=stop),
            kafka.consume(letters, producer, settings, handler=on_letter, stop=stop),
        ]
        tasks.append(outbound.run(engine, settings, stop))  # issue 4: ORU^R01 to MLLP destinations
        audit_settings = get_audit_settings()
        collector = syslog.make_collector(audit_settings)
        if collector is not None:
            tasks.append(syslog.run(engine, collector, audit_settings, stop))
        log.info("relay, router%s running", " and audit export" if collector else "")
        await asyncio.gather(*tasks)
    finally:
        health.stop(metrics_server)
        await letters.stop()
        await consumer.stop()
        await producer.stop()
        engine.dispose()
        log.info("stopped")


def main() -> None:
    """Entry point."""
    setup_logging()
    exit_if_unsafe(get_storage_settings())
    asyncio.run(serve())


if __name__ == "__main__":
    main()
