"""The audit trail's export to a syslog collector as a loop of `python -m integration` (audit.syslog)."""

import asyncio
import logging

from sqlalchemy import Engine

from audit.config import AuditSettings
from audit.syslog import Collector, export_pending
from integration import process
from storage.errors import StorageError

log = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 300.0


async def run(engine: Engine, collector: Collector, settings: AuditSettings, stop: asyncio.Event) -> None:
    """Export until `stop`, backing off while the collector or the database is unavailable."""
    delay = FIRST_DELAY_SECONDS
    while not stop.is_set():
        try:
            sent = await asyncio.to_thread(export_pending, engine, collector, settings)
            delay = FIRST_DELAY_SECONDS
        except StorageError as exc:  # ExportUnavailable or the database itself
            log.warning("audit export to %s paused %.0fs: %s", collector.name, delay, exc)
            sent = 0
            delay = min(delay * 2, MAX_DELAY_SECONDS)
        if sent < settings.audit_export_batch:
            await process.sleep(stop, delay if sent == 0 else 0.1)
