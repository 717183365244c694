"""pynetdicom event handlers: the edge where storage outcomes become DIMSE statuses.

C-STORE answers Success only after the bytes are in object storage and the index row, with its
audit record, is committed (DESIGN.md 5.1). Statuses are from PS3.4 Annex B.2.3 and PS3.7 C.4.
Datasets arrive in a spool file (pynetdicom's chunked receive) and go to object storage from
there, so no instance is ever held in memory whole.
"""

import logging
import time
import uuid
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.events import Event
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from audit.log import append, append_many
from audit.records import (
    ASSOCIATION_ABORTED,
    ASSOCIATION_ACCEPTED,
    ASSOCIATION_REJECTED,
    INSTANCE_REFUSED,
    INSTANCE_STORED,
    AuditRecord,
    Outcome,
)
from dicom_listener import metrics, sockets
from dicom_listener.admission import AdmittingACSE, AssociationCounts, Refusal, check_peer, temporary_congestion
from dicom_listener.associations import Associations
from dicom_listener.config import DicomSettings
from dicom_listener.errors import CannotUnderstand, DuplicateRefused
from dicom_listener.metadata import read_instance
from dicom_listener.peers import PeerDirectory, PeerPolicy
from integration.logs import correlated
from integration.messages import StudyReady
from integration.studies import announce
from storage.db import session_scope
from storage.errors import StorageUnavailable
from storage.objects import ObjectStore, dicom_version_key
from storage.queries import ReceivedInstance, correlation_id_for_study, count_instances, instance_state, record_instance
from storage.tables import Study

log = logging.getLogger(__name__)

SUCCESS = 0x0000
# PS3.4 B.2.3: "Refused: Out of Resources" (A7xx) - the sender may retry later.
OUT_OF_RESOURCES = 0xA700
# PS3.4 B.2.3: "Error: Cannot understand" (Cxxx).
CANNOT_UNDERSTAND = 0xC000
# PS3.7 C.4 general status "Duplicate SOP Instance" (0111H): the reject duplicate policy.
DUPLICATE_SOP_INSTANCE = 0x0111


@dataclass(frozen=True)
class Receiver:
    """What the listener's handlers share in one process (built once, in __main__)."""

    store: ObjectStore
    engine: Engine
    settings: DicomSettings
    peers: PeerDirectory
    counts: AssociationCounts
    associations: Associations


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # ErrorComment is LO, 64 characters at most (PS3.7 C.4.2.1.3)
    return ds


def _peer(assoc: Association) -> tuple[str, str]:
    return str(assoc.requestor.ae_title).strip(), str(assoc.requestor.address)


def _audit(engine: Engine, record: AuditRecord, what: str) -> None:
    try:
        with session_scope(engine) as session:
            append(session, record)
    except StorageUnavailable:
        log.error("could not audit %s: database unavailable", what)


# Associations -----------------------------------------------------------------------------


def admit(receiver: Receiver, assoc: Association, calling_ae: str) -> Refusal | None:
    """Decide on an A-ASSOCIATE-RQ before pynetdicom negotiates it; None admits it."""
    settings = receiver.settings
    try:
        policy = receiver.peers.policy(calling_ae)
    except StorageUnavailable:
        return temporary_congestion("peer settings unavailable")
    refusal = check_peer(policy, str(assoc.requestor.address), allow_unknown=settings.dicom_allow_unknown_peers)
    refusal = refusal or receiver.counts.acquire(
        policy.ae_title, total_limit=settings.dicom_max_associations, peer_limit=policy.max_associations
    )
    if refusal is not None:
        return refusal
    receiver.associations.admitted(assoc, policy)
    metrics.ACTIVE_ASSOCIATIONS.inc()
    # Per-peer limits (PS3.8 D.1 Maximum Length; PS3.7 timers) take effect before the A-ASSOCIATE-AC.
    assoc.acceptor.maximum_length = policy.max_pdu
    assoc.dimse_timeout = policy.dimse_timeout
    assoc.network_timeout = policy.network_timeout
    return None


def _oversize(receiver: Receiver, assoc: Association, length: int, limit: int) -> None:
    metrics.OVERSIZE_PDUS.inc()
    receiver.associations.note_abort(assoc, f"PDU of {length} bytes over the maximum of {limit}")


def handle_conn_open(event: Event, receiver: Receiver) -> None:
    """A TCP connection arrived: tune its socket and put our admission check in its ACSE."""
    sockets.tune(event.assoc, partial(_oversize, receiver))
    associations = receiver.associations
    event.assoc.acse = AdmittingACSE(event.assoc, partial(admit, receiver), associations.refused, associations.lock)


