"""Mapping of index rows and inference results to FHIR R4 resources."""

import hashlib
from decimal import Decimal
from datetime import UTC, date, datetime

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.observation import Observation
from sqlalchemy import Engine

from storage import fhir
from results import mapping
from storage.fhir import references
from integration.messages import Coding, Finding, InferenceResult, Measurement
from storage.db import session_scope
from storage.instances import ReceivedInstance, study_instances
from storage.tables.index import Study

EFFUSION = Coding(system="http://snomed.info/sct", code="60046008", display="Pleural effusion")
PNEUMONIA = Coding(system="http://snomed.info/sct", code="233604007", display="Pneumonia")
STUDY_DATE = date(2004, 8, 26)  # RG1's StudyDate


def _result(*, clinical_use: bool) -> InferenceResult:
    return InferenceResult(
        correlation_id="c0ffee00-0000-5000-8000-000000000000",
        job_id="5f0c7c1e-3f55-4a37-9c64-8d7d0d1b1a11",
        study_uid="1.3.6.1.4.1.5962.1.2.9.20040826185059.5457",
        revision=1,
        model="pneumonia-cxr",
        model_version="1.2.0",
        patient_id="9RG1",
        input_keys=["dicom/1.3.6.1.4.1.5962.1.2.9.20040826185059.5457/s/i.dcm"],
        report_code=Coding(system="http://loinc.org", code="18748-4", display="Diagnostic imaging study"),
        report_category=Coding(system="http://terminology.hl7.org/CodeSystem/v2-0074", code="RAD", display="Radiology"),
        findings=[
            Finding(concept=PNEUMONIA, probability=0.8731, threshold=0.5, positive=True),
            Finding(concept=EFFUSION, probability=0.1204, threshold=0.4, positive=False),
        ],
        clinical_use=clinical_use,
        last_received_at=datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
    )


def test_report_validates_as_r4_and_links_its_observations() -> None:
    report, observations = mapping.report_from_result(_result(clinical_use=False), "Patient/9RG1", effective=STUDY_DATE)
    parsed = DiagnosticReport.model_validate_json(fhir.dump(report))
    assert parsed.id == "5f0c7c1e-3f55-4a37-9c64-8d7d0d1b1a11"
    assert parsed.status == "preliminary"
    assert parsed.subject is not None and parsed.subject.reference == "Patient/9RG1"
    assert [r.reference for r in parsed.imagingStudy or []] == [
        "ImagingStudy/1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"
    ]
    assert [r.reference for r in parsed.result or []] == [f"Observation/{o.id}" for o in observations]
    assert [o.id for o in observations] == [f"{parsed.id}-0", f"{parsed.id}-1"]
    assert parsed.identifier is not None and parsed.identifier[0].system == "urn:doctorai:job"
    # Only the positive finding is a conclusion code.
    assert [c.coding[0].code for c in parsed.conclusionCode or [] if c.coding] == ["233604007"]
    assert parsed.conclusion is not None and "Pneumonia positive (probability 0.87" in parsed.conclusion
    assert "Pleural effusion negative (probability 0.12" in parsed.conclusion
    assert [(e.url, e.valueString) for e in parsed.extension or []] == [("urn:doctorai:model", "pneumonia-cxr 1.2.0")]

    for observation, expected in zip(observations, [("POS", 0.8731), ("NEG", 0.1204)], strict=True):
        obs = Observation.model_validate_json(fhir.dump(observation))
        assert obs.status == "preliminary"
        assert obs.category is not None and obs.category[0].coding is not None
        assert obs.category[0].coding[0].code == "imaging"
        assert obs.valueQuantity is not None
        assert float(obs.valueQuantity.value or 0) == expected[1]
        assert (obs.valueQuantity.unit, obs.valueQuantity.system, obs.valueQuantity.code) == (
            "probability",
            "http://unitsofmeasure.org",
            "1",
        )
        assert obs.interpretation is not None and obs.interpretation[0].coding is not None
        assert obs.interpretation[0].coding[0].code == expected[0]
        assert obs.method is not None and obs.method.text == "pneumonia-cxr 1.2.0"
        assert [d.reference for d in obs.derivedFrom or []] == [
            "ImagingStudy/1.3.6.1.4.1.5962.1.2.9.20040826185059.5457"
        ]


def test_effective_is_when_the_study_was_made_and_issued_when_the_report_was() -> None:
    """An EHR's timeline puts a finding on the day of the images, not of the inference."""
    issued = datetime(2024, 5, 1, 10, 5, tzinfo=UTC)
    report, observations = mapping.report_from_result(
        _result(clinical_use=False), "Patient/9RG1", effective=STUDY_DATE, issued=issued
    )
    parsed = DiagnosticReport.model_validate_json(fhir.dump(report))
    assert str(parsed.effectiveDateTime) == "2004-08-26" and parsed.issued == issued
    for observation in observations:
        obs = Observation.model_validate_json(fhir.dump(observation))
        assert str(obs.effectiveDateTime) == "2004-08-26" and obs.issued == issued


def test_a_study_without_a_date_is_effective_on_the_day_it_arrived(engine: Engine, indexed: ReceivedInstance) -> None:
    with session_scope(engine) as session:
        study = session.get(Study, indexed.study_uid)
        assert study is not None
        assert mapping.study_effective(study) == STUDY_DATE
        study.study_date = ""
        assert mapping.study_effective(study) == study.first_received_at.date()


