"""What this FHIR server serves: resource types, their interactions and search parameters, as data.

The CapabilityStatement, the search parser and the index all read this registry, so what we
say we support is what we do. Parameters are the R4 ones
(http://hl7.org/fhir/R4/searchparameter-registry.html) a client of imaging reports uses; each
names the element paths it indexes.
"""

from dataclasses import dataclass

from storage import fhir
from storage.fhir.index import EARLIEST, IndexValue, values, walk

_SP = "http://hl7.org/fhir/SearchParameter/"

# Type-level and instance-level interactions (http://hl7.org/fhir/R4/http.html), same for every type.
INTERACTIONS = ("read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type")
SYSTEM_INTERACTIONS = ("transaction", "batch")


@dataclass(frozen=True)
class SearchParam:
    """A supported search parameter: FHIR type, element paths, and for references the target types."""

    name: str
    type: str  # token, reference, date, string or uri
    paths: tuple[str, ...]
    documentation: str
    definition: str = ""
    targets: tuple[str, ...] = ()
    # The code system of a bare `code` element (its required binding), so "system|code" matches too.
    system: str = ""

    def extract(self, resource: fhir.Resource) -> list[IndexValue]:
        """This parameter's index values in `resource`."""
        found = [v for path in self.paths for v in walk(resource, tuple(path.split(".")))]
        rows = values(self.name, self.type, found)
        if self.type == "reference" and self.targets:
            rows = [r for r in rows if r.value.split("/", 1)[0] in self.targets]
        if self.system:
            rows = [IndexValue(r.param, r.value, r.system or self.system) for r in rows]
        return rows


# Parameters every type has; their values come from the store itself, not from element paths.
ID = SearchParam("_id", "token", (), "Logical id of the resource", _SP + "Resource-id")
LAST_UPDATED = SearchParam("_lastUpdated", "date", (), "When the resource version last changed", _SP + "Resource-lastUpdated")
_COMMON = (ID, LAST_UPDATED)

_PATIENT_SUBJECT = ("Patient", "Group", "Device", "Location")
_REQUESTS = ("ServiceRequest", "CarePlan", "MedicationRequest", "NutritionOrder", "ImmunizationRecommendation")


def _status(system: str, documentation: str, definition: str) -> SearchParam:
    return SearchParam("status", "token", ("status",), documentation, _SP + definition, system=system)


