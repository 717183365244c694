"""DICOM nodes for forwarding tests: pynetdicom Storage SCPs in this process that record what they get."""

import ssl
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

# A refusal policy: (SOP Instance UID, how many C-STOREs of it came before) -> status to answer.
Policy = Callable[[str, int], int]


@dataclass
class Received:
    """What one C-STORE delivered: the agreed transfer syntax, the data set bytes and its pixel data (b"" if none)."""

    transfer_syntax: UID
    dataset_bytes: bytes
    pixel_data: bytes


@dataclass
class StoreScp:
    """A Storage SCP on 127.0.0.1:`port`, accepting every storage SOP class with `syntaxes`."""

    port: int
    ae_title: str = "STORESCP"
    syntaxes: Sequence[str] = tuple(ALL_TRANSFER_SYNTAXES)
    policy: Policy = lambda _sop, _seen: 0x0000
    received: dict[str, Received] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set: the SCP speaks TLS only (PS3.15 B.9), as the context requires.
    tls: ssl.SSLContext | None = None

    def handle_store(self, event: evt.Event) -> int:
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        with self.lock:
            seen = self.calls[sop_uid]
            self.calls[sop_uid] += 1
        status = self.policy(sop_uid, seen)
        if status == 0x0000:
            dataset = event.dataset
            # Instances without pixel data (a structured report) record b"".
            self.received[sop_uid] = Received(
                UID(event.context.transfer_syntax),
                event.request.DataSet.getvalue(),
                bytes(dataset.get("PixelData") or b""),
            )
        return status


@contextmanager
def store_scp(scp: StoreScp) -> Iterator[StoreScp]:
    """Run `scp` (C-STORE and C-ECHO) until the block ends."""
    ae = AE(ae_title=scp.ae_title)
    for cx in AllStoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, list(scp.syntaxes))
    ae.add_supported_context(Verification)
    server = ae.start_server(
        ("127.0.0.1", scp.port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, scp.handle_store)],
        ssl_context=scp.tls,
    )
    try:
        yield scp
    finally:
        server.shutdown()
