"""Forwards of studies to DICOM destinations: a queue per destination, in the database.

A forward is one revision of one study for one destination, or one job's result (its DICOM SR,
kind "result") for one destination, with one row per instance. It is
"sent" only when every instance was accepted; an attempt that leaves some instances failed
retries those (and only those) later, until the forward is "dead". The sender takes each
destination's due forwards in id order, so one destination's failures never hold up another.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.deliveries import due, requeue
from storage.tables.outbound import Forward, ForwardInstance


class ForwardNotFound(LookupError):
    """No forward has this id."""


class ForwardNotDead(ValueError):
    """Only a dead forward can be retried: a pending one retries by itself, a sent one is done."""


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
    now = datetime.now(UTC)
    row = Forward(
        destination_id=destination_id,
        study_uid=study_uid,
        revision=revision,
        correlation_id=correlation_id,
        rule=rule,
        kind="result" if job_id else "study",
        job_id=job_id,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        last_error="",
        created_at=now,
    )
    session.add(row)
    session.flush()
    session.add_all(
        ForwardInstance(
            forward_id=row.id,
            sop_uid=item.sop_uid,
            object_key=item.object_key,
            sop_class_uid=item.sop_class_uid,
            transfer_syntax_uid=item.transfer_syntax_uid,
            status="pending",
            dicom_status=None,
            error="",
        )
        for item in {item.sop_uid: item for item in instances}.values()
    )
    session.flush()
    return row


def list_forwards(
    session: Session,
    *,
    status: str | None = None,
    destination_id: int | None = None,
    study_uid: str | None = None,
    limit: int = 100,
    kind: str | None = None,
) -> list[Forward]:
    """Forwards, newest first, optionally of one status, destination, study or kind: what the admin sees."""
    stmt = select(Forward).order_by(Forward.id.desc()).limit(limit)
    if status is not None:
        stmt = stmt.where(Forward.status == status)
    if destination_id is not None:
        stmt = stmt.where(Forward.destination_id == destination_id)
    if study_uid is not None:
        stmt = stmt.where(Forward.study_uid == study_uid)
    if kind is not None:
        stmt = stmt.where(Forward.kind == kind)
    return list(session.scalars(stmt))


def forward_instances(session: Session, *, forward_id: int) -> list[ForwardInstance]:
    """Every instance of a forward with its last outcome."""
    stmt = select(ForwardInstance).where(ForwardInstance.forward_id == forward_id).order_by(ForwardInstance.sop_uid)
    return list(session.scalars(stmt))


def retry_forward(session: Session, *, forward_id: int) -> Forward:
    """Make a dead forward pending again, due now; its next attempt sends only the instances not yet accepted."""
    row = session.get(Forward, forward_id)
    if row is None:
        raise ForwardNotFound(forward_id)
    if row.status != "dead":
        raise ForwardNotDead(f"forward {forward_id} is {row.status}, not dead")
    return requeue(row)


def due_forwards(session: Session, *, destination_id: int, limit: int, now: datetime | None = None) -> list[Forward]:
    """A destination's pending forwards whose time has come, oldest first."""
    return due(session, Forward, destination_id=destination_id, limit=limit, now=now)


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
    """Close an attempt: "sent" when no instance is left to send; else retry after `retry_in`, or dead when None."""
    row = session.get_one(Forward, forward_id)
    now = datetime.now(UTC)
    row.attempts += 1
    left = session.scalar(
        select(func.count())
        .select_from(ForwardInstance)
        .where(ForwardInstance.forward_id == forward_id, ForwardInstance.status != "sent")
    )
    if not left:
        row.status = "sent"
        row.last_error = ""
        row.finished_at = now
        return row
    row.last_error = (error or f"{left} instances not accepted")[:2000]
    if retry_in is None:
        row.status = "dead"
        row.finished_at = now
    else:
        row.next_attempt_at = now + retry_in
    return row


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
