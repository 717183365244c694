"""DICOM to a destination: a forward's instances over C-STORE, as stored, in the destination's own thread.

Each (SOP class, stored transfer syntax) pair gets a presentation context with the stored syntax and,
when that is uncompressed little endian, a second one with Explicit and Implicit VR Little Endian
(PS3.5 A.1-A.2), so an SCP that only takes those still gets the instance. At most 128 contexts
go in one association (PS3.8 9.3.2.2); more take more associations. An instance goes as stored
whenever its syntax was accepted; compressed instances are never transcoded. A success or a
warning status means the SCP stored the instance (PS3.4 B.2.3, integration.dimse_status).
pynetdicom is synchronous: each destination gets one thread, so a hung association blocks only
its own destination. TLS per PS3.15 B.9 (integration.tls).
"""

import asyncio
import socket
import ssl
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.association import Association

from integration.config import IntegrationSettings
from integration.dimse_status import Category, category
from integration.outbound.engine import Transport
from integration.outbound.forwards import QUEUE, Attempt, DueForward, Stored
from integration.outbound.target import Target
from integration.tls import client_context
from storage.errors import StorageUnavailable
from storage.forwards import ForwardItem
from storage.objects import ObjectStore

DEFAULT_CALLING_AE = "DOCTORAI"
# The AE title and Message ID of the C-MOVE a C-STORE sub-operation serves.
Originator = tuple[str, int]
MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are the odd numbers 1-255


@dataclass(frozen=True)
class Peer:
    """A DICOM destination as the SCU needs it."""

    host: str
    port: int
    called_ae: str
    calling_ae: str
    tls: ssl.SSLContext | None
    timeout: float


def peer(target: Target, timeout: float) -> Peer:
    """A "dicom" destination as the SCU needs it: its AE titles, and a TLS context when it wants TLS."""
    options = {key: target.option(key) for key in ("ca_file", "cert_file", "key_file")}
    context = client_context(options) if target.tls else None
    calling_ae = target.option("calling_ae") or DEFAULT_CALLING_AE
    return Peer(target.host, target.port, target.option("ae_title"), calling_ae, context, timeout)


def convertible(syntax: str) -> bool:
    """Uncompressed little endian (deflated or not): pynetdicom can re-encode it into ELE or ILE."""
    uid = UID(syntax)
    return not uid.is_compressed and uid.is_little_endian


def offered_contexts(sop_class: str, stored: str) -> list[tuple[str, tuple[str, ...]]]:
    """The contexts proposed for instances of `sop_class` stored in `stored`: one with the stored
    syntax alone, so an SCP that can take it has to (an SCP picks among one context's syntaxes by
    its own preference), plus, when that is uncompressed little endian, one with Explicit and
    Implicit VR Little Endian (PS3.5 A.1, A.2) that pynetdicom can re-encode into."""
    contexts: list[tuple[str, tuple[str, ...]]] = [(sop_class, (stored,))]
    if convertible(stored):
        contexts.append((sop_class, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)))
    return contexts


def context_groups(items: list[ForwardItem]) -> list[list[tuple[str, tuple[str, ...]]]]:
    """The distinct contexts `items` need, in groups of at most 128 (PS3.8 9.3.2.2): one association each.

    A group always holds every context of the (SOP class, syntax) pairs it serves.
    """
    groups: list[list[tuple[str, tuple[str, ...]]]] = [[]]
    for sop_class, syntax in sorted({(i.sop_class_uid, i.transfer_syntax_uid) for i in items}):
        needed = [cx for cx in offered_contexts(sop_class, syntax) if cx not in groups[-1]]
        if len(groups[-1]) + len(needed) > MAX_CONTEXTS:
            groups.append(offered_contexts(sop_class, syntax))
        else:
            groups[-1].extend(needed)
    return [g for g in groups if g]


def _serves(group: list[tuple[str, tuple[str, ...]]], item: ForwardItem) -> bool:
    return (item.sop_class_uid, (item.transfer_syntax_uid,)) in group


