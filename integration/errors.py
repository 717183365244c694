"""Pipeline errors. Consumers retry `retriable` ones with backoff and dead-letter the rest."""


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
