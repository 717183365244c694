"""`python -m inference --model NAME`: one worker process serving one model."""

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from prometheus_client import start_http_server

from inference import registry
from inference.config import get_settings
from inference.errors import UnknownModel
from inference.manifest import Manifest
from inference.worker import LoadedModel, Worker
from integration import kafka, topics
from integration.config import get_settings as get_integration_settings
from storage.config import exit_if_unsafe
from storage.config import get_settings as get_storage_settings
from storage.db import make_engine
from storage.objects import make_object_store

log = logging.getLogger("inference")


async def serve(manifest: Manifest, artifact: Path) -> None:
    """Run the worker for one model package until SIGTERM or SIGINT."""
    settings = get_settings()
    integration = get_integration_settings()
    storage = get_storage_settings()
    model = LoadedModel(manifest, artifact, registry.adapter_for(manifest.framework))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    # Load now, so the first study does not wait for it (and a broken artifact fails at start).
    await asyncio.to_thread(model.load)
    if stop.is_set():
        return
    if manifest.clinical_use is False:
        log.warning("%s %s is not validated for clinical use; its results say so", manifest.name, manifest.version)

    store = make_object_store(storage)
    engine = make_engine(storage.resolved_database_url())
    request_topic = topics.inference_request(manifest.name)
    await kafka.ensure_topics(integration, [request_topic, topics.INFERENCE_RESULT, topics.DLQ])
    producer = kafka.make_producer(integration)
    consumer = kafka.make_consumer(
        integration, group_id=topics.consumer_group_for_model(manifest.name), names=[request_topic]
    )
    await producer.start()
    try:
        await consumer.start()
        try:
            if settings.inference_metrics_port:
                # Ready: the launcher polls this port to know the worker is up.
                start_http_server(settings.inference_metrics_port)
            log.info("serving %s %s on %s", manifest.name, manifest.version, request_topic)
            worker = Worker(
                model=model,
                store=store,
                engine=engine,
                producer=producer,
                settings=settings,
                integration=integration,
            )
            await worker.run(consumer, stop=stop)
        finally:
            await consumer.stop()
    finally:
        await producer.stop()  # flushes what is still buffered
        engine.dispose()
    log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the worker."""
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__)
    parser.add_argument("--model", default=get_settings().inference_model, help="registered model package name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    exit_if_unsafe(get_storage_settings())
    try:
        manifest, artifact = registry.lookup(args.model)
    except UnknownModel as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    asyncio.run(serve(manifest, artifact))


if __name__ == "__main__":
    main()
