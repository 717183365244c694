"""API errors. Each knows its HTTP status and FHIR issue code; only the edge turns it into an OperationOutcome."""


class FhirError(Exception):
    """Base class: a FHIR interaction that cannot be answered as asked."""

    retriable = False
    # HTTP status and http://hl7.org/fhir/R4/valueset-issue-type.html code of the OperationOutcome.
    status_code = 500
    issue_code = "exception"


class NotFound(FhirError):
    """The resource (or resource type) does not exist here."""

    status_code = 404
    issue_code = "not-found"


class BadRequest(FhirError):
    """The request cannot be understood."""

    status_code = 400
    issue_code = "invalid"


class InvalidSearch(BadRequest):
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


class InvalidResult(FhirError):
    """A consumed message refers to a study or job the index does not hold; retrying cannot help."""

    issue_code = "not-found"


class Conflict(FhirError):
    """Another writer stored the same resource at the same time; trying again will see its work."""

    retriable = True
    status_code = 409
    issue_code = "conflict"
