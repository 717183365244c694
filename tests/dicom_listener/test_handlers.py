"""C-STORE outcomes on loopback: duplicates under each policy, count-reached readiness, compressed
syntaxes stored byte for byte, truncated datasets, concurrent associations."""

import subprocess
import threading
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import _config
from pynetdicom.dsutils import split_dataset
from sqlalchemy import func, select

from dicom_listener.stability import declare_ready
from integration.messages import StudyReady
from doctorai.stack import StackConfig
from storage.db import session_scope
from storage.objects import dicom_version_key
from storage.tables.audit import AuditEvent
from storage.tables.index import Instance, InstanceVersion, Study
from storage.tables.pipeline import OutboxEvent
from tests.dicom_listener.conftest import Listener, ct, send, serve

LATER = timedelta(seconds=5)


def _audit_details(listener: Listener, subtype: str) -> list[dict[str, str]]:
    with session_scope(listener.engine) as s:
        return [a.detail for a in s.scalars(select(AuditEvent).where(AuditEvent.subtype == subtype).order_by(AuditEvent.id))]


def _other_bytes(ds: pydicom.Dataset) -> pydicom.Dataset:
    changed = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        setattr(changed, keyword, getattr(ds, keyword))
    changed.ImageComments = "corrected by the modality"
    return changed


@pytest.mark.stack
def test_same_instance_twice_is_acknowledged_and_recorded_once(listener: Listener) -> None:
    ds = ct()
    assert send(listener.settings.dicom_port, ds).Status == 0x0000
    assert send(listener.settings.dicom_port, ds).Status == 0x0000
    with session_scope(listener.engine) as s:
        assert s.scalar(select(func.count()).select_from(InstanceVersion)) == 1
        study = s.get(Study, str(ds.StudyInstanceUID))
        assert study is not None and study.called_ae == "DOCTORAI"  # what routing rules match on
    assert [d["duplicate"] for d in _audit_details(listener, "instance-stored")] == ["false", "identical"]


@pytest.mark.stack
def test_other_bytes_keep_last_store_a_new_version_and_open_a_new_revision(listener: Listener) -> None:
    ds = ct()
    port = listener.settings.dicom_port
    assert send(port, ds).Status == 0x0000
    (first,) = declare_ready(listener.engine, quiet_period=0.5, ae_title="DOCTORAI", now=datetime.now(UTC) + LATER)
    assert send(port, _other_bytes(ds)).Status == 0x0000
    with session_scope(listener.engine) as s:
        instance = s.get(Instance, str(ds.SOPInstanceUID))
        assert instance is not None
        versions = list(s.scalars(select(InstanceVersion).order_by(InstanceVersion.version)))
        assert [v.version for v in versions] == [1, 2]
        assert instance.object_key == versions[1].object_key == dicom_version_key(
            str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID), instance.sha256
        )
    # Both versions stay in object storage.
    assert b"corrected by the modality" in listener.objects.get_bytes(versions[1].object_key)
    assert b"corrected by the modality" not in listener.objects.get_bytes(versions[0].object_key)
    (second,) = declare_ready(listener.engine, quiet_period=0.5, ae_title="DOCTORAI", now=datetime.now(UTC) + LATER)
    assert (first.revision, second.revision) == (1, 2)
    assert second.instances[0].object_key == versions[1].object_key
    assert _audit_details(listener, "instance-stored")[-1]["duplicate"] == "new-version"


@pytest.mark.stack
def test_other_bytes_keep_first_change_nothing(services: StackConfig, tmp_path: Path) -> None:
    for listener in serve(services, tmp_path, dicom_duplicate_policy="keep-first"):
        ds = ct()
        assert send(listener.settings.dicom_port, ds).Status == 0x0000
        assert send(listener.settings.dicom_port, _other_bytes(ds)).Status == 0x0000
        with session_scope(listener.engine) as s:
            assert s.scalar(select(func.count()).select_from(InstanceVersion)) == 1
        assert _audit_details(listener, "instance-stored")[-1]["duplicate"] == "other-bytes-ignored"


@pytest.mark.stack
def test_other_bytes_reject_is_a_duplicate_failure(services: StackConfig, tmp_path: Path) -> None:
    for listener in serve(services, tmp_path, dicom_duplicate_policy="reject"):
        ds = ct()
        assert send(listener.settings.dicom_port, ds).Status == 0x0000
        status = send(listener.settings.dicom_port, _other_bytes(ds))
        assert status.Status == 0x0111 and "other bytes" in status.ErrorComment
        with session_scope(listener.engine) as s:
            assert s.scalar(select(func.count()).select_from(InstanceVersion)) == 1
        assert "other bytes" in _audit_details(listener, "instance-refused")[0]["reason"]


