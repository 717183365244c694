"""HTTP responses carrying FHIR JSON (media type application/fhir+json), and the admin API's problem details."""

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import Response

from storage import fhir
from fhir_api.errors import FhirError, Unauthorized


def operation_outcome(
    severity: str, code: str, diagnostics: str, expression: tuple[str, ...] = ()
) -> fhir.OperationOutcome:
    """An OperationOutcome with one issue (http://hl7.org/fhir/R4/operationoutcome.html), naming the elements at fault."""
    # R4 keeps `location` beside `expression` for clients that read only the older element.
    where: list[str | None] | None = list(expression) or None
    return fhir.OperationOutcome(
        issue=[
            fhir.OperationOutcomeIssue(
                severity=severity, code=code, diagnostics=diagnostics, expression=where, location=where
            )
        ]
    )


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
    status_code: int,
    code: str,
    diagnostics: str,
    *,
    headers: Mapping[str, str] | None = None,
    expression: tuple[str, ...] = (),
) -> Response:
    """An error answer: an OperationOutcome with one issue of severity error."""
    outcome = operation_outcome("error", code, diagnostics, expression)
    return fhir_response(outcome, status_code=status_code, headers=headers)


def _challenge(exc: FhirError) -> dict[str, str]:
    # RFC 6750 section 3: a 401 names the scheme, and says invalid_token when one was presented.
    if not isinstance(exc, Unauthorized):
        return {}
    challenge = 'Bearer realm="doctorai"'
    if exc.token_given:
        challenge += ', error="invalid_token"'
    return {"WWW-Authenticate": challenge}


def error_response(exc: FhirError) -> Response:
    """The protocol answer for one of our errors (with WWW-Authenticate on a 401, RFC 6750 section 3)."""
    return outcome_response(exc.status_code, exc.issue_code, str(exc), headers=_challenge(exc), expression=exc.expression)


PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_response(
    status_code: int, detail: str, *, headers: Mapping[str, str] | None = None, extra: Mapping[str, Any] | None = None
) -> Response:
    """An admin API error as RFC 9457 problem details: type about:blank, so the title is the status phrase."""
    body = {"type": "about:blank", "title": HTTPStatus(status_code).phrase, "status": status_code, "detail": detail}
    body.update(extra or {})
    return Response(
        content=json.dumps(body), status_code=status_code, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


def error_problem(exc: FhirError) -> Response:
    """One of our errors answered as problem details (admin API), with the same challenge on a 401."""
    return problem_response(exc.status_code, str(exc), headers=_challenge(exc))


def answers_problems(path: str) -> bool:
    """Whether errors on this path are problem details (the admin API and the console) rather than
    OperationOutcomes (FHIR, DICOMweb and the rest)."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in ("/admin", "/console"))


def refusal(path: str, status_code: int, code: str, detail: str, *, headers: Mapping[str, str] | None = None) -> Response:
    """A refusal made before any route (a middleware's), in the format of the path's errors (`answers_problems`)."""
    if answers_problems(path):
        return problem_response(status_code, detail, headers=headers)
    return outcome_response(status_code, code, detail, headers=headers)
