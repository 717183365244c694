"""Pure mappings from our index rows and messages to FHIR R4 resources (built with the models)."""

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from storage import fhir
from storage.fhir.references import patient_resource_id, study_resource_id
from storage.fhir.systems import (
    DCM_SYSTEM,
    DICOM_UID_SYSTEM,
    JOB_SYSTEM,
    PATIENT_ID_SYSTEM,
    SNOMED_SYSTEM,
    UCUM_SYSTEM,
    URI_SYSTEM,
    V2_0203_SYSTEM,
)
from integration.messages import Coding, Finding, InferenceResult, Measurement
from storage.tables.index import Instance, Series, Study

MODEL_EXTENSION = "urn:doctorai:model"
THRESHOLD_EXTENSION = "urn:doctorai:threshold"
OUTPUT_OBJECT_EXTENSION = "urn:doctorai:output-object"
TAG_SYSTEM = "urn:doctorai:tags"
NOT_FOR_CLINICAL_USE = "not-for-clinical-use"
OBSERVATION_CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

# DICOM Body Part Examined -> SNOMED CT (PS3.16 Annex L); other terms are kept as text only.
_BODY_PARTS: dict[str, tuple[str, str]] = {
    "CHEST": ("43799004", "Chest"),
}


def _coding(c: Coding) -> fhir.Coding:
    return fhir.Coding(system=c.system, code=c.code, display=c.display)


def _concept(c: Coding) -> fhir.CodeableConcept:
    return fhir.CodeableConcept(coding=[_coding(c)], text=c.display)


def _person_name(dicom_name: str) -> list[fhir.HumanName]:
    # DICOM PN (PS3.5 section 6.2): family^given^middle^prefix^suffix, alphabetic group first.
    parts = dicom_name.split("=")[0].split("^")
    family = parts[0].strip()
    given = [p.strip() for p in parts[1:3] if p.strip()]
    if not family and not given:
        return []
    given_names: list[str | None] = [*given]
    return [fhir.HumanName(family=family or None, given=given_names or None, text=" ".join([*given, family]).strip())]


def patient_from_study(patient_id: str, *, study_uid: str = "", patient_name: str = "") -> fhir.Patient:
    """A Patient known from DICOM headers: its PatientID as identifier and, when given, its name."""
    identifier = [fhir.Identifier(system=PATIENT_ID_SYSTEM, value=patient_id.strip())] if patient_id.strip() else None
    return fhir.Patient(
        id=patient_resource_id(patient_id, study_uid=study_uid),
        identifier=identifier,
        name=_person_name(patient_name) or None,
    )


def _date_time(value: date | None) -> Any:
    # FHIR dateTime takes a date alone (http://hl7.org/fhir/R4/datatypes.html#dateTime); the
    # models' annotation names datetime only, hence Any.
    return value


def _study_started(study_date: str) -> date | None:
    # DICOM DA is YYYYMMDD (PS3.5 section 6.2).
    try:
        return datetime.strptime(study_date.strip(), "%Y%m%d").date()
    except ValueError:
        return None


def study_effective(study: Study) -> date:
    """When the study was made: the clinically relevant time of its reports and their observations
    (DiagnosticReport.effective[x], Observation.effective[x]), so an EHR's timeline shows a finding
    on the day of the images, not of the inference.

    The StudyDate alone: the index keeps no StudyTime, and a FHIR dateTime with a time must carry a
    zone (http://hl7.org/fhir/R4/datatypes.html#dateTime), which DICOM leaves optional (Timezone
    Offset From UTC, PS3.3 C.12.1). Without a StudyDate, the day its first instance arrived.
    """
    return _study_started(study.study_date) or study.first_received_at.date()


def _body_site(body_part: str) -> fhir.Coding | None:
    term = body_part.strip().upper()
    if not term:
        return None
    code = _BODY_PARTS.get(term)
    if code is None:
        return fhir.Coding(display=term)
    return fhir.Coding(system=SNOMED_SYSTEM, code=code[0], display=code[1])


