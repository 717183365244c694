"""Storage errors. `retriable` tells consumers and edges whether trying again can help."""


class StorageError(Exception):
    """Base class for storage failures."""

    retriable = False


class StorageUnavailable(StorageError):
    """The object store or the database cannot be reached or refused the write."""

    retriable = True
