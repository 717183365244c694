"""A mask on the Colin27 T1 (Debian mricron-data) as a DICOM SEG over the MR slices it came from."""

import random
from io import BytesIO

import highdicom as hd
import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid

from inference import segmentations, volumes
from inference.packages import deepbet
from integration.models.manifest import Preprocessing
from tests.inference.packages.test_deepbet import PATIENT, TEMPLATES, _slice


@pytest.fixture(scope="module")
def colin27() -> tuple[list[Dataset], np.ndarray]:
    """The T1 as 181 axial MR slices (headers only, shuffled) and its reference brain mask in RAS."""
    import nibabel

    t1 = nibabel.as_closest_canonical(nibabel.load(TEMPLATES / "ch2.nii.gz"))
    data = np.asarray(t1.dataobj)
    ni, nj, nk = data.shape
    study, series = generate_uid(), generate_uid()
    slices = []
    for k in range(nk):
        x, y, z = (t1.affine @ [ni - 1, nj - 1, k, 1])[:3]
        slices.append(_slice(study, series, nk - k, data[::-1, ::-1, k].T, [-x, -y, z], "T1 3D"))
    random.Random(7).shuffle(slices)
    reference = np.asarray(nibabel.as_closest_canonical(nibabel.load(TEMPLATES / "ch2bet.nii.gz")).dataobj) > 0
    return slices, reference


def test_the_seg_of_a_mask_parses_and_holds_every_voxel_on_its_source_slice(
    colin27: tuple[list[Dataset], np.ndarray],
) -> None:
    slices, mask = colin27
    volume = volumes.assemble(slices, Preprocessing(kind="volume", normalisation="none", orientation="RAS"))
    assert volume.array.shape == mask.shape
    # Headers only, as the worker reads them from object storage.
    headers = [dcmread(BytesIO(_file(ds)), stop_before_pixels=True) for ds in volumes.in_slice_order(slices)]
    frames = volumes.mask_on_slices(mask, volume.affine, headers)
    assert frames.sum() == mask.sum()

    seg_dataset = segmentations.segmentation(frames, headers, manifest=deepbet.manifest(), job_id="job-1")
    data = segmentations.to_bytes(seg_dataset)
    seg = hd.seg.segread(BytesIO(data))

    assert seg.SegmentationType == "BINARY" and seg.PatientID == PATIENT
    assert (seg.SeriesInstanceUID, seg.SOPInstanceUID) == segmentations.seg_uids("job-1")
    [number] = seg.segment_numbers
    description = seg.get_segment_description(number)
    assert description.segmented_property_type.value == "12738006"
    assert description.segmented_property_type.scheme_designator == "SCT"
    assert description.segmented_property_category.value == "91723000"
    assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    assert description.algorithm_identification[0].AlgorithmName == "brain-extraction"
    assert seg.ContentQualification == "RESEARCH"
    sources = [str(h.SOPInstanceUID) for h in headers]
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced <= set(sources)
    # Every frame lies over the slice it names, so the mask comes back slice by slice.
    back = seg.get_pixels_by_source_instance(source_sop_instance_uids=sources, segment_numbers=[1])[..., 0]
    assert back.dtype == np.uint8 and back.shape == frames.shape
    np.testing.assert_array_equal(back > 0, frames)
    assert int((back > 0).sum()) == int(mask.sum())


def _file(ds: Dataset) -> bytes:
    out = BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
