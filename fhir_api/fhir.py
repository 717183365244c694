"""The one import point of fhir.resources: R4B models (identical to R4 for the resources we use).

The top-level `fhir.resources` models are R5; never import them. Build resources with these
models, emit with `dump`, read back with `parse` (nazrulworld/fhir.resources README).
"""

import json

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.bundle import Bundle, BundleEntry, BundleEntrySearch, BundleLink
from fhir.resources.R4B.capabilitystatement import (
    CapabilityStatement,
    CapabilityStatementImplementation,
    CapabilityStatementRest,
    CapabilityStatementRestResource,
    CapabilityStatementRestResourceInteraction,
    CapabilityStatementRestResourceSearchParam,
    CapabilityStatementRestSecurity,
    CapabilityStatementSoftware,
)
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.extension import Extension
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.imagingstudy import ImagingStudy, ImagingStudySeries, ImagingStudySeriesInstance
from fhir.resources.R4B.meta import Meta
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.operationoutcome import OperationOutcome, OperationOutcomeIssue
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.quantity import Quantity
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.resource import Resource

# Issue 4 (HL7 v2 mapping): orders, visits and the patient parts v2 carries.
from fhir.resources.R4B.address import Address
from fhir.resources.R4B.contactpoint import ContactPoint
from fhir.resources.R4B.encounter import Encounter, EncounterLocation, EncounterParticipant
from fhir.resources.R4B.observation import ObservationReferenceRange
from fhir.resources.R4B.patient import PatientLink
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.servicerequest import ServiceRequest

# The R4 version this API speaks (CapabilityStatement.fhirVersion).
FHIR_VERSION = "4.0.1"
MEDIA_TYPE = "application/fhir+json"

# Resource types this store holds; anything else is "not supported" at the edge.
RESOURCE_CLASSES: dict[str, type[Resource]] = {
    "DiagnosticReport": DiagnosticReport,
    "ImagingStudy": ImagingStudy,
    "Observation": Observation,
    "Patient": Patient,
    "Encounter": Encounter,
    "ServiceRequest": ServiceRequest,
}

__all__ = [
    "Address",
    "ContactPoint",
    "Encounter",
    "EncounterLocation",
    "EncounterParticipant",
    "ObservationReferenceRange",
    "PatientLink",
    "Period",
    "ServiceRequest",
    "FHIR_VERSION",
    "MEDIA_TYPE",
    "RESOURCE_CLASSES",
    "Annotation",
    "Bundle",
    "BundleEntry",
    "BundleEntrySearch",
    "BundleLink",
    "CapabilityStatement",
    "CapabilityStatementImplementation",
    "CapabilityStatementRest",
    "CapabilityStatementRestResource",
    "CapabilityStatementRestResourceInteraction",
    "CapabilityStatementRestResourceSearchParam",
    "CapabilityStatementRestSecurity",
    "CapabilityStatementSoftware",
    "CodeableConcept",
    "Coding",
    "DiagnosticReport",
    "Extension",
    "HumanName",
    "Identifier",
    "ImagingStudy",
    "ImagingStudySeries",
    "ImagingStudySeriesInstance",
    "Meta",
    "Observation",
    "OperationOutcome",
    "OperationOutcomeIssue",
    "Patient",
    "Quantity",
    "Reference",
    "Resource",
    "dump",
    "parse",
]


def dump(resource: Resource) -> str:
    """The resource as FHIR R4 JSON text (empty elements left out, as FHIR JSON requires)."""
    return resource.model_dump_json(exclude_none=True)


def parse(text: str | bytes) -> Resource:
    """Validate FHIR JSON of one of the stored resource types into its model."""
    # Dispatch on resourceType, then validate with the right model.
    data = json.loads(text)
    kind = data.get("resourceType", "") if isinstance(data, dict) else ""
    cls = RESOURCE_CLASSES.get(kind)
    if cls is None:
        raise ValueError(f"not a stored resource type: {kind!r}")
    return cls.model_validate(data)
