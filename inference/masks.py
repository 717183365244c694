"""What a segmentation model's output becomes: a cleaned mask, its volume measurements, and the mask
stored beside the study, as NIfTI and as a DICOM SEG over the source slices (PS3.3 A.51)."""

import numpy as np
from numpy.typing import NDArray

from inference import inputs, segmentations, volumes
from inference.errors import InferenceError
from inference.postprocess import volume_measurements
from integration.messages import InferenceRequest, Measurement
from integration.models.manifest import Manifest
from storage.objects import ObjectStore, dicom_key, result_key


def store(
    objects: ObjectStore, request: InferenceRequest, manifest: Manifest, model_input: inputs.ModelInput, raw: NDArray[np.float32]
) -> tuple[list[Measurement], list[str]]:
    """The mask's measurements, and the keys of the NIfTI and SEG objects written for it."""
    post = manifest.postprocessing
    if model_input.affine is None or raw.ndim != 5:
        raise InferenceError(f"a segmentation needs a volume input and output, got output shape {raw.shape}")
    mask = volumes.clean_mask(
        raw[0, 0] > post.mask_threshold, largest_component=post.largest_component, fill_holes=post.fill_holes
    )
    spacing = tuple(float(v) for v in np.linalg.norm(model_input.affine[:3, :3], axis=0))
    measured = volume_measurements(manifest, int(mask.sum()), (spacing[0], spacing[1], spacing[2]))
    nifti_key = result_key(request.job_id, "mask.nii.gz")
    objects.put_bytes(nifti_key, volumes.mask_nifti(mask, model_input.affine), "application/gzip")
    return measured, [_store_seg(objects, request, manifest, model_input, mask), nifti_key]


def _store_seg(
    objects: ObjectStore, request: InferenceRequest, manifest: Manifest, model_input: inputs.ModelInput, mask: NDArray[np.bool_]
) -> str:
    """Write the mask as a DICOM SEG over the source slices, beside the study's instances; its key."""
    assert model_input.affine is not None
    # The headers kept when the volume was read: no second trip to object storage per slice.
    headers = volumes.in_slice_order(model_input.headers)
    frames = volumes.mask_on_slices(mask, model_input.affine, headers)
    seg = segmentations.segmentation(frames, headers, manifest=manifest, job_id=request.job_id)
    key = dicom_key(request.study_uid, str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID))
    objects.put_bytes(key, segmentations.to_bytes(seg), "application/dicom")
    return key
