"""`python -m inference --model NAME`: one worker process serving one model (every registered version)."""

import argparse
import asyncio
import logging
from functools import partial
from pathlib import Path

from inference import metrics, package_cache
from inference.adapters import adapter_module
from inference.config import InferenceSettings, get_settings
from inference.errors import InferenceError
from inference.runners import LoadedModel, ModelCache
from inference.worker import Worker
from integration import kafka, process, topics
from integration.config import get_settings as get_integration_settings
from integration.errors import LegacyFormatRefused, ModelNotFound
from integration.models import registry
from storage.config import get_settings as get_storage_settings
from storage.db import session_scope

log = logging.getLogger("inference")


async def serve(
    stop: asyncio.Event, *, name: str, settings: InferenceSettings, own: process.Own, models: ModelCache
) -> None:
    """Run the worker for one model until `stop` is set."""
    integration, engine = own.integration, own.engine

    def active_version() -> str:
        with session_scope(engine) as session:
            return registry.active_version(session, name=name)

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
        async with kafka.running(producer, consumer):
            # Ready: the launcher polls this port to know the worker is up.
            with process.health_port(settings.inference_metrics_port, own):
                log.info("serving %s (active version %s) on %s", name, version, request_topic)
                worker = Worker(
                    name=name,
                    models=models,
                    objects=own.objects,
                    engine=engine,
                    producer=producer,
                    settings=settings,
                    integration=integration,
                )
                await worker.run(consumer, stop=stop)
    finally:
        # No runner outlives its worker; and a batch still running when the stop was cancelled
        # ends at once, its runner killed, instead of holding the thread it runs in.
        models.close()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run the worker."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m inference", description=__doc__)
    parser.add_argument("--model", default=settings.inference_model, help="registered model package name")
    args = parser.parse_args(argv)
    storage = get_storage_settings()
    cache_dir = Path(settings.inference_cache_dir) if settings.inference_cache_dir else storage.var_dir / "model-cache"
    with process.started(storage, get_integration_settings(), kind="inference", name=f"inference-{args.model}") as own:

        def loader(model: str, version: str) -> LoadedModel:
            with session_scope(own.engine) as session:
                manifest = registry.runnable_manifest(session, name=model, version=version)
            package = package_cache.fetch(own.objects, cache_dir, model, version)
            return LoadedModel(
                manifest,
                package / manifest.artifact,
                adapter_module(manifest.framework),
                load_timeout=settings.inference_load_timeout_seconds,
            )

        models = ModelCache(loader, budget_bytes=settings.inference_memory_budget_mb * 1e6)
        try:
            process.run(partial(serve, name=args.model, settings=settings, own=own, models=models))
        # No active version, a package that does not load, a legacy format no admin allowed.
        except (InferenceError, ModelNotFound, LegacyFormatRefused) as exc:
            parser.exit(2, f"{parser.prog}: {exc}\n")


if __name__ == "__main__":
    main()
