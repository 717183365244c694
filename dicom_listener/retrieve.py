"""Query/Retrieve C-MOVE and C-GET SCP (PS3.4 C.4.2, C.4.3): the instances an identifier names,
sent exactly as stored, with the sub-operation counts in pending responses and the final status.

C-MOVE sends them on a new association to the move destination, an AE title known in
`dicom_peers` (with a host and port) or as a "dicom" destination (option ae_title), through the
outbound C-STORE code (integration/outbound/dicom.py); an unknown destination is A801H. C-GET
sends them on the requesting association, on the contexts where the requestor took the SCP role
(PS3.7 D.3.3.4), reading each C-STORE-RSP. Either is cancelled between sub-operations by a
C-CANCEL (FE00H). The final status follows C.4.2.3.1: Success when every sub-operation succeeded,
B000H when some failed or warned, A702H when all failed, with the Failed SOP Instance UID List.
Every study sent from is audited (DCM 110104 DICOM Instances Transferred, PS3.15 A.5.3.2).
"""

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from audit.log import append_many
from audit.records import INSTANCES_RETRIEVED, AuditRecord, Outcome
from dicom_listener import dimse, exchange, negotiation
from dicom_listener.association import Association
from dicom_listener.ingest import Receiver, audit_refusal
from dicom_listener.query import level_of, text_of
from integration.errors import CannotUnderstand
from integration.instances.spool import Spool
from integration import dimse_status
from integration.dimse_status import Category, category
from integration.outbound.dicom import Peer, convertible, peer, store_all
from integration.outbound.forwards import Stored
from integration.outbound.target import target_of
from storage.db import read_scope, session_scope
from storage.destinations import destinations
from storage.dicom_query import Level, QueryError, instances
from storage.errors import StorageUnavailable
from storage.forwards import ForwardItem
from storage.instances import correlation_id_for_study

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """A retrieve's sub-operations so far (PS3.4 C.4.2.1.6-9), and per study for the audit trail."""

    studies: dict[str, list[ForwardItem]]
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)
    # Per study: [completed or warning, failed].
    per_study: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """How many sub-operations the identifier asked for."""
        return sum(len(items) for items in self.studies.values())

    def add(self, study_uid: str, sop_uid: str, kind: Category) -> None:
        """Count one sub-operation's outcome."""
        tally = self.per_study.setdefault(study_uid, [0, 0])
        if kind == Category.SUCCESS:
            self.completed += 1
        elif kind == Category.WARNING:
            self.warning += 1
        else:
            self.failed += 1
            self.failed_uids.append(sop_uid)
        tally[0 if kind in (Category.SUCCESS, Category.WARNING) else 1] += 1

    def counts(self, *, remaining: bool = True) -> dimse.SubOperations:
        """The counts a response carries; a final response has no Remaining (C.4.2.1.6)."""
        left = self.total - self.completed - self.failed - self.warning
        return dimse.SubOperations(left if remaining else None, self.completed, self.failed, self.warning)

    def final_status(self) -> int:
        """Success, Warning or Refused for the sub-operations done (PS3.4 C.4.2.3.1, C.4.3.3.1)."""
        if not self.failed and not self.warning:
            return dimse_status.SUCCESS
        if self.failed and not self.completed and not self.warning:
            return dimse_status.UNABLE_TO_PERFORM_SUB_OPERATIONS
        return dimse_status.SUB_OPERATIONS_WITH_FAILURES

    def failures(self) -> Dataset | None:
        """The final response's identifier: the Failed SOP Instance UID List (C.4.2.1.4.2), if any failed."""
        if not self.failed_uids:
            return None
        ds = Dataset()
        ds.FailedSOPInstanceUIDList = self.failed_uids
        return ds


def _audit(receiver: Receiver, assoc: Association, progress: Progress, *, via: str, destination: str, level: str) -> None:
    records = [
        AuditRecord(
            hop=INSTANCES_RETRIEVED,
            correlation_id=correlation_id_for_study(study_uid),
            agent_who=f"ae:{assoc.calling_ae}",
            agent_address=assoc.address,
            entity_what=study_uid,
            outcome=Outcome.SUCCESS if not failed else Outcome.MINOR_FAILURE,
            detail={"via": via, "destination": destination, "level": level, "sent": str(sent), "failed": str(failed)},
        )
        for study_uid, (sent, failed) in progress.per_study.items()
    ]
    if not records:
        return
    try:
        with session_scope(receiver.engine) as session:
            append_many(session, records)
    except StorageUnavailable:
        log.error("could not audit a %s: database unavailable", via)


