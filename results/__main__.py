"""`python -m results`: the results consumer (study.ready and inference.result into FHIR, and their exports)."""

import asyncio
import logging
from functools import partial

from integration import kafka, process, topics
from integration.config import get_settings as get_integration_settings
from results.config import ResultsSettings, get_settings
from results.consumer import GROUP_ID, TOPICS, Exports, handle
from storage.config import get_settings as get_storage_settings

log = logging.getLogger("results")


async def serve(stop: asyncio.Event, *, settings: ResultsSettings, own: process.Own, exports: Exports) -> None:
    """Consume study.ready and inference.result into the FHIR store until `stop` is set."""
    integration = own.integration
    await kafka.ensure_topics(integration, [*TOPICS, topics.DLQ])
    producer = kafka.make_producer(integration)  # for the dead-letter topic
    consumer = kafka.make_consumer(integration, group_id=GROUP_ID, names=TOPICS)
    async with kafka.running(producer, consumer):
        # Started only now: the launcher takes an answering /metrics as "consumer ready".
        with process.health_port(settings.results_metrics_port, own):
            log.info("FHIR-store consumer started (group %s)", GROUP_ID)
            handler = partial(handle, engine=own.engine, settings=integration, exports=exports)
            await kafka.consume(consumer, producer, integration, handler=handler, stop=stop)


def main() -> None:
    """Run the consumer until SIGTERM or SIGINT."""
    settings = get_settings()
    with process.started(get_storage_settings(), get_integration_settings(), kind="results") as own:
        # ORU^R01 from our HL7 identity; pushed reports link to the FHIR API as the EHRs see it
        # (DOCTORAI_PUBLIC_BASE_URL, the setting the API reads too); SRs read the inputs' headers
        # from the object store and are written there (results/sr_queue.py).
        base_url = settings.public_base_url.rstrip("/") + "/fhir"
        exports = Exports(identity=own.integration, fhir_base_url=base_url, objects=own.objects)
        process.run(partial(serve, settings=settings, own=own, exports=exports))


if __name__ == "__main__":
    main()
