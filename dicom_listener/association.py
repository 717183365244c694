"""What one association is: who called, what was negotiated, what it has sent (owned by its connection's thread)."""

import socket
from dataclasses import dataclass, field

from dicom_listener.negotiation import Context
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