SEARCH_PARAMS: dict[str, dict[str, SearchParam]] = {
    kind: {p.name: p for p in (*_COMMON, *params)}
    for kind, params in {
        "DiagnosticReport": (
            SearchParam("identifier", "token", ("identifier",), "A business identifier of the report", _SP + "clinical-identifier"),
            SearchParam("patient", "reference", ("subject",), "The subject of the report if a patient", _SP + "clinical-patient", ("Patient",)),
            SearchParam("subject", "reference", ("subject",), "The subject of the report", _SP + "DiagnosticReport-subject", _PATIENT_SUBJECT),
            _status("http://hl7.org/fhir/diagnostic-report-status", "The status of the report", "DiagnosticReport-status"),
            SearchParam("category", "token", ("category",), "Which diagnostic discipline made the report", _SP + "DiagnosticReport-category"),
            SearchParam("code", "token", ("code",), "The code of the report", _SP + "clinical-code"),
            SearchParam("date", "date", ("effectiveDateTime", "effectivePeriod"), "The clinically relevant time of the report", _SP + "clinical-date"),
            SearchParam("issued", "date", ("issued",), "When the report was issued", _SP + "DiagnosticReport-issued"),
            SearchParam("based-on", "reference", ("basedOn",), "The request the report fulfils", _SP + "DiagnosticReport-based-on", _REQUESTS),
            SearchParam("result", "reference", ("result",), "An Observation of the report", _SP + "DiagnosticReport-result", ("Observation",)),
            # Not an R4 parameter; DiagnosticReport.imagingStudy is how our reports point at their study.
            SearchParam("imaging-study", "reference", ("imagingStudy",), "The ImagingStudy the report interprets", targets=("ImagingStudy",)),
        ),
        "ImagingStudy": (
            SearchParam("identifier", "token", ("identifier",), "Identifiers of the study (DICOM Study Instance UID, accession)", _SP + "clinical-identifier"),
            SearchParam("patient", "reference", ("subject",), "The patient imaged", _SP + "clinical-patient", ("Patient",)),
            SearchParam("subject", "reference", ("subject",), "Who the study is about", _SP + "ImagingStudy-subject", ("Patient", "Device", "Group")),
            SearchParam("started", "date", ("started",), "When the study started", _SP + "ImagingStudy-started"),
            SearchParam("modality", "token", ("series.modality",), "The modality of a series (DICOM CID 29)", _SP + "ImagingStudy-modality"),
            _status("http://hl7.org/fhir/imagingstudy-status", "The status of the study", "ImagingStudy-status"),
            SearchParam("basedon", "reference", ("basedOn",), "The request the study was made for", _SP + "ImagingStudy-basedon", ("ServiceRequest", "CarePlan", "Appointment", "AppointmentResponse", "Task")),
            SearchParam("endpoint", "reference", ("endpoint", "series.endpoint"), "Where the study can be retrieved", _SP + "ImagingStudy-endpoint", ("Endpoint",)),
        ),
        "Patient": (
            SearchParam("identifier", "token", ("identifier",), "A patient identifier", _SP + "Patient-identifier"),
            SearchParam("name", "string", ("name",), "Any part of a name", _SP + "Patient-name"),
            SearchParam("family", "string", ("name.family",), "A family name", _SP + "individual-family"),
            SearchParam("given", "string", ("name.given",), "A given name", _SP + "individual-given"),
            SearchParam("birthdate", "date", ("birthDate",), "The date of birth", _SP + "individual-birthdate"),
            SearchParam("gender", "token", ("gender",), "Administrative gender", _SP + "individual-gender", system="http://hl7.org/fhir/administrative-gender"),
        ),
        "ServiceRequest": (
            SearchParam("identifier", "token", ("identifier",), "Identifiers of the request (placer, filler, accession)", _SP + "ServiceRequest-identifier"),
            SearchParam("patient", "reference", ("subject",), "The patient the service is for", _SP + "ServiceRequest-patient", ("Patient",)),
            SearchParam("subject", "reference", ("subject",), "Who the service is for", _SP + "ServiceRequest-subject", ("Patient", "Group", "Location", "Device")),
            _status("http://hl7.org/fhir/request-status", "The status of the request", "ServiceRequest-status"),
            SearchParam("code", "token", ("code",), "What is requested", _SP + "ServiceRequest-code"),
            SearchParam("intent", "token", ("intent",), "proposal, plan, order, ...", _SP + "ServiceRequest-intent", system="http://hl7.org/fhir/request-intent"),
            SearchParam("authored", "date", ("authoredOn",), "When the request was signed", _SP + "ServiceRequest-authored"),
        ),
        "Observation": (
            SearchParam("identifier", "token", ("identifier",), "A business identifier", _SP + "clinical-identifier"),
            SearchParam("patient", "reference", ("subject",), "The patient observed", _SP + "clinical-patient", ("Patient",)),
            SearchParam("subject", "reference", ("subject",), "Who or what was observed", _SP + "Observation-subject", ("Patient", "Group", "Device", "Location")),
            SearchParam("code", "token", ("code",), "What was observed", _SP + "clinical-code"),
            _status("http://hl7.org/fhir/observation-status", "The status of the observation", "Observation-status"),
            SearchParam("category", "token", ("category",), "The kind of observation", _SP + "Observation-category"),
            SearchParam("date", "date", ("effectiveDateTime", "effectivePeriod", "effectiveInstant"), "When it was observed", _SP + "clinical-date"),
            SearchParam("derived-from", "reference", ("derivedFrom",), "What the observation was derived from", _SP + "Observation-derived-from", ("DocumentReference", "ImagingStudy", "Media", "QuestionnaireResponse", "Observation", "MolecularSequence")),
            SearchParam("based-on", "reference", ("basedOn",), "The request the observation fulfils", _SP + "Observation-based-on", _REQUESTS),
        ),
        "Endpoint": (
            SearchParam("identifier", "token", ("identifier",), "An identifier of the endpoint", _SP + "Endpoint-identifier"),
            SearchParam("name", "string", ("name",), "The name of the endpoint", _SP + "Endpoint-name"),
            _status("http://hl7.org/fhir/endpoint-status", "The status of the endpoint", "Endpoint-status"),
            SearchParam("connection-type", "token", ("connectionType",), "The protocol (dicom-wado-rs, hl7-fhir-rest, ...)", _SP + "Endpoint-connection-type"),
        ),
        "Subscription": (
            _status("http://hl7.org/fhir/subscription-status", "The status of the subscription", "Subscription-status"),
            SearchParam("criteria", "string", ("criteria",), "The search the subscription watches", _SP + "Subscription-criteria"),
            SearchParam("type", "token", ("channel.type",), "The channel type", _SP + "Subscription-type", system="http://hl7.org/fhir/subscription-channel-type"),
            SearchParam("url", "uri", ("channel.endpoint",), "Where notifications go", _SP + "Subscription-url"),
        ),
    }.items()
}


def reference_params(resource_type: str) -> list[SearchParam]:
    """The reference parameters of a type (what `_include` can follow)."""
    return [p for p in SEARCH_PARAMS.get(resource_type, {}).values() if p.type == "reference"]


def includes(resource_type: str) -> list[str]:
    """The `_include` values a search on this type supports ("Type:param")."""
    return [f"{resource_type}:{p.name}" for p in reference_params(resource_type)]


def revincludes(resource_type: str) -> list[str]:
    """The `_revinclude` values a search on this type supports: references from other types to it."""
    return [
        f"{source}:{p.name}"
        for source in sorted(SEARCH_PARAMS)
        for p in reference_params(source)
        if resource_type in p.targets
    ]


def extract(resource: fhir.Resource) -> list[IndexValue]:
    """Every index value of a resource except `_id` and `_lastUpdated` (which the store adds)."""
    params = SEARCH_PARAMS.get(resource.get_resource_type(), {})
    rows = {row for p in params.values() if p.paths for row in p.extract(resource)}
    return sorted(rows, key=lambda r: (r.param, r.system, r.value, r.exact, r.low or EARLIEST, r.high or EARLIEST))
