"""`python -m dicom_listener --workers 2`: two processes share the port, metrics are summed, the
parent sweeps for quiet studies, and SIGTERM stops everything."""

import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select

from dicom_listener import processes
from dicom_listener import server as server_module
from dicom_listener.config import DicomSettings
from integration import process
from doctorai.stack import StackConfig, engine_env, free_ports, http_ok
from doctorai.supervisor import Supervisor
from storage.db import make_engine, migrate, session_scope
from storage.objects import make_object_store
from storage.tables.index import Instance, Study
from tests.mllp_peers import wait_for
from tests.probes import get


@pytest.mark.stack
def test_two_workers_share_the_port_and_one_sweep_declares_ready(services: StackConfig, tmp_path: Path) -> None:
    ports = replace(free_ports(), s3=services.ports.s3)
    config = StackConfig(var_dir=tmp_path / "var", ports=ports, quiet_period_seconds=0.5)
    config.var_dir.mkdir()
    url = config.storage_settings().resolved_database_url()
    migrate(url)
    study_uid = generate_uid()
    files = []
    for i in range(6):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.StudyInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid()
        files.append(tmp_path / f"{i}.dcm")
        ds.save_as(files[-1])
    supervisor = Supervisor(config.var_dir / "logs")
    metrics = f"http://127.0.0.1:{ports.dicom_metrics}/metrics"
    try:
        child = supervisor.start(
            "dicom",
            [sys.executable, "-m", "dicom_listener", "--workers", "2"],
            env=engine_env(config),
            ready=lambda: http_ok(metrics),
            cwd=Path.cwd(),
        )
        senders = [
            subprocess.Popen(
                ["storescu", "-aec", "DOCTORAI", "-aet", "PACS", "127.0.0.1", str(ports.dicom), str(f)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for f in files
        ]
        assert [p.wait(60) for p in senders] == [0] * 6
        engine = make_engine(url)
        deadline = time.monotonic() + 30
        while True:
            with session_scope(engine) as s:
                stored = s.scalar(select(func.count()).select_from(Instance))
                study = s.get(Study, study_uid)
                status = (study.status, study.revision, study.ready_reason) if study else None
            if status == ("ready", 1, "quiet-period") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        engine.dispose()
        assert stored == 6 and status == ("ready", 1, "quiet-period")
        with urllib.request.urlopen(metrics, timeout=5) as response:
            text = response.read().decode()
        assert 'doctorai_dicom_instances_received_total{status="success"} 6.0' in text
        assert 'doctorai_dicom_studies_ready_total{reason="quiet-period"} 1.0' in text
        workers = subprocess.run(["pgrep", "-P", str(child.process.pid)], capture_output=True, text=True).stdout.split()
        assert len(workers) >= 2
    finally:
        supervisor.stop_all()
    assert child.process.returncode == 0


class _Unstartable:
    """A thread that cannot start, as when the process has run out of threads."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def start(self) -> None:
        raise RuntimeError("can't start new thread")


class _Unmakeable:
    """No thread at all: the acceptor meets an error it does not expect, and dies."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise MemoryError


class _Faulty:
    """A fault of ours while handing a connection over, other than running out of memory."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise ValueError("a bug")


@pytest.fixture
def alone(services: StackConfig, tmp_path: Path) -> Iterator[DicomSettings]:
    """The single-process listener (processes.serve_alone) in a thread, with its health port."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url, checkpoints=False)
    ports = free_ports()
    settings = DicomSettings(dicom_port=ports.dicom, dicom_metrics_port=ports.dicom_metrics, quiet_period_seconds=0.5)
    stop = threading.Event()
    serving = threading.Thread(
        target=processes.serve_alone,
        args=(stop,),
        kwargs={
            "settings": settings,
            "own": process.Own(
                services.storage_settings(),
                services.integration_settings(),
                engine,
                make_object_store(services.storage_settings()),
            ),
        },
        daemon=True,
    )
    serving.start()
    wait_for(lambda: get(_healthz(settings))[0] == 200, what="the listener's health port")
    try:
        yield settings
    finally:
        stop.set()
        serving.join(30)
        engine.dispose()


def _healthz(settings: DicomSettings) -> str:
    return f"http://127.0.0.1:{settings.dicom_metrics_port}/healthz"


def _echo(settings: DicomSettings) -> bool:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=settings.dicom_ae_title)
    try:
        return bool(assoc.is_established and assoc.send_c_echo().Status == 0)
    finally:
        assoc.release()


def test_a_connection_without_a_thread_is_refused_and_the_acceptor_lives_on(
    alone: DicomSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 18: when a connection's thread could not start, the acceptor thread died; the listener was deaf."""
    with monkeypatch.context() as patched:
        patched.setattr(server_module, "threading", SimpleNamespace(Thread=_Unstartable))
        with socket.create_connection(("127.0.0.1", alone.dicom_port), timeout=10) as refused:
            assert refused.recv(1) == b""  # closed
    assert get(_healthz(alone))[0] == 200
    assert _echo(alone)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the acceptor's death
def test_healthz_fails_once_the_acceptor_died(alone: DicomSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18: /healthz stayed green with the acceptor dead; it now asks the listener whether it accepts."""
    with monkeypatch.context() as patched:
        patched.setattr(server_module, "threading", SimpleNamespace(Thread=_Unmakeable))
        socket.create_connection(("127.0.0.1", alone.dicom_port), timeout=10).close()
        wait_for(lambda: get(_healthz(alone))[0] == 503, what="/healthz to fail")


def test_any_fault_handing_a_connection_over_leaves_the_acceptor_alive(alone: DicomSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 18: the acceptor survived only RuntimeError; any other fault of ours ended it."""
    with monkeypatch.context() as patched:
        patched.setattr(server_module, "threading", SimpleNamespace(Thread=_Faulty))
        with socket.create_connection(("127.0.0.1", alone.dicom_port), timeout=10) as refused:
            assert refused.recv(1) == b""  # closed
    assert get(_healthz(alone))[0] == 200
    assert _echo(alone)
