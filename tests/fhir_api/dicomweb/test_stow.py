"""STOW-RS: instances stored, indexed and audited as C-STORE stores them, and the standard answers to bad requests."""

import hashlib
import io
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_listener.stability import declare_ready
from storage.db import session_scope
from storage.objects import make_object_store
from storage.peers import Peer, delete_peer, save_peer
from storage.tables.audit import AuditEvent
from storage.tables.index import Instance, InstanceVersion, Study
from tests.fhir_api.dicomweb.conftest import DicomWeb, study_files

BOUNDARY = "stow-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def body(*parts: tuple[str, bytes]) -> bytes:
    """A multipart/related body of (Content-Type, bytes) parts, as RFC 2046 writes it."""
    out = b"".join(f"--{BOUNDARY}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n" for kind, data in parts)
    return out + f"--{BOUNDARY}--\r\n".encode()


def post(dicomweb: DicomWeb, content: bytes, *, path: str = "/dicomweb/studies", scopes: list[str] | None = None,
         content_type: str = MULTIPART) -> httpx.Response:
    headers = {"Content-Type": content_type, **dicomweb.api.token(scopes or ["system/ImagingStudy.c"], subject="modality-gw")}
    return httpx.post(f"{dicomweb.api.url}{path}", content=content, headers=headers, timeout=30)


def test_stored_instances_are_indexed_audited_and_declared_ready_by_the_quiet_period(
    dicomweb: DicomWeb, tmp_path: Path
) -> None:
    files = study_files(tmp_path)
    datasets = [pydicom.dcmread(p) for p in files.values()]
    study_uid = str(datasets[0].StudyInstanceUID)
    answer = dicomweb.client(["system/ImagingStudy.c"], subject="modality-gw").store_instances(datasets)
    stored = {str(item.ReferencedSOPInstanceUID): item for item in answer.ReferencedSOPSequence}
    assert set(stored) == set(files) and "FailedSOPSequence" not in answer
    # dicomweb-client sends a Host header without the port; the URLs follow the Host they were asked on.
    assert answer.RetrieveURL == f"http://127.0.0.1/dicomweb/studies/{study_uid}"
    sop, path = next(iter(files.items()))
    ds = datasets[0]
    assert stored[sop].RetrieveURL.endswith(f"/studies/{study_uid}/series/{ds.SeriesInstanceUID}/instances/{sop}")

    objects = make_object_store(dicomweb.storage)
    with session_scope(dicomweb.api.engine) as session:
        study = session.get_one(Study, study_uid)
        assert (study.status, study.calling_ae, study.patient_id) == ("receiving", "DICOMWEB", "DICOMWEB-1")
        rows = {i.sop_uid: i for i in session.scalars(select(Instance).where(Instance.study_uid == study_uid))}
        records = list(session.scalars(select(AuditEvent).where(AuditEvent.subtype == "instance-stored")))
    assert set(rows) == set(files)
    # The file as sent, byte for byte, under the same key a C-STORE would use.
    sent = pydicom.dcmread(path)
    stored_bytes = objects.get_bytes(rows[sop].object_key)
    assert rows[sop].sha256 == hashlib.sha256(stored_bytes).hexdigest()
    assert pydicom.dcmread(io.BytesIO(stored_bytes)).PixelData == sent.PixelData
    assert {r.entity_what for r in records} >= set(files)
    assert {r.agent_who for r in records if r.entity_what in files} == {"modality-gw"}

    # The listener's quiet-period sweep declares it ready, as it would a study sent by C-STORE.
    announced = declare_ready(dicomweb.api.engine, quiet_period=0.0, ae_title="DOCTORAI")
    assert study_uid in {m.study_uid for m in announced}
    assert {m.calling_ae for m in announced if m.study_uid == study_uid} == {"DICOMWEB"}

    # Sent again byte for byte: acknowledged, nothing changes, the study stays ready.
    again = post(dicomweb, body(*(("application/dicom", p.read_bytes()) for p in files.values())))
    assert again.status_code == 200, again.text
    with session_scope(dicomweb.api.engine) as session:
        assert session.get_one(Study, study_uid).status == "ready"
        versions = session.scalars(select(InstanceVersion).where(InstanceVersion.study_uid == study_uid)).all()
    assert len(versions) == len(files)


def _failures(response: httpx.Response) -> list[tuple[str, int]]:
    answer = Dataset.from_json(response.json())
    return [(str(i.get("ReferencedSOPInstanceUID", "")), int(i.FailureReason)) for i in answer.get("FailedSOPSequence", [])]


