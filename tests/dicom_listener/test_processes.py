"""`python -m dicom_listener --workers 2`: two processes share the port, metrics are summed, the
parent sweeps for quiet studies, and SIGTERM stops everything."""

import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from doctorai.stack import StackConfig, Supervisor, engine_env, free_ports, http_ok
from storage.db import make_engine, migrate, session_scope
from storage.tables.index import Instance, Study


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
