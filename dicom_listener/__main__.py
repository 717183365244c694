"""`python -m dicom_listener`: the C-ECHO/C-STORE SCP and the quiet-period sweep."""

import logging
import signal
import threading

from prometheus_client import start_http_server

from dicom_listener import scp, stability
from dicom_listener.config import get_settings
from dicom_listener.handlers import StudiesSeen
from integration.config import get_settings as get_integration_settings
from storage.config import exit_if_unsafe
from storage.config import get_settings as get_storage_settings
from storage.db import make_engine
from storage.objects import make_object_store

log = logging.getLogger("dicom_listener")


def main() -> None:
    """Build the listener's objects, serve until SIGTERM or SIGINT, then stop cleanly."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    storage = get_storage_settings()
    exit_if_unsafe(storage)
    engine = make_engine(storage.resolved_database_url())
    store = make_object_store(storage)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = scp.start(scp.make_ae(settings), settings, store=store, engine=engine, seen=StudiesSeen())
    if settings.dicom_metrics_port:
        start_http_server(settings.dicom_metrics_port, addr=get_integration_settings().metrics_host)
    log.info("listening as %s on %s:%d", settings.dicom_ae_title, settings.dicom_host, settings.dicom_port)
    try:
        stability.run(engine, quiet_period=settings.quiet_period_seconds, ae_title=settings.dicom_ae_title, stop=stop)
    finally:
        server.shutdown()
        engine.dispose()
        log.info("stopped")


if __name__ == "__main__":
    main()