def test_not_for_clinical_use_is_tagged_and_stated() -> None:
    report, observations = mapping.report_from_result(_result(clinical_use=False), "Patient/9RG1", effective=STUDY_DATE)
    assert report.conclusion is not None and report.conclusion.startswith("NOT FOR CLINICAL USE: ")
    for resource in [report, *observations]:
        assert resource.meta is not None
        assert [(t.system, t.code) for t in resource.meta.tag or []] == [("urn:doctorai:tags", "not-for-clinical-use")]
    assert all(o.note and o.note[0].text and o.note[0].text.startswith("Not for clinical use") for o in observations)
    # R4 DiagnosticReport has no `note` element: the serialised report must not carry one.
    assert '"note"' not in fhir.dump(report)


def test_validated_model_output_carries_no_warning() -> None:
    report, observations = mapping.report_from_result(_result(clinical_use=True), "Patient/9RG1", effective=STUDY_DATE)
    assert report.meta is None
    assert report.conclusion is not None and not report.conclusion.startswith("NOT FOR CLINICAL USE")
    assert all(o.note is None and o.meta is None for o in observations)


def test_amended_status_is_kept() -> None:
    report, _ = mapping.report_from_result(_result(clinical_use=False), "Patient/9RG1", effective=STUDY_DATE, status="amended")
    assert DiagnosticReport.model_validate_json(fhir.dump(report)).status == "amended"


def test_patient_resource_id_rules() -> None:
    assert references.patient_resource_id("9RG1") == "9RG1"
    assert references.patient_resource_id("A-1.b") == "A-1.b"
    assert references.patient_resource_id("x" * 64) == "x" * 64
    for odd in ["PID^1", "ÄBC", "has space", "y" * 65, "a/b"]:
        expected = "p-" + hashlib.sha256(odd.encode()).hexdigest()[:40]
        assert references.patient_resource_id(odd) == expected
    # An empty PatientID must not merge every anonymous study into one Patient.
    assert references.patient_resource_id("", study_uid="1.2.3") != references.patient_resource_id("", study_uid="1.2.4")


def test_patient_from_study_keeps_the_dicom_patient_id() -> None:
    patient = mapping.patient_from_study("PID^1", patient_name="CompressedSamples^RG1")
    assert patient.identifier is not None
    assert (patient.identifier[0].system, patient.identifier[0].value) == ("urn:doctorai:dicom-patient-id", "PID^1")
    assert patient.name is not None and patient.name[0].family == "CompressedSamples"
    assert patient.name[0].given == ["RG1"]


def test_imaging_study_from_the_index(engine: Engine, indexed: ReceivedInstance) -> None:
    with session_scope(engine) as session:
        study = session.get(Study, indexed.study_uid)
        assert study is not None
        resource = mapping.imaging_study_from_index(study, study_instances(session, study_uid=indexed.study_uid))
    parsed = ImagingStudy.model_validate_json(fhir.dump(resource))
    assert parsed.id == indexed.study_uid
    assert parsed.identifier is not None
    assert (parsed.identifier[0].system, parsed.identifier[0].value) == (
        "urn:dicom:uid",
        f"urn:oid:{indexed.study_uid}",
    )
    assert parsed.status == "available"
    assert parsed.subject.reference == "Patient/9RG1"
    assert str(parsed.started) == "2004-08-26"
    assert (parsed.numberOfSeries, parsed.numberOfInstances) == (1, 1)
    series = (parsed.series or [])[0]
    assert series.uid == indexed.series_uid
    assert (series.modality.system, series.modality.code) == ("http://dicom.nema.org/resources/ontology/DCM", "CR")
    assert series.bodySite is not None and series.bodySite.code == "43799004"
    instance = (series.instance or [])[0]
    assert instance.uid == indexed.sop_uid
    assert (instance.sopClass.system, instance.sopClass.code) == (
        "urn:ietf:rfc:3986",
        "urn:oid:1.2.840.10008.5.1.4.1.1.1",
    )
    assert instance.number == 1


def test_a_measurement_becomes_a_quantity_in_its_ucum_unit_and_text_results_focus_on_their_report() -> None:
    volume = Coding(system="http://snomed.info/sct", code="118565006", display="Volume")
    result = _result(clinical_use=False).model_copy(
        update={
            "findings": [],
            "measurements": [Measurement(concept=volume, value=1534.567, unit="cm3", text="Total intracranial volume")],
            "output_keys": ["results/job/mask.nii.gz"],
            "focus": ["DiagnosticReport/rad-1"],
        }
    )
    report, [observation] = mapping.report_from_result(result, "Patient/9RG1", effective=STUDY_DATE)
    parsed = Observation.model_validate_json(fhir.dump(observation))
    assert parsed.valueQuantity is not None
    quantity = parsed.valueQuantity
    assert (quantity.value, quantity.unit, quantity.system, quantity.code) == (
        Decimal("1534.57"),
        "cm3",
        "http://unitsofmeasure.org",
        "cm3",
    )
    assert parsed.code.text == "Total intracranial volume"
    assert [r.reference for r in parsed.focus or []] == ["DiagnosticReport/rad-1"]
    assert [(e.url, e.valueString) for e in parsed.extension or []] == [
        ("urn:doctorai:output-object", "results/job/mask.nii.gz")
    ]
    assert [r.reference for r in report.result or []] == [f"Observation/{parsed.id}"]
    assert "Total intracranial volume 1534.6 cm3" in (report.conclusion or "")
