"""/admin/overview, /admin/processes and /admin/models/{name}/figures: what the console's overview
and model pages show, aggregated in the database (storage/overview.py) so they stay fast (issue 16).

Process health comes from each process's heartbeat row (integration/heartbeats.py); a
destination's circuit is open when a running integration process reports it so in its heartbeat.
"""

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel

from fhir_api.admin.paging import Page, Paging, sorted_by
from fhir_api.admin.routes.rules import RuleWarningOut
from fhir_api.deps import EngineDep
from fhir_api.errors import NotFound
from integration.heartbeats import is_healthy, reported_open_circuits
from integration.models.registry import rule_warnings
from storage.db import read_scope
from storage.heartbeats import PROCESS_SORTS, process_query
from storage.model_packages import model_packages
from storage.overview import backlogs, latencies, model_history, traffic
from storage.paging import Order
from storage.tables.processes import ProcessHeartbeat

router = APIRouter(tags=["overview"])
# A model page's latency percentiles come from its newest reports of the window, at most this many.
LATENCY_SAMPLE = 1000


class ProcessOut(BaseModel):
    """One process as its heartbeat shows it."""

    name: str
    kind: str
    host: str
    pid: int
    version: str
    started_at: datetime
    last_seen_at: datetime
    healthy: bool


class Series(BaseModel):
    """Counts per minute from `start`, one per `step_seconds`, oldest first (minutes without any are 0)."""

    start: datetime
    step_seconds: int
    instances: list[int]
    hl7_messages: list[int]
    fhir_requests: list[int]


class LatencyOut(BaseModel):
    """One model's end-to-end latency over the window: last instance received to report made."""

    model: str
    reports: int
    p50_seconds: float
    p95_seconds: float


class Overview(BaseModel):
    """The engine at a glance."""

    at: datetime
    hours: float
    processes: list[ProcessOut]
    traffic: Series
    latency: list[LatencyOut]
    backlogs: dict[str, int]
    open_circuits: list[str]
    warnings: list[RuleWarningOut]


def _process(row: ProcessHeartbeat, now: datetime) -> ProcessOut:
    return ProcessOut(
        name=row.name,
        kind=row.kind,
        host=row.host,
        pid=row.pid,
        version=row.version,
        started_at=row.started_at,
        last_seen_at=row.last_seen_at,
        healthy=is_healthy(row.last_seen_at, now=now),
    )


def _minutes(counts: dict[datetime, int], start: datetime, minutes: int) -> list[int]:
    return [counts.get(start + timedelta(minutes=i), 0) for i in range(minutes)]


@router.get("/overview")
def read_overview(engine: EngineDep, hours: Annotated[float, Query(gt=0, le=48)] = 3.0) -> Overview:
    """Processes and their health, traffic per minute, latency per model, backlogs and open circuits."""
    now = datetime.now(UTC)
    minutes = int(hours * 60)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=minutes - 1)
    with read_scope(engine) as session:
        rows = list(session.scalars(process_query().order_by(ProcessHeartbeat.kind, ProcessHeartbeat.name)))
        counts = traffic(session, since=start)
        latency = latencies(session, since=now - timedelta(hours=hours))
        waiting = backlogs(session)
        circuits = reported_open_circuits(session, now=now)
        warnings = rule_warnings(session, now=now)
    return Overview(
        at=now,
        hours=hours,
        processes=[_process(r, now) for r in rows],
        traffic=Series(start=start, step_seconds=60, **{k: _minutes(v, start, minutes) for k, v in counts.items()}),
        latency=[LatencyOut(model=m, **asdict(v)) for m, v in latency.items()],
        backlogs=waiting,
        open_circuits=sorted(circuits),
        warnings=[RuleWarningOut(**asdict(w)) for w in warnings],
    )


@router.get("/processes")
def list_processes(
    engine: EngineDep,
    paging: Annotated[Paging, Depends(sorted_by(PROCESS_SORTS, (Order("kind"), Order("name"))))],
    kind: str | None = None,
) -> Page[ProcessOut]:
    """Every process that has a heartbeat row, healthy or not."""
    now = datetime.now(UTC)
    with read_scope(engine) as session:
        tiebreak = [ProcessHeartbeat.host, ProcessHeartbeat.pid]
        rows, total = paging.rows(session, process_query(kind=kind), PROCESS_SORTS, tiebreak)
        return paging.of([_process(r, now) for r in rows], total)


class Bucket(BaseModel):
    """One model's figures over one day (or hour)."""

    start: datetime
    jobs: int
    failed: int
    reports: int
    positive: int


class Figures(BaseModel):
    """One model over a window: its jobs, failures, latency (of its newest LATENCY_SAMPLE reports), and
    the share of positive reports over time."""

    model: str
    days: int
    jobs: int
    failed: int
    latency: LatencyOut | None
    history: list[Bucket]


@router.get("/models/{name}/figures")
def read_model_figures(name: str, engine: EngineDep, days: Annotated[int, Query(ge=1, le=366)] = 30) -> Figures:
    """A model's jobs, failures, latency and positive reports per day over the last `days` days."""
    now = datetime.now(UTC)
    since = (now - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    with read_scope(engine) as session:
        if not model_packages(session, name=name):
            raise NotFound(f"no model {name} is registered")
        history = model_history(session, model=name, since=since)
        latency = latencies(session, since=since, model=name, newest=LATENCY_SAMPLE).get(name)
    by_day = {b.start: b for b in history}
    # Every day of the window, those without any job too: a chart shows the gaps.
    every_day = [since + timedelta(days=i) for i in range(days + 1)]
    return Figures(
        model=name,
        days=days,
        jobs=sum(b.jobs for b in history),
        failed=sum(b.failed for b in history),
        latency=None if latency is None else LatencyOut(model=name, **asdict(latency)),
        history=[
            Bucket(**asdict(by_day[d])) if d in by_day else Bucket(start=d, jobs=0, failed=0, reports=0, positive=0)
            for d in every_day
        ],
    )