def _discard_partial_spool(assoc: Association) -> None:
    # A dataset cut off by an abort stays in pynetdicom's spool file, open and undeleted
    # (it creates it with delete=False): remove it, or every aborted transfer leaks disk.
    message = assoc.dimse.message
    spool = getattr(message, "_data_set_file", None) if message is not None else None
    if spool is None:
        return
    spool.close()
    Path(spool.name).unlink(missing_ok=True)


def handle_conn_close(event: Event, receiver: Receiver) -> None:
    """A connection closed (released, aborted or rejected): drop its partial spool file, free its slot."""
    _discard_partial_spool(event.assoc)
    policy = receiver.associations.forget(event.assoc)
    if policy is not None:
        receiver.counts.release(policy.ae_title)
        metrics.ACTIVE_ASSOCIATIONS.dec()


def handle_rejected(event: Event, receiver: Receiver) -> None:
    """An association we rejected (allowlist, limits, unknown called AE title, no context): audit it."""
    calling_ae, address = _peer(event.assoc)
    refusal = receiver.associations.refusal(event.assoc)
    reason = refusal.why if refusal else "called AE title not recognised or no acceptable context"
    metrics.ASSOCIATIONS.labels("rejected").inc()
    _audit(
        receiver.engine,
        AuditRecord(
            hop=ASSOCIATION_REJECTED,
            correlation_id=f"association-{uuid.uuid4()}",
            agent_who=f"ae:{calling_ae}",
            agent_address=address,
            entity_what=f"ae:{receiver.settings.dicom_ae_title}",
            outcome=Outcome.MINOR_FAILURE,
            detail={"reason": reason},
        ),
        "a rejected association",
    )


def handle_tls_refused(receiver: Receiver, address: str, reason: str) -> None:
    """A connection whose TLS handshake failed (PS3.15 B.9): audit it; no calling AE title is known yet."""
    metrics.ASSOCIATIONS.labels("rejected").inc()
    _audit(
        receiver.engine,
        AuditRecord(
            hop=ASSOCIATION_REJECTED,
            correlation_id=f"association-{uuid.uuid4()}",
            agent_who=f"host:{address}",
            agent_address=address,
            entity_what=f"ae:{receiver.settings.dicom_ae_title}",
            outcome=Outcome.MINOR_FAILURE,
            detail={"reason": reason},
        ),
        "a refused TLS connection",
    )


def handle_accepted(event: Event) -> None:
    """Count accepted associations (their audit record is written with the first instance of each study)."""
    metrics.ASSOCIATIONS.labels("accepted").inc()


def handle_aborted(event: Event, receiver: Receiver) -> None:
    """An association ended by A-ABORT, either side: count it, and audit the ones we aborted."""
    metrics.ASSOCIATIONS.labels("aborted").inc()
    reason = receiver.associations.abort_reason(event.assoc)
    if not reason:
        return
    calling_ae, address = _peer(event.assoc)
    _audit(
        receiver.engine,
        AuditRecord(
            hop=ASSOCIATION_ABORTED,
            correlation_id=f"association-{uuid.uuid4()}",
            agent_who=f"ae:{calling_ae}",
            agent_address=address,
            entity_what=f"ae:{receiver.settings.dicom_ae_title}",
            outcome=Outcome.MINOR_FAILURE,
            detail={"reason": reason},
        ),
        "an aborted association",
    )


def handle_echo(event: Event) -> int:
    """C-ECHO: Success (PS3.7 9.1.5)."""
    return SUCCESS


# C-STORE ------------------------------------------------------------------------------------


def _refuse(receiver: Receiver, calling_ae: str, address: str, *, reason: str, item: ReceivedInstance | None = None) -> None:
    sop_uid = item.sop_uid if item else ""
    _audit(
        receiver.engine,
        AuditRecord(
            hop=INSTANCE_REFUSED,
            # A dataset we could not read belongs to no known study: it gets a correlation id of its own.
            correlation_id=correlation_id_for_study(item.study_uid) if item else f"association-{uuid.uuid4()}",
            agent_who=f"ae:{calling_ae}",
            agent_address=address,
            entity_what=sop_uid or f"ae:{receiver.settings.dicom_ae_title}",
            outcome=Outcome.MINOR_FAILURE,
            detail={"reason": reason},
        ),
        "a refused instance",
    )


def _count_reached(study: Study, stored: int) -> bool:
    expected = study.expected_instances
    # Exactly the announced count: a late extra instance means the count was wrong, so that
    # revision waits for the quiet period instead.
    return study.status == "receiving" and expected is not None and stored == expected


