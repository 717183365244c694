"""HTTP responses carrying FHIR JSON (media type application/fhir+json)."""

from collections.abc import Mapping

from fastapi import Response

from fhir_api import fhir
from fhir_api.errors import FhirError, Unauthorized
from fhir_api.mapping import operation_outcome


def fhir_response(
    resource: fhir.Resource, *, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A response with the resource as FHIR R4 JSON."""
    return Response(
        content=fhir.dump(resource), status_code=status_code, headers=dict(headers or {}), media_type=fhir.MEDIA_TYPE
    )


def fhir_text_response(text: str, *, status_code: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A response with FHIR R4 JSON that is text already (a searchset spliced from stored resources)."""
    return Response(content=text, status_code=status_code, headers=dict(headers or {}), media_type=fhir.MEDIA_TYPE)


def outcome_response(
    status_code: int, code: str, diagnostics: str, *, headers: Mapping[str, str] | None = None
) -> Response:
    """An error answer: an OperationOutcome with one issue of severity error."""
    return fhir_response(operation_outcome("error", code, diagnostics), status_code=status_code, headers=headers)


def error_response(exc: FhirError) -> Response:
    """The protocol answer for one of our errors (with WWW-Authenticate on a 401, RFC 6750 section 3)."""
    headers = {}
    if isinstance(exc, Unauthorized):
        challenge = 'Bearer realm="doctorai"'
        if exc.token_given:
            challenge += ', error="invalid_token"'
        headers["WWW-Authenticate"] = challenge
    return outcome_response(exc.status_code, exc.issue_code, str(exc), headers=headers)
