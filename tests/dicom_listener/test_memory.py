"""Memory stays flat: the listener process receives a 100 MB instance with a bounded RSS.

The dataset is spooled to a file as its PDUs arrive, hashed in 1 MiB chunks and uploaded to
S3 in 5 MiB multipart parts, so the process never holds it whole. The bound: the peak resident
set (VmHWM) during the transfer exceeds the resident set before it by less than 32 MiB, under a
third of the instance (about 20 MiB measured).
"""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from sqlalchemy import select

from doctorai.stack import StackConfig, engine_env, free_ports, http_ok
from doctorai.supervisor import Supervisor
from storage.db import make_engine, migrate, session_scope
from storage.tables.index import Instance

MIB = 1 << 20
BOUND = 32 * MIB
SIDE = 10240  # 10240 x 10240 8-bit pixels: 100 MiB of pixel data


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def _big_instance(path: Path) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality, ds.ConversionType = "MEM1", "OT", "WSD"
    ds.Rows = ds.Columns = SIDE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.random.default_rng(3).integers(0, 255, SIDE * SIDE, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return ds


@pytest.mark.stack
def test_100_mb_instance_keeps_the_listener_resident_memory_flat(services: StackConfig, tmp_path: Path) -> None:
    path = tmp_path / "big.dcm"
    ds = _big_instance(path)
    assert path.stat().st_size > 100 * MIB
    ports = free_ports()
    config = StackConfig(var_dir=tmp_path / "var", ports=replace(ports, s3=services.ports.s3))
    config.var_dir.mkdir()
    url = config.storage_settings().resolved_database_url()
    migrate(url)
    supervisor = Supervisor(config.var_dir / "logs")
    env = {**engine_env(config), "DOCTORAI_DICOM_SPOOL_DIR": str(tmp_path)}
    try:
        child = supervisor.start(
            "dicom",
            [sys.executable, "-m", "dicom_listener"],
            env=env,
            ready=lambda: http_ok(f"http://127.0.0.1:{ports.dicom_metrics}/metrics"),
            cwd=Path.cwd(),
        )
        pid = child.process.pid
        before = _status_kib(pid, "VmRSS")
        result = subprocess.run(
            ["storescu", "-aec", "DOCTORAI", "-aet", "BIGSCU", "127.0.0.1", str(ports.dicom), str(path)],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0 and not result.stderr, result.stderr
        peak = _status_kib(pid, "VmHWM")
        print(f"\nlistener RSS before {before / MIB:.1f} MiB, peak {peak / MIB:.1f} MiB (+{(peak - before) / MIB:.1f} MiB)")
        assert peak - before < BOUND
    finally:
        supervisor.stop_all()
    engine = make_engine(url)
    with session_scope(engine) as session:
        stored = session.scalar(select(Instance).where(Instance.sop_uid == str(ds.SOPInstanceUID)))
        assert stored is not None and stored.size >= 100 * MIB
    engine.dispose()
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".dcm" and p.name != "big.dcm"]  # spool cleaned
    os.remove(path)
