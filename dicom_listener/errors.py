"""Listener errors (the ingest core's are in integration.errors); the service modules (ingest, steps,
query, retrieve, commitment) turn them into DIMSE statuses."""


class ListenerError(Exception):
    """Base class."""

    retriable = False


class TlsMisconfigured(ListenerError):
    """The TLS certificate, key or CA file cannot be read or used: the listener does not start."""


class ProtocolError(ListenerError):
    """The peer broke the upper layer protocol (PS3.8 9): the association is aborted with `reason`."""

    def __init__(self, message: str, *, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


class OversizePdu(ProtocolError):
    """A PDU longer than the maximum we announced (PS3.8 D.1) or than any association PDU can be."""


class AssociationLimit(ProtocolError):
    """An association past its overall time or byte limit (DOCTORAI_DICOM_ASSOCIATION_SECONDS, _MAX_ASSOCIATION_BYTES)."""


class PeerReleased(ListenerError):
    """The peer asked to release the association (A-RELEASE-RQ) while we waited for a message: we
    answer A-RELEASE-RP and the association ends (PS3.8 9.2, state Sta6 AR-2)."""


class PeerAborted(ListenerError):
    """The peer aborted the association (A-ABORT) while we waited for a message."""
