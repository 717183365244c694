"""The SR builder: a result as a Comprehensive 3D SR (TID 1500) in the source study, read back with pydicom and highdicom."""

import io
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import highdicom as hd
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from results.sr import NOT_FOR_CLINICAL_USE, sr_uids, structured_report
from integration.messages import Coding, Finding, InferenceResult, Measurement

PNEUMONIA = Coding(system="http://snomed.info/sct", code="233604007", display="Pneumonia")
EFFUSION = Coding(system="http://snomed.info/sct", code="60046008", display="Pleural effusion")
VOLUME = Coding(system="http://snomed.info/sct", code="118565006", display="Volume")
CREATED = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture
def header() -> Dataset:
    return dcmread(Path(str(get_testdata_file("RG1_UNCR.dcm"))), stop_before_pixels=True)


def _result(header: Dataset, *, job_id: str = "job-1", clinical_use: bool = False) -> InferenceResult:
    return InferenceResult(
        correlation_id="corr-1",
        job_id=job_id,
        study_uid=str(header.StudyInstanceUID),
        revision=1,
        model="pneumonia-cxr",
        model_version="1.2.0",
        input_keys=["dicom/x.dcm"],
        report_code=Coding(system="http://loinc.org", code="18748-4", display="Diagnostic imaging study"),
        report_category=Coding(system="http://terminology.hl7.org/CodeSystem/v2-0074", code="RAD", display="Radiology"),
        findings=[
            Finding(concept=PNEUMONIA, probability=0.87, threshold=0.5, positive=True),
            Finding(concept=EFFUSION, probability=0.12, threshold=0.5, positive=False),
        ],
        measurements=[Measurement(concept=VOLUME, value=1234.5, unit="cm3", text="Brain volume")],
        clinical_use=clinical_use,
        last_received_at=CREATED,
    )


def _written(sr: Dataset) -> Dataset:
    buffer = io.BytesIO()
    sr.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


def _texts(items: Iterable[Dataset]) -> list[str]:
    return [str(i.TextValue) for i in items if i.ValueType == "TEXT"]


def test_the_sr_joins_the_source_study_and_holds_every_finding(header: Dataset) -> None:
    other = Dataset()
    other.StudyInstanceUID = header.StudyInstanceUID
    other.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.9.1"
    other.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.9.1.1"
    other.SOPClassUID = header.SOPClassUID
    ds = _written(structured_report(_result(header), header, [header, other], created=CREATED))

    assert ds.SOPClassUID == COMPREHENSIVE_3D_SR
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.Modality == "SR"
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate"):
        assert ds[keyword].value == header[keyword].value, keyword
    for keyword in ("StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        assert ds[keyword].value == header[keyword].value, keyword
    assert (ds.ContentDate, ds.ContentTime) == ("20260304", "050607")
    assert ds.ContentQualification == "RESEARCH"
    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == ("COMPLETE", "UNVERIFIED", "PRELIMINARY")
    # Evidence: both inputs, in the current study (PS3.3 C.17.2.1).
    (study,) = ds.CurrentRequestedProcedureEvidenceSequence
    referenced = {
        str(s.ReferencedSOPInstanceUID) for se in study.ReferencedSeriesSequence for s in se.ReferencedSOPSequence
    }
    assert referenced == {str(header.SOPInstanceUID), other.SOPInstanceUID}

    # TID 1500, read back by highdicom: one group per finding and one per measured value.
    report = hd.sr.Comprehensive3DSR.from_dataset(ds).content
    assert isinstance(report, hd.sr.MeasurementReport)
    assert report[0].ContentTemplateSequence[0].TemplateIdentifier == "1500"
    pneumonia, effusion, volume = report.get_image_measurement_groups()
    for group, finding, present in ((pneumonia, PNEUMONIA, "52101004"), (effusion, EFFUSION, "272519000")):
        assert group.finding_type is not None and group.finding_type.value == finding.code
        assert group.finding_type.scheme_designator == "SCT"
        (evaluation,) = group.get_qualitative_evaluations()
        assert (evaluation.name.value, evaluation.value.value, evaluation.value.scheme_designator) == (
            finding.code,
            present,
            "SCT",
        )
        (probability,) = group.get_measurements()
        assert (probability.name.value, probability.name.scheme_designator) == ("122157", "DCM")
        assert probability.unit.value == "1" and probability.unit.scheme_designator == "UCUM"
        # TID 4019: the model as the algorithm of the group.
        assert _texts(group[0].ContentSequence)[-2:] == ["pneumonia-cxr", "1.2.0"]
    assert float(pneumonia.get_measurements()[0].value) == pytest.approx(0.87)
    assert float(effusion.get_measurements()[0].value) == pytest.approx(0.12)
    (brain,) = volume.get_measurements()
    assert (brain.name.value, float(brain.value), brain.unit.value) == ("118565006", 1234.5, "cm3")
    assert volume.tracking_identifier == "Brain volume"
    # Not validated for clinical use: said in words at the root of the report.
    assert NOT_FOR_CLINICAL_USE in _texts(report[0].ContentSequence)


def test_uids_derive_from_the_job_so_a_replay_makes_the_same_instance(header: Dataset) -> None:
    first = structured_report(_result(header), header, [], created=CREATED)
    again = structured_report(_result(header), header, [], created=datetime.now(UTC))
    other = structured_report(_result(header, job_id="job-2"), header, [], created=CREATED)
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == sr_uids("job-1")
    assert (again.SeriesInstanceUID, again.SOPInstanceUID) == sr_uids("job-1")
    assert first.SeriesInstanceUID != other.SeriesInstanceUID and first.SOPInstanceUID != other.SOPInstanceUID
    assert first.SOPInstanceUID not in (header.SOPInstanceUID, first.SeriesInstanceUID)

    # The tracking UIDs of the groups are stable too.
    def tracking(sr: Dataset) -> list[str]:
        report = hd.sr.Comprehensive3DSR.from_dataset(sr).content
        assert isinstance(report, hd.sr.MeasurementReport)
        return [str(g.tracking_uid) for g in report.get_image_measurement_groups()]

    assert tracking(first) == tracking(again) != tracking(other)


def test_a_validated_model_has_no_warning_and_missing_header_values_stay_empty(header: Dataset) -> None:
    sparse = Dataset()
    sparse.update(header)
    del sparse.AccessionNumber, sparse.StudyID, sparse.ReferringPhysicianName, sparse.PatientBirthDate
    ds = _written(structured_report(_result(header, clinical_use=True), sparse, [], created=CREATED))
    assert ds.ContentQualification == "PRODUCT"
    assert NOT_FOR_CLINICAL_USE not in _texts(ds.ContentSequence)
    assert (ds.AccessionNumber, ds.StudyID, ds.PatientBirthDate) == ("", "", "")
    assert ds.StudyInstanceUID == header.StudyInstanceUID
