"""The listener's processes: one or several SCP workers sharing the port, and the quiet-period sweep.

With one worker everything runs in one process. With several, the parent starts the workers
(spawned, each with its own engine, object store client and threads), restarts any that dies,
serves the merged metrics, and is the only process that sweeps for quiet studies. A worker whose
acceptor died exits, so the parent starts another; a lone listener reports it on /healthz.
"""

import logging
import multiprocessing
import threading
from functools import partial
from multiprocessing.context import SpawnProcess
from queue import Empty, Queue

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess
from sqlalchemy import Engine

from dicom_listener import commitment_reports, stability
from dicom_listener.admission import AssociationCounts
from dicom_listener.config import DicomSettings
from dicom_listener.ingest import Receiver
from dicom_listener.peers import PeerDirectory
from dicom_listener.server import Server
from integration import process
from integration.config import IntegrationSettings
from integration.instances import indexer
from storage.config import StorageSettings
from storage.group_commit import GroupCommit
from storage.objects import ObjectStore

log = logging.getLogger(__name__)

WORKER_START_SECONDS = 60.0
# How often a supervising loop looks at what it watches (workers, an acceptor).
WATCH_SECONDS = 0.5


def receiver(settings: DicomSettings, engine: Engine, objects: ObjectStore, counts: AssociationCounts) -> Receiver:
    """The C-ECHO/C-STORE side of one listener process, on the process's engine and object store."""
    return Receiver(
        objects=objects,
        engine=engine,
        settings=settings,
        peers=PeerDirectory(engine, settings),
        counts=counts,
        indexer=GroupCommit(engine, partial(indexer.write, who=f"ae:{settings.dicom_ae_title}")),
    )


def _sweep(settings: DicomSettings, engine: Engine, peers: PeerDirectory, stop: threading.Event) -> None:
    # Storage commitment reports due on new associations (after a restart too), beside the sweep.
    reports = threading.Thread(
        target=commitment_reports.run, args=(engine, settings, peers, stop), name="commitment-reports", daemon=True
    )
    reports.start()
    stability.run(
        engine,
        quiet_period=settings.quiet_period_seconds,
        ae_title=settings.dicom_ae_title,
        stop=stop,
        per_ae=peers.quiet_periods,
        step_hold=settings.dicom_step_hold_seconds,
    )
    reports.join()


def serve_alone(stop: threading.Event, *, settings: DicomSettings, own: process.Own) -> None:
    """One process: the SCP, its health port and the quiet-period sweep, until `stop` is set."""
    scp = receiver(settings, own.engine, own.objects, AssociationCounts(1))
    server = Server(settings, scp).start()
    try:
        with process.health_port(settings.dicom_metrics_port, own, alive=server.accepting):
            log.info("listening as %s on %s:%d", settings.dicom_ae_title, settings.dicom_host, settings.dicom_port)
            _sweep(settings, own.engine, scp.peers, stop)
    finally:
        server.shutdown()


def worker(
    settings: DicomSettings,
    storage: StorageSettings,
    integration: IntegrationSettings,
    counts: AssociationCounts,
    index: int,
    ready: "Queue[int]",
) -> None:
    """The entry point of one spawned SCP worker process: serve on the shared port until SIGTERM.

    Spawned children import their target by name and never run a package's __main__, so this is
    the worker's __main__: it starts the worker's own engine and object store client.
    """
    counts.worker = index
    # C-STORE commits leave SQLite checkpoints to the parent's quiet-period sweep (stability.run).
    with process.started(storage, integration, kind="dicom", name=f"dicom-worker-{index}", checkpoints=False) as own:
        scp = receiver(settings, own.engine, own.objects, counts)
        process.run_threads(partial(_serve_worker, settings=settings, scp=scp, index=index, ready=ready))


def _serve_worker(
    stop: threading.Event, *, settings: DicomSettings, scp: Receiver, index: int, ready: "Queue[int]"
) -> None:
    server = Server(settings, scp).start()
    ready.put(index)
    try:
        while not stop.wait(WATCH_SECONDS):
            if not server.accepting():
                log.error("worker %d no longer accepts connections; exiting so that another starts", index)
                raise SystemExit(1)
    finally:
        server.shutdown()


def serve_workers(stop: threading.Event, *, settings: DicomSettings, own: process.Own) -> None:
    """The parent of several SCP workers: start them, restart any that dies, serve their metrics and
    sweep for quiet studies, until `stop` is set."""
    counts = AssociationCounts(settings.dicom_workers)
    ctx = multiprocessing.get_context("spawn")
    ready: Queue[int] = ctx.Queue()  # type: ignore[assignment]

    def spawn(index: int) -> SpawnProcess:
        arguments = (settings, own.storage, own.integration, counts, index, ready)
        child = ctx.Process(target=worker, args=arguments, name=f"dicom-worker-{index}")
        child.start()
        return child

    workers = [spawn(i) for i in range(settings.dicom_workers)]
    peers = PeerDirectory(own.engine, settings)
    sweeper = threading.Thread(target=_sweep, args=(settings, own.engine, peers, stop), name="quiet-period-sweep")
    # The workers write their metrics to PROMETHEUS_MULTIPROC_DIR; the parent serves their sum.
    registry = CollectorRegistry()
    prometheus_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        for _ in workers:
            ready.get(timeout=WORKER_START_SECONDS)
        with process.health_port(settings.dicom_metrics_port, own, registry=registry):
            log.info(
                "listening as %s on %s:%d with %d workers",
                settings.dicom_ae_title,
                settings.dicom_host,
                settings.dicom_port,
                settings.dicom_workers,
            )
            sweeper.start()
            while not stop.wait(WATCH_SECONDS):
                for i, child in enumerate(workers):
                    if child.exitcode is not None:
                        log.error("worker %d exited with %s; restarting it", i, child.exitcode)
                        prometheus_multiprocess.mark_process_dead(child.pid)  # type: ignore[no-untyped-call]
                        counts.forget_worker(i)
                        workers[i] = spawn(i)
                        _drain(ready)
    except Empty:
        log.error("a worker did not start within %.0fs", WORKER_START_SECONDS)
        raise
    finally:
        stop.set()
        for child in workers:
            child.terminate()
        for child in workers:
            child.join(process.STOP_GRACE_SECONDS)  # a worker's own stop is bounded as every process's is
            if child.exitcode is None:
                child.kill()
        if sweeper.is_alive():
            sweeper.join()


def _drain(ready: "Queue[int]") -> None:
    try:
        while True:
            ready.get_nowait()
    except Empty:
        return
