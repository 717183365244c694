"""Pipeline errors. Consumers retry `retriable` ones with backoff and dead-letter the rest."""


class PipelineError(Exception):
    """Base class: permanent unless a subclass says otherwise."""

    retriable = False


class InvalidMessage(PipelineError):
    """A message that does not match its schema; retrying cannot help."""
