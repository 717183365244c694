"""`python -m inference --model NAME`: one worker process serving one model (every registered version)."""

import argparse
import asyncio
import logging
import signal
from pathlib import Path


from inference import metrics, package_cache
from inference.adapters import adapter_module
from inference.config import get_settings
from inference.errors import InferenceError
from inference.runners import LoadedModel, ModelCache
from inference.worker import Worker
from integration import health, heartbeats, kafka, topics
from integration.config import get_settings as get_integration_settings
from integration.errors import ModelNotFound
from integration.logs import setup_logging
from integration.models import registry
from storage.config import exit_if_unsafe
from storage.config import get_settings as get_storage_settings
from storage.db import make_engine, session_scope
from storage.objects import make_object_store

log = logging.getLogger("inference")


async def serve(name: str) -> None:
    """Run the worker for one model until SIGTERM or SIGINT."""
    settings = get_settings()
    integration = get_integration_settings()
    storage = get_storage_settings()
    objects = make_object_store(storage)
    engine = make_engine(storage.resolved_database_url())
    cache_dir = Path(settings.inference_cache_dir) if settings.inference_cache_dir else storage.var_dir / "model-cache"

    def loader(model: str, version: str) -> LoadedModel:
        with session_scope(engine) as session:
            manifest = registry.manifest_of(session, name=model, version=version)
        package = package_cache.fetch(objects, cache_dir, model, version)
        return LoadedModel(
            manifest,
            package / manifest.artifact,
            adapter_module(manifest.framework),
            load_timeout=settings.inference_load_timeout_seconds,
        )

    def active_version() -> str:
        with session_scope(engine) as session:
            return registry.active_version(session, name=name)

    models = ModelCache(loader, budget_bytes=settings.inference_memory_budget_mb * 1e6)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    try:
        # Load the active version now, so the first study does not wait (and a broken artifact fails at start).
        version = await asyncio.to_thread(active_version)
        loaded = await asyncio.to_thread(models.get, name, version)
        metrics.LOADED_MODELS.labels(name).set_function(lambda: len(models.loaded()))
        metrics.MODEL_RESIDENT_BYTES.labels(name).set_function(models.resident_bytes)
        if stop.is_set():
            return
        if loaded.manifest.clinical_use is False:
            log.warning("%s %s is not validated for clinical use; its results say so", name, version)

        request_topic = topics.inference_request(name)
        await kafka.ensure_topics(integration, [request_topic, topics.INFERENCE_RESULT, topics.DLQ])
        producer = kafka.make_producer(integration)  # for the dead-letter topic; results go through the outbox
        consumer = kafka.make_consumer(integration, group_id=topics.consumer_group_for_model(name), names=[request_topic])
        await producer.start()
        try:
            await consumer.start()
            metrics_server = None
            try:
                if settings.inference_metrics_port:
                    # Ready: the launcher polls this port to know the worker is up.
                    metrics_server = health.serve(settings.inference_metrics_port)
                log.info("serving %s (active version %s) on %s", name, version, request_topic)
                worker = Worker(
                    name=name,
                    models=models,
                    objects=objects,
                    engine=engine,
                    producer=producer,
                    settings=settings,
                    integration=integration,
                )
                await worker.run(consumer, stop=stop)
            finally:
                health.stop(metrics_server)
                await consumer.stop()
        finally:
            await producer.stop()  # flushes what is still buffered
    finally:
        models.close()  # no runner outlives its worker
        engine.dispose()
    log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the worker."""
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__)
    parser.add_argument("--model", default=get_settings().inference_model, help="registered model package name")
    args = parser.parse_args(argv)
    setup_logging()
    exit_if_unsafe(get_storage_settings())
    heartbeats.start("inference", f"inference-{args.model}")
    try:
        asyncio.run(serve(args.model))
    except (InferenceError, ModelNotFound) as exc:  # no active version, a package that does not load
        parser.exit(2, f"{parser.prog}: {exc}\n")


if __name__ == "__main__":
    main()