def imaging_study_from_index(study: Study, instances: list[tuple[Instance, Series]]) -> fhir.ImagingStudy:
    """An ImagingStudy from the study's index rows and its (instance, series) pairs."""
    series_rows: dict[str, Series] = {}
    by_series: dict[str, list[Instance]] = {}
    for instance, series in instances:
        series_rows.setdefault(series.series_uid, series)
        by_series.setdefault(series.series_uid, []).append(instance)
    series_list = []
    for uid, series in series_rows.items():
        series_list.append(
            fhir.ImagingStudySeries(
                uid=uid,
                number=series.series_number if series.series_number is not None and series.series_number >= 0 else None,
                modality=fhir.Coding(system=DCM_SYSTEM, code=series.modality.strip() or "OT"),
                description=series.series_description.strip() or None,
                numberOfInstances=len(by_series[uid]),
                bodySite=_body_site(series.body_part),
                instance=[
                    fhir.ImagingStudySeriesInstance(
                        uid=i.sop_uid,
                        sopClass=fhir.Coding(system=URI_SYSTEM, code=f"urn:oid:{i.sop_class_uid}"),
                        number=i.instance_number if i.instance_number is not None and i.instance_number >= 0 else None,
                    )
                    for i in by_series[uid]
                ],
            )
        )
    identifiers = [fhir.Identifier(system=DICOM_UID_SYSTEM, value=f"urn:oid:{study.study_uid}")]
    if study.accession_number.strip():
        identifiers.append(
            fhir.Identifier(
                type=fhir.CodeableConcept(coding=[fhir.Coding(system=V2_0203_SYSTEM, code="ACSN")]),
                value=study.accession_number.strip(),
            )
        )
    return fhir.ImagingStudy(
        id=study_resource_id(study.study_uid),
        identifier=identifiers,
        status="available",
        subject=fhir.Reference(reference=f"Patient/{patient_resource_id(study.patient_id, study_uid=study.study_uid)}"),
        started=_date_time(_study_started(study.study_date)),
        numberOfSeries=len(series_list),
        numberOfInstances=len(instances),
        description=study.study_description.strip() or None,
        series=series_list or None,
    )


def _decimal(value: float) -> Decimal:
    # Four places are plenty for a model probability, and keep the JSON free of float noise.
    return Decimal(str(round(value, 4)))


def _not_for_clinical_use_tag() -> fhir.Coding:
    return fhir.Coding(system=TAG_SYSTEM, code=NOT_FOR_CLINICAL_USE, display="Not for clinical use")


def _finding_phrase(finding: Finding) -> str:
    verdict = "positive" if finding.positive else "negative"
    return (
        f"{finding.concept.display or finding.concept.code} {verdict} "
        f"(probability {finding.probability:.2f}, threshold {finding.threshold:.2f})"
    )


def _measurement_phrase(measurement: Measurement) -> str:
    return f"{measurement.text or measurement.concept.display} {measurement.value:.1f} {measurement.unit}"


def conclusion_text(result: InferenceResult) -> str:
    """A plain sentence naming the model's findings and their probabilities, and its measurements."""
    phrases = [_finding_phrase(f) for f in result.findings] + [_measurement_phrase(m) for m in result.measurements]
    body = "; ".join(phrases) or "no findings reported"
    sentence = f"AI model {result.model} {result.model_version}: {body}."
    return sentence if result.clinical_use else "NOT FOR CLINICAL USE: " + sentence


def _observation(
    result: InferenceResult,
    index: int,
    finding: Finding,
    *,
    report_id: str,
    status: str,
    patient_ref: str,
    study_ref: str,
    effective: date,
    issued: datetime,
) -> fhir.Observation:
    model = f"{result.model} {result.model_version}"
    return fhir.Observation(
        id=f"{report_id}-{index}",
        meta=None if result.clinical_use else fhir.Meta(tag=[_not_for_clinical_use_tag()]),
        status=status,
        category=[
            fhir.CodeableConcept(
                coding=[fhir.Coding(system=OBSERVATION_CATEGORY_SYSTEM, code="imaging", display="Imaging")]
            )
        ],
        code=_concept(finding.concept),
        subject=fhir.Reference(reference=patient_ref),
        effectiveDateTime=_date_time(effective),
        issued=issued,
        # A probability is a dimensionless ratio: UCUM unity "1".
        valueQuantity=fhir.Quantity(
            value=_decimal(min(max(finding.probability, 0.0), 1.0)),
            unit="probability",
            system=UCUM_SYSTEM,
            code="1",
        ),
        interpretation=[
            fhir.CodeableConcept(
                coding=[
                    fhir.Coding(
                        system=INTERPRETATION_SYSTEM,
                        code="POS" if finding.positive else "NEG",
                        display="Positive" if finding.positive else "Negative",
                    )
                ]
            )
        ],
        derivedFrom=[fhir.Reference(reference=study_ref)],
        focus=_focus(result),
        method=fhir.CodeableConcept(text=model),
        extension=[fhir.Extension(url=THRESHOLD_EXTENSION, valueDecimal=_decimal(finding.threshold))],
        note=_note(result),
    )


