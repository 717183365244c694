"""Forwards of studies to DICOM destinations: a queue per destination, in the database.

A forward is one revision of one study for one destination, or one job's result (its DICOM SR,
kind "result") for one destination, with one row per instance. It is
"sent" only when every instance was accepted; an attempt that leaves some instances failed
retries those (and only those) later, until the forward is "dead". The scheduling (due,
attempts, retry of a dead one) is storage.queues'.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from storage.paging import Columns
from storage.queues import close_attempt, enqueue
from storage.tables.outbound import Forward, ForwardInstance


@dataclass(frozen=True)
class ForwardItem:
    """One instance to forward: where its bytes are and what the association must offer for it."""

    sop_uid: str
    object_key: str
    sop_class_uid: str
    transfer_syntax_uid: str


def queue_forward(
    session: Session,
    *,
    destination_id: int,
    study_uid: str,
    revision: int,
    correlation_id: str,
    rule: str,
    instances: Sequence[ForwardItem],
    job_id: str = "",
) -> Forward | None:
    """Queue a study revision's instances for a destination; None when it was queued there already (a replay).

    With `job_id`, the instances are that job's result (kind "result"), queued once per job and
    destination, beside the study's own forward of the same revision.
    """
    existing = session.scalar(
        select(Forward.id).where(
            Forward.destination_id == destination_id,
            Forward.study_uid == study_uid,
            Forward.revision == revision,
            Forward.job_id == job_id,
        )
    )
    if existing is not None:
        return None
    row = Forward(
        destination_id=destination_id,
        study_uid=study_uid,
        revision=revision,
        correlation_id=correlation_id,
        rule=rule,
        kind="result" if job_id else "study",
        job_id=job_id,
    )
    enqueue(session, row)
    session.add_all(
        ForwardInstance(forward_id=row.id, status="pending", dicom_status=None, error="", **asdict(item))
        for item in {item.sop_uid: item for item in instances}.values()
    )
    session.flush()
    return row


def forward_query(
    *,
    status: str | None = None,
    destination_id: int | None = None,
    study_uid: str | None = None,
    kind: str | None = None,
) -> Select[Forward]:
    """The forwards of one status, destination, study or kind; None: any."""
    stmt = select(Forward)
    if status is not None:
        stmt = stmt.where(Forward.status == status)
    if destination_id is not None:
        stmt = stmt.where(Forward.destination_id == destination_id)
    if study_uid is not None:
        stmt = stmt.where(Forward.study_uid == study_uid)
    if kind is not None:
        stmt = stmt.where(Forward.kind == kind)
    return stmt


# The columns a list of forwards may be sorted on (the admin API pages them with storage.paging).
FORWARD_SORTS: Columns = {
    "id": Forward.id,
    "created": Forward.created_at,
    "finished": Forward.finished_at,
    "status": Forward.status,
    "attempts": Forward.attempts,
    "destination": Forward.destination_id,
    "study": Forward.study_uid,
}


def list_forwards(
    session: Session,
    *,
    status: str | None = None,
    destination_id: int | None = None,
    study_uid: str | None = None,
    limit: int = 100,
    kind: str | None = None,
) -> list[Forward]:
    """Forwards, newest first, optionally of one status, destination, study or kind."""
    stmt = forward_query(status=status, destination_id=destination_id, study_uid=study_uid, kind=kind)
    return list(session.scalars(stmt.order_by(Forward.id.desc()).limit(limit)))


def forward_instances(session: Session, *, forward_id: int) -> list[ForwardInstance]:
    """Every instance of a forward with its last outcome."""
    stmt = select(ForwardInstance).where(ForwardInstance.forward_id == forward_id).order_by(ForwardInstance.sop_uid)
    return list(session.scalars(stmt))


def unsent_instances(session: Session, *, forward_id: int) -> list[ForwardInstance]:
    """The instances of a forward still to send: never tried, or failed last time."""
    stmt = (
        select(ForwardInstance)
        .where(ForwardInstance.forward_id == forward_id, ForwardInstance.status != "sent")
        .order_by(ForwardInstance.sop_uid)
    )
    return list(session.scalars(stmt))


def mark_instance(
    session: Session, *, forward_id: int, sop_uid: str, sent: bool, dicom_status: int | None, error: str = ""
) -> ForwardInstance:
    """Record how one instance's C-STORE ended."""
    row = session.get_one(ForwardInstance, (forward_id, sop_uid))
    row.status = "sent" if sent else "failed"
    row.dicom_status = dicom_status
    row.error = "" if sent else error[:2000]
    return row


def finish_attempt(session: Session, *, forward_id: int, error: str, retry_in: timedelta | None) -> Forward:
    """Close an attempt: "sent" when no instance is left to send; else retry after `retry_in`, or dead when None.

    A retried dead forward sends only the instances not yet accepted.
    """
    row = session.get_one(Forward, forward_id)
    left = session.scalar(
        select(func.count())
        .select_from(ForwardInstance)
        .where(ForwardInstance.forward_id == forward_id, ForwardInstance.status != "sent")
    )
    return close_attempt(row, error=(error or f"{left} instances not accepted") if left else None, retry_in=retry_in)


def instance_counts(session: Session, *, forward_id: int) -> dict[str, int]:
    """How many instances of a forward are pending, sent and failed."""
    stmt = (
        select(ForwardInstance.status, func.count())
        .where(ForwardInstance.forward_id == forward_id)
        .group_by(ForwardInstance.status)
    )
    counts = {"pending": 0, "sent": 0, "failed": 0}
    counts.update({status: int(n) for status, n in session.execute(stmt)})
    return counts
