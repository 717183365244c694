"""A model's mask as a DICOM Segmentation (PS3.3 A.51) referencing the slices it was computed from.

highdicom builds and checks the object; the frames are the mask on the source slices' own pixel
grids (inference.volumes.mask_on_slices), one frame per source instance, so every frame names its
source SOP instance (Derivation Image, PS3.3 C.7.6.16.2.6) and a viewer overlays it without
resampling.
"""

from collections.abc import Sequence
from copy import deepcopy
from io import BytesIO

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from integration.models.manifest import Manifest
from integration.messages import Coding

# FHIR code system URIs -> DICOM Coding Scheme Designators (PS3.16 Section 8).
_DESIGNATORS = {
    "http://snomed.info/sct": "SCT",
    "http://loinc.org": "LN",
    "http://radlex.org": "RADLEX",
    "http://www.radlex.org": "RADLEX",
    "http://dicom.nema.org/resources/ontology/DCM": "DCM",
}
# CID 7150 Segmentation Property Categories: what a structure-outlining model segments.
ANATOMICAL_STRUCTURE = hd.sr.CodedConcept(value="91723000", scheme_designator="SCT", meaning="Anatomical structure")
# Series Number of the derived series: high, so it sorts after the acquired series in viewers.
SERIES_NUMBER = 900
MANUFACTURER = "DoctorAI"
_TYPE_2 = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
# Device Serial Number (0018,1000) is type 1 in Enhanced General Equipment; the "device" is software.
DEVICE_SERIAL = "doctorai-inference"


def seg_uids(job_id: str) -> tuple[str, str]:
    """(Series Instance UID, SOP Instance UID) of a job's segmentation: derived from the job id, so a
    retried job writes the same object (PS3.5 9: UIDs from a hash under a registered root)."""
    return generate_uid(entropy_srcs=[job_id, "seg-series"]), generate_uid(entropy_srcs=[job_id, "seg-instance"])


def _completed(sources: Sequence[Dataset]) -> list[Dataset]:
    """Copies of the source headers carrying what the SEG copies from them.

    Patient and General Study attributes are type 2 (PS3.3 C.7.1.1, C.7.2.1): present, possibly
    empty; senders leave them out anyway, and an empty value says the same. Frame of Reference
    UID is type 1 for MR and CT (C.7.4.1) but some senders omit it; one derived from the series
    UID keeps the frames in the one frame of reference the series' geometry already implies.
    """
    completed = []
    for ds in sources:
        copy = deepcopy(ds)
        for keyword in _TYPE_2:
            if keyword not in copy:
                setattr(copy, keyword, "")
        if "FrameOfReferenceUID" not in copy:
            copy.FrameOfReferenceUID = generate_uid(entropy_srcs=[str(ds.get("SeriesInstanceUID", "")), "frame"])
        completed.append(copy)
    return completed


def _concept(coding: Coding) -> hd.sr.CodedConcept:
    designator = _DESIGNATORS.get(coding.system.rstrip("/"), coding.system)
    return hd.sr.CodedConcept(value=coding.code, scheme_designator=designator, meaning=coding.display)


def segmentation(frames: NDArray[np.bool_], sources: Sequence[Dataset], *, manifest: Manifest, job_id: str) -> Dataset:
    """A BINARY Segmentation with one segment (the manifest's first output), frame i over `sources[i]`.

    `sources` are the source slices' headers (no pixel data needed), `frames` the mask on their
    pixel grids as (slices, rows, columns). Empty frames are left out, as highdicom does by default.
    A model not validated for clinical use marks it RESEARCH (Content Qualification, PS3.3 C.8.13.2).
    """
    structure = manifest.outputs[0]
    algorithm = hd.AlgorithmIdentificationSequence(
        name=manifest.name, version=manifest.version, family=codes.cid7162.ArtificialIntelligence
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=structure.text or structure.concept.display,
        segmented_property_category=ANATOMICAL_STRUCTURE,
        segmented_property_type=_concept(structure.concept),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    series_uid, sop_uid = seg_uids(job_id)
    seg = hd.seg.Segmentation(
        source_images=_completed(sources),
        pixel_array=frames.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=manifest.name,
        software_versions=manifest.version,
        device_serial_number=DEVICE_SERIAL,
        series_description=f"{manifest.name} {manifest.version} segmentation",
        content_label="AI_MASK",
        content_description=f"{structure.concept.display} by {manifest.name} {manifest.version}",
        content_qualification=(
            hd.ContentQualificationValues.PRODUCT if manifest.clinical_use else hd.ContentQualificationValues.RESEARCH
        ),
    )
    return seg


def to_bytes(seg: Dataset) -> bytes:
    """The segmentation as a DICOM file (PS3.10 preamble and file meta)."""
    out = BytesIO()
    seg.save_as(out, enforce_file_format=True)
    return out.getvalue()