def _focus(result: InferenceResult) -> list[fhir.Reference] | None:
    # Observation.focus: what the observation is about when it is not the subject, here the
    # report whose text a model read (http://hl7.org/fhir/R4/observation-definitions.html#Observation.focus).
    return [fhir.Reference(reference=ref) for ref in result.focus] or None


def _note(result: InferenceResult) -> list[fhir.Annotation] | None:
    model = f"{result.model} {result.model_version}"
    if result.clinical_use:
        return None
    return [fhir.Annotation(text=f"Not for clinical use: output of {model}, a model this site has not validated.")]


def _measurement_observation(
    result: InferenceResult,
    index: int,
    measurement: Measurement,
    *,
    patient_ref: str,
    study_ref: str,
    effective: date,
    issued: datetime,
) -> fhir.Observation:
    """A measured value as valueQuantity in its UCUM unit (http://hl7.org/fhir/R4/observation.html#units)."""
    return fhir.Observation(
        id=f"{result.job_id}-m{index}",
        meta=None if result.clinical_use else fhir.Meta(tag=[_not_for_clinical_use_tag()]),
        status="preliminary",
        category=[
            fhir.CodeableConcept(
                coding=[fhir.Coding(system=OBSERVATION_CATEGORY_SYSTEM, code="imaging", display="Imaging")]
            )
        ],
        code=fhir.CodeableConcept(coding=[_coding(measurement.concept)], text=measurement.text or measurement.concept.display),
        subject=fhir.Reference(reference=patient_ref),
        effectiveDateTime=_date_time(effective),
        issued=issued,
        valueQuantity=fhir.Quantity(
            value=Decimal(str(round(measurement.value, 2))),
            unit=measurement.unit,
            system=UCUM_SYSTEM,
            code=measurement.unit,
        ),
        derivedFrom=[fhir.Reference(reference=study_ref)],
        focus=_focus(result),
        method=fhir.CodeableConcept(text=f"{result.model} {result.model_version}"),
        extension=[fhir.Extension(url=OUTPUT_OBJECT_EXTENSION, valueString=key) for key in result.output_keys] or None,
        note=_note(result),
    )


def report_from_result(
    result: InferenceResult,
    patient_ref: str,
    *,
    effective: date,
    status: str = "preliminary",
    issued: datetime | None = None,
    report_id: str = "",
) -> tuple[fhir.DiagnosticReport, list[fhir.Observation]]:
    """The DiagnosticReport and its Observations for one successful inference result.

    `effective` is when the study was made (study_effective), `issued` when the report was (now).
    Status is "preliminary": AI output nobody has signed; "amended" when it replaces the report
    of an earlier revision of the study, in place: `report_id` is then that report's id, so the
    result is a new version of the same resources, not a second report (DESIGN.md 5.4).
    """
    issued = issued or datetime.now(UTC)
    report_id = report_id or result.job_id
    study_ref = f"ImagingStudy/{study_resource_id(result.study_uid)}"
    # Observation.status has "amended" too (http://hl7.org/fhir/R4/valueset-observation-status.html).
    observation_status = "amended" if status == "amended" else "preliminary"
    observations = [
        _observation(
            result,
            i,
            f,
            report_id=report_id,
            status=observation_status,
            patient_ref=patient_ref,
            study_ref=study_ref,
            effective=effective,
            issued=issued,
        )
        for i, f in enumerate(result.findings)
    ] + [
        _measurement_observation(
            result, i, m, patient_ref=patient_ref, study_ref=study_ref, effective=effective, issued=issued
        )
        for i, m in enumerate(result.measurements)
    ]
    # R4 DiagnosticReport has no `note`: the warning goes in the conclusion and in meta.tag.
    report = fhir.DiagnosticReport(
        id=report_id,
        meta=None if result.clinical_use else fhir.Meta(tag=[_not_for_clinical_use_tag()]),
        extension=[fhir.Extension(url=MODEL_EXTENSION, valueString=f"{result.model} {result.model_version}")],
        identifier=[fhir.Identifier(system=JOB_SYSTEM, value=result.job_id)],
        status=status,
        category=[_concept(result.report_category)],
        code=_concept(result.report_code),
        subject=fhir.Reference(reference=patient_ref),
        effectiveDateTime=_date_time(effective),
        issued=issued,
        imagingStudy=[fhir.Reference(reference=study_ref)],
        result=[fhir.Reference(reference=f"Observation/{o.id}") for o in observations] or None,
        conclusion=conclusion_text(result),
        conclusionCode=[_concept(f.concept) for f in result.findings if f.positive] or None,
    )
    return report, observations
