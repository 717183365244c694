"""Queries on studies: the ones gone quiet (the stability sweep), and what the admin API shows of
them (filtered lists, one study's parts, its timeline)."""

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Select, exists, func, or_, select
from sqlalchemy.orm import Session

from storage.jobs import study_jobs
from storage.paging import Columns, Order, page
from storage.steps import IN_PROGRESS
from storage.tables.audit import AuditEvent
from storage.tables.index import Instance, PerformedStep, Series, Study
from storage.tables.outbound import Delivery, Destination, Forward


def studies_quiet_since(session: Session, *, before: datetime, steps_since: datetime | None = None) -> list[Study]:
    """Studies still receiving whose last instance arrived before `before`.

    With `steps_since`, not those with a performed procedure step (MPPS) in progress that its
    modality reported on since then: the modality is still acquiring them.
    """
    stmt = (
        select(Study)
        .where(Study.status == "receiving", Study.last_received_at < before)
        .order_by(Study.last_received_at)
        .with_for_update(skip_locked=True)
    )
    if steps_since is not None:
        acquiring = exists().where(
            PerformedStep.study_uid == Study.study_uid,
            PerformedStep.status == IN_PROGRESS,
            PerformedStep.updated_at > steps_since,
        )
        stmt = stmt.where(~acquiring)
    return list(session.scalars(stmt))


def count_receiving(session: Session) -> int:
    """How many studies are still receiving (not yet declared ready)."""
    return session.scalar(select(func.count()).select_from(Study).where(Study.status == "receiving")) or 0


@dataclass(frozen=True)
class StudyFilter:
    """Which studies to list; None means "any"."""

    status: str | None = None
    # On when the study's last instance arrived (UTC), inclusive.
    since: datetime | None = None
    until: datetime | None = None
    calling_ae: str | None = None
    modality: str | None = None
    patient_id: str | None = None
    accession_number: str | None = None
    # StudyDate (0008,0020) from and to, as DICOM DA values YYYYMMDD, inclusive.
    study_date_from: str | None = None
    study_date_to: str | None = None


# The columns a list of studies may be sorted on.
STUDY_SORTS: Columns = {
    "received": Study.last_received_at,
    "first_received": Study.first_received_at,
    "ready": Study.ready_at,
    "study_date": Study.study_date,
    "patient": Study.patient_id,
    "accession": Study.accession_number,
    "calling_ae": Study.calling_ae,
    "status": Study.status,
    "revision": Study.revision,
}
DEFAULT_STUDY_ORDER = (Order("received", descending=True),)