Serve = Callable[[Receiver, Association, dimse.Command, int, Progress], None]


def _retrieve(receiver: Receiver, assoc: Association, request: dimse.Command, context_id: int, spool: Spool, *, via: str) -> None:
    """What C-MOVE and C-GET share: permission, identifier, the instances, the final response."""
    assert assoc.policy is not None
    allowed = assoc.policy.may_move if via == "C-MOVE" else assoc.policy.may_get
    if not allowed:
        audit_refusal(receiver, assoc, INSTANCES_RETRIEVED, via=via, reason="the calling AE may not retrieve")
        exchange.respond(assoc, context_id, request, dimse_status.NOT_AUTHORIZED, "the calling AE may not retrieve")
        return
    models = negotiation.MOVE if via == "C-MOVE" else negotiation.GET
    root: Level = models[assoc.contexts[context_id].abstract_syntax]  # type: ignore[assignment]
    try:
        identifier = exchange.data_set(spool, assoc.contexts[context_id].transfer_syntax, max_bytes=receiver.settings.dicom_max_request_bytes)
        level = level_of(identifier, root)
        keys = {e.keyword: text_of(e.value) for e in identifier if e.keyword and e.VR != "SQ"}
        with read_scope(receiver.engine) as session:
            progress = Progress(instances(session, level, keys))
    except QueryError as exc:
        exchange.respond(assoc, context_id, request, dimse_status.DATA_SET_DOES_NOT_MATCH, str(exc))
        return
    except StorageUnavailable:
        exchange.respond(assoc, context_id, request, dimse_status.UNABLE_TO_CALCULATE_MATCHES, "index unavailable, retry later")
        return
    except (InvalidDicomError, CannotUnderstand, ValueError, EOFError, KeyError, TypeError, OSError) as exc:
        exchange.respond(assoc, context_id, request, dimse_status.CANNOT_UNDERSTAND, f"identifier unreadable: {type(exc).__name__}")
        return
    serve: Serve = _move if via == "C-MOVE" else _get
    destination = request.move_destination if via == "C-MOVE" else assoc.calling_ae
    try:
        serve(receiver, assoc, request, context_id, progress)
    finally:
        _audit(receiver, assoc, progress, via=via, destination=destination, level=level)


def move(receiver: Receiver, assoc: Association, request: dimse.Command, context_id: int, spool: Spool) -> None:
    """Answer a C-MOVE: C-STOREs to the move destination, pending responses, the final status."""
    _retrieve(receiver, assoc, request, context_id, spool, via="C-MOVE")


def get(receiver: Receiver, assoc: Association, request: dimse.Command, context_id: int, spool: Spool) -> None:
    """Answer a C-GET: C-STOREs on this association, pending responses, the final status."""
    _retrieve(receiver, assoc, request, context_id, spool, via="C-GET")


def destination(receiver: Receiver, assoc: Association, ae_title: str) -> Peer | None:
    """The move destination called `ae_title`: a peer with a port, else an enabled "dicom" destination; None if unknown."""
    settings = receiver.settings
    known = receiver.peers.peer(ae_title)
    # A peer without a host of its own listens where it calls from when it moves to itself.
    host = (known.host or (assoc.address if known.ae_title == assoc.calling_ae else "")) if known else ""
    if known is not None and known.port and host:
        return Peer(host, known.port, known.ae_title, settings.dicom_ae_title, None, settings.dicom_dimse_timeout)
    with read_scope(receiver.engine) as session:
        rows = [r for r in destinations(session, kind="dicom", enabled_only=True) if (r.options or {}).get("ae_title") == ae_title]
        targets = [target_of(r) for r in rows]
    if not targets:
        return None
    # Sub-operations come from our own AE title, whatever the destination's forwards use.
    return replace(peer(targets[0], settings.dicom_dimse_timeout), calling_ae=settings.dicom_ae_title)