def test_a_part_that_is_not_dicom_fails_alone(dicomweb: DicomWeb, tmp_path: Path) -> None:
    ct = next(iter(study_files(tmp_path).values()))
    response = post(dicomweb, body(("application/dicom", ct.read_bytes()), ("application/dicom", b"not a DICOM file")))
    assert response.status_code == 202 and response.headers["content-type"] == "application/dicom+json"
    assert _failures(response) == [("", 0xC000)]
    assert len(Dataset.from_json(response.json()).ReferencedSOPSequence) == 1
    with session_scope(dicomweb.api.engine) as session:
        refused = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "instance-refused")).all()
    assert any(r.agent_who == "modality-gw" and "not a DICOM file" in r.detail["reason"] for r in refused)


def test_instances_of_another_study_than_the_target_fail_and_nothing_stored_is_a_conflict(
    dicomweb: DicomWeb, tmp_path: Path
) -> None:
    ct = next(iter(study_files(tmp_path).values()))
    sop = str(pydicom.dcmread(ct).SOPInstanceUID)
    response = post(dicomweb, body(("application/dicom", ct.read_bytes())), path=f"/dicomweb/studies/{generate_uid()}")
    assert response.status_code == 409
    assert _failures(response) == [(sop, 0xA900)]
    with session_scope(dicomweb.api.engine) as session:
        assert session.get(Instance, sop) is None


def test_the_duplicate_policy_of_the_pseudo_calling_ae_applies(dicomweb: DicomWeb, tmp_path: Path) -> None:
    ct = pydicom.dcmread(next(iter(study_files(tmp_path).values())))
    assert post(dicomweb, body(("application/dicom", _encoded(ct)))).status_code == 200
    ct.PatientName = "Other^Bytes"
    with session_scope(dicomweb.api.engine) as session:
        save_peer(session, Peer(ae_title="DICOMWEB", duplicate_policy="reject"))
    try:
        response = post(dicomweb, body(("application/dicom", _encoded(ct))))
    finally:
        with session_scope(dicomweb.api.engine) as session:
            delete_peer(session, ae_title="DICOMWEB")
    assert response.status_code == 409 and _failures(response) == [(str(ct.SOPInstanceUID), 0x0111)]
    # Without the peer's policy, the default (keep-last) stores it as a new version.
    assert post(dicomweb, body(("application/dicom", _encoded(ct)))).status_code == 200
    with session_scope(dicomweb.api.engine) as session:
        assert len(session.scalars(select(InstanceVersion).where(InstanceVersion.sop_uid == ct.SOPInstanceUID)).all()) == 2


def _encoded(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_an_instance_over_the_per_instance_limit_fails_out_of_resources(dicomweb: DicomWeb) -> None:
    big = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))  # 7 MB, over this API's 1 MiB limit
    big.SOPInstanceUID = generate_uid()
    small = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    small.SOPInstanceUID = generate_uid()
    response = post(dicomweb, body(("application/dicom", _encoded(big)), ("application/dicom", _encoded(small))))
    assert response.status_code == 202 and _failures(response) == [("", 0xA700)]


@pytest.mark.parametrize(
    "content_type",
    ["application/dicom", 'multipart/related; type="application/dicom+json"; boundary=x', "application/json"],
)
def test_bodies_that_are_not_multipart_dicom_are_unsupported(dicomweb: DicomWeb, content_type: str) -> None:
    assert post(dicomweb, b"{}", content_type=content_type).status_code == 415


def test_storing_needs_a_create_scope_on_imaging_studies(dicomweb: DicomWeb) -> None:
    for scopes in (["system/ImagingStudy.rs"], ["system/Patient.c"]):
        assert post(dicomweb, body(("application/dicom", b"x")), scopes=scopes).status_code == 403
    assert post(dicomweb, body(("application/dicom", b"x")), scopes=["system/*.c"]).status_code == 409
    assert httpx.post(f"{dicomweb.api.url}/dicomweb/studies", content=b"").status_code == 401


@pytest.mark.parametrize("uid", ["1.2/3", "1.2..3", "1.2\\3", "1.02.3", "1." + "2" * 64])
def test_an_instance_whose_study_uid_is_not_a_uid_fails_alone(dicomweb: DicomWeb, monkeypatch: pytest.MonkeyPatch, uid: str) -> None:
    """Issue 18: garbage UIDs were acknowledged and became object keys ("/" a folder deeper, "\\" in the path)."""
    monkeypatch.setattr(pydicom.config.settings, "writing_validation_mode", pydicom.config.IGNORE)
    bad = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    bad.SOPInstanceUID = generate_uid()
    bad["StudyInstanceUID"].value = uid
    good = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    good.SOPInstanceUID = generate_uid()
    response = post(dicomweb, body(("application/dicom", _encoded(bad)), ("application/dicom", _encoded(good))))
    assert response.status_code == 202 and _failures(response) == [("", 0xC000)]
    with session_scope(dicomweb.api.engine) as session:
        refused = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "instance-refused")).all()
    assert any("StudyInstanceUID" in r.detail["reason"] for r in refused)