def unreachable(peer: Peer) -> str:
    """Why a TCP connection (and, for a TLS peer, its handshake) fails, "" when it succeeds; the
    connection is closed again.

    Tried before pynetdicom associates: pynetdicom words a refused connection or a failed
    handshake as an abort and leaves its socket to the garbage collector; this names the reason
    (an untrusted certificate, a refused client certificate) and closes what it opens.
    """
    try:
        with socket.create_connection((peer.host, peer.port), timeout=peer.timeout) as sock:
            if peer.tls is not None:
                with peer.tls.wrap_socket(sock, server_hostname=peer.host):
                    pass
            return ""
    except ssl.SSLError as exc:
        return f"TLS handshake with {peer.host}:{peer.port} failed: {exc}"
    except OSError as exc:
        return f"cannot connect to {peer.host}:{peer.port}: {exc}"


def _associate(peer: Peer, group: list[tuple[str, tuple[str, ...]]]) -> Association:
    ae = AE(ae_title=peer.calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = peer.timeout
    tls_args = (peer.tls, peer.host) if peer.tls is not None else None
    return ae.associate(
        peer.host,
        peer.port,
        contexts=[build_context(sop_class, list(syntaxes)) for sop_class, syntaxes in group],
        ae_title=peer.called_ae,
        tls_args=tls_args,
    )


def _store_one(assoc: Association, item: ForwardItem, path: Path, originator: Originator | None) -> Stored:
    """C-STORE one fetched instance on the context that fits it, or fail it with the reason."""
    accepted = {cx.transfer_syntax[0] for cx in assoc.accepted_contexts if cx.abstract_syntax == item.sop_class_uid}
    # A C-MOVE's sub-operations name the C-MOVE they serve (PS3.7 9.1.1.1.6-7).
    moved = {"originator_aet": originator[0], "originator_id": originator[1]} if originator else {}
    try:
        if item.transfer_syntax_uid in accepted:
            # The stored bytes as they are: no re-encoding of the pixel data or anything else.
            response = assoc.send_c_store(path, **moved)  # type: ignore[arg-type]
        elif convertible(item.transfer_syntax_uid) and accepted & {ExplicitVRLittleEndian, ImplicitVRLittleEndian}:
            # Uncompressed little endian either way: pynetdicom re-encodes the data set (VR only).
            response = assoc.send_c_store(dcmread(path), **moved)  # type: ignore[arg-type]
        else:
            return _not_negotiated(item, accepted)
    except (ValueError, AttributeError, InvalidDicomError, OSError) as exc:
        # pynetdicom raises ValueError/AttributeError when it cannot encode or place the data set.
        return Stored(item.sop_uid, False, None, f"cannot send: {exc}")
    if "Status" not in response:
        return Stored(item.sop_uid, False, None, "no C-STORE response (DIMSE timeout or association aborted)")
    status = int(response.Status)
    # PS3.4 B.2.3: warnings (0xB000 coercion, 0xB006 elements discarded, 0xB007 data set does
    # not match the SOP class) mean the SCP stored the instance; failures mean it did not.
    kind = category(status)
    if kind in (Category.SUCCESS, Category.WARNING):
        return Stored(item.sop_uid, True, status)
    comment = str(response.get("ErrorComment", ""))
    return Stored(item.sop_uid, False, status, f"C-STORE {kind.lower()} 0x{status:04X} {comment}".strip())


def _not_negotiated(item: ForwardItem, accepted: set[UID]) -> Stored:
    """The destination accepted no context this instance can go on (PS3.8 9.3.3.2 results 3, 4)."""
    error = (
        f"the destination accepted no presentation context for SOP class {item.sop_class_uid} "
        f"with transfer syntax {item.transfer_syntax_uid}"
    )
    if accepted:
        error += f" (only {', '.join(sorted(accepted))})"
    if not convertible(item.transfer_syntax_uid):
        error += "; compressed instances are not transcoded"
    return Stored(item.sop_uid, False, None, error)


def _fetch(objects: ObjectStore, items: list[ForwardItem], workdir: Path) -> tuple[dict[str, Path], list[Stored]]:
    paths: dict[str, Path] = {}
    failed: list[Stored] = []
    for n, item in enumerate(items):
        path = workdir / f"{n}.dcm"
        try:
            objects.get_file(item.object_key, path)
        except StorageUnavailable as exc:
            failed.append(Stored(item.sop_uid, False, None, f"cannot read {item.object_key}: {exc}"))
            continue
        paths[item.sop_uid] = path
    return paths, failed


def store_all(
    objects: ObjectStore,
    peer: Peer,
    items: list[ForwardItem],
    *,
    originator: Originator | None = None,
    each: Callable[[Stored], bool] | None = None,
) -> Attempt:
    """Send every item over as few associations as its contexts allow; never raises for a peer's failure.

    `each` sees every instance's outcome as it is known (a C-MOVE's pending responses) and stops
    the sending by returning False (a C-MOVE cancelled); the instances not tried are left out.
    """
    results: list[Stored] = []
    associated = False
    association_error = ""

    def done(*outcomes: Stored) -> bool:
        for outcome in outcomes:
            results.append(outcome)
            if each is not None and not each(outcome):
                return False
        return True

    with tempfile.TemporaryDirectory(prefix="doctorai-forward-") as tmp:
        # Fetched to disk first (streaming, flat memory), so no association idles on the object store.
        paths, failed = _fetch(objects, items, Path(tmp))
        if not done(*failed):
            return Attempt(results, associated, association_error)
        fetched = [i for i in items if i.sop_uid in paths]
        for contexts in context_groups(fetched):
            group = [i for i in fetched if _serves(contexts, i)]
            if not association_error:
                association_error = unreachable(peer)
            if association_error:
                if not done(*(Stored(i.sop_uid, False, None, association_error) for i in group)):
                    break
                continue
            assoc = _associate(peer, contexts)
            if not assoc.is_established and assoc.rejected_contexts:
                # The peer answered but took none of the contexts: pynetdicom aborts the
                # association itself. The peer is reachable; these instances cannot go there.
                close_socket(assoc)
                associated = True
                if not done(*(_not_negotiated(i, set()) for i in group)):
                    break
                continue
            if not assoc.is_established:
                close_socket(assoc)
                association_error = _why_not(assoc, peer)
                if not done(*(Stored(i.sop_uid, False, None, association_error) for i in group)):
                    break
                continue
            associated = True
            try:
                go_on, association_error = _send_group(assoc, group, paths, peer, originator, done)
                if not go_on:
                    break
            finally:
                if assoc.is_established:
                    assoc.release()
                else:
                    close_socket(assoc)
    return Attempt(results, associated, association_error)


def _send_group(
    assoc: Association,
    group: list[ForwardItem],
    paths: dict[str, Path],
    peer: Peer,
    originator: Originator | None,
    done: Callable[..., bool],
) -> tuple[bool, str]:
    """C-STORE a group's instances on one association: whether to go on (`done` may say stop),
    and why the association ended early if it did."""
    error = ""
    for item in group:
        if not assoc.is_established:
            error = f"association with {peer.called_ae}@{peer.host}:{peer.port} aborted"
            outcome = Stored(item.sop_uid, False, None, error)
        else:
            outcome = _store_one(assoc, item, paths[item.sop_uid], originator)
        if not done(outcome):
            return False, error
    return True, error


def close_socket(assoc: Association) -> None:
    """Close the socket of an association that ended abnormally.

    pynetdicom shuts such a socket down before closing it; when the peer has already gone (a
    refused client certificate arrives as a TLS alert after the handshake) the shutdown raises,
    the close never runs and the socket is left to the garbage collector.
    """
    transport = assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.close()


def _why_not(assoc: Association, peer: Peer) -> str:
    where = f"{peer.called_ae}@{peer.host}:{peer.port}"
    if assoc.is_rejected:
        return f"association rejected by {where} (A-ASSOCIATE-RJ)"
    return f"association with {where} aborted"


class Sender:
    """One DICOM destination's thread for its associations, kept while its task runs."""

    def __init__(self, target: Target, *, objects: ObjectStore, timeout: float) -> None:
        self.target = target
        self.objects = objects
        self.timeout = timeout
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"forward-{target.name}")

    async def send(self, item: DueForward) -> Attempt:
        """Send a forward's unsent instances over as few associations as their contexts allow."""
        loop = asyncio.get_running_loop()
        to = peer(self.target, self.timeout)
        return await loop.run_in_executor(self.executor, store_all, self.objects, to, list(item.items))

    async def close(self) -> None:
        """Let the thread go; an association still running ends with its own timeouts."""
        self.executor.shutdown(wait=False, cancel_futures=True)


def transport(settings: IntegrationSettings, objects: ObjectStore) -> Transport[DueForward, Attempt]:
    """DICOM destinations: the forwards queue, instances read from `objects`, one thread each."""
    return Transport(QUEUE, partial(Sender, objects=objects, timeout=settings.forward_timeout_seconds))
