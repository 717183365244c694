"""FHIR ids and references: the ids of a DICOM patient and study, and what a resource refers to.

The id rules are shared by every process that writes FHIR: a study's Patient from DICOM and an
HL7 PID-3 identifier with the same value are one Patient.
"""

import hashlib
import re

from storage import fhir

# FHIR R4 id datatype (http://hl7.org/fhir/R4/datatypes.html#id).
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

def _hashed_id(prefix: str, value: str) -> str:
    return prefix + hashlib.sha256(value.encode()).hexdigest()[:40]


def patient_resource_id(patient_id: str, *, study_uid: str = "") -> str:
    """Patient.id: the DICOM PatientID when it is a valid FHIR id, else a hash of it.

    An empty PatientID (DICOM type 2) would merge every anonymous study into one patient,
    so it gets an id of its own derived from `study_uid`.
    """
    patient_id = patient_id.strip()
    if not patient_id:
        return _hashed_id("p-", "study:" + study_uid)
    if _FHIR_ID.fullmatch(patient_id):
        return patient_id
    return _hashed_id("p-", patient_id)


def study_resource_id(study_uid: str) -> str:
    """ImagingStudy.id: the StudyInstanceUID (digits and dots, at most 64), hashed if malformed."""
    return study_uid if _FHIR_ID.fullmatch(study_uid) else _hashed_id("s-", study_uid)


def relative_reference(reference: str) -> str:
    """ "Type/id" from a relative or absolute reference (http://hl7.org/fhir/R4/references.html)."""
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    return "/".join(parts[-2:])


def study_ids(resource: fhir.Resource) -> list[str]:
    """ImagingStudy ids a resource is about: itself, a report's imagingStudy, an observation's derivedFrom."""
    if isinstance(resource, fhir.ImagingStudy):
        return [resource.id] if resource.id else []
    refs: list[fhir.Reference] = []
    if isinstance(resource, fhir.DiagnosticReport):
        refs = list(resource.imagingStudy or [])
    elif isinstance(resource, fhir.Observation):
        refs = list(resource.derivedFrom or [])
    found = [relative_reference(r.reference) for r in refs if r.reference]
    return [f.split("/", 1)[1] for f in found if f.startswith("ImagingStudy/")]


def patient_reference(resource: fhir.Resource) -> str:
    """The "Patient/id" a resource is about: itself, or its subject when that is a Patient; "" otherwise."""
    if isinstance(resource, fhir.Patient):
        return f"Patient/{resource.id}" if resource.id else ""
    subject = getattr(resource, "subject", None)
    if isinstance(subject, fhir.Reference) and subject.reference:
        reference = relative_reference(subject.reference)
        if reference.startswith("Patient/"):
            return reference
    return ""
