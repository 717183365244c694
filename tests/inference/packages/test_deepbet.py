"""End to end: the Colin27 T1 (Debian mricron-data) as a DICOM MR series by C-STORE -> deepbet in a
worker -> total intracranial volume as a FHIR Observation in cm3, and the brain mask in object storage
(NIfTI, checked against the package's own extracted brain (ch2bet) by Dice, and a DICOM SEG)."""

import gzip
import random
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from storage.objects import make_object_store
from tests.conftest import EngineRun
from tests.inference.packages.fhir_client import FhirClient
from tests.test_pipeline import storescu

TEMPLATES = Path("/usr/share/mricron/templates")
PATIENT = "COLIN27"


def _slice(study: str, series: str, number: int, pixels: np.ndarray, position: list[float], description: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName = PATIENT, "Colin^Twentyseven"
    ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "MR", "BRAIN", description
    ds.SeriesNumber, ds.InstanceNumber = 2 if description == "T1 3D" else 1, number
    # Axial slices: rows run along +x (patient left), columns down +y (posterior), PS3.3 C.7.6.2.1.1.
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.ImagePositionPatient = position
    ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 1.0
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    return ds


@pytest.fixture(scope="module")
def colin27_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """The T1 as 181 axial slices (numbered head to feet, so Instance Number order is backwards) plus a
    3-slice localiser series; with the canonical (RAS) T1 affine and the reference brain mask."""
    import nibabel

    t1 = nibabel.as_closest_canonical(nibabel.load(TEMPLATES / "ch2.nii.gz"))
    data = np.asarray(t1.dataobj)
    ni, nj, nk = data.shape
    study, series, scout = generate_uid(), generate_uid(), generate_uid()
    out = tmp_path_factory.mktemp("colin27")
    files = []
    for k in range(nk):
        # RAS voxel (i, j, k) -> LPS: the first pixel (row 0, column 0) is the voxel at i = ni-1, j = nj-1.
        x, y, z = (t1.affine @ [ni - 1, nj - 1, k, 1])[:3]
        pixels = data[::-1, ::-1, k].T  # pixel[r, c] = voxel[ni-1-c, nj-1-r, k]
        ds = _slice(study, series, nk - k, pixels, [-x, -y, z], "T1 3D")
        files.append(out / f"t1-{k:03d}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    for n in range(3):
        ds = _slice(study, scout, n + 1, data[::-1, ::-1, 60 + 30 * n].T, [0.0, 0.0, float(n)], "localiser")
        files.append(out / f"scout-{n}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    random.Random(6).shuffle(files)  # arrival order says nothing either
    reference = np.asarray(nibabel.as_closest_canonical(nibabel.load(TEMPLATES / "ch2bet.nii.gz")).dataobj) > 0
    return files, np.asarray(t1.affine), reference


@pytest.mark.stack
def test_brain_mr_series_gives_tiv_in_cm3_and_a_mask_matching_the_reference(
    engine_run: EngineRun, colin27_series: tuple[list[Path], np.ndarray, np.ndarray]
) -> None:
    import nibabel

    files, affine, reference = colin27_series
    engine_run.start(models=("brain-extraction",))
    fhir = FhirClient(engine_run)
    storescu(engine_run, *files)

    report, observations = fhir.report_with_results(PATIENT)

    assert report["status"] == "preliminary" and report["conclusion"].startswith("NOT FOR CLINICAL USE")
    [tiv] = observations
    quantity = tiv["valueQuantity"]
    assert (quantity["system"], quantity["code"], quantity["unit"]) == ("http://unitsofmeasure.org", "cm3", "cm3")
    assert tiv["code"]["coding"][0]["code"] == "118565006" and tiv["code"]["text"] == "Total intracranial volume"
    seg_key, mask_key = [e["valueString"] for e in tiv["extension"] if e["url"] == "urn:doctorai:output-object"]

    store = make_object_store(engine_run.config.storage_settings())
    mask_image = nibabel.Nifti1Image.from_bytes(gzip.decompress(store.get_bytes(mask_key)))
    # The series came back in the T1's own orientation and position, slice order from geometry alone.
    np.testing.assert_allclose(mask_image.affine, affine, atol=1e-4)
    mask = np.asarray(mask_image.dataobj) > 0
    dice = 2 * (mask & reference).sum() / (mask.sum() + reference.sum())
    print(f"\ndeepbet on Colin27 via C-STORE: Dice {dice:.3f} against ch2bet, TIV {quantity['value']} cm3")
    assert dice > 0.9
    assert float(quantity["value"]) == pytest.approx(mask.sum() / 1000.0, abs=0.01)  # 1 mm voxels
    # The reference is the brain alone; TIV adds the CSF around it.
    assert reference.sum() / 1000.0 < float(quantity["value"]) < 1.3 * reference.sum() / 1000.0

    # The same mask as a DICOM SEG beside the study's instances, its frames over the T1 slices.
    seg = hd.seg.segread(BytesIO(store.get_bytes(seg_key)))
    t1_uids = [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files if f.name.startswith("t1-")]
    assert seg_key == f"dicom/{seg.StudyInstanceUID}/{seg.SeriesInstanceUID}/{seg.SOPInstanceUID}.dcm"
    assert seg.SegmentationType == "BINARY" and seg.PatientID == PATIENT
    [number] = seg.segment_numbers
    assert seg.get_segment_description(number).segmented_property_type.value == "12738006"
    assert {uid for _, _, uid in seg.get_source_image_uids()} <= set(t1_uids)
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=t1_uids, segment_numbers=[number])
    assert int((frames > 0).sum()) == int(mask.sum())
