"""`python -m integration`: the outbox relay, the router (study.ready, fhir.received, hl7.received),
the outbound engine (MLLP, FHIR, webhook and DICOM destinations), the dead-letter store (dlq) and the audit trail's syslog export."""

import asyncio
import logging
from functools import partial
from typing import Any

from aiokafka import ConsumerRecord

from audit import syslog
from audit.config import AuditSettings
from audit.config import get_settings as get_audit_settings
from integration import audit_export, dead_letters, kafka, process, relay, topics
from integration.config import get_settings
from integration.messages import FhirReceived, Hl7Received, StudyReady
from integration.outbound import dicom, http, mllp
from integration.outbound.circuit import open_circuits
from integration.outbound.engine import Transport
from integration.outbound.engine import run as send_outbound
from integration.router import route, route_hl7, route_report
from storage.config import get_settings as get_storage_settings

log = logging.getLogger("integration")

ROUTER_GROUP = "doctorai-router"
# Studies to route, and reports (written over FHIR, or ORU^R01 over HL7) to triage.
ROUTED = [topics.STUDY_READY, topics.FHIR_RECEIVED, topics.HL7_RECEIVED]


async def serve(
    stop: asyncio.Event, *, own: process.Own, audit: AuditSettings, collector: syslog.Collector | None
) -> None:
    """Run the relay, the router, the senders and the exports until `stop`."""
    settings, engine, objects = own.integration, own.engine, own.objects
    await kafka.ensure_topics(settings, [*ROUTED, topics.INFERENCE_RESULT, topics.DLQ])
    producer = kafka.make_producer(settings)
    consumer = kafka.make_consumer(settings, group_id=ROUTER_GROUP, names=ROUTED)
    # A group of its own: dead letters are stored even while routing is failing or behind.
    letters = kafka.make_consumer(settings, group_id=dead_letters.GROUP, names=[topics.DLQ])
    # Every destination kind's queue: ORU^R01 over MLLP (issue 4), reports to FHIR servers and
    # webhooks, studies and SRs to DICOM destinations with instances from object storage (issue 7).
    pushes = http.transport(settings)
    transports: dict[str, Transport[Any, Any]] = {
        "mllp": mllp.transport(settings),
        "fhir": pushes,
        "webhook": pushes,
        "dicom": dicom.transport(settings, objects),
    }

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
        # Routing rules on header tags read the study's first instance from object storage.
        await asyncio.to_thread(route, engine, objects, study)

    async def on_letter(record: ConsumerRecord[bytes, bytes]) -> None:
        await asyncio.to_thread(dead_letters.store, engine, settings, record)

    async with kafka.running(producer, consumer, letters):
        with process.health_port(settings.integration_metrics_port, own):
            tasks = [
                relay.run(engine, producer, settings, stop),
                kafka.consume(consumer, producer, settings, handler=on_event, stop=stop),
                kafka.consume(letters, producer, settings, handler=on_letter, stop=stop),
                send_outbound(engine, settings, transports, stop),
            ]
            if collector is not None:
                tasks.append(audit_export.run(engine, collector, audit, stop))
            log.info("relay, router%s running", " and audit export" if collector else "")
            await asyncio.gather(*tasks)


def main() -> None:
    """Entry point."""
    audit = get_audit_settings()
    with process.started(get_storage_settings(), get_settings(), kind="integration", detail=open_circuits) as own:
        process.run(partial(serve, own=own, audit=audit, collector=syslog.make_collector(audit)))


if __name__ == "__main__":
    main()
