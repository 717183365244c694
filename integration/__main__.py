"""`python -m integration`: the outbox relay, the router (study.ready, fhir.received, hl7.received),
the outbound engine (MLLP, FHIR, webhook and DICOM destinations), the dead-letter store (dlq) and the audit trail's syslog export."""

import asyncio
import logging
import signal
from typing import Any

from aiokafka import ConsumerRecord

from audit import syslog
from audit.config import get_settings as get_audit_settings
from integration import dead_letters, health, heartbeats, kafka, relay, topics
from integration.config import get_settings
from integration.logs import setup_logging
from integration.messages import FhirReceived, Hl7Received, StudyReady
from integration.outbound import dicom, http, mllp
from integration.outbound.circuit import open_circuits
from integration.outbound.engine import Transport
from integration.outbound.engine import run as send_outbound
from integration.router import route, route_hl7, route_report
from storage.config import exit_if_unsafe
from storage.config import get_settings as get_storage_settings
from storage.db import make_engine
from storage.objects import make_object_store

log = logging.getLogger("integration")

ROUTER_GROUP = "doctorai-router"


async def serve() -> None:
    """Run the relay and the router until SIGTERM or SIGINT."""
    settings = get_settings()
    storage_settings = get_storage_settings()
    engine = make_engine(storage_settings.resolved_database_url())
    objects = make_object_store(storage_settings)  # routing rules on header tags read the first instance
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Studies to route, and reports (written over FHIR, or ORU^R01 over HL7) to triage.
    routed = [topics.STUDY_READY, topics.FHIR_RECEIVED, topics.HL7_RECEIVED]
    await kafka.ensure_topics(settings, [*routed, topics.INFERENCE_RESULT, topics.DLQ])
    producer = kafka.make_producer(settings)
    consumer = kafka.make_consumer(settings, group_id=ROUTER_GROUP, names=routed)
    # A group of its own: dead letters are stored even while routing is failing or behind.
    letters = kafka.make_consumer(settings, group_id=dead_letters.GROUP, names=[topics.DLQ])
    await producer.start()
    await consumer.start()
    await letters.start()

    async def on_event(record: ConsumerRecord[bytes, bytes]) -> None:
        topic = kafka.unqualified(settings, record.topic)
        if topic == topics.FHIR_RECEIVED:
            resource = FhirReceived.model_validate_json(record.value or b"")
            await asyncio.to_thread(route_report, engine, resource)
            return
        if topic == topics.HL7_RECEIVED:
            message = Hl7Received.model_validate_json(record.value or b"")
            await asyncio.to_thread(route_hl7, engine, message)
            return
        study = StudyReady.model_validate_json(record.value or b"")
        await asyncio.to_thread(route, engine, objects, study)

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
        # Every destination kind's queue: ORU^R01 over MLLP (issue 4), reports to FHIR servers and
        # webhooks, studies and SRs to DICOM destinations with instances from object storage (issue 7).
        pushes = http.transport(settings)
        transports: dict[str, Transport[Any, Any]] = {
            "mllp": mllp.transport(settings),
            "fhir": pushes,
            "webhook": pushes,
            "dicom": dicom.transport(settings, objects),
        }
        tasks.append(send_outbound(engine, settings, transports, stop))
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
    heartbeats.start("integration", detail=open_circuits)
    asyncio.run(serve())


if __name__ == "__main__":
    main()
