"""The listener's processes: one or several SCP workers sharing the port, and the quiet-period sweep.

With one worker everything runs in one process. With several, the parent starts the workers
(spawned, each with its own engine, object store client and threads), restarts any that dies,
serves the merged metrics, and is the only process that sweeps for quiet studies.
"""

import logging
import multiprocessing
import signal
import threading
from functools import partial
from multiprocessing.context import SpawnProcess
from queue import Empty, Queue
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess

from dicom_listener import stability
from dicom_listener.admission import AssociationCounts
from dicom_listener.config import DicomSettings
from dicom_listener.ingest import Receiver
from dicom_listener.peers import PeerDirectory
from dicom_listener.server import Server
from integration import health
from integration.instances import indexer
from integration.logs import setup_logging
from storage.config import get_settings as get_storage_settings
from storage.db import make_engine
from storage.group_commit import GroupCommit
from storage.objects import make_object_store

log = logging.getLogger(__name__)

WORKER_START_SECONDS = 60.0


def _setup(settings: DicomSettings, stop: threading.Event) -> None:
    setup_logging()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def _receiver(settings: DicomSettings, counts: AssociationCounts) -> Receiver:
    storage = get_storage_settings()
    # C-STORE commits leave SQLite checkpoints to the quiet-period sweep (stability.run).
    engine = make_engine(storage.resolved_database_url(), checkpoints=False)
    return Receiver(
        objects=make_object_store(storage),
        engine=engine,
        settings=settings,
        peers=PeerDirectory(engine, settings),
        counts=counts,
        indexer=GroupCommit(engine, partial(indexer.write, who=f"ae:{settings.dicom_ae_title}")),
    )


def _stop(server: Server, receiver: Receiver) -> None:
    server.shutdown()
    receiver.engine.dispose()


def worker(settings: DicomSettings, counts: AssociationCounts, index: int, ready: "Queue[int]") -> None:
    """One SCP process of several: serve on the shared port until SIGTERM."""
    stop = threading.Event()
    _setup(settings, stop)
    counts.worker = index
    receiver = _receiver(settings, counts)
    server = Server(settings, receiver).start()
    ready.put(index)
    try:
        stop.wait()
    finally:
        _stop(server, receiver)


def _sweep(settings: DicomSettings, engine: Any, peers: PeerDirectory, stop: threading.Event) -> None:
    stability.run(
        engine,
        quiet_period=settings.quiet_period_seconds,
        ae_title=settings.dicom_ae_title,
        stop=stop,
        per_ae=peers.quiet_periods,
        step_hold=settings.dicom_step_hold_seconds,
    )


def run(settings: DicomSettings) -> None:
    """Serve until SIGTERM or SIGINT, then stop cleanly."""
    stop = threading.Event()
    _setup(settings, stop)
    counts = AssociationCounts(settings.dicom_workers)
    if settings.dicom_workers == 1:
        receiver = _receiver(settings, counts)
        server = Server(settings, receiver).start()
        if settings.dicom_metrics_port:
            health.serve(settings.dicom_metrics_port)
        log.info("listening as %s on %s:%d", settings.dicom_ae_title, settings.dicom_host, settings.dicom_port)
        try:
            _sweep(settings, receiver.engine, receiver.peers, stop)
        finally:
            _stop(server, receiver)
            log.info("stopped")
        return
    _run_workers(settings, counts, stop)


def _run_workers(settings: DicomSettings, counts: AssociationCounts, stop: threading.Event) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready: Queue[int] = ctx.Queue()  # type: ignore[assignment]

    def spawn(index: int) -> SpawnProcess:
        process = ctx.Process(target=worker, args=(settings, counts, index, ready), name=f"dicom-worker-{index}")
        process.start()
        return process

    processes = [spawn(i) for i in range(settings.dicom_workers)]
    storage = get_storage_settings()
    engine = make_engine(storage.resolved_database_url())
    peers = PeerDirectory(engine, settings)
    sweeper = threading.Thread(target=_sweep, args=(settings, engine, peers, stop), name="quiet-period-sweep")
    try:
        for _ in processes:
            ready.get(timeout=WORKER_START_SECONDS)
        if settings.dicom_metrics_port:
            # The workers write their metrics to PROMETHEUS_MULTIPROC_DIR; this serves their sum.
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            health.serve(settings.dicom_metrics_port, registry=registry)
        log.info(
            "listening as %s on %s:%d with %d workers",
            settings.dicom_ae_title,
            settings.dicom_host,
            settings.dicom_port,
            settings.dicom_workers,
        )
        sweeper.start()
        while not stop.wait(0.5):
            for i, process in enumerate(processes):
                if process.exitcode is not None:
                    log.error("worker %d exited with %s; restarting it", i, process.exitcode)
                    prometheus_multiprocess.mark_process_dead(process.pid)  # type: ignore[no-untyped-call]
                    counts.forget_worker(i)
                    processes[i] = spawn(i)
                    _drain(ready)
    except Empty:
        log.error("a worker did not start within %.0fs", WORKER_START_SECONDS)
        raise
    finally:
        stop.set()
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(20)
            if process.exitcode is None:
                process.kill()
        if sweeper.is_alive():
            sweeper.join()
        engine.dispose()
        log.info("stopped")


def _drain(ready: "Queue[int]") -> None:
    try:
        while True:
            ready.get_nowait()
    except Empty:
        return
