"""A model's result as a DICOM Comprehensive 3D SR holding a TID 1500 Measurement Report (highdicom).

The SR joins the study it is about: patient and study attributes are copied from the header of
the first input instance (PS3.3 C.7.1.1, C.7.2.1), so a PACS files it next to the images. Its
Series and SOP Instance UIDs derive from the job id alone, so a replayed result makes the same
instance and the PACS keeps one copy. The SR of an amended report names the SR it replaces in its
Predecessor Documents Sequence (PS3.3 C.17.2.1).

Content (PS3.16 TID 1500): one TID 1501 measurement group per finding, with the finding's concept
as a qualitative evaluation valued SNOMED CT Present or Absent (the model's threshold decision)
and the probability as a numeric measurement (DCM 122157 "Probability", UCUM "1"); one group per
measured value (a volume in cm3). Each group names the model as its algorithm (TID 4019). A result
not validated for clinical use says so in a Comment and in Content Qualification RESEARCH.
"""

from collections.abc import Sequence
from datetime import datetime

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from integration.messages import Coding, Finding, InferenceResult, Measurement

MANUFACTURER = "DoctorAI"
# Above the series numbers modalities use, so the SR series sorts after the images.
SERIES_NUMBER = 9901
NOT_FOR_CLINICAL_USE = "NOT FOR CLINICAL USE: results of a model not validated at this site."
# Coding Scheme Designators (PS3.16 8.1); a system without one gets a private designator (PS3.16 8.2).
_SCHEMES = {
    "http://snomed.info/sct": "SCT",
    "http://loinc.org": "LN",
    "http://radlex.org": "RADLEX",
    "http://dicom.nema.org/resources/ontology/DCM": "DCM",
    "http://unitsofmeasure.org": "UCUM",
}
LOCAL_SCHEME = "99DOCTORAI"
# Type 2 attributes of the Patient and General Study modules the SR must carry, empty when unknown.
_PATIENT_AND_STUDY = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
)


def sr_uids(job_id: str) -> tuple[str, str]:
    """The (Series Instance UID, SOP Instance UID) of a job's SR: the same for every replay."""
    return (
        str(generate_uid(entropy_srcs=[job_id, "sr-series"])),
        str(generate_uid(entropy_srcs=[job_id, "sr-instance"])),
    )


def _concept(coding: Coding) -> hd.sr.CodedConcept:
    # Code Meaning is at most 64 characters (LO, PS3.3 8.3).
    return hd.sr.CodedConcept(
        value=coding.code, scheme_designator=_SCHEMES.get(coding.system, LOCAL_SCHEME), meaning=coding.display[:64]
    )


def _tracking(job_id: str, label: str, n: int) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=str(generate_uid(entropy_srcs=[job_id, "tracking", str(n)])), identifier=label)


def _finding_group(
    finding: Finding, algorithm: hd.sr.AlgorithmIdentification, tracking: hd.sr.TrackingIdentifier
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    concept = _concept(finding.concept)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        finding_type=concept,
        algorithm_id=algorithm,
        qualitative_evaluations=[
            # SNOMED CT Present / Absent (PS3.16 CID 240): the decision at the model's threshold.
            hd.sr.QualitativeEvaluation(name=concept, value=codes.SCT.Present if finding.positive else codes.SCT.Absent)
        ],
        measurements=[
            hd.sr.Measurement(
                name=codes.DCM.Probability,
                value=finding.probability,
                unit=codes.UCUM.NoUnits,  # UCUM "1": a ratio between 0 and 1
            )
        ],
    )


def _measurement_group(
    measurement: Measurement, algorithm: hd.sr.AlgorithmIdentification, tracking: hd.sr.TrackingIdentifier
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    unit = hd.sr.CodedConcept(value=measurement.unit, scheme_designator="UCUM", meaning=measurement.unit)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking,
        algorithm_id=algorithm,
        measurements=[hd.sr.Measurement(name=_concept(measurement.concept), value=measurement.value, unit=unit)],
    )


def _content(result: InferenceResult) -> hd.sr.MeasurementReport:
    # TID 4019: the model, by name and version, as the algorithm that made every value.
    algorithm = hd.sr.AlgorithmIdentification(name=result.model, version=result.model_version)
    groups = [
        _finding_group(f, algorithm, _tracking(result.job_id, f.concept.display or f.concept.code, n))
        for n, f in enumerate(result.findings)
    ]
    groups += [
        _measurement_group(
            m, algorithm, _tracking(result.job_id, m.text or m.concept.display, len(result.findings) + n)
        )
        for n, m in enumerate(result.measurements)
    ]
    # TID 1002: the engine is the observer (a device), named by a UID stable for the model version.
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=str(generate_uid(entropy_srcs=["doctorai-device", result.model, result.model_version])),
        name=MANUFACTURER,
        manufacturer_name=MANUFACTURER,
        model_name=f"{result.model} {result.model_version}"[:64],
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device, observer_identifying_attributes=device
            )
        ),
        procedure_reported=_concept(result.report_code),
        imaging_measurements=groups,
    )
    if not result.clinical_use:
        # TID 1500 has no flag for it: a Comment (DCM 121106) in the root container says it in words.
        report[0].ContentSequence.append(
            hd.sr.TextContentItem(name=codes.DCM.Comment, value=NOT_FOR_CLINICAL_USE, relationship_type="CONTAINS")
        )
    return report


def _source(header: Dataset) -> Dataset:
    """The first input's header with every Type 2 patient and study attribute present (empty when unknown)."""
    source = Dataset()
    source.update(header)
    for keyword in _PATIENT_AND_STUDY:
        if keyword not in source or source[keyword].value is None:
            setattr(source, keyword, "")
    return source


def structured_report(
    result: InferenceResult,
    header: Dataset,
    evidence: Sequence[Dataset],
    *,
    created: datetime,
    replaces: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """The SR of a result: patient and study from `header` (the first input's), evidence the inputs.

    `evidence` holds each input instance's StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID and
    SOPClassUID (PS3.3 C.17.2.1: the Current Requested Procedure Evidence Sequence); `created` dates
    the content, so a replay built at another time still has the same content date. `replaces`
    holds the same four UIDs of the SR this one amends (its Predecessor Documents Sequence).
    """
    series_uid, sop_uid = sr_uids(result.job_id)
    source = _source(header)
    seen = {str(source.SOPInstanceUID)}
    others = [e for e in evidence if str(e.SOPInstanceUID) not in seen]
    return hd.sr.Comprehensive3DSR(
        evidence=[source, *others],
        content=_content(result),
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBER,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=result.model[:64],
        software_versions=result.model_version,
        series_description=f"AI {result.model} {result.model_version}"[:64],
        # PS3.3 C.12.1.1.10: RESEARCH while the model is not validated for clinical use.
        content_qualification="PRODUCT" if result.clinical_use else "RESEARCH",
        content_date=created.date(),
        content_time=created.time(),
        series_date=created.date(),
        series_time=created.time(),
        previous_versions=list(replaces) or None,
        # Complete (every finding is in it) and unverified, preliminary until a physician signs it.
        is_complete=True,
        is_final=False,
        is_verified=False,
    )
