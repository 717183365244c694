"""The edge where storage outcomes become DIMSE statuses and association events become audit records.

C-STORE answers Success only after the bytes are in object storage and the index row, with its
audit record, is committed (DESIGN.md 5.1); integration.instances holds that ingest core, shared
with STOW-RS. Statuses are from PS3.4 Annex B.2.3 and PS3.7 Annex C (integration.dimse_status):
A7xx Out of Resources when storage is down (the sender may retry later), A9xx when the SOP class
differs from the context, Cxxx when the data set cannot be read, 0111H Duplicate SOP Instance
under the reject policy, 0110H Processing Failure when the index refuses it. The data set arrives
in a Spool (memory while small, a temporary file past a limit) and goes to object storage from
there, so no large instance is ever held in memory whole.
"""

import logging
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from audit.records import ASSOCIATION_ABORTED, ASSOCIATION_ACCEPTED, ASSOCIATION_REJECTED, AuditRecord, Hop, Outcome
from dicom_listener import dimse, metrics
from dicom_listener.admission import AssociationCounts, Refusal, check_peer, temporary_congestion
from dicom_listener.association import Association
from dicom_listener.config import DicomSettings
from dicom_listener.negotiation import Context
from dicom_listener.peers import PeerDirectory
from integration.dimse_status import (
    CANNOT_UNDERSTAND,
    DATA_SET_DOES_NOT_MATCH,
    DUPLICATE_SOP_INSTANCE,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    RESOURCE_LIMITATION,
    SUCCESS,
)
from integration.errors import CannotUnderstand, DuplicateRefused
from integration.instances import ingest
from integration.instances.indexer import Job
from integration.instances.metadata import read_instance
from integration.instances.spool import Spool
from integration.logs import correlated
from storage.errors import StorageUnavailable
from storage.group_commit import GroupCommit
from storage.instances import ReceivedInstance, correlation_id_for_study
from storage.objects import ObjectStore

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
    indexer: GroupCommit[Job, bool]


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
    ingest.audit(
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


_HOPS = {ASSOCIATION_ABORTED.subtype: ASSOCIATION_ABORTED, ASSOCIATION_REJECTED.subtype: ASSOCIATION_REJECTED}


def refusals_audit(receiver: Receiver, address: str, kind: str, who: str, reason: str, count: int) -> None:
    """The audit record of `count` connections from `address` refused before any association (integration.refusals)."""
    ingest.audit(
        receiver.engine,
        AuditRecord(
            hop=_HOPS[kind],
            correlation_id=f"association-{uuid.uuid4()}",
            agent_who=who or f"host:{address}",
            agent_address=address,
            entity_what=f"ae:{receiver.settings.dicom_ae_title}",
            outcome=Outcome.MINOR_FAILURE,
            detail={"reason": reason, "count": str(count)},
        ),
        "refused connections",
    )


def who(assoc: Association) -> str:
    return f"ae:{assoc.calling_ae}" if assoc.calling_ae else f"host:{assoc.address}"


def audit_refusal(receiver: Receiver, assoc: Association, hop: Hop, *, via: str, reason: str) -> None:
    """A query or retrieve refused before anything was disclosed (the peer may not): audit it."""
    ingest.audit(
        receiver.engine,
        AuditRecord(
            hop=hop,
            correlation_id=f"association-{uuid.uuid4()}",
            agent_who=who(assoc),
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
    _association_audit(receiver, who(assoc), assoc.address, ASSOCIATION_ABORTED, reason, "an aborted association")


# C-STORE ------------------------------------------------------------------------------------


def _refuse(receiver: Receiver, assoc: Association, *, reason: str, item: ReceivedInstance | None = None) -> None:
    record = ingest.refused_record(
        agent=f"ae:{assoc.calling_ae}",
        address=assoc.address,
        reason=reason,
        item=item,
        target=f"ae:{receiver.settings.dicom_ae_title}",
        context="association",
    )
    ingest.audit(receiver.engine, record, "a refused instance")


# Requests whose data set is held whole; a larger one than the limit is refused while it arrives.
_COMPOSITE = {dimse.C_STORE_RQ, dimse.C_FIND_RQ, dimse.C_MOVE_RQ, dimse.C_GET_RQ}


def too_large(receiver: Receiver, assoc: Association, request: dimse.Command, reason: str) -> Answer:
    """A request whose data set passed its limit while arriving: audited, and the status its service gives.

    C-STORE, C-FIND, C-MOVE, C-GET: A700 Refused: Out of Resources (PS3.4 B.2.3, C.4.1.1.4);
    N-CREATE, N-SET, N-ACTION: 0213H Resource limitation (PS3.7 Annex C).
    """
    log.info("refused a data set from %s: %s", assoc.address, reason)
    if request.command_field == dimse.C_STORE_RQ:
        metrics.INSTANCES.labels("out-of-resources").inc()
    _refuse(receiver, assoc, reason=reason)
    status = OUT_OF_RESOURCES if request.command_field in _COMPOSITE else RESOURCE_LIMITATION
    return Answer(status, reason)


def _accepted(receiver: Receiver, assoc: Association, item: ReceivedInstance) -> tuple[AuditRecord, ...]:
    """association-accepted, for the association's first instance of the study (it precedes instance-stored)."""
    if item.study_uid in assoc.studies:
        return ()
    accepted = AuditRecord(
        hop=ASSOCIATION_ACCEPTED,
        correlation_id=correlation_id_for_study(item.study_uid),
        agent_who=f"ae:{assoc.calling_ae}",
        agent_address=assoc.address,
        entity_what=f"ae:{receiver.settings.dicom_ae_title}",
        detail={"study_uid": item.study_uid},
    )
    return (accepted,)


def _ingest(receiver: Receiver, assoc: Association, item: ReceivedInstance, spool: Spool) -> str:
    """Store and index one received instance; returns the metrics outcome label."""
    assert assoc.policy is not None
    stored = ingest.store(
        receiver,
        item,
        spool,
        policy=assoc.policy.duplicate_policy,
        agent=f"ae:{assoc.calling_ae}",
        address=assoc.address,
        preceding=_accepted(receiver, assoc, item),
    )
    # Audited once committed: a failed commit is retried by the sender, and audits the association again.
    assoc.studies.add(item.study_uid)
    if stored.announced:
        metrics.STUDIES_READY.labels("count-reached").inc()
    return stored.outcome


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
                max_inflated=receiver.settings.dicom_max_inflated_bytes,
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
        # The error's text quotes the row's values (names, dates): its type only, no traceback.
        log.error("index refused instance %s: %s", item.sop_uid, type(exc).__name__)
        metrics.INSTANCES.labels("processing-failure").inc()
        _refuse(receiver, assoc, reason=f"index refused it: {type(exc).__name__}", item=item)
        return Answer(PROCESSING_FAILURE, "Index refused the instance")
    metrics.INSTANCES.labels(outcome).inc()
    metrics.BYTES.inc(item.size)
    metrics.STORE_SECONDS.observe(time.perf_counter() - started)
    return Answer(SUCCESS)
