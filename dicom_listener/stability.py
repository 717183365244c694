"""Study completeness (DESIGN.md 5.4): a study is ready after its calling AE's quiet period, or as
soon as the number of instances it announced is stored. Each declaration is a new revision.
"""

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from dicom_listener import metrics
from integration.messages import StudyReady
from integration.studies import announce
from storage.db import checkpoint, session_scope
from storage.errors import StorageUnavailable
from storage.studies import count_receiving, studies_quiet_since

log = logging.getLogger(__name__)


def declare_ready(
    engine: Engine,
    *,
    quiet_period: float,
    ae_title: str,
    now: datetime | None = None,
    per_ae: Mapping[str, float] | None = None,
    step_hold: float = 0.0,
) -> list[StudyReady]:
    """Mark quiet studies ready at a new revision and queue `study.ready` for each, in one transaction.

    `quiet_period` applies to every calling AE not named in `per_ae`. A study with a performed
    procedure step in progress (MPPS) waits for it to end, unless its modality said nothing about
    it for `step_hold` seconds (a modality that never ends its step must not hold a study for
    ever); 0 ignores steps in progress. Safe to run in several
    processes at once: rows are claimed with FOR UPDATE SKIP LOCKED on PostgreSQL, and SQLite
    transactions hold the write lock.
    """
    now = now or datetime.now(UTC)
    per_ae = per_ae or {}
    shortest = min([quiet_period, *per_ae.values()])
    announced: list[StudyReady] = []
    with session_scope(engine) as session:
        held = now - timedelta(seconds=step_hold) if step_hold else None
        for study in studies_quiet_since(session, before=now - timedelta(seconds=shortest), steps_since=held):
            wait = per_ae.get(study.calling_ae, quiet_period)
            if study.last_received_at < now - timedelta(seconds=wait):
                announced.append(announce(session, study, reason="quiet-period", who=f"ae:{ae_title}", now=now))
        metrics.STUDIES_WAITING.set(count_receiving(session))
    for message in announced:
        metrics.STUDIES_READY.labels(message.reason).inc()
    return announced


def run(
    engine: Engine,
    *,
    quiet_period: float,
    ae_title: str,
    stop: threading.Event,
    per_ae: Callable[[], Mapping[str, float]],
    step_hold: float = 0.0,
) -> None:
    """Sweep for quiet studies until `stop` is set; a database outage only delays the sweep.

    Each sweep also checkpoints SQLite's WAL, which the listener's C-STORE commits leave to it.
    """
    interval = max(0.05, min(1.0, quiet_period / 4))
    while not stop.wait(interval):
        try:
            periods = per_ae()
            declare_ready(engine, quiet_period=quiet_period, ae_title=ae_title, per_ae=periods, step_hold=step_hold)
            checkpoint(engine)
        except StorageUnavailable as exc:
            log.warning("quiet-period sweep postponed: %s", exc)
            continue
        # Sweep often enough for the shortest quiet period any peer has.
        interval = max(0.05, min(1.0, min([quiet_period, *periods.values()]) / 4))
