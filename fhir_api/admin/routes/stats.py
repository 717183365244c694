"""/admin/stats: counts and rates per source AE, destination and model over a window, for a dashboard."""

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from fhir_api.deps import EngineDep
from storage.db import session_scope
from storage.stats import dashboard


class SourceStats(BaseModel):
    """What one calling AE sent in the window."""

    calling_ae: str
    studies: int
    instances: int
    instances_per_hour: float


class ModelStats(BaseModel):
    """One model's jobs queued in the window, by status, and the mean seconds of the finished ones."""

    model: str
    jobs: dict[str, int]
    jobs_per_hour: float
    mean_seconds: float | None


class DestinationStats(BaseModel):
    """One destination's deliveries queued in the window, by status."""

    destination: str
    deliveries: dict[str, int]
    deliveries_per_hour: float


class Stats(BaseModel):
    """The dashboard of one window, ending now."""

    since: datetime
    until: datetime
    hours: float
    sources: list[SourceStats]
    models: list[ModelStats]
    destinations: list[DestinationStats]


router = APIRouter(tags=["stats"])


@router.get("/stats")
def read_stats(engine: EngineDep, hours: Annotated[float, Query(gt=0, le=24 * 366)] = 24.0) -> Stats:
    """Counts of the last `hours` hours and their hourly rates."""
    until = datetime.now(UTC)
    since = until - timedelta(hours=hours)
    with session_scope(engine) as session:
        board = dashboard(session, since=since)
    return Stats(
        since=since,
        until=until,
        hours=hours,
        sources=[SourceStats(**asdict(s), instances_per_hour=s.instances / hours) for s in board.sources],
        models=[ModelStats(**asdict(m), jobs_per_hour=sum(m.jobs.values()) / hours) for m in board.models],
        destinations=[
            DestinationStats(**asdict(d), deliveries_per_hour=sum(d.deliveries.values()) / hours)
            for d in board.destinations
        ],
    )
