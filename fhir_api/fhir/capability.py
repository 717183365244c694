"""The CapabilityStatement: what this FHIR server really supports (http://hl7.org/fhir/R4/capabilitystatement.html).

Generated from the registry the search parser and the routes use, so it cannot claim more
than they do.
"""

from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version

from fhir_api.fhir import auditevents
from storage.fhir import definitions
from storage import fhir

_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"
# http://hl7.org/fhir/smart-app-launch/conformance.html: token endpoint advertised in the statement.
_OAUTH_URIS = "http://fhir-definitions.smarthealthit.org/StructureDefinition/oauth-uris"


def _software_version() -> str:
    try:
        return version("doctorai")
    except PackageNotFoundError:
        return "unknown"


def _resource(resource_type: str) -> fhir.CapabilityStatementRestResource:
    params = definitions.SEARCH_PARAMS.get(resource_type, {})
    include: list[str | None] = [*definitions.includes(resource_type)]
    revinclude: list[str | None] = [*definitions.revincludes(resource_type)]
    return fhir.CapabilityStatementRestResource(
        type=resource_type,
        interaction=[fhir.CapabilityStatementRestResourceInteraction(code=code) for code in definitions.INTERACTIONS],
        versioning="versioned-update",
        readHistory=True,
        updateCreate=True,
        conditionalCreate=True,
        conditionalUpdate=True,
        conditionalDelete="single",
        conditionalRead="not-supported",
        referencePolicy=["literal", "local"],
        searchInclude=include or None,
        searchRevInclude=revinclude or None,
        searchParam=[
            fhir.CapabilityStatementRestResourceSearchParam(
                name=name, definition=spec.definition or None, type=spec.type, documentation=spec.documentation
            )
            for name, spec in params.items()
        ]
        or None,
    )


def _audit_resource() -> fhir.CapabilityStatementRestResource:
    # Read and search only, for the auditor role (fhir_api/fhir/routes/audit.py).
    return fhir.CapabilityStatementRestResource(
        type=auditevents.RESOURCE_TYPE,
        documentation="The audit trail; needs the auditor role and the scope system/AuditEvent.rs",
        interaction=[fhir.CapabilityStatementRestResourceInteraction(code=c) for c in ("read", "search-type")],
        searchParam=[
            fhir.CapabilityStatementRestResourceSearchParam(
                name=name, definition=auditevents.definition(name), type=kind, documentation=documentation
            )
            for name, (kind, documentation) in auditevents.SEARCH_PARAMS.items()
        ],
    )


def capability_statement(base_url: str) -> fhir.CapabilityStatement:
    """The statement served at /fhir/metadata, for the server reachable at `base_url`."""
    root = base_url.removesuffix("/fhir")
    return fhir.CapabilityStatement(
        status="active",
        date=datetime.now(UTC),
        publisher="DoctorAI",
        kind="instance",
        software=fhir.CapabilityStatementSoftware(name="DoctorAI", version=_software_version()),
        implementation=fhir.CapabilityStatementImplementation(
            description="DoctorAI FHIR R4 server (AI DiagnosticReports, not for clinical use unless validated)",
            url=base_url,
        ),
        fhirVersion=fhir.FHIR_VERSION,
        format=["json", fhir.MEDIA_TYPE],
        rest=[
            fhir.CapabilityStatementRest(
                mode="server",
                security=fhir.CapabilityStatementRestSecurity(
                    cors=False,
                    extension=[
                        fhir.Extension(
                            url=_OAUTH_URIS,
                            extension=[fhir.Extension(url="token", valueUri=f"{root}/auth/token")],
                        )
                    ],
                    service=[
                        fhir.CodeableConcept(
                            coding=[
                                fhir.Coding(system=_SECURITY_SERVICE, code="SMART-on-FHIR", display="SMART-on-FHIR")
                            ]
                        )
                    ],
                    description=(
                        "SMART Backend Services: POST /auth/token (client_credentials with a private_key_jwt "
                        "assertion, or client_secret_basic) issues short-lived bearer tokens with SMART v2 "
                        "system scopes, e.g. system/DiagnosticReport.rs or system/*.cruds"
                    ),
                ),
                resource=[*(_resource(t) for t in sorted(fhir.RESOURCE_CLASSES)), _audit_resource()],
                interaction=[fhir.CapabilityStatementRestInteraction(code=c) for c in definitions.SYSTEM_INTERACTIONS],
            )
        ],
    )
