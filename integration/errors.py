"""Pipeline errors. Consumers retry `retriable` ones with backoff and dead-letter the rest."""

from typing import Any


class PipelineError(Exception):
    """Base class: permanent unless a subclass says otherwise."""

    retriable = False


class InvalidMessage(PipelineError):
    """A message that does not match its schema; retrying cannot help."""


class FramingError(PipelineError):
    """Bytes on an MLLP connection that are not a VT ... FS CR block (HL7 v2 Appendix C, MLLP release 2)."""


class MessageTooLarge(FramingError):
    """An MLLP block longer than the configured maximum; the connection cannot be resynchronised."""


class DeliveryFailed(PipelineError):
    """An outbound message was not acknowledged (AA/CA, HTTP 2xx); `retriable` says whether sending again
    can help, `reached` whether the peer was there at all (False: no connection; None: cannot tell)."""

    def __init__(self, message: str, *, retriable: bool, ack_code: str = "", reached: bool | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.ack_code = ack_code
        self.reached = reached


class CannotUnderstand(PipelineError):
    """An instance that cannot be parsed or lacks the Study, Series or SOP Instance UID (C-STORE 0xC000)."""


class InstanceTooLarge(PipelineError):
    """A data set longer than the door's limit, refused while it arrives (C-STORE 0xA700, PS3.4 B.2.3)."""


class DuplicateRefused(PipelineError):
    """A SOP instance we hold came again with other bytes and the sender's duplicate policy is "reject"."""


class StudyNotFound(PipelineError):
    """No study with this StudyInstanceUID is in the index."""


class StudyStateConflict(PipelineError):
    """The study's status does not allow the operation (releasing a study that is not held)."""


class JobNotFound(PipelineError):
    """No inference job has this id."""


class JobStateConflict(PipelineError):
    """The job's status does not allow the operation (retrying a job that did not fail)."""


class InvalidPackage(PipelineError):
    """A model package without a valid manifest.json or without its artifact."""


class InvalidManifest(InvalidPackage):
    """manifest.json does not validate; `errors` are pydantic's, for a 422 answer."""

    def __init__(self, message: str, *, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


class UnsafeArchive(InvalidPackage):
    """A package archive that cannot be unpacked safely: unreadable, a member outside its directory, a link, too big."""


class ModelConflict(PipelineError):
    """This name and version are registered already (with a different manifest, for the CLI): bump the version."""


class ModelNotFound(PipelineError):
    """No such model version is registered, the model has no active version, or none to roll back to."""


class ModelRetired(PipelineError):
    """A retired model version cannot be activated again."""


class LegacyFormatRefused(PipelineError):
    """The version's artifact is in a legacy format whose loading runs code, and no admin allowed it."""


# HL7 v2: each error knows its acknowledgement code (original mode; enhanced mode answers
# the commit codes CR/CE instead) and its HL7 table 0357 error code for the ERR segment.


class Hl7Error(PipelineError):
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


class UnknownCode(MappingFailed):
    """A coded field whose value is no code of its HL7 table."""

    error_code = "103"
    error_text = "Table value not found"


class ValueTooLong(MappingFailed):
    """An identifier longer than the engine keeps (an order's numbers, an accession, a patient id)."""

    error_code = "102"
    error_text = "Data type error"
