"""The outbound queues' shared bookkeeping: deliveries (MLLP, FHIR, webhook) and forwards (DICOM).

Both tables hold one row per item for one destination, with the same scheduling columns: status
pending -> sent | dead, attempts, next_attempt_at, last_error, finished_at. An item is due when it
is pending and its next attempt's time has passed; the sender takes each destination's due items
oldest first, so one destination's failures never hold up another. A dead item goes back to
pending only when an operator retries it.
"""

from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.tables.outbound import Delivery, Forward

Queued = TypeVar("Queued", Delivery, Forward)


class NotQueued(LookupError):
    """No item of this queue has this id."""


class NotDead(ValueError):
    """Only a dead item can be retried: a pending one retries by itself, a sent one is done."""


def enqueue(session: Session, row: Queued) -> Queued:
    """Add a new item: pending, due now, no attempt yet."""
    now = datetime.now(UTC)
    row.status = "pending"
    row.attempts = 0
    row.next_attempt_at = now
    row.last_error = ""
    row.created_at = now
    session.add(row)
    session.flush()
    return row


def due(
    session: Session, table: type[Queued], *, destination_id: int, limit: int, now: datetime | None = None
) -> list[Queued]:
    """A destination's pending items whose time has come, oldest first."""
    stmt = (
        select(table)
        .where(
            table.destination_id == destination_id,
            table.status == "pending",
            table.next_attempt_at <= (now or datetime.now(UTC)),
        )
        .order_by(table.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def close_attempt(row: Queued, *, error: str | None, retry_in: timedelta | None) -> Queued:
    """Count an attempt: sent when `error` is None; else keep it, and retry after `retry_in` (dead when None)."""
    now = datetime.now(UTC)
    row.attempts += 1
    if error is None:
        row.status = "sent"
        row.last_error = ""
        row.finished_at = now
        return row
    row.last_error = error[:2000]
    if retry_in is None:
        row.status = "dead"
        row.finished_at = now
    else:
        row.next_attempt_at = now + retry_in
    return row


def retry_dead(session: Session, table: type[Queued], *, item_id: int) -> Queued:
    """Make a dead item pending again, due now, with a fresh count of attempts."""
    row = session.get(table, item_id)
    if row is None:
        raise NotQueued(item_id)
    if row.status != "dead":
        raise NotDead(f"{table.__name__.lower()} {item_id} is {row.status}, not dead")
    row.status = "pending"
    row.attempts = 0
    row.next_attempt_at = datetime.now(UTC)
    row.finished_at = None
    return row
