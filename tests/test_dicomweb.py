"""End to end on the real local stack: a chest radiograph in by C-STORE, processed by the chest model, then
retrieved by DICOMweb with its AI result beside it, by dicomweb-client and by Orthanc's DICOMweb plugin.

One engine for the module (tests/conftest.py, module_engine_run): every test reads the same study.
"""

from collections.abc import Iterator
from io import BytesIO

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient
from sqlalchemy import select

from fhir_api.auth.tokens import issue_token
from fhir_api.config import ApiSettings
from storage.db import make_engine, session_scope
from storage.tables.audit import AuditEvent
from tests.conftest import EngineRun
from tests.orthanc import DicomWebServer, OrthancFactory
from tests.test_pipeline import PATIENT_ID, RG1, STUDY_UID, cli_token, storescu, wait_for_reports

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
RG1_DS = pydicom.dcmread(RG1)


@pytest.fixture(scope="module")
def reported(module_engine_run: EngineRun) -> Iterator[EngineRun]:
    """The engine once RG1, sent by C-STORE, has its report (and so its SR: one transaction)."""
    module_engine_run.start()
    storescu(module_engine_run, RG1)
    wait_for_reports(module_engine_run, cli_token())
    yield module_engine_run


def _token(subject: str) -> str:
    # The engine's processes sign with the default development secret, as this process does.
    return issue_token(ApiSettings(), subject=subject, scopes=["system/ImagingStudy.rs"], roles=[])


def _base(run: EngineRun) -> str:
    return f"http://127.0.0.1:{run.config.ports.http}/dicomweb"


def _evidence(sr: pydicom.Dataset) -> list[str]:
    return [
        str(ref.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    ]


@pytest.mark.stack
def test_a_study_sent_by_cstore_comes_back_by_wado_with_the_sr_that_references_it(reported: EngineRun) -> None:
    client = DICOMwebClient(_base(reported), headers={"Authorization": f"Bearer {_token('viewer')}"})
    by_class = {str(ds.SOPClassUID): ds for ds in client.retrieve_study(STUDY_UID)}
    assert set(by_class) == {str(RG1_DS.SOPClassUID), COMPREHENSIVE_3D_SR}
    image, sr = by_class[str(RG1_DS.SOPClassUID)], by_class[COMPREHENSIVE_3D_SR]
    assert image.PixelData == RG1_DS.PixelData and image.SOPInstanceUID == RG1_DS.SOPInstanceUID
    assert (sr.StudyInstanceUID, sr.PatientID, sr.Modality) == (STUDY_UID, PATIENT_ID, "SR")
    assert sr.SeriesInstanceUID != image.SeriesInstanceUID
    assert _evidence(sr) == [str(RG1_DS.SOPInstanceUID)]
    finding = sr.ContentSequence  # TID 1500: the pneumonia finding with its probability
    assert "233604007" in str(finding)

    metadata = client.retrieve_study_metadata(STUDY_UID)
    assert sorted(m["00080060"]["Value"][0] for m in metadata) == ["CR", "SR"]
    (only,) = client.retrieve_series(STUDY_UID, str(sr.SeriesInstanceUID))
    assert only.SOPInstanceUID == sr.SOPInstanceUID


@pytest.mark.stack
def test_orthanc_retrieves_our_study_with_its_sr_by_dicomweb(reported: EngineRun, orthanc_factory: OrthancFactory) -> None:
    server = DicomWebServer(url=f"{_base(reported)}/", token=_token("orthanc-dicomweb"))
    orthanc = orthanc_factory(dicomweb={"doctorai": server})
    assert orthanc.dicomweb_retrieve("doctorai", STUDY_UID) == 2
    image = orthanc.find_instance(str(RG1_DS.SOPInstanceUID))
    assert image is not None
    held = pydicom.dcmread(BytesIO(orthanc.instance_file(image)))
    assert held.PixelData == RG1_DS.PixelData
    classes = {pydicom.dcmread(BytesIO(orthanc.instance_file(i))).SOPClassUID for i in orthanc.instances()}
    assert classes == {RG1_DS.SOPClassUID, COMPREHENSIVE_3D_SR}

    engine = make_engine(reported.config.storage_settings().resolved_database_url())
    with session_scope(engine) as session:
        records = session.scalars(
            select(AuditEvent).where(AuditEvent.subtype == "dicomweb-retrieved", AuditEvent.agent_who == "orthanc-dicomweb")
        ).all()
    engine.dispose()
    assert [(r.entity_what, r.detail["instances"]) for r in records] == [(STUDY_UID, "2")]


@pytest.mark.stack
def test_orthanc_finds_our_study_by_qido(reported: EngineRun, orthanc_factory: OrthancFactory) -> None:
    server = DicomWebServer(url=f"{_base(reported)}/", token=_token("orthanc-dicomweb"))
    orthanc = orthanc_factory(dicomweb={"doctorai": server})
    body = {"Uri": "/studies", "Arguments": {"PatientID": PATIENT_ID}}
    found = orthanc.http.post("/dicom-web/servers/doctorai/get", json=body)
    assert found.status_code == 200, found.text
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [STUDY_UID]
    series = orthanc.http.post("/dicom-web/servers/doctorai/get", json={"Uri": f"/studies/{STUDY_UID}/series"}).json()
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["CR", "SR"]
    assert httpx.get(f"{_base(reported)}/studies", params={"PatientID": PATIENT_ID}).status_code == 401
