"""Errors of the results consumer. `retriable` ones are retried with backoff, the rest dead-lettered."""

from integration.errors import PipelineError


class InvalidResult(PipelineError):
    """A consumed message refers to a study or job the index does not hold; retrying cannot help."""


class ConcurrentWrite(PipelineError):
    """Another writer stored the same resource at the same time; trying again will see its work."""

    retriable = True
