"""Dead letters (DESIGN.md 5.5): messages a consumer gave up on, kept until an admin replays or discards them.

The integration process stores each letter of the `dlq` topic here; a replay puts the original
payload back on its original topic through the outbox, so it is published like any other event.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.outbox import add_payload
from storage.paging import Columns, Order, page
from storage.tables.pipeline import DeadLetter

STATUSES = ("open", "replayed", "discarded")


class LetterResolved(ValueError):
    """The letter was replayed or discarded already; only open letters can be resolved."""


@dataclass(frozen=True)
class Letter:
    """A dead letter as the integration process received it from the `dlq` topic."""

    event_id: str
    source_topic: str  # without the deployment's prefix
    key: str
    payload: str
    error: str
    correlation_id: str


def save_letter(session: Session, letter: Letter, *, now: datetime | None = None) -> DeadLetter | None:
    """Store an open letter; None when this letter (by event id) is stored already (a redelivery)."""
    if session.scalar(select(DeadLetter.id).where(DeadLetter.event_id == letter.event_id)) is not None:
        return None
    row = DeadLetter(
        event_id=letter.event_id,
        source_topic=letter.source_topic[:128],
        key=letter.key[:128],
        payload=letter.payload,
        error=letter.error,
        correlation_id=letter.correlation_id[:64],
        created_at=now or datetime.now(UTC),
        status="open",
        resolved_at=None,
        resolved_by="",
        reason="",
    )
    session.add(row)
    session.flush()
    return row


# The columns a list of letters may be sorted on.
LETTER_SORTS: Columns = {
    "id": DeadLetter.id,
    "created": DeadLetter.created_at,
    "topic": DeadLetter.source_topic,
    "status": DeadLetter.status,
    "resolved": DeadLetter.resolved_at,
}
DEFAULT_LETTER_ORDER = (Order("id", descending=True),)


def list_letters(
    session: Session,
    *,
    status: str | None = None,
    topic: str | None = None,
    order: Sequence[Order] = DEFAULT_LETTER_ORDER,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[DeadLetter], int]:
    """One page of letters (of a status, of a source topic), newest first unless ordered otherwise, and how
    many match."""
    stmt = select(DeadLetter)
    if status is not None:
        stmt = stmt.where(DeadLetter.status == status)
    if topic is not None:
        stmt = stmt.where(DeadLetter.source_topic == topic)
    return page(session, stmt, columns=LETTER_SORTS, order=order, tiebreak=[DeadLetter.id], limit=limit, offset=offset)


def get_letter(session: Session, *, letter_id: int) -> DeadLetter | None:
    """One letter, or None."""
    return session.get(DeadLetter, letter_id)


def open_letters(session: Session, *, topic: str, key: str) -> list[DeadLetter]:
    """The open letters of one source topic and key, oldest first."""
    stmt = select(DeadLetter).where(DeadLetter.status == "open", DeadLetter.source_topic == topic, DeadLetter.key == key)
    return list(session.scalars(stmt.order_by(DeadLetter.id)))


def settle_letter(row: DeadLetter, *, status: str, who: str, reason: str) -> None:
    """Close an open letter as `status` (replayed or discarded), by whom and why; LetterResolved if it is closed."""
    if row.status != "open":
        raise LetterResolved(f"dead letter {row.id} is {row.status} already")
    row.status = status
    row.resolved_at = datetime.now(UTC)
    row.resolved_by = who[:128]
    row.reason = reason


def replay_letter(session: Session, *, row: DeadLetter, who: str) -> None:
    """Queue the original payload on its original topic (through the outbox) and mark the letter replayed."""
    settle_letter(row, status="replayed", who=who, reason="")
    add_payload(session, topic=row.source_topic, key=row.key, payload=row.payload)


def discard_letter(session: Session, *, row: DeadLetter, who: str, reason: str) -> None:
    """Close an open letter without replaying it, saying why."""
    if not reason.strip():
        raise ValueError("discarding a dead letter needs a reason")
    settle_letter(row, status="discarded", who=who, reason=reason)
