"""What the console's overview and model pages show, aggregated in the database (issue 16).

Counts per minute, backlogs and queue depths are GROUP BY queries over indexed timestamps and
statuses, so the overview costs the same with ten thousand studies as with ten; only the latency
percentiles read one row per report of the window.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import quantiles
from typing import Any

from sqlalchemy import Integer, cast, func, select
from sqlalchemy.orm import QueryableAttribute, Session
from sqlalchemy.sql.elements import ColumnElement

from storage.tables.audit import AuditEvent
from storage.tables.fhir import SubscriptionDelivery
from storage.tables.hl7 import Hl7Message
from storage.tables.index import InstanceVersion
from storage.tables.outbound import Delivery, Forward
from storage.tables.pipeline import DeadLetter, InferenceJob, OutboxEvent, Report

# Audit subtypes of FHIR interactions (fhir_api/fhir/routes): the requests counted per minute. A
# search that disclosed resources of several studies wrote one record per study, so counts it so.
FHIR_SUBTYPES = ("resource-read", "resource-searched", "resource-created", "resource-updated", "resource-deleted")


def _minute(session: Session, column: QueryableAttribute[datetime]) -> ColumnElement[Any]:
    """The minute a timestamp falls in, as whole minutes since 1970 (UTC), on SQLite and PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", column) / 60), Integer)
    return cast(func.strftime("%s", column), Integer) // 60


def _seconds(session: Session, column: QueryableAttribute[datetime | None]) -> ColumnElement[Any]:
    """A timestamp as seconds since 1970 (UTC, with fractions), on SQLite and PostgreSQL."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", column)
    # julianday keeps the fraction of a second that strftime('%s') drops (SQLite date functions).
    return (func.julianday(column) - 2440587.5) * 86400.0


def per_minute(
    session: Session, column: QueryableAttribute[datetime], *, since: datetime, where: Sequence[ColumnElement[bool]] = ()
) -> dict[datetime, int]:
    """How many rows have `column` in each minute since `since` (minutes without any are left out)."""
    minute = _minute(session, column).label("minute")
    stmt = select(minute, func.count()).where(column >= since, *where).group_by(minute)
    return {datetime.fromtimestamp(int(m) * 60, tz=since.tzinfo): int(n) for m, n in session.execute(stmt)}


def traffic(session: Session, *, since: datetime) -> dict[str, dict[datetime, int]]:
    """Instances received (every stored version), HL7 messages and FHIR requests per minute."""
    return {
        "instances": per_minute(session, InstanceVersion.received_at, since=since),
        "hl7_messages": per_minute(session, Hl7Message.received_at, since=since),
        "fhir_requests": per_minute(
            session, AuditEvent.recorded_at, since=since, where=[AuditEvent.subtype.in_(FHIR_SUBTYPES)]
        ),
    }


def backlogs(session: Session) -> dict[str, int]:
    """Work waiting: unsent outbox events, pending forwards, deliveries and subscription
    notifications; and what needs a person: open dead letters, dead forwards and deliveries."""

    def count(table: type[Any], where: ColumnElement[bool]) -> int:
        return session.scalar(select(func.count()).select_from(table).where(where)) or 0

    return {
        "outbox": count(OutboxEvent, OutboxEvent.sent_at.is_(None)),
        "forwards": count(Forward, Forward.status == "pending"),
        "deliveries": count(Delivery, Delivery.status == "pending"),
        "subscription_notifications": count(SubscriptionDelivery, SubscriptionDelivery.delivered_at.is_(None)),
        "dead_letters": count(DeadLetter, DeadLetter.status == "open"),
        "dead_forwards": count(Forward, Forward.status == "dead"),
        "dead_deliveries": count(Delivery, Delivery.status == "dead"),
    }


def queue_depths(session: Session, *, destination_id: int | None = None) -> dict[int, dict[str, int]]:
    """Per destination: its forwards and deliveries pending and dead."""
    depths: dict[int, dict[str, int]] = defaultdict(lambda: {"pending": 0, "dead": 0})
    for table in (Forward, Delivery):
        stmt = (
            select(table.destination_id, table.status, func.count())
            .where(table.status.in_(("pending", "dead")))
            .group_by(table.destination_id, table.status)
        )
        if destination_id is not None:
            stmt = stmt.where(table.destination_id == destination_id)
        for destination, status, n in session.execute(stmt):
            depths[destination][status] += n
    return dict(depths)


@dataclass(frozen=True)
class Latency:
    """End-to-end latency of one model's reports: from the study's last instance to the report."""

    reports: int
    p50_seconds: float
    p95_seconds: float


def _percentiles(values: list[float]) -> tuple[float, float]:
    if len(values) == 1:
        return values[0], values[0]
    cuts = quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94]


def latencies(
    session: Session, *, since: datetime, model: str | None = None, newest: int | None = None
) -> dict[str, Latency]:
    """Per model, the p50 and p95 of the latency of the reports made since `since` (only the `newest`
    ones when given: a bounded cost however many reports the window holds)."""
    # The difference is taken in SQL: one float a row instead of two timestamps to convert.
    stmt = (
        select(InferenceJob.model, _seconds(session, Report.created_at) - _seconds(session, Report.study_received_at))
        .join(InferenceJob, InferenceJob.job_id == Report.job_id)
        .where(Report.created_at >= since, Report.study_received_at.is_not(None))
    )
    if model is not None:
        stmt = stmt.where(InferenceJob.model == model)
    if newest is not None:
        stmt = stmt.order_by(Report.created_at.desc()).limit(newest)
    seconds: dict[str, list[float]] = defaultdict(list)
    for name, latency in session.execute(stmt):
        seconds[name].append(float(latency))
    return {name: Latency(len(v), *_percentiles(v)) for name, v in sorted(seconds.items())}


@dataclass(frozen=True)
class ModelDay:
    """One model's figures over one day (UTC)."""

    start: datetime
    jobs: int
    failed: int
    reports: int
    positive: int


def _day(session: Session, column: QueryableAttribute[datetime]) -> ColumnElement[Any]:
    """The UTC day of a timestamp as YYYY-MM-DD text: SQLite stores UTC timestamps as ISO text (its
    first ten characters are the day), PostgreSQL converts."""
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.substr(column, 1, 10)


def model_history(session: Session, *, model: str, since: datetime) -> list[ModelDay]:
    """A model's jobs, failures, reports and positive reports per day since `since` (days without any left out)."""
    days: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    job_day = _day(session, InferenceJob.created_at).label("day")
    failed = func.sum(cast(InferenceJob.status == "failed", Integer))
    for day, n, f in session.execute(
        select(job_day, func.count(), failed)
        .where(InferenceJob.model == model, InferenceJob.created_at >= since)
        .group_by(job_day)
    ):
        days[day][0:2] = [int(n), int(f or 0)]
    report_day = _day(session, Report.created_at).label("day")
    positive = func.sum(cast(Report.positive.is_(True), Integer))
    for day, n, p in session.execute(
        select(report_day, func.count(), positive)
        .join(InferenceJob, InferenceJob.job_id == Report.job_id)
        .where(InferenceJob.model == model, Report.created_at >= since)
        .group_by(report_day)
    ):
        days[day][2:4] = [int(n), int(p or 0)]
    return [
        ModelDay(datetime.fromisoformat(day).replace(tzinfo=UTC), *counts) for day, counts in sorted(days.items())
    ]
