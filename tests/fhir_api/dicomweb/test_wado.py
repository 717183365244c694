"""WADO-RS with dicomweb-client: study, series, instance, metadata, frames and bulk data, each byte as stored;
transfer syntax negotiation; and the standard answers to what cannot be given."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.encaps import generate_frames
from sqlalchemy import select

from storage.db import session_scope
from storage.tables.audit import AuditEvent
from tests.fhir_api.dicomweb.conftest import DicomWeb, study_files

EXPLICIT = "1.2.840.10008.1.2.1"


@pytest.fixture(scope="module")
def study(dicomweb: DicomWeb, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, pydicom.Dataset]]:
    """The test study stored by STOW-RS, by SOPInstanceUID, as sent."""
    files = study_files(tmp_path_factory.mktemp("wado"))
    sent = {sop: pydicom.dcmread(path) for sop, path in files.items()}
    dicomweb.client().store_instances(list(sent.values()))
    yield sent


def _by_name(study: dict[str, pydicom.Dataset], syntax: str) -> pydicom.Dataset:
    return next(ds for ds in study.values() if ds.file_meta.TransferSyntaxUID == syntax)


def test_study_series_and_instance_come_back_as_stored(dicomweb: DicomWeb, study: dict[str, pydicom.Dataset]) -> None:
    client = dicomweb.client(["system/ImagingStudy.rs"])
    study_uid = str(next(iter(study.values())).StudyInstanceUID)
    # No transfer-syntax parameter: the stored syntax, compressed or not (accept.py).
    got = {str(ds.SOPInstanceUID): ds for ds in client.retrieve_study(study_uid)}
    assert set(got) == set(study)
    for sop, ds in got.items():
        assert ds.file_meta.TransferSyntaxUID == study[sop].file_meta.TransferSyntaxUID
        assert ds.PixelData == study[sop].PixelData
    one = next(iter(study.values()))
    (series,) = client.retrieve_series(study_uid, str(one.SeriesInstanceUID))
    instance = client.retrieve_instance(study_uid, str(one.SeriesInstanceUID), str(one.SOPInstanceUID))
    assert series.SOPInstanceUID == instance.SOPInstanceUID == one.SOPInstanceUID
    streamed = list(client.iter_study(study_uid, media_types=(("application/dicom", "*"),)))
    assert len(streamed) == len(study)

    with session_scope(dicomweb.api.engine) as session:
        records = session.scalars(select(AuditEvent).where(AuditEvent.subtype == "dicomweb-retrieved")).all()
    study_reads = [r for r in records if r.entity_what == study_uid and r.detail["resource"] == "study"]
    assert study_reads and study_reads[0].agent_who == "viewer" and study_reads[0].detail["instances"] == str(len(study))


def test_explicit_little_endian_is_given_from_uncompressed_and_other_syntaxes_are_not_acceptable(
    dicomweb: DicomWeb, study: dict[str, pydicom.Dataset]
) -> None:
    client = dicomweb.client(["system/ImagingStudy.r"])
    implicit = _by_name(study, "1.2.840.10008.1.2")
    uids = (str(implicit.StudyInstanceUID), str(implicit.SeriesInstanceUID), str(implicit.SOPInstanceUID))
    got = client.retrieve_instance(*uids, media_types=(("application/dicom", EXPLICIT),))
    assert got.file_meta.TransferSyntaxUID == EXPLICIT and got.PixelData == implicit.PixelData
    assert got.PatientID == implicit.PatientID
    url = f"{dicomweb.api.url}/dicomweb/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}"
    headers = dicomweb.api.token(["system/ImagingStudy.r"])
    jpeg = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    assert httpx.get(url, headers={**headers, "Accept": jpeg}).status_code == 406
    assert httpx.get(url, headers={**headers, "Accept": "application/pdf"}).status_code == 406
    compressed = _by_name(study, "1.2.840.10008.1.2.4.91")
    c_url = f"{dicomweb.api.url}/dicomweb/studies/{uids[0]}/series/{compressed.SeriesInstanceUID}"
    explicit = f'multipart/related; type="application/dicom"; transfer-syntax={EXPLICIT}'
    assert httpx.get(c_url, headers={**headers, "Accept": explicit}).status_code == 406  # we never decompress


def test_metadata_holds_the_header_and_bulk_data_uris(dicomweb: DicomWeb, study: dict[str, pydicom.Dataset]) -> None:
    client = dicomweb.client(["system/*.rs"])
    study_uid = str(next(iter(study.values())).StudyInstanceUID)
    found = client.retrieve_study_metadata(study_uid)
    assert len(found) == len(study)
    for item in found:
        sop = item["00080018"]["Value"][0]
        ds = pydicom.Dataset.from_json(item, bulk_data_uri_handler=lambda tag, vr, uri: b"")
        assert ds.PatientID == "DICOMWEB-1" and ds.Rows == study[sop].Rows
        assert item["00083002"]["Value"] == [str(study[sop].file_meta.TransferSyntaxUID)]
        assert item["7FE00010"]["BulkDataURI"].endswith(f"/instances/{sop}/bulkdata/7FE00010")
    ct = _by_name(study, EXPLICIT)
    uri = next(i for i in found if i["00080018"]["Value"][0] == ct.SOPInstanceUID)["7FE00010"]["BulkDataURI"]
    assert client.retrieve_bulkdata(uri.replace("http://127.0.0.1/", f"{dicomweb.api.url}/")) == [ct.PixelData]


def test_frames_are_cut_from_the_stored_bytes(dicomweb: DicomWeb, study: dict[str, pydicom.Dataset]) -> None:
    client = dicomweb.client(["system/ImagingStudy.rs"])
    multi = next(ds for ds in study.values() if ds.get("NumberOfFrames") == 10)
    uids = (str(multi.StudyInstanceUID), str(multi.SeriesInstanceUID), str(multi.SOPInstanceUID))
    size = multi.Rows * multi.Columns * 2
    frames = client.retrieve_instance_frames(*uids, frame_numbers=[2, 10], media_types=("application/octet-stream",))
    assert frames == [multi.PixelData[size : 2 * size], multi.PixelData[9 * size :]]

    jp2 = _by_name(study, "1.2.840.10008.1.2.4.91")
    (frame,) = client.retrieve_instance_frames(
        str(jp2.StudyInstanceUID), str(jp2.SeriesInstanceUID), str(jp2.SOPInstanceUID), frame_numbers=[1],
        media_types=("image/jp2",),
    )
    assert frame == next(generate_frames(jp2.PixelData, number_of_frames=1))

    rle = _by_name(study, "1.2.840.10008.1.2.5")
    url = f"{dicomweb.api.url}/dicomweb/studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}/instances/{rle.SOPInstanceUID}/frames/2"
    headers = dicomweb.api.token(["system/ImagingStudy.rs"])
    anything = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    answer = httpx.get(url, headers={**headers, "Accept": anything})
    assert answer.status_code == 200, answer.text
    assert 'type="application/octet-stream"' in answer.headers["content-type"]
    assert list(generate_frames(rle.PixelData, number_of_frames=2))[1] in answer.content
    assert "transfer-syntax=1.2.840.10008.1.2.5" in answer.text[:400]
    # Compressed frames as uncompressed octets would need decoding: not acceptable.
    assert httpx.get(url, headers={**headers, "Accept": 'multipart/related; type="application/octet-stream"'}).status_code == 406
    assert httpx.get(url.replace("/frames/2", "/frames/3"), headers={**headers, "Accept": anything}).status_code == 404
    assert httpx.get(url.replace("/frames/2", "/frames/0"), headers={**headers, "Accept": anything}).status_code == 400


def test_what_is_not_there_is_not_found_and_reading_needs_a_read_scope(
    dicomweb: DicomWeb, study: dict[str, pydicom.Dataset], tmp_path: Path
) -> None:
    one = next(iter(study.values()))
    base = f"{dicomweb.api.url}/dicomweb/studies"
    reader = dicomweb.api.token(["system/ImagingStudy.rs"])
    assert httpx.get(f"{base}/1.2.3.4.5.6", headers=reader).status_code == 404
    assert httpx.get(f"{base}/{one.StudyInstanceUID}/series/1.2.3/metadata", headers=reader).status_code == 404
    for scopes in (["system/ImagingStudy.c"], ["system/DiagnosticReport.rs"]):
        assert httpx.get(f"{base}/{one.StudyInstanceUID}", headers=dicomweb.api.token(scopes)).status_code == 403
    assert httpx.get(f"{base}/{one.StudyInstanceUID}").status_code == 401
    with session_scope(dicomweb.api.engine) as session:
        missed = session.scalars(
            select(AuditEvent).where(AuditEvent.subtype == "dicomweb-retrieved", AuditEvent.entity_what == "1.2.3.4.5.6")
        ).all()
    assert [r.outcome for r in missed] == ["4"]
