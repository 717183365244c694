"""The edge where storage outcomes become DIMSE statuses and association events become audit records.

C-STORE answers Success only after the bytes are in object storage and the index row, with its
audit record, is committed (DESIGN.md 5.1). Statuses are from PS3.4 Annex B.2.3 and PS3.7 Annex C
(integration.dimse_status): A7xx Out of Resources when storage is down (the sender may retry later),
A9xx when the SOP class differs from the context, Cxxx when the data set cannot be read, 0111H
Duplicate SOP Instance under the reject policy, 0110H Processing Failure when the index refuses it.
The data set arrives in a Spool (memory while small, a temporary file past a limit) and goes
to object storage from there, so no large instance is ever held in memory whole.
"""

import logging
import time
import uuid
from dataclasses import dataclass, replace

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit.log import append
from audit.records import (
    ASSOCIATION_ABORTED,
    ASSOCIATION_ACCEPTED,
    ASSOCIATION_REJECTED,
    INSTANCE_REFUSED,
    INSTANCE_STORED,
    AuditRecord,
    Hop,
    Outcome,
)
from dicom_listener import dimse, metrics
from dicom_listener.admission import AssociationCounts, Refusal, check_peer, temporary_congestion
from dicom_listener.association import Association
from dicom_listener.config import DicomSettings
from dicom_listener.errors import CannotUnderstand, DuplicateRefused
from dicom_listener.indexer import Job
from dicom_listener.metadata import read_instance
from dicom_listener.negotiation import Context
from dicom_listener.peers import PeerDirectory
from dicom_listener.spool import Spool
from integration.dimse_status import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
)
from integration.logs import correlated
from storage.db import read_scope, session_scope
from storage.errors import StorageUnavailable
from storage.group_commit import GroupCommit
from storage.objects import ObjectStore, dicom_version_key
from storage.instances import ReceivedInstance, correlation_id_for_study, instance_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """A DIMSE response's status and error comment, and for an N-CREATE the SOP instance created."""

    status: int
    comment: str = ""
    instance_uid: str = ""


@dataclass(frozen=True)
class Receiver:
    """What the listener's handlers share in one process (built once, in __main__)."""

    objects: ObjectStore
    engine: Engine
    settings: DicomSettings
    peers: PeerDirectory
    counts: AssociationCounts
    indexer: GroupCommit[Job, None]


def _audit(engine: Engine, record: AuditRecord, what: str) -> None:
    try:
        with session_scope(engine) as session:
            append(session, record)
    except StorageUnavailable:
        log.error("could not audit %s: database unavailable", what)


# Associations -----------------------------------------------------------------------------


def admit(receiver: Receiver, assoc: Association) -> Refusal | None:
    """Decide on an A-ASSOCIATE-RQ from who is calling; None admits it and counts it against the limits."""
    settings = receiver.settings
    try:
        policy = receiver.peers.policy(assoc.calling_ae)
    except StorageUnavailable:
        return temporary_congestion("peer settings unavailable")
    refusal = check_peer(policy, assoc.address, allow_unknown=settings.dicom_allow_unknown_peers)
    refusal = refusal or receiver.counts.acquire(
        policy.ae_title, total_limit=settings.dicom_max_associations, peer_limit=policy.max_associations
    )
    if refusal is not None:
        return refusal
    assoc.policy = policy
    metrics.ACTIVE_ASSOCIATIONS.inc()
    return None


def closed(receiver: Receiver, assoc: Association) -> None:
    """A connection ended (released, aborted or rejected): give back its slot."""
    if assoc.policy is not None:
        receiver.counts.release(assoc.policy.ae_title)
        metrics.ACTIVE_ASSOCIATIONS.dec()


def _association_audit(receiver: Receiver, who: str, address: str, hop: Hop, reason: str, what: str) -> None:
    _audit(
        receiver.engine,
        AuditRecord(
            hop=hop,
            correlation_id=f"association-{uuid.uuid4()}",
            agent_who=who,
            agent_address=address,
            entity_what=f"ae:{receiver.settings.dicom_ae_title}",
            outcome=Outcome.MINOR_FAILURE,
            detail={"reason": reason},
        ),
        what,
    )


