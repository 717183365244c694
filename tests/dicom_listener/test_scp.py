"""The C-STORE SCP on loopback with pynetdicom SCUs, storing to the real local S3 and SQLite."""

import time
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import select

from dicom_listener.stability import declare_ready
from integration.messages import StudyReady
from doctorai.stack import StackConfig, free_ports
from storage.db import session_scope
from storage.objects import make_object_store
from storage.tables.audit import AuditEvent
from storage.tables.index import Instance
from storage.tables.pipeline import OutboxEvent
from tests.dicom_listener.conftest import Listener, ct, rejection, send
from tests.dicom_listener.conftest import serve as _serve


@pytest.mark.stack
def test_store_indexes_audits_and_keeps_bytes(listener: Listener) -> None:
    ds = ct()
    status = send(listener.settings.dicom_port, ds)
    assert status.Status == 0x0000
    with session_scope(listener.engine) as s:
        instance = s.get(Instance, str(ds.SOPInstanceUID))
        assert instance is not None
        stored = pydicom.dcmread(BytesIO(listener.objects.get_bytes(instance.object_key)))
        assert stored.PixelData == ds.PixelData
        subtypes = [a.subtype for a in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        assert subtypes == ["association-accepted", "instance-stored"]


@pytest.mark.stack
def test_quiet_study_is_announced_through_the_outbox(listener: Listener) -> None:
    ds = ct()
    assert send(listener.settings.dicom_port, ds).Status == 0x0000
    later = datetime.now(UTC) + timedelta(seconds=1)  # past the quiet period, without waiting for it
    (ready,) = declare_ready(listener.engine, quiet_period=0.5, ae_title="DOCTORAI", now=later)
    assert ready.revision == 1 and ready.instances[0].sop_uid == str(ds.SOPInstanceUID)
    assert declare_ready(listener.engine, quiet_period=0.5, ae_title="DOCTORAI", now=later) == []
    with session_scope(listener.engine) as s:
        (event,) = s.scalars(select(OutboxEvent))
        assert event.topic == "study.ready" and event.key == str(ds.StudyInstanceUID)
        assert StudyReady.model_validate_json(event.payload).instances[0].modality == "CT"


@pytest.mark.stack
def test_missing_uid_is_cannot_understand(listener: Listener) -> None:
    ds = ct()
    del ds.StudyInstanceUID
    status = send(listener.settings.dicom_port, ds)
    assert status.Status == 0xC000
    assert "StudyInstanceUID" in status.ErrorComment
    with session_scope(listener.engine) as s:
        assert s.scalars(select(Instance)).first() is None
        assert [a.subtype for a in s.scalars(select(AuditEvent))] == ["instance-refused"]


@pytest.mark.stack
def test_object_store_down_is_out_of_resources_then_retry_succeeds(services: StackConfig, tmp_path: Path) -> None:
    dead = services.storage_settings().model_copy(update={"s3_endpoint": f"127.0.0.1:{free_ports().s3}"})
    ds = ct()
    for listener in _serve(services, tmp_path, objects=make_object_store(dead)):
        assert send(listener.settings.dicom_port, ds).Status == 0xA700
        with session_scope(listener.engine) as s:
            assert s.scalars(select(Instance)).first() is None  # nothing half-written
    for listener in _serve(services, tmp_path):
        assert send(listener.settings.dicom_port, ds).Status == 0x0000


@pytest.mark.stack
def test_unknown_called_ae_is_rejected_and_audited(listener: Listener) -> None:
    # called-AE-title-not-recognized: rejected-permanent, service-user (PS3.8 Table 9-21).
    assert rejection(listener.settings.dicom_port, "TESTSCU", called="SOMEONEELSE") == (1, 1, 7)
    # The SCU hears the rejection before the SCP's handler thread has committed its audit row.
    deadline = time.monotonic() + 10
    while True:
        with session_scope(listener.engine) as s:
            subtypes = [a.subtype for a in s.scalars(select(AuditEvent))]
        if subtypes or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert subtypes == ["association-rejected"]


@pytest.mark.stack
def test_echo_and_uncompressed_syntaxes(listener: Listener) -> None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.settings.dicom_port, ae_title="DOCTORAI")
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    ds = ct()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert ds.SOPClassUID == CTImageStorage
    assert send(listener.settings.dicom_port, ds).Status == 0x0000


@pytest.mark.stack
@pytest.mark.parametrize(
    ("attribute", "uid", "why"),
    [
        ("StudyInstanceUID", "1." + "2" * 64, "longer than 64"),
        ("StudyInstanceUID", "1.2..3", "digits and dots"),
        ("SeriesInstanceUID", "1.2/3", "digits and dots"),
        ("StudyInstanceUID", "1.2\\3", "digits and dots"),
        ("SeriesInstanceUID", "1.02.3", "leading zeros"),
        ("SOPInstanceUID", "../../etc", "digits and dots"),
    ],
)
def test_an_instance_whose_uid_is_not_a_uid_cannot_be_understood(
    listener: Listener, monkeypatch: pytest.MonkeyPatch, attribute: str, uid: str, why: str
) -> None:
    """Issue 18: an over-long or ".." UID got 0xA700 (resent forever), "/" made a deeper key, "\\" reached it."""
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.IGNORE)
    ds = ct()
    ds.SOPInstanceUID = generate_uid()
    ds[attribute].value = uid
    raw = BytesIO()
    ds.save_as(raw, enforce_file_format=True)
    status = send(listener.settings.dicom_port, pydicom.dcmread(BytesIO(raw.getvalue())))
    assert status.Status == 0xC000 and attribute in status.ErrorComment
    assert why.split()[0] in status.ErrorComment and uid not in status.ErrorComment
    with session_scope(listener.engine) as s:
        assert s.scalars(select(Instance)).first() is None
        (refused,) = s.scalars(select(AuditEvent).where(AuditEvent.subtype == "instance-refused"))
        assert attribute in refused.detail["reason"]
    assert not [key for key in listener.objects.list_keys("dicom/") if str(ds.SOPInstanceUID) in key]