def _commit(receiver: Receiver, assoc: Association, item: ReceivedInstance, *, write: bool, duplicate: str) -> StudyReady | None:
    """Index (when `write`), maybe declare the study ready by count, and audit, in one transaction."""
    calling_ae, address = _peer(assoc)
    correlation_id = correlation_id_for_study(item.study_uid)
    ready = None
    with session_scope(receiver.engine) as session:
        if write:
            study = record_instance(session, item=item)
            if study.expected_instances and _count_reached(study, count_instances(session, study_uid=item.study_uid)):
                ready = announce(
                    session, study, reason="count-reached", who=f"ae:{receiver.settings.dicom_ae_title}", now=study.last_received_at
                )
        records = []
        if receiver.associations.first(assoc, item.study_uid):
            records.append(
                AuditRecord(
                    hop=ASSOCIATION_ACCEPTED,
                    correlation_id=correlation_id,
                    agent_who=f"ae:{calling_ae}",
                    agent_address=address,
                    entity_what=f"ae:{receiver.settings.dicom_ae_title}",
                    detail={"study_uid": item.study_uid},
                )
            )
        records.append(
            AuditRecord(
                hop=INSTANCE_STORED,
                correlation_id=correlation_id,
                agent_who=f"ae:{calling_ae}",
                agent_address=address,
                entity_what=item.sop_uid,
                # A re-send of identical bytes is acknowledged and recorded, but changes nothing.
                detail={
                    "study_uid": item.study_uid,
                    "object_key": item.object_key,
                    "sha256": item.sha256,
                    "duplicate": duplicate,
                },
            )
        )
        # One chain lock and one INSERT for the association's and the instance's records.
        append_many(session, records)
    return ready


def _ingest(receiver: Receiver, assoc: Association, item: ReceivedInstance, path: Path, policy: PeerPolicy) -> str:
    """Store and index one received instance; returns the metrics outcome label."""
    with session_scope(receiver.engine) as session:
        state = instance_state(session, sop_uid=item.sop_uid, sha256=item.sha256)
    duplicate, outcome, write = "false", "success", state == "new"
    if state == "same":
        duplicate, outcome = "identical", "duplicate"
    elif state == "different":
        if policy.duplicate_policy == "reject":
            raise DuplicateRefused("SOP instance already stored with other bytes")
        if policy.duplicate_policy == "keep-first":
            duplicate, outcome = "other-bytes-ignored", "duplicate-kept-first"
        else:
            # keep-last: a new version under its own key; the study opens a new revision.
            item = replace(item, object_key=dicom_version_key(item.study_uid, item.series_uid, item.sop_uid, item.sha256))
            duplicate, outcome, write = "new-version", "new-version", True
    if write:
        # Object first, then the row: a crash in between leaves an unindexed object that the
        # sender's retry overwrites (same key), never a row without its bytes.
        receiver.store.put_file(item.object_key, path, content_type="application/dicom")
    try:
        ready = _commit(receiver, assoc, item, write=write, duplicate=duplicate)
    except IntegrityError:
        # Another association created the same study or series row first: once more sees it.
        try:
            ready = _commit(receiver, assoc, item, write=write, duplicate=duplicate)
        except IntegrityError as exc:
            raise StorageUnavailable(f"concurrent index update: {type(exc.orig).__name__}") from exc
    if ready is not None:
        metrics.STUDIES_READY.labels(ready.reason).inc()
    return outcome


def handle_store(event: Event, receiver: Receiver) -> int | Dataset:
    """C-STORE: stream the spooled dataset to object storage as received, index it, audit, then answer."""
    started = time.perf_counter()
    assoc = event.assoc
    calling_ae, address = _peer(assoc)
    path = Path(event.dataset_path)
    try:
        # The called AE title as the sender asked for it (A-ASSOCIATE-RQ, PS3.8 9.3.2).
        called_ae = str(getattr(assoc.requestor.primitive, "called_ae_title", "") or "").strip()
        item = read_instance(path, calling_ae=calling_ae, source_address=address, called_ae=called_ae)
    except CannotUnderstand as exc:
        metrics.INSTANCES.labels("cannot-understand").inc()
        _refuse(receiver, calling_ae, address, reason=str(exc))
        return _status(CANNOT_UNDERSTAND, str(exc))
    try:
        policy = receiver.associations.policy(assoc) or receiver.peers.policy(calling_ae)
        with correlated(correlation_id_for_study(item.study_uid)):
            outcome = _ingest(receiver, assoc, item, path, policy)
    except DuplicateRefused as exc:
        metrics.INSTANCES.labels("duplicate-refused").inc()
        _refuse(receiver, calling_ae, address, reason=str(exc), item=item)
        return _status(DUPLICATE_SOP_INSTANCE, str(exc))
    except StorageUnavailable as exc:
        log.warning("storage unavailable, answering out of resources: %s", exc)
        metrics.INSTANCES.labels("out-of-resources").inc()
        return _status(OUT_OF_RESOURCES, "Storage unavailable, retry later")
    metrics.INSTANCES.labels(outcome).inc()
    metrics.BYTES.inc(item.size)
    metrics.STORE_SECONDS.observe(time.perf_counter() - started)
    return SUCCESS