def _who(assoc: Association) -> str:
    return f"ae:{assoc.calling_ae}" if assoc.calling_ae else f"host:{assoc.address}"


def rejected(receiver: Receiver, assoc: Association, refusal: Refusal) -> None:
    """An association we rejected (called AE title, allowlist, limits): count and audit it."""
    log.info("rejected an association from %s: %s", assoc.address, refusal.why)
    metrics.ASSOCIATIONS.labels("rejected").inc()
    _association_audit(receiver, _who(assoc), assoc.address, ASSOCIATION_REJECTED, refusal.why, "a rejected association")


def tls_refused(receiver: Receiver, address: str, reason: str) -> None:
    """A connection whose TLS handshake failed (PS3.15 B.9): audit it; no calling AE title is known yet."""
    metrics.ASSOCIATIONS.labels("rejected").inc()
    _association_audit(receiver, f"host:{address}", address, ASSOCIATION_REJECTED, reason, "a refused TLS connection")


def audit_refusal(receiver: Receiver, assoc: Association, hop: Hop, *, via: str, reason: str) -> None:
    """A query or retrieve refused before anything was disclosed (the peer may not): audit it."""
    _audit(
        receiver.engine,
        AuditRecord(
            hop=hop,
            correlation_id=f"association-{uuid.uuid4()}",
            agent_who=_who(assoc),
            agent_address=assoc.address,
            entity_what=f"ae:{receiver.settings.dicom_ae_title}",
            outcome=Outcome.MINOR_FAILURE,
            detail={"via": via, "reason": reason},
        ),
        f"a refused {via}",
    )


def aborted(receiver: Receiver, assoc: Association, reason: str) -> None:
    """An association we aborted (protocol error, oversize PDU, timeout): count and audit it."""
    metrics.ASSOCIATIONS.labels("aborted").inc()
    _association_audit(receiver, _who(assoc), assoc.address, ASSOCIATION_ABORTED, reason, "an aborted association")


# C-STORE ------------------------------------------------------------------------------------


def _refuse(receiver: Receiver, assoc: Association, *, reason: str, item: ReceivedInstance | None = None) -> None:
    sop_uid = item.sop_uid if item else ""
    _audit(
        receiver.engine,
        AuditRecord(
            hop=INSTANCE_REFUSED,
            # A dataset we could not read belongs to no known study: it gets a correlation id of its own.
            correlation_id=correlation_id_for_study(item.study_uid) if item else f"association-{uuid.uuid4()}",
            agent_who=f"ae:{assoc.calling_ae}",
            agent_address=assoc.address,
            entity_what=sop_uid or f"ae:{receiver.settings.dicom_ae_title}",
            outcome=Outcome.MINOR_FAILURE,
            detail={"reason": reason},
        ),
        "a refused instance",
    )


def _records(receiver: Receiver, assoc: Association, item: ReceivedInstance, duplicate: str) -> tuple[AuditRecord, ...]:
    """instance-stored, preceded by association-accepted for the association's first instance of the study."""
    correlation_id = correlation_id_for_study(item.study_uid)
    stored = AuditRecord(
        hop=INSTANCE_STORED,
        correlation_id=correlation_id,
        agent_who=f"ae:{assoc.calling_ae}",
        agent_address=assoc.address,
        entity_what=item.sop_uid,
        # A re-send of identical bytes is acknowledged and recorded, but changes nothing.
        detail={"study_uid": item.study_uid, "object_key": item.object_key, "sha256": item.sha256, "duplicate": duplicate},
    )
    if item.study_uid in assoc.studies:
        return (stored,)
    accepted = AuditRecord(
        hop=ASSOCIATION_ACCEPTED,
        correlation_id=correlation_id,
        agent_who=f"ae:{assoc.calling_ae}",
        agent_address=assoc.address,
        entity_what=f"ae:{receiver.settings.dicom_ae_title}",
        detail={"study_uid": item.study_uid},
    )
    return (accepted, stored)


def _put(receiver: Receiver, key: str, spool: Spool) -> None:
    path = spool.path
    if path is None:
        receiver.objects.put_bytes(key, spool.contents(), "application/dicom", sha256=spool.sha256)
    else:
        receiver.objects.put_file(key, path, "application/dicom", sha256=spool.sha256)


