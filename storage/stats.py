"""Counts for the admin dashboard over a time window: per source AE, per destination, per model."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.tables.index import InstanceVersion, Study
from storage.tables.outbound import Delivery, Destination
from storage.tables.pipeline import InferenceJob


@dataclass(frozen=True)
class SourceCounts:
    """What one calling AE sent in the window."""

    calling_ae: str
    studies: int = 0
    instances: int = 0


@dataclass(frozen=True)
class ModelCounts:
    """One model's jobs in the window, by status, and the mean seconds of the finished ones."""

    model: str
    jobs: dict[str, int] = field(default_factory=dict)
    mean_seconds: float | None = None


@dataclass(frozen=True)
class DestinationCounts:
    """One destination's deliveries queued in the window, by status."""

    destination: str
    deliveries: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Dashboard:
    """Everything the dashboard shows for one window."""

    sources: list[SourceCounts]
    models: list[ModelCounts]
    destinations: list[DestinationCounts]


def _sources(session: Session, since: datetime) -> list[SourceCounts]:
    studies_stmt = (
        select(Study.calling_ae, func.count()).where(Study.first_received_at >= since).group_by(Study.calling_ae)
    )
    studies = {ae: count for ae, count in session.execute(studies_stmt)}
    # Every stored version counts: a re-sent instance was received again.
    instances_stmt = (
        select(InstanceVersion.calling_ae, func.count())
        .where(InstanceVersion.received_at >= since)
        .group_by(InstanceVersion.calling_ae)
    )
    instances = {ae: count for ae, count in session.execute(instances_stmt)}
    return [
        SourceCounts(calling_ae=ae, studies=studies.get(ae, 0), instances=instances.get(ae, 0))
        for ae in sorted(set(studies) | set(instances))
    ]


def _models(session: Session, since: datetime) -> list[ModelCounts]:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for model, status, count in session.execute(
        select(InferenceJob.model, InferenceJob.status, func.count())
        .where(InferenceJob.created_at >= since)
        .group_by(InferenceJob.model, InferenceJob.status)
    ):
        counts[model][status] = count
    # Durations in Python: interval arithmetic differs between SQLite and PostgreSQL.
    durations: dict[str, list[float]] = defaultdict(list)
    finished = select(InferenceJob.model, InferenceJob.created_at, InferenceJob.finished_at).where(
        InferenceJob.created_at >= since, InferenceJob.finished_at.is_not(None)
    )
    for model, created, done in session.execute(finished):
        if done is not None:
            durations[model].append((done - created).total_seconds())
    return [
        ModelCounts(
            model=model,
            jobs=counts[model],
            mean_seconds=sum(durations[model]) / len(durations[model]) if durations[model] else None,
        )
        for model in sorted(counts)
    ]


def _destinations(session: Session, since: datetime) -> list[DestinationCounts]:
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    stmt = (
        select(Destination.name, Delivery.status, func.count())
        .join(Destination, Destination.id == Delivery.destination_id)
        .where(Delivery.created_at >= since)
        .group_by(Destination.name, Delivery.status)
    )
    for name, status, count in session.execute(stmt):
        counts[name][status] = count
    return [DestinationCounts(destination=name, deliveries=counts[name]) for name in sorted(counts)]


def dashboard(session: Session, *, since: datetime) -> Dashboard:
    """Counts of what happened since `since`."""
    return Dashboard(
        sources=_sources(session, since), models=_models(session, since), destinations=_destinations(session, since)
    )