def _move(receiver: Receiver, assoc: Association, request: dimse.Command, context_id: int, progress: Progress) -> None:
    try:
        to = destination(receiver, assoc, request.move_destination)
    except StorageUnavailable:
        exchange.respond(assoc, context_id, request, dimse_status.UNABLE_TO_CALCULATE_MATCHES, "index unavailable, retry later")
        return
    if to is None:
        exchange.respond(assoc, context_id, request, dimse_status.MOVE_DESTINATION_UNKNOWN, "move destination unknown")
        return
    study_of = {item.sop_uid: study for study, items in progress.studies.items() for item in items}
    stopped = False

    def each(stored: Stored) -> bool:
        nonlocal stopped
        kind = category(stored.status) if stored.sent and stored.status is not None else Category.FAILURE
        progress.add(study_of[stored.sop_uid], stored.sop_uid, kind)
        if exchange.cancelled(assoc, request.message_id):
            stopped = True
            return False
        if progress.counts().remaining:
            exchange.respond(assoc, context_id, request, dimse_status.PENDING, counts=progress.counts())
        return True

    items = [item for study in progress.studies.values() for item in study]
    store_all(receiver.objects, to, items, originator=(assoc.calling_ae, request.message_id), each=each)
    _finish(assoc, context_id, request, progress, stopped)


def _finish(assoc: Association, context_id: int, request: dimse.Command, progress: Progress, stopped: bool) -> None:
    if stopped:
        exchange.respond(assoc, context_id, request, dimse_status.CANCEL, identifier=progress.failures(), counts=progress.counts())
        return
    status = progress.final_status()
    exchange.respond(assoc, context_id, request, status, identifier=progress.failures(), counts=progress.counts(remaining=False))


def _context(assoc: Association, item: ForwardItem) -> tuple[int, bool] | None:
    """The context to send `item` on, and whether it needs re-encoding; None when the requestor took none."""
    ours = {cid: cx for cid, cx in assoc.contexts.items() if cx.abstract_syntax == item.sop_class_uid and cx.as_scu}
    exact = next((cid for cid, cx in ours.items() if cx.transfer_syntax == item.transfer_syntax_uid), None)
    if exact is not None:
        return exact, False
    if convertible(item.transfer_syntax_uid):
        # Uncompressed little endian either way: the data set is re-encoded, its values untouched.
        plain = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        other = next((cid for cid, cx in ours.items() if cx.transfer_syntax in plain), None)
        if other is not None:
            return other, True
    return None


def _store_here(receiver: Receiver, assoc: Association, item: ForwardItem, workdir: Path) -> Category:
    """One C-GET sub-operation: the stored instance as a C-STORE on this association; its outcome."""
    chosen = _context(assoc, item)
    if chosen is None:
        return Category.FAILURE  # PS3.4 C.4.3.3.1: no presentation context for it
    context_id, reencode = chosen
    path = workdir / "instance.dcm"
    try:
        receiver.objects.get_file(item.object_key, path)
    except StorageUnavailable as exc:
        log.warning("C-GET sub-operation failed, cannot read %s: %s", item.object_key, exc)
        return Category.FAILURE
    message_id = assoc.next_message_id()
    command = dimse.c_store_request(message_id, item.sop_class_uid, item.sop_uid)
    with path.open("rb") as f:
        if reencode:
            data = exchange.encode_data_set(dcmread(f), assoc.contexts[context_id].transfer_syntax)
            exchange.request(assoc, context_id, command, data)
        else:
            start = exchange.stored_data_set(f)
            exchange.request(assoc, context_id, command, f, path.stat().st_size - start)
    answer = exchange.response_to(assoc, message_id)
    return category(answer.status)


def _get(receiver: Receiver, assoc: Association, request: dimse.Command, context_id: int, progress: Progress) -> None:
    stopped = False
    with tempfile.TemporaryDirectory(prefix="doctorai-get-") as tmp:
        for study_uid, items in progress.studies.items():
            for item in items:
                if exchange.cancelled(assoc, request.message_id):
                    stopped = True
                    break
                try:
                    kind = _store_here(receiver, assoc, item, Path(tmp))
                except (InvalidDicomError, ValueError) as exc:
                    log.warning("C-GET sub-operation failed for %s: %s", item.sop_uid, exc)
                    kind = Category.FAILURE
                progress.add(study_uid, item.sop_uid, kind)
                if progress.counts().remaining:
                    exchange.respond(assoc, context_id, request, dimse_status.PENDING, counts=progress.counts())
            if stopped:
                break
    _finish(assoc, context_id, request, progress, stopped)
