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


class PayloadTooLarge(FhirError):
    """The request body is larger than the configured limit."""

    status_code = 413
    issue_code = "too-long"


# Issue 4, HL7 v2: each error knows its acknowledgement code (original mode; enhanced mode answers
# the commit codes CR/CE instead) and its HL7 table 0357 error code for the ERR segment.


class Hl7Error(Exception):
    """Base class: a message that cannot be taken as sent. Only the MLLP edge turns it into an ACK."""

    retriable = False
    ack_code = "AR"
    error_code = "207"  # Application internal error
    error_text = "Application internal error"

    def __init__(self, message: str, *, location: tuple[str, int, int] | None = None) -> None:
        super().__init__(message)
        # (segment id, segment sequence, field position) for ERR-2 / ERR-1 (HL7 v2 2.15.5).
        self.location = location


class NotHl7(Hl7Error):
    """No MSH segment first, or a header that cannot be read."""

    error_code = "100"
    error_text = "Segment sequence error"


class BadEncoding(Hl7Error):
    """MSH-1/MSH-2 are not a usable set of delimiters (HL7 v2 2.5.4)."""

    error_code = "102"
    error_text = "Data type error"


class UnsupportedMessageType(Hl7Error):
    """MSH-9.1 is a message type this engine does not take."""

    error_code = "200"
    error_text = "Unsupported message type"


class UnsupportedEvent(Hl7Error):
    """MSH-9.2 is a trigger event this engine does not take for the message type."""

    error_code = "201"
    error_text = "Unsupported event code"


class UnsupportedProcessingId(Hl7Error):
    """MSH-11 is neither P (production), D (debugging) nor T (training)."""

    error_code = "202"
    error_text = "Unsupported processing id"


class UnsupportedVersion(Hl7Error):
    """MSH-12 is outside the versions this engine speaks."""

    error_code = "203"
    error_text = "Unsupported version id"


class SenderNotAllowed(Hl7Error):
    """MSH-3/MSH-4 are not on the allowlist."""


class MessageRefused(Hl7Error):
    """Too large, or otherwise refused before it could be read."""


class MappingFailed(Hl7Error):
    """The message is well formed but lacks what the mapping needs (e.g. PID-3); the sender must fix it."""

    ack_code = "AE"
    error_code = "101"
    error_text = "Required field missing"