def _where(where: StudyFilter) -> Select[Study]:
    stmt = select(Study)
    for column, value in (
        (Study.status, where.status),
        (Study.calling_ae, where.calling_ae),
        (Study.patient_id, where.patient_id),
        (Study.accession_number, where.accession_number),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if where.since is not None:
        stmt = stmt.where(Study.last_received_at >= where.since)
    if where.until is not None:
        stmt = stmt.where(Study.last_received_at <= where.until)
    if where.study_date_from is not None:
        stmt = stmt.where(Study.study_date >= where.study_date_from)
    if where.study_date_to is not None:
        stmt = stmt.where(Study.study_date <= where.study_date_to)
    if where.modality is not None:
        stmt = stmt.where(Study.study_uid.in_(select(Series.study_uid).where(Series.modality == where.modality)))
    return stmt


def list_studies(
    session: Session, where: StudyFilter, *, order: Sequence[Order] = DEFAULT_STUDY_ORDER, limit: int, offset: int
) -> tuple[list[Study], int]:
    """One page of matching studies (most recently received first unless ordered otherwise), and how many match."""
    return page(
        session,
        _where(where),
        columns=STUDY_SORTS,
        order=order,
        tiebreak=[Study.study_uid],
        limit=limit,
        offset=offset,
    )


@dataclass(frozen=True)
class Revision:
    """One time a study was declared ready: its revision, why, when, by whom, with how many instances."""

    revision: int
    reason: str
    at: datetime
    who: str
    instances: int


def revisions(session: Session, *, study_uid: str, subtype: str) -> list[Revision]:
    """Every revision of a study, oldest first, from the audit records of this subtype that declared it
    ready (audit.records.STUDY_READY, written by integration/studies.py)."""
    stmt = (
        select(AuditEvent)
        .where(AuditEvent.entity_what == study_uid, AuditEvent.subtype == subtype)
        .order_by(AuditEvent.id)
    )
    return [
        Revision(
            revision=int(row.detail.get("revision", 0)),
            reason=str(row.detail.get("reason", "")),
            at=row.recorded_at,
            who=row.agent_who,
            instances=int(row.detail.get("instances", 0)),
        )
        for row in session.scalars(stmt)
    ]


def series_with_counts(session: Session, *, study_uid: str) -> list[tuple[Series, int]]:
    """A study's series, each with how many instances it holds, in series-number order."""
    stmt = (
        select(Series, func.count(Instance.sop_uid))
        .outerjoin(Instance, Instance.series_uid == Series.series_uid)
        .where(Series.study_uid == study_uid)
        .group_by(Series.series_uid)
        .order_by(Series.series_number, Series.series_uid)
    )
    return [(series, count) for series, count in session.execute(stmt)]


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened to a study: an audit record, a job or a delivery step."""

    at: datetime
    kind: str  # audit | job | delivery
    what: str
    detail: dict[str, str] = field(default_factory=dict)


def _audit_entries(session: Session, study: Study) -> list[TimelineEntry]:
    # The study's own records carry its UID as entity or its correlation id (every hop does,
    # DESIGN.md 2); instance records name the SOP instance but share the correlation id.
    stmt = (
        select(AuditEvent)
        .where(or_(AuditEvent.entity_what == study.study_uid, AuditEvent.correlation_id == study.correlation_id))
        .order_by(AuditEvent.id)
    )
    return [
        TimelineEntry(
            at=row.recorded_at,
            kind="audit",
            what=row.subtype,
            detail={
                "id": str(row.id),
                "type": row.type_code,
                "action": row.action,
                "outcome": row.outcome,
                "who": row.agent_who,
                "entity": row.entity_what,
                **{k: str(v) for k, v in row.detail.items()},
            },
        )
        for row in session.scalars(stmt)
    ]


def _job_entries(session: Session, study: Study) -> list[TimelineEntry]:
    entries = []
    for job in study_jobs(session, study_uid=study.study_uid):
        common = {
            "job_id": job.job_id,
            "model": job.model,
            "model_version": job.model_version,
            "revision": str(job.revision),
        }
        entries.append(TimelineEntry(at=job.created_at, kind="job", what="job-queued", detail=common))
        if job.finished_at is not None:
            done = {**common, "status": job.status, **({"error": job.error} if job.error else {})}
            entries.append(TimelineEntry(at=job.finished_at, kind="job", what=f"job-{job.status}", detail=done))
    return entries


def _queued_entries(kind: str, row: Delivery | Forward, common: dict[str, str]) -> list[TimelineEntry]:
    """A delivery or forward: when it was queued and, once finished, how it ended."""
    entries = [TimelineEntry(at=row.created_at, kind=kind, what=f"{kind}-queued", detail=common)]
    if row.finished_at is not None:
        done = {**common, "status": row.status, "attempts": str(row.attempts), "error": row.last_error}
        entries.append(TimelineEntry(at=row.finished_at, kind=kind, what=f"{kind}-{row.status}", detail=done))
    return entries


def _delivery_entries(session: Session, study: Study) -> list[TimelineEntry]:
    stmt = (
        select(Delivery, Destination.name)
        .join(Destination, Destination.id == Delivery.destination_id)
        .where(Delivery.correlation_id == study.correlation_id)
        .order_by(Delivery.id)
    )
    entries = []
    for delivery, destination in session.execute(stmt):
        common = {"delivery_id": str(delivery.id), "destination": destination, "subject": delivery.subject}
        entries += _queued_entries("delivery", delivery, common)
    return entries


def _forward_entries(session: Session, study: Study) -> list[TimelineEntry]:
    stmt = (
        select(Forward, Destination.name)
        .join(Destination, Destination.id == Forward.destination_id)
        .where(Forward.study_uid == study.study_uid)
        .order_by(Forward.id)
    )
    entries = []
    for forward, destination in session.execute(stmt):
        common = {
            "forward_id": str(forward.id),
            "destination": destination,
            "revision": str(forward.revision),
            "rule": forward.rule,
        }
        entries += _queued_entries("forward", forward, common)
    return entries


def timeline(session: Session, *, study: Study) -> list[TimelineEntry]:
    """Everything recorded about a study, in time order (audit records keep their chain order at equal times)."""
    entries = (
        _audit_entries(session, study)
        + _job_entries(session, study)
        + _delivery_entries(session, study)
        + _forward_entries(session, study)
    )
    # sorted() is stable: entries of one kind at the same instant stay in the order they were written.
    return sorted(entries, key=lambda e: e.at)
