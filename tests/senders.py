"""The outbound engine in tests: settings that retry within a test's time, and the engine running beside a scenario."""

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine

from integration.config import IntegrationSettings
from integration.outbound.engine import Transport, run

FAST = IntegrationSettings(
    retry_first_delay_seconds=0.05,
    retry_max_delay_seconds=0.2,
    outbound_poll_seconds=0.05,
    outbound_ack_timeout_seconds=5,
    forward_timeout_seconds=5,
    outbound_max_attempts=3,
)


def fast(**overrides: float) -> IntegrationSettings:
    """FAST with some settings changed."""
    return IntegrationSettings.model_validate({**FAST.model_dump(), **overrides})


def sending(
    engine: Engine,
    settings: IntegrationSettings,
    transports: Mapping[str, Transport[Any, Any]],
    scenario: Callable[[], None],
) -> None:
    """Run the outbound engine for the destinations of these kinds until `scenario` (called in a thread) returns."""

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run(engine, settings, transports, stop))
        try:
            await asyncio.to_thread(scenario)
        finally:
            stop.set()
            await task

    asyncio.run(main())
