"""`python -m hl7_listener`: the HL7 v2 listener over MLLP."""

import asyncio
from functools import partial
from typing import Any

from hl7_listener.config import MllpSettings, get_settings
from hl7_listener.server import serve
from integration import process
from integration.config import get_settings as get_integration_settings
from storage.config import get_settings as get_storage_settings


async def listen(stop: asyncio.Event, *, settings: MllpSettings, own: process.Own) -> None:
    """Serve MLLP until `stop`, with the health port open once the listener is bound."""
    bound: asyncio.Future[asyncio.Server] = asyncio.get_running_loop().create_future()
    serving = serve(settings, engine=own.engine, objects=own.objects, stop=stop, ready=bound.set_result)
    task = asyncio.create_task(serving)
    either: list[asyncio.Future[Any]] = [task, bound]
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not bound.done():
        await task  # it ended before binding: raises why
        return
    # Started once the listener is bound: the launcher takes an answering /metrics as ready, and
    # /healthz fails when the listener no longer accepts connections.
    with process.health_port(settings.mllp_metrics_port, own, alive=bound.result().is_serving):
        await task


def main() -> None:
    """Entry point."""
    settings = get_settings()
    with process.started(get_storage_settings(), get_integration_settings(), kind="hl7", name="hl7-listener") as own:
        process.run(partial(listen, settings=settings, own=own))


if __name__ == "__main__":
    main()
