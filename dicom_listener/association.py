"""What one association is: who called, what was negotiated, what it has sent (owned by its connection's thread)."""

import socket
from collections import deque
from dataclasses import dataclass, field

from dicom_listener import dimse
from dicom_listener.negotiation import Context
from dicom_listener.pdus import Reader
from dicom_listener.peers import PeerPolicy


@dataclass
class Association:
    """The state of one association, owned by its connection's thread."""

    sock: socket.socket
    address: str
    calling_ae: str = ""
    called_ae: str = ""
    # Set once our admission check let it in (and counted it against the limits).
    policy: PeerPolicy | None = None
    contexts: dict[int, Context] = field(default_factory=dict)
    peer_max_pdu: int = 0
    # Studies this association has sent an instance of, audited as association-accepted once each.
    studies: set[str] = field(default_factory=set)
    reader: Reader | None = None
    # Message IDs of the requests we make on it (C-GET's C-STOREs, N-EVENT-REPORTs), PS3.7 9.1.1.1.1.
    last_message_id: int = 0
    # What arrived while an operation was in progress: a command assembling, a data set being
    # dropped, commands complete but not yet taken, and the Message IDs the peer cancelled.
    incoming: bytearray = field(default_factory=bytearray)
    dropping: bool = False
    backlog: deque[dimse.Command] = field(default_factory=deque)
    cancelled: set[int] = field(default_factory=set)
    # Storage commitment reports owed on this association: (Transaction UID, context ID).
    reports: list[tuple[str, int]] = field(default_factory=list)

    def next_message_id(self) -> int:
        """A Message ID for a request of ours, unique on this association (PS3.7 9.1.1.1.1)."""
        self.last_message_id = self.last_message_id % 0xFFFF + 1
        return self.last_message_id

