"""API errors. Each knows its HTTP status and FHIR issue code; only the edge turns it into an OperationOutcome."""

from storage.errors import InvalidSearch, ResourceGone, ResourceNotFound, StorageError


class FhirError(Exception):
    """Base class: a FHIR interaction that cannot be answered as asked."""

    retriable = False
    # HTTP status and http://hl7.org/fhir/R4/valueset-issue-type.html code of the OperationOutcome.
    status_code = 500
    issue_code = "exception"
    # FHIRPath expressions of the elements at fault (OperationOutcome.issue.expression).
    expression: tuple[str, ...] = ()


class NotFound(FhirError):
    """The resource (or resource type) does not exist here."""

    status_code = 404
    issue_code = "not-found"


class BadRequest(FhirError):
    """The request cannot be understood."""

    status_code = 400
    issue_code = "invalid"


class InvalidCode(BadRequest):
    """A code outside the value set its element is bound to with required strength (terminologies.html#required)."""

    issue_code = "code-invalid"

    def __init__(self, message: str, expression: tuple[str, ...]) -> None:
        super().__init__(message)
        self.expression = expression


class BadSearch(BadRequest):
    """A search parameter is unknown (under strict handling) or its value is malformed."""

    issue_code = "not-supported"


class Unauthorized(FhirError):
    """No bearer token, or one that is invalid or expired (RFC 6750 section 3)."""

    status_code = 401
    issue_code = "login"

    def __init__(self, message: str, *, token_given: bool = True) -> None:
        super().__init__(message)
        # RFC 6750 section 3.1: error="invalid_token" only when a token was presented.
        self.token_given = token_given


class Forbidden(FhirError):
    """The token is valid but its scopes do not allow this interaction."""

    status_code = 403
    issue_code = "forbidden"


class Conflict(FhirError):
    """Another writer stored the same resource at the same time; trying again will see its work."""

    retriable = True
    status_code = 409
    issue_code = "conflict"


class InvalidState(FhirError):
    """The target's state does not allow the request (a study that is not held, a name in use); not retriable."""

    status_code = 409
    issue_code = "business-rule"


class Gone(FhirError):
    """The resource (or this version of it) was deleted (http.html#read)."""

    status_code = 410
    issue_code = "deleted"


class PreconditionFailed(FhirError):
    """If-Match did not match the current version, or a conditional interaction matched several resources."""

    status_code = 412
    issue_code = "conflict"


class NotAcceptable(FhirError):
    """The client asked for a format we do not serve (http.html#mime-type)."""

    status_code = 406
    issue_code = "not-supported"


class UnsupportedMediaType(FhirError):
    """The request body is not FHIR JSON."""

    status_code = 415
    issue_code = "not-supported"


class Unprocessable(FhirError):
    """The resource is well-formed but breaks a rule of this server (http.html#update: 422)."""

    status_code = 422
    issue_code = "processing"


class MethodNotAllowed(FhirError):
    """The interaction is not supported on this resource type."""

    status_code = 405
    issue_code = "not-supported"


class TokenRequestError(FhirError):
    """A refused OAuth2 token request; answered as RFC 6749 section 5.2 JSON, not an OperationOutcome."""

    status_code = 400
    issue_code = "security"

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        # invalid_request, invalid_client, invalid_grant, invalid_scope, unsupported_grant_type.
        self.error = error
        if error == "invalid_client":
            self.status_code = 401


class Unavailable(FhirError):
    """Storage cannot be reached now; trying again later can help (RFC 9110 section 15.6.4)."""

    retriable = True
    status_code = 503
    issue_code = "transient"


class PayloadTooLarge(FhirError):
    """The request body is larger than the configured limit."""

    status_code = 413
    issue_code = "too-long"


def from_storage(exc: StorageError) -> FhirError:
    """The API error for a storage error that is not an outage (StorageUnavailable is answered 503)."""
    kind: type[FhirError] = {ResourceNotFound: NotFound, ResourceGone: Gone, InvalidSearch: BadSearch}.get(
        type(exc), FhirError
    )
    return kind(str(exc))


def as_fhir_error(exc: FhirError | StorageError | ValueError) -> FhirError:
    """The API error a failed interaction answers with: ours as it is, a storage error mapped, any other bad value a 400."""
    if isinstance(exc, FhirError):
        return exc
    if isinstance(exc, StorageError):
        return from_storage(exc)
    return BadRequest(str(exc))
