"""Orthanc as a real PACS on loopback (tests/orthanc.py): it sends a study to our listener with its
own C-STORE SCU, answers and sends C-ECHO, and Orthancs store to each other, accepting DOCTORAI
(our forwarder's AE title) as a calling AE they were never told about.
"""

from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from audit.log import trail
from storage.db import make_engine, session_scope
from storage.objects import make_object_store
from storage.instances import correlation_id_for_study, study_instances
from tests.conftest import EngineRun
from tests.orthanc import Modality, Orthanc, OrthancFactory, eventually

# Three SOP classes in three transfer syntaxes: explicit VR little endian (CT, MR), JPEG 2000 and
# JPEG lossless (secondary captures), so pixel data goes through both native and encapsulated.
SOURCES = {
    name: Path(str(get_testdata_file(name))) for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "JPEG-LL.dcm")
}


def one_study(tmp_path: Path) -> tuple[str, dict[str, Path]]:
    """The source files rewritten into one study of one patient (pixel data untouched); by SOPInstanceUID."""
    study_uid = generate_uid()
    files = {}
    for name, source in SOURCES.items():
        ds = pydicom.dcmread(source)
        ds.StudyInstanceUID = study_uid
        ds.PatientID = "ORTHANC-SMOKE"
        ds.PatientName = "Smoke^Orthanc"
        path = tmp_path / name
        ds.save_as(path)
        files[str(ds.SOPInstanceUID)] = path
    return study_uid, files


def pixel_data_by_sop_uid() -> dict[str, bytes]:
    """The source files' PixelData as pydicom reads it, by SOPInstanceUID."""
    return {str(ds.SOPInstanceUID): ds.PixelData for ds in map(pydicom.dcmread, SOURCES.values())}


def held_by(orthanc: Orthanc, sop_uid: str) -> pydicom.Dataset:
    """The instance `orthanc` stored under this SOPInstanceUID, parsed."""
    instance = orthanc.find_instance(sop_uid)
    assert instance is not None, f"{orthanc.aet} does not hold {sop_uid}\n{orthanc.log()}"
    return pydicom.dcmread(BytesIO(orthanc.instance_file(instance)))


@pytest.mark.stack
def test_orthanc_echoes_and_sends_a_study_to_our_listener(
    engine_run: EngineRun, orthanc_factory: OrthancFactory, tmp_path: Path
) -> None:
    """Orthanc's own C-ECHO and C-STORE SCU reach our listener; every instance is indexed and
    archived with its pixel data byte for byte as in the source file."""
    engine_run.start(models=())
    ours = Modality(aet="DOCTORAI", port=engine_run.config.ports.dicom)
    pacs = orthanc_factory(aet="SMOKEPACS", modalities={"doctorai": ours})
    pacs.echo("doctorai")

    study_uid, files = one_study(tmp_path)
    for path in files.values():
        pacs.upload(path.read_bytes())
    study = pacs.lookup(study_uid)
    assert study is not None
    answer = pacs.store("doctorai", [study])
    assert (answer.instances_count, answer.local_aet, answer.remote_aet) == (len(files), "SMOKEPACS", "DOCTORAI")

    engine = make_engine(engine_run.config.storage_settings().resolved_database_url())
    store = make_object_store(engine_run.config.storage_settings())

    def indexed() -> dict[str, tuple[str, str]] | None:
        with session_scope(engine) as session:
            rows = {
                i.sop_uid: (i.object_key, i.transfer_syntax_uid)
                for i, _ in study_instances(session, study_uid=study_uid)
            }
        return rows if len(rows) == len(files) else None

    try:
        rows = eventually(indexed, timeout=30, what=f"{len(files)} instances indexed\n{engine_run.logs()}")
        with session_scope(engine) as session:
            records = trail(session, correlation_id=correlation_id_for_study(study_uid))
            senders = {
                (r.subtype, r.agent_who) for r in records if r.subtype in ("association-accepted", "instance-stored")
            }
            audited = [r.entity_what for r in records if r.subtype == "instance-stored"]
    finally:
        engine.dispose()
    # Orthanc's AE title on every association (its store job may open more than one) and instance.
    assert senders == {("association-accepted", "ae:SMOKEPACS"), ("instance-stored", "ae:SMOKEPACS")}
    assert sorted(audited) == sorted(files)
    assert set(rows) == set(files)
    expected = pixel_data_by_sop_uid()
    for sop_uid, (key, transfer_syntax) in rows.items():
        archived = pydicom.dcmread(BytesIO(store.get_bytes(key)))
        assert transfer_syntax == pydicom.dcmread(files[sop_uid]).file_meta.TransferSyntaxUID
        assert archived.PixelData == expected[sop_uid], sop_uid


def test_orthancs_store_to_each_other_and_accept_doctorai(orthanc_factory: OrthancFactory, tmp_path: Path) -> None:
    """Two Orthancs C-STORE to each other without transcoding, and one accepts C-ECHO and C-STORE
    from calling AE DOCTORAI, as our forwarder will send them."""
    a = orthanc_factory()
    b = orthanc_factory(modalities={"a": a.modality()})
    a.put_modality("b", b.modality())  # b's port is known only once b runs
    study_uid, files = one_study(tmp_path)
    for path in files.values():
        a.upload(path.read_bytes())
    study = a.lookup(study_uid)
    assert study is not None
    a.echo("b")
    assert a.store("b", [study]).instances_count == len(files)
    assert len(b.wait_for_instances(len(files))) == len(files)
    expected = pixel_data_by_sop_uid()
    for sop_uid in files:
        assert held_by(b, sop_uid).PixelData == expected[sop_uid], sop_uid

    late = pydicom.dcmread(SOURCES["CT_small.dcm"])
    late.SOPInstanceUID = late.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    late_path = tmp_path / "late.dcm"
    late.save_as(late_path)
    late_id = b.upload(late_path.read_bytes())
    b.store("a", [late_id])
    assert held_by(a, str(late.SOPInstanceUID)).PixelData == late.PixelData

    # DOCTORAI is in neither Orthanc's DicomModalities.
    forwarded = pydicom.dcmread(SOURCES["JPEG2000.dcm"])
    forwarded.SOPInstanceUID = forwarded.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ae = AE(ae_title="DOCTORAI")
    ae.add_requested_context(Verification)
    ae.add_requested_context(forwarded.SOPClassUID, forwarded.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", b.dicom_port, ae_title=b.aet)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(forwarded).Status == 0x0000
    finally:
        assoc.release()
    instance = b.find_instance(str(forwarded.SOPInstanceUID))
    assert instance is not None
    assert b.calling_aet(instance) == "DOCTORAI"
    assert held_by(b, str(forwarded.SOPInstanceUID)).PixelData == forwarded.PixelData
