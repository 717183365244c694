"""The CapabilityStatement: what this FHIR server really supports (http://hl7.org/fhir/R4/capabilitystatement.html)."""

from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from fhir_api import fhir
from fhir_api.search import INCLUDES, SEARCH_PARAMS

_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"


def _software_version() -> str:
    try:
        return version("doctorai")
    except PackageNotFoundError:
        return "unknown"


def _resource(resource_type: str) -> fhir.CapabilityStatementRestResource:
    interactions = [fhir.CapabilityStatementRestResourceInteraction(code="read")]
    params = SEARCH_PARAMS.get(resource_type, {})
    includes: list[str | None] = [i for i in sorted(INCLUDES.get(resource_type, {}))]
    if params:
        interactions.append(fhir.CapabilityStatementRestResourceInteraction(code="search-type"))
    return fhir.CapabilityStatementRestResource(
        type=resource_type,
        interaction=interactions,
        versioning="versioned",
        readHistory=False,
        updateCreate=False,
        searchInclude=includes or None,
        searchParam=[
            fhir.CapabilityStatementRestResourceSearchParam(
                name=name, definition=spec.definition, type=spec.type, documentation=spec.documentation
            )
            for name, spec in params.items()
        ]
        or None,
    )


def capability_statement(base_url: str) -> fhir.CapabilityStatement:
    """The statement served at /fhir/metadata, for the server reachable at `base_url`."""
    return fhir.CapabilityStatement(
        status="active",
        date=datetime.now(UTC),
        publisher="DoctorAI",
        kind="instance",
        software=fhir.CapabilityStatementSoftware(name="DoctorAI", version=_software_version()),
        implementation=fhir.CapabilityStatementImplementation(
            description="DoctorAI FHIR R4 results store (AI DiagnosticReports, not for clinical use unless validated)",
            url=base_url,
        ),
        fhirVersion=fhir.FHIR_VERSION,
        format=["json", fhir.MEDIA_TYPE],
        rest=[
            fhir.CapabilityStatementRest(
                mode="server",
                security=fhir.CapabilityStatementRestSecurity(
                    cors=False,
                    service=[
                        fhir.CodeableConcept(
                            coding=[
                                fhir.Coding(system=_SECURITY_SERVICE, code="SMART-on-FHIR", display="SMART-on-FHIR")
                            ]
                        )
                    ],
                    description=(
                        "OAuth2 bearer tokens (JWT, HS256) with SMART v2 system scopes, "
                        "e.g. system/DiagnosticReport.rs or system/*.cruds"
                    ),
                ),
                resource=[_resource(t) for t in sorted(fhir.RESOURCE_CLASSES)],
            )
        ],
    )
