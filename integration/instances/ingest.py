"""Storing one instance, whichever door it came in by: the duplicate decision, the object, the index rows
and the audit records, committed before the door answers success (DESIGN.md 5.1).

The DICOM listener (C-STORE) and the API (STOW-RS) call `store` with their instance spooled and
its index fields read (metadata.py); the results consumer calls `store_in` for the SR and SEG it
adds to a study, inside its report's transaction. The same policy applies to all: identical bytes
are acknowledged and change nothing; other bytes under a SOP Instance UID we hold are a new version
(keep-last), ignored (keep-first) or refused (reject). Each door turns the outcome or the error
into its own protocol's answer (a DIMSE status, a STOW-RS failure reason).
"""

import logging
import uuid
from dataclasses import dataclass, replace
from typing import Literal, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from audit.log import append
from audit.records import INSTANCE_REFUSED, INSTANCE_STORED, AuditRecord, Outcome
from integration.errors import DuplicateRefused
from integration.instances.indexer import Job, write
from integration.instances.spool import Spool
from storage.db import read_scope, session_scope
from storage.errors import StorageUnavailable
from storage.group_commit import GroupCommit
from storage.instances import InstanceState, ReceivedInstance, correlation_id_for_study, instance_state
from storage.objects import ObjectStore, dicom_version_key

log = logging.getLogger(__name__)

DuplicatePolicy = Literal["keep-first", "keep-last", "reject"]
DICOM_MEDIA_TYPE = "application/dicom"


class Ingest(Protocol):
    """What storing instances needs in one process, built once (the listener's Receiver, the API's state)."""

    @property
    def objects(self) -> ObjectStore: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def indexer(self) -> GroupCommit[Job, bool]: ...


@dataclass(frozen=True)
class Stored:
    """What storing one instance did."""

    # As indexed: a new version has a key of its own.
    item: ReceivedInstance
    # success, duplicate, duplicate-kept-first or new-version (the listener's metrics label).
    outcome: str
    # Its commit declared the study ready (the count the study announced is now stored).
    announced: bool


@dataclass(frozen=True)
class _Decision:
    item: ReceivedInstance
    duplicate: str
    outcome: str
    write: bool


def _decide(state: InstanceState, item: ReceivedInstance, policy: DuplicatePolicy) -> _Decision:
    if state == "new":
        return _Decision(item, "false", "success", True)
    if state == "same":
        # A re-send of identical bytes is acknowledged and recorded, but changes nothing.
        return _Decision(item, "identical", "duplicate", False)
    if policy == "reject":
        raise DuplicateRefused("SOP instance already stored with other bytes")
    if policy == "keep-first":
        return _Decision(item, "other-bytes-ignored", "duplicate-kept-first", False)
    # keep-last: a new version under its own key; the study opens a new revision.
    key = dicom_version_key(item.study_uid, item.series_uid, item.sop_uid, item.sha256)
    return _Decision(replace(item, object_key=key), "new-version", "new-version", True)


def _stored_record(item: ReceivedInstance, *, agent: str, address: str, duplicate: str) -> AuditRecord:
    """instance-stored (DCM 110104 DICOM Instances Transferred, PS3.15 A.5.3.2), under the study's correlation id."""
    return AuditRecord(
        hop=INSTANCE_STORED,
        correlation_id=correlation_id_for_study(item.study_uid),
        agent_who=agent,
        agent_address=address,
        entity_what=item.sop_uid,
        detail={"study_uid": item.study_uid, "object_key": item.object_key, "sha256": item.sha256, "duplicate": duplicate},
    )


def _put(objects: ObjectStore, key: str, spool: Spool) -> None:
    path = spool.path
    if path is None:
        objects.put_bytes(key, spool.contents(), DICOM_MEDIA_TYPE, sha256=spool.sha256)
    else:
        objects.put_file(key, path, DICOM_MEDIA_TYPE, sha256=spool.sha256)


def store(
    ingest: Ingest,
    item: ReceivedInstance,
    spool: Spool,
    *,
    policy: DuplicatePolicy,
    agent: str,
    address: str,
    preceding: tuple[AuditRecord, ...] = (),
) -> Stored:
    """Store and index one spooled instance with its audit records (`preceding`, then instance-stored).

    Returns once the rows are committed. Raises DuplicateRefused (reject policy),
    StorageUnavailable (object store or database down: the sender may retry), or SQLAlchemyError
    (this instance's rows were refused; its bytes stay unindexed, overwritten by a resend).
    """
    with read_scope(ingest.engine) as session:
        state = instance_state(session, sop_uid=item.sop_uid, sha256=item.sha256)
    decision = _decide(state, item, policy)
    if decision.write:
        # Object first, then the row: a crash in between leaves an unindexed object that the
        # sender's retry overwrites (same key), never a row without its bytes.
        _put(ingest.objects, decision.item.object_key, spool)
    records = (*preceding, _stored_record(decision.item, agent=agent, address=address, duplicate=decision.duplicate))
    job = Job(item=decision.item, write=decision.write, records=records, new_version=state == "different")
    announced = ingest.indexer.commit(job)
    return Stored(item=decision.item, outcome=decision.outcome, announced=announced)


def store_in(
    session: Session, objects: ObjectStore, item: ReceivedInstance, data: bytes, *, agent: str, who: str
) -> Stored:
    """Store and index an instance we made (an AI result) in the caller's transaction, keep-last.

    Used by the results consumer, so its SR and SEG commit with the report they belong to.
    Raises StorageUnavailable, or the SQLAlchemyError that refused its rows.
    """
    state = instance_state(session, sop_uid=item.sop_uid, sha256=item.sha256)
    decision = _decide(state, item, "keep-last")
    if decision.write:
        objects.put_bytes(decision.item.object_key, data, DICOM_MEDIA_TYPE, sha256=item.sha256)
    record = _stored_record(decision.item, agent=agent, address="", duplicate=decision.duplicate)
    job = Job(item=decision.item, write=decision.write, records=(record,), new_version=state == "different")
    (outcome,) = write(session, [job], who=who)
    if isinstance(outcome, Exception):
        raise outcome
    return Stored(item=decision.item, outcome=decision.outcome, announced=outcome)


def refused_record(
    *, agent: str, address: str, reason: str, item: ReceivedInstance | None, target: str, context: str
) -> AuditRecord:
    """instance-refused: under the study's correlation id when the instance could be read.

    A data set that could not be read belongs to no known study: its record gets a correlation id
    of its own (`context`-<uuid>) and names `target` (the AE or URL it was sent to).
    """
    return AuditRecord(
        hop=INSTANCE_REFUSED,
        correlation_id=correlation_id_for_study(item.study_uid) if item else f"{context}-{uuid.uuid4()}",
        agent_who=agent,
        agent_address=address,
        entity_what=item.sop_uid if item else target,
        outcome=Outcome.MINOR_FAILURE,
        detail={"reason": reason},
    )


def audit(engine: Engine, record: AuditRecord, what: str) -> None:
    """Append a record of something refused in a transaction of its own; a database outage is logged, not raised."""
    try:
        with session_scope(engine) as session:
            append(session, record)
    except StorageUnavailable:
        log.error("could not audit %s: database unavailable", what)
