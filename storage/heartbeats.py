"""Process heartbeats (`process_heartbeats`): each running process's row, written every few seconds.

integration/heartbeats.py writes them; the admin API reads them to show every process with its
health. A process is healthy while its last beat is recent.
"""

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from storage.paging import Columns
from storage.tables.processes import ProcessHeartbeat


def beat(
    session: Session,
    *,
    kind: str,
    name: str,
    host: str,
    pid: int,
    version: str,
    started_at: datetime,
    now: datetime,
    detail: Mapping[str, list[str]],
) -> None:
    """Record that a process is alive now (its row is created at the first beat)."""
    row = session.get(ProcessHeartbeat, (name, host, pid))
    if row is None:
        row = ProcessHeartbeat(name=name, host=host, pid=pid, kind=kind, version=version, started_at=started_at)
        session.add(row)
    row.last_seen_at = now
    row.detail = dict(detail)


def forget(
    session: Session, *, name: str, host: str, pid: int | None = None, seen_before: datetime | None = None
) -> None:
    """Remove a process's row (it stopped), or on a host the rows of a name not seen since `seen_before`
    (earlier runs of a process that did not stop cleanly)."""
    stmt = delete(ProcessHeartbeat).where(ProcessHeartbeat.name == name, ProcessHeartbeat.host == host)
    if pid is not None:
        stmt = stmt.where(ProcessHeartbeat.pid == pid)
    if seen_before is not None:
        stmt = stmt.where(ProcessHeartbeat.last_seen_at < seen_before)
    session.execute(stmt)


# The columns a list of processes may be sorted on.
PROCESS_SORTS: Columns = {
    "name": ProcessHeartbeat.name,
    "kind": ProcessHeartbeat.kind,
    "host": ProcessHeartbeat.host,
    "started": ProcessHeartbeat.started_at,
    "last_seen": ProcessHeartbeat.last_seen_at,
}


def process_query(*, kind: str | None = None) -> Select[ProcessHeartbeat]:
    """Every process that has beaten (of one kind)."""
    stmt = select(ProcessHeartbeat)
    return stmt if kind is None else stmt.where(ProcessHeartbeat.kind == kind)


def live(session: Session, *, since: datetime, kind: str | None = None) -> list[ProcessHeartbeat]:
    """The processes (of one kind) that beat since `since`."""
    stmt = process_query(kind=kind).where(ProcessHeartbeat.last_seen_at >= since)
    return list(session.scalars(stmt.order_by(ProcessHeartbeat.name)))
