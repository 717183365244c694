"""The one import point of fhir.resources: R4B models (identical to R4 for the resources we use).

The top-level `fhir.resources` models are R5; never import them. Build resources with these
models, emit with `dump`, read back with `parse` (nazrulworld/fhir.resources README).
"""

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.auditevent import (
    AuditEvent,
    AuditEventAgent,
    AuditEventAgentNetwork,
    AuditEventEntity,
    AuditEventEntityDetail,
    AuditEventSource,
)
from fhir.resources.R4B.bundle import (
    Bundle,
    BundleEntry,
    BundleEntryRequest,
    BundleEntryResponse,
    BundleEntrySearch,
    BundleLink,
)
from fhir.resources.R4B.capabilitystatement import (
    CapabilityStatement,
    CapabilityStatementImplementation,
    CapabilityStatementRest,
    CapabilityStatementRestResource,
    CapabilityStatementRestResourceInteraction,
    CapabilityStatementRestInteraction,
    CapabilityStatementRestResourceSearchParam,
    CapabilityStatementRestSecurity,
    CapabilityStatementSoftware,
)
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.endpoint import Endpoint
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
from fhir.resources.R4B.servicerequest import ServiceRequest
from fhir.resources.R4B.subscription import Subscription

# Issue 4 (HL7 v2 mapping): orders, visits and the patient parts v2 carries.
from fhir.resources.R4B.address import Address
from fhir.resources.R4B.contactpoint import ContactPoint
from fhir.resources.R4B.encounter import Encounter, EncounterLocation, EncounterParticipant
from fhir.resources.R4B.observation import ObservationReferenceRange
from fhir.resources.R4B.patient import PatientLink
from fhir.resources.R4B.period import Period

# The R4 version this API speaks (CapabilityStatement.fhirVersion).
FHIR_VERSION = "4.0.1"
MEDIA_TYPE = "application/fhir+json"

# Resource types this store holds; anything else is "not supported" at the edge.
RESOURCE_CLASSES: dict[str, type[Resource]] = {
    "DiagnosticReport": DiagnosticReport,
    "Endpoint": Endpoint,
    "ImagingStudy": ImagingStudy,
    "Observation": Observation,
    "Patient": Patient,
    "Encounter": Encounter,
    "ServiceRequest": ServiceRequest,
    "Subscription": Subscription,
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
    "AuditEvent",
    "AuditEventAgent",
    "AuditEventAgentNetwork",
    "AuditEventEntity",
    "AuditEventEntityDetail",
    "AuditEventSource",
    "Bundle",
    "BundleEntry",
    "BundleEntryRequest",
    "BundleEntryResponse",
    "BundleEntrySearch",
    "BundleLink",
    "CapabilityStatement",
    "CapabilityStatementImplementation",
    "CapabilityStatementRest",
    "CapabilityStatementRestResource",
    "CapabilityStatementRestResourceInteraction",
    "CapabilityStatementRestInteraction",
    "CapabilityStatementRestResourceSearchParam",
    "CapabilityStatementRestSecurity",
    "CapabilityStatementSoftware",
    "CodeableConcept",
    "Coding",
    "DiagnosticReport",
    "Endpoint",
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
    "ServiceRequest",
    "Subscription",
    "ValidationError",
    "dump",
    "dump_bundle",
    "parse",
    "parse_bundle",
    "parse_data",
]


def dump(resource: Resource) -> str:
    """The resource as FHIR R4 JSON text (empty elements left out, as FHIR JSON requires)."""
    return resource.model_dump_json(exclude_none=True)


def dump_bundle(bundle: Bundle, entries: Sequence[tuple[str, str, str]]) -> str:
    """The Bundle as JSON with search entries given as (fullUrl, resource JSON text, search mode).

    For searchsets of stored resources: their JSON was validated when stored, so it is spliced in
    as is instead of parsed into models and dumped again (which costs more than the search). The
    entry around it is the model's own JSON, made once per mode with a placeholder fullUrl.
    """
    head = dump(bundle)
    if not entries:
        return head
    templates: dict[str, str] = {}
    parts = []
    for full_url, text, mode in entries:
        if mode not in templates:
            entry = BundleEntry(fullUrl=_PLACEHOLDER, search=BundleEntrySearch(mode=mode))
            templates[mode] = entry.model_dump_json(exclude_none=True)[:-1] + ',"resource":'
        parts.append(templates[mode].replace(_PLACEHOLDER, json.dumps(full_url)[1:-1]) + text + "}")
    return f'{head[:-1]},"entry":[{",".join(parts)}]}}'


_PLACEHOLDER = "urn:doctorai:full-url"


def parse(text: str | bytes) -> Resource:
    """Validate FHIR JSON of one of the stored resource types into its model."""
    return parse_data(json.loads(text))


def parse_data(data: Any) -> Resource:
    """Validate decoded FHIR JSON of one of the stored resource types into its model.

    Raises ValueError for other types and pydantic's ValidationError (a ValueError) for invalid content.
    """
    # Dispatch on resourceType, then validate with the right model.
    kind = data.get("resourceType", "") if isinstance(data, dict) else ""
    cls = RESOURCE_CLASSES.get(kind)
    if cls is None:
        raise ValueError(f"not a stored resource type: {kind!r}")
    return cls.model_validate(data)


def parse_bundle(data: Any) -> Bundle:
    """Validate decoded FHIR JSON as a Bundle (batch or transaction requests)."""
    return Bundle.model_validate(data)


# http://hl7.org/fhir/R4/search.html#elements: a subsetted resource is tagged so nobody stores it as whole.
SUBSETTED = Coding(system="http://terminology.hl7.org/CodeSystem/v3-ObservationValue", code="SUBSETTED", display="subsetted")


def subset(resource: Resource, *, elements: tuple[str, ...] = (), summary: str = "") -> Resource:
    """The resource cut down to `_elements` or a `_summary` form (true, text, data), tagged SUBSETTED.

    Mandatory elements the model marks as such are always kept (search.html#elements). The
    result may not validate as a whole resource, which is what the tag says.
    """
    cls = type(resource)
    fields = cls.model_fields

    def keep(name: str) -> bool:
        extra = fields[name].json_schema_extra
        info = extra if isinstance(extra, dict) else {}
        if name in ("id", "meta", "resource_type") or info.get("element_required"):
            return True
        base = name.removesuffix("__ext")
        if elements:
            return base in elements
        if summary == "true":
            return bool(info.get("summary_element_property"))
        if summary == "text":
            return base == "text"
        return base != "text"  # summary == "data"

    kept = {name: getattr(resource, name) for name in fields if keep(name) and getattr(resource, name) is not None}
    meta = resource.meta.model_copy() if resource.meta else Meta()
    meta.tag = [*(meta.tag or []), SUBSETTED]
    kept["meta"] = meta
    return cls.model_construct(**kept)
