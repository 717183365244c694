"""The transactional outbox: events committed with their data, published later by the relay."""

from datetime import UTC, datetime

from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.tables.pipeline import OutboxEvent


def add_event(session: Session, *, topic: str, key: str, message: BaseModel) -> None:
    """Queue `message` for `topic` in the caller's transaction."""
    add_payload(session, topic=topic, key=key, payload=message.model_dump_json())


def add_payload(session: Session, *, topic: str, key: str, payload: str) -> None:
    """Queue a message that is JSON already (a dead letter's original, replayed as it was)."""
    session.add(OutboxEvent(topic=topic, key=key, payload=payload, created_at=datetime.now(UTC)))


def events(session: Session, *, topic: str, key: str) -> list[OutboxEvent]:
    """Every event written for `topic` under `key`, oldest first: published ones too, the outbox keeps them."""
    stmt = select(OutboxEvent).where(OutboxEvent.topic == topic, OutboxEvent.key == key).order_by(OutboxEvent.id)
    return list(session.scalars(stmt))


def unsent(session: Session, *, limit: int) -> list[OutboxEvent]:
    """The oldest events not yet published, in the order they were written."""
    stmt = select(OutboxEvent).where(OutboxEvent.sent_at.is_(None)).order_by(OutboxEvent.id).limit(limit)
    return list(session.scalars(stmt))


def mark_sent(session: Session, *, ids: list[int]) -> None:
    """Record that these events reached Kafka."""
    session.execute(update(OutboxEvent).where(OutboxEvent.id.in_(ids)).values(sent_at=datetime.now(UTC)))


def backlog(session: Session) -> int:
    """How many events wait to be published."""
    return session.scalar(select(func.count()).select_from(OutboxEvent).where(OutboxEvent.sent_at.is_(None))) or 0


def oldest_unsent(session: Session) -> datetime | None:
    """When the oldest event still waiting was written, or None when nothing waits."""
    stmt = select(OutboxEvent.created_at).where(OutboxEvent.sent_at.is_(None)).order_by(OutboxEvent.id).limit(1)
    return session.scalar(stmt)
