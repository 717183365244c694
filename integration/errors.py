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
    """An outbound message was not acknowledged AA/CA; `retriable` says whether sending again can help."""

    def __init__(self, message: str, *, retriable: bool, ack_code: str = "") -> None:
        super().__init__(message)
        self.retriable = retriable
        self.ack_code = ack_code


class StudyNotFound(PipelineError):
    """No study with this StudyInstanceUID is in the index."""


class StudyStateConflict(PipelineError):
    """The study's status does not allow the operation (releasing a study that is not held)."""


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
