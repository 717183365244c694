"""`python -m fhir_api.subscriptions`: deliver subscription notifications until SIGTERM or SIGINT."""

import asyncio
import logging
import signal


from fhir_api.config import get_settings
from fhir_api.subscriptions.delivery import run
from integration import health, heartbeats
from integration.logs import setup_logging
from storage.config import exit_if_unsafe
from storage.config import get_settings as get_storage_settings
from storage.db import make_engine

log = logging.getLogger(__name__)


async def _main() -> None:
    settings = get_settings()
    engine = make_engine(get_storage_settings().resolved_database_url())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = None
    try:
        if settings.subscription_metrics_port:
            server = health.serve(settings.subscription_metrics_port)
        log.info("subscription delivery started")
        await run(engine, settings, stop=stop)
    finally:
        health.stop(server)
        engine.dispose()
        log.info("subscription delivery stopped")


def main() -> None:
    """Run the delivery loop."""
    setup_logging()
    exit_if_unsafe(get_storage_settings())
    heartbeats.start("subscriptions")
    asyncio.run(_main())


if __name__ == "__main__":
    main()
