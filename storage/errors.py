"""Storage errors. `retriable` tells consumers and edges whether trying again can help."""


class StorageError(Exception):
    """Base class for storage failures."""

    retriable = False


class StorageUnavailable(StorageError):
    """The object store or the database cannot be reached or refused the write."""

    retriable = True


class ObjectTooLarge(StorageError):
    """An object is larger than the reader's bound: reading it whole would take unbounded memory."""


class ResourceNotFound(StorageError, LookupError):
    """The FHIR store holds no such resource, resource type or version."""


class ResourceGone(StorageError):
    """The FHIR resource (or the version asked for) was deleted; its history stays."""


class InvalidSearch(StorageError, ValueError):
    """A FHIR search parameter is unknown (under strict handling) or its value is malformed."""


class MessageNotFound(StorageError, LookupError):
    """No HL7 message was received with this id, or with this control id (MSH-10) from this sender."""


class AmbiguousMessage(StorageError, LookupError):
    """Several senders used this control id (MSH-10 is unique per sender only): the sender must be named."""