@pytest.mark.stack
def test_study_is_ready_when_the_announced_count_is_reached(listener: Listener) -> None:
    study_uid = generate_uid()
    sent = []
    for _ in range(2):
        ds = ct()
        ds.StudyInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid()
        ds.NumberOfStudyRelatedInstances = 2
        sent.append(ds)
    assert send(listener.settings.dicom_port, sent[0]).Status == 0x0000
    with session_scope(listener.engine) as s:
        study = s.get(Study, study_uid)
        assert study is not None and study.status == "receiving" and study.expected_instances == 2
    assert send(listener.settings.dicom_port, sent[1]).Status == 0x0000
    # Ready at once, in the C-STORE's own transaction: no quiet period, no sweep.
    with session_scope(listener.engine) as s:
        study = s.get(Study, study_uid)
        assert study is not None and (study.status, study.ready_reason, study.revision) == ("ready", "count-reached", 1)
        (event,) = s.scalars(select(OutboxEvent))
    ready = StudyReady.model_validate_json(event.payload)
    assert ready.reason == "count-reached" and len(ready.instances) == 2


@pytest.mark.stack
@pytest.mark.parametrize("name", ["RG1_J2KR.dcm", "JPEG-LL.dcm", "MR_small_RLE.dcm"])
def test_compressed_syntaxes_are_stored_exactly_as_received(
    listener: Listener, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = Path(str(get_testdata_file(name)))
    # Sent as the file's own dataset bytes (no re-encoding on our side of the wire either).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    assert send(listener.settings.dicom_port, source).Status == 0x0000
    original = pydicom.dcmread(source, stop_before_pixels=True)
    with session_scope(listener.engine) as s:
        instance = s.get(Instance, str(original.SOPInstanceUID))
        assert instance is not None
    stored = tmp_path / "stored.dcm"
    stored.write_bytes(listener.objects.get_bytes(instance.object_key))
    meta, offset = split_dataset(stored)
    _, source_offset = split_dataset(source)
    assert meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID == instance.transfer_syntax_uid
    assert stored.read_bytes()[offset:] == source.read_bytes()[source_offset:]


@pytest.mark.stack
def test_dcmtk_storescu_compressed_files_keep_their_syntax_and_pixels(listener: Listener) -> None:
    # storescu proposes one family of compressed syntaxes per run (JPEG 2000, JPEG lossless, RLE).
    for name, option in (("RG1_J2KR.dcm", "-xv"), ("JPEG-LL.dcm", "-xs"), ("MR_small_RLE.dcm", "-xr")):
        path = Path(str(get_testdata_file(name)))
        result = subprocess.run(
            ["storescu", option, "-aec", "DOCTORAI", "-aet", "DCMTK", "127.0.0.1", str(listener.settings.dicom_port), str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and not result.stderr, result.stderr
        original = pydicom.dcmread(path)
        with session_scope(listener.engine) as s:
            instance = s.get(Instance, str(original.SOPInstanceUID))
            assert instance is not None
        stored = pydicom.dcmread(BytesIO(listener.objects.get_bytes(instance.object_key)))
        assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert stored.PixelData == original.PixelData


@pytest.mark.stack
def test_truncated_dataset_is_cannot_understand(listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[:-1000])  # inside the pixel data
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    status = send(listener.settings.dicom_port, cut)
    assert status.Status == 0xC000 and "truncated" in status.ErrorComment
    with session_scope(listener.engine) as s:
        assert s.scalars(select(Instance)).first() is None
    assert "truncated" in _audit_details(listener, "instance-refused")[0]["reason"]


@pytest.mark.stack
def test_several_associations_at_once(listener: Listener) -> None:
    study_uid = generate_uid()
    statuses: list[int] = []
    lock = threading.Lock()

    def sender() -> None:
        for _ in range(5):
            ds = ct()
            ds.StudyInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid()
            status = send(listener.settings.dicom_port, ds)
            with lock:
                statuses.append(int(status.Status))

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert statuses == [0] * 20
    with session_scope(listener.engine) as s:
        assert s.scalar(select(func.count()).select_from(Instance).where(Instance.study_uid == study_uid)) == 20
    assert listener.receiver.counts.active() == 0  # every slot given back


@pytest.mark.stack
def test_truncated_compressed_dataset_is_cannot_understand(
    listener: Listener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = Path(str(get_testdata_file("RG1_J2KR.dcm"))).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[: len(whole) // 2])  # inside a JPEG 2000 fragment
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    status = send(listener.settings.dicom_port, cut)
    assert status.Status == 0xC000 and "truncated" in status.ErrorComment
