"""Preprocessing on real pydicom-data files."""

from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from inference import inputs, preprocess
from inference.errors import CannotDecode, InputNotAccepted
from inference.packages import lookup
from integration.messages import InferenceRequest, TextInput


def _path(name: str) -> Path:
    path = get_testdata_file(name)
    assert isinstance(path, str), name
    return Path(path)


def _bytes(name: str) -> bytes:
    return _path(name).read_bytes()


def _relabelled(data: bytes, photometric: str) -> bytes:
    ds = dcmread(BytesIO(data))
    ds.PhotometricInterpretation = photometric
    out = BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_chest_radiograph_becomes_model_input() -> None:
    manifest, _ = lookup("chest-xray-pneumonia")
    x = preprocess.prepare(_bytes("RG1_UNCR.dcm"), manifest)
    assert x.shape == (150, 150, 3)
    assert x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert x.max() - x.min() > 1.0  # real contrast, not a flat image
    assert np.array_equal(x[..., 0], x[..., 2])  # greyscale replicated to three channels


def test_monochrome1_is_inverted() -> None:
    manifest, _ = lookup("chest-xray-pneumonia")
    data = _bytes("RG1_UNCR.dcm")
    assert dcmread(BytesIO(data), stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    as_stored = preprocess.prepare(data, manifest)
    as_monochrome2 = preprocess.prepare(_relabelled(data, "MONOCHROME2"), manifest)
    np.testing.assert_allclose(as_stored, -as_monochrome2, atol=1e-5)


def test_monochrome1_lungs_end_up_dark() -> None:
    # Air (lungs) is bright in the stored MONOCHROME1 values; after preprocessing it is dark, so
    # the image centre (mediastinum, brighter) is above the mean of the lung fields on both sides.
    ds = dcmread(_path("RG1_UNCR.dcm"))
    image = preprocess.grey_unit(ds)
    rows, cols = image.shape
    band = image[rows // 3 : 2 * rows // 3]
    lungs = np.concatenate([band[:, cols // 6 : cols // 3], band[:, 2 * cols // 3 : 5 * cols // 6]], axis=1)
    centre = band[:, 5 * cols // 12 : 7 * cols // 12]
    assert centre.mean() > lungs.mean()


def test_dataset_without_pixel_data_cannot_be_decoded() -> None:
    ds = dcmread(_path("rtplan.dcm"))
    with pytest.raises(CannotDecode, match="pixel data"):
        preprocess.grey_unit(ds)


def test_garbage_bytes_cannot_be_decoded() -> None:
    manifest, _ = lookup("chest-xray-pneumonia")
    with pytest.raises(CannotDecode):
        preprocess.prepare(b"not a dicom file" * 20, manifest)


def test_mr_is_not_accepted_by_the_chest_model() -> None:
    manifest, _ = lookup("chest-xray-pneumonia")
    with pytest.raises(InputNotAccepted, match="MR"):
        preprocess.prepare(_bytes("MR_small.dcm"), manifest)


def test_report_texts_over_the_bound_are_refused_before_they_are_split() -> None:
    manifest, _ = lookup("report-triage")
    request = InferenceRequest(
        correlation_id="c", job_id="j", study_uid="1.2.3", revision=1, model=manifest.name,
        model_version=manifest.version, last_received_at=datetime.now(UTC), inputs=[],
        texts=[TextInput(ref="DiagnosticReport/1", text="No pneumothorax. " * 100)],
    )
    with pytest.raises(InputNotAccepted, match="1700 characters; report-triage reads at most 1000"):
        inputs.model_input(request, manifest, lambda key: b"", max_text_chars=1000)
    assert inputs.model_input(request, manifest, lambda key: b"", max_text_chars=1700).batch
