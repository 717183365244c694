"""`python -m fhir_api.subscriptions`: deliver subscription notifications until SIGTERM or SIGINT."""

import asyncio
import logging
from functools import partial

from fhir_api.config import ApiSettings, get_settings
from fhir_api.subscriptions.delivery import run
from integration import process
from integration.config import get_settings as get_integration_settings
from storage.config import get_settings as get_storage_settings

log = logging.getLogger("fhir_api.subscriptions")


async def serve(stop: asyncio.Event, *, settings: ApiSettings, own: process.Own) -> None:
    """Deliver until `stop`, with the health port open (its /readyz checks the object store too,
    as every process's does, though delivery itself does not use it)."""
    with process.health_port(settings.subscription_metrics_port, own):
        log.info("subscription delivery started")
        await run(own.engine, settings, stop=stop)


def main() -> None:
    """Run the delivery loop."""
    settings = get_settings()
    with process.started(get_storage_settings(), get_integration_settings(), kind="subscriptions") as own:
        process.run(partial(serve, settings=settings, own=own))


if __name__ == "__main__":
    main()