def _ingest(receiver: Receiver, assoc: Association, item: ReceivedInstance, spool: Spool) -> str:
    """Store and index one received instance; returns the metrics outcome label."""
    assert assoc.policy is not None
    with read_scope(receiver.engine) as session:
        state = instance_state(session, sop_uid=item.sop_uid, sha256=item.sha256)
    duplicate, outcome, write = "false", "success", state == "new"
    if state == "same":
        duplicate, outcome = "identical", "duplicate"
    elif state == "different":
        if assoc.policy.duplicate_policy == "reject":
            raise DuplicateRefused("SOP instance already stored with other bytes")
        if assoc.policy.duplicate_policy == "keep-first":
            duplicate, outcome = "other-bytes-ignored", "duplicate-kept-first"
        else:
            # keep-last: a new version under its own key; the study opens a new revision.
            item = replace(item, object_key=dicom_version_key(item.study_uid, item.series_uid, item.sop_uid, item.sha256))
            duplicate, outcome, write = "new-version", "new-version", True
    if write:
        # Object first, then the row: a crash in between leaves an unindexed object that the
        # sender's retry overwrites (same key), never a row without its bytes.
        _put(receiver, item.object_key, spool)
    records = _records(receiver, assoc, item, duplicate)
    receiver.indexer.commit(Job(item=item, write=write, records=records, new_version=state == "different"))
    # Audited once committed: a failed commit is retried by the sender, and audits the association again.
    assoc.studies.add(item.study_uid)
    return outcome


def store(receiver: Receiver, assoc: Association, request: dimse.Command, context: Context, spool: Spool) -> Answer:
    """C-STORE: the spooled instance to object storage as received, indexed and audited; then its status."""
    started = time.perf_counter()
    if request.affected_sop_class_uid != context.abstract_syntax:
        metrics.INSTANCES.labels("cannot-understand").inc()
        _refuse(receiver, assoc, reason="Affected SOP Class UID differs from the presentation context's")
        return Answer(DATA_SET_DOES_NOT_MATCH, "SOP Class differs from the presentation context")
    try:
        with spool.open() as f:
            item = read_instance(
                f,
                size=spool.size,
                dataset_start=spool.dataset_start,
                transfer_syntax=context.transfer_syntax,
                sha256=spool.sha256,
                calling_ae=assoc.calling_ae,
                source_address=assoc.address,
                called_ae=assoc.called_ae,
            )
    except CannotUnderstand as exc:
        metrics.INSTANCES.labels("cannot-understand").inc()
        _refuse(receiver, assoc, reason=str(exc))
        return Answer(CANNOT_UNDERSTAND, str(exc))
    try:
        with correlated(correlation_id_for_study(item.study_uid)):
            outcome = _ingest(receiver, assoc, item, spool)
    except DuplicateRefused as exc:
        metrics.INSTANCES.labels("duplicate-refused").inc()
        _refuse(receiver, assoc, reason=str(exc), item=item)
        return Answer(DUPLICATE_SOP_INSTANCE, str(exc))
    except StorageUnavailable as exc:
        log.warning("storage unavailable, answering out of resources: %s", exc)
        metrics.INSTANCES.labels("out-of-resources").inc()
        return Answer(OUT_OF_RESOURCES, "Storage unavailable, retry later")
    except SQLAlchemyError as exc:
        # Not the database being down (that is StorageUnavailable) but this instance's rows being
        # refused: a retry would fail the same way. Its bytes stay unindexed, overwritten by a resend.
        log.exception("index refused instance %s", item.sop_uid)
        metrics.INSTANCES.labels("processing-failure").inc()
        _refuse(receiver, assoc, reason=f"index refused it: {type(exc).__name__}", item=item)
        return Answer(PROCESSING_FAILURE, "Index refused the instance")
    metrics.INSTANCES.labels(outcome).inc()
    metrics.BYTES.inc(item.size)
    metrics.STORE_SECONDS.observe(time.perf_counter() - started)
    return Answer(SUCCESS)
