"""/admin/dead-letters: messages a consumer gave up on (DESIGN.md 5.5): list, inspect, replay, discard.

A replay puts the original payload back on its original topic through the outbox, so the relay
publishes it like any other event; a discard needs a reason. Both are audited under the failed
message's correlation id, so they show in the study's timeline, and so is reading a letter's
payload (which can carry patient data).
"""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from audit.records import ADMIN_OPERATION
from fhir_api.admin.params import Id, MAX_INT
from fhir_api.admin.access import ActorDep, audit_change
from fastapi import Depends
from audit.records import ADMIN_INSPECTION
from fhir_api.admin.access import audit_read
from fhir_api.admin.paging import Page, Paging, sorted_by
from fhir_api.deps import EngineDep
from fhir_api.errors import NotFound
from storage.db import read_scope, session_scope
from storage.dead_letters import (
    DEFAULT_LETTER_ORDER,
    LETTER_SORTS,
    discard_letter,
    get_letter,
    list_letters,
    replay_letter,
)
from storage.tables.pipeline import DeadLetter

router = APIRouter(prefix="/dead-letters", tags=["dead letters"])


class LetterOut(BaseModel):
    """A dead letter without its payload."""

    id: int
    source_topic: str
    key: str
    error: str
    correlation_id: str
    created_at: datetime
    status: str  # open | replayed | discarded
    resolved_at: datetime | None
    resolved_by: str
    reason: str


class LetterDetail(LetterOut):
    """A dead letter with the message that failed, as it was on its topic."""

    payload: str


class ReplayIn(BaseModel):
    """Which open letters to replay."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=MAX_INT)]] = Field(min_length=1, max_length=1000)


class DiscardIn(BaseModel):
    """Why a letter is discarded (kept with it and in the audit trail)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000, pattern=r"\S")


def _document(row: DeadLetter) -> dict[str, Any]:
    return LetterOut.model_validate(row, from_attributes=True).model_dump(mode="json")


def _found(session: Session, letter_id: int) -> DeadLetter:
    row = get_letter(session, letter_id=letter_id)
    if row is None:
        raise NotFound(f"no dead letter {letter_id}")
    return row


@router.get("")
def search_letters(
    engine: EngineDep,
    paging: Annotated[Paging, Depends(sorted_by(LETTER_SORTS, DEFAULT_LETTER_ORDER))],
    status: str | None = None,
    topic: str | None = None,
) -> Page[LetterOut]:
    """Dead letters by status (open, replayed, discarded) and source topic; newest first unless sorted otherwise."""
    with read_scope(engine) as session:
        rows, total = list_letters(
            session, status=status, topic=topic, order=paging.order, limit=paging.limit, offset=paging.offset
        )
        return paging.of([LetterOut.model_validate(r, from_attributes=True) for r in rows], total)


@router.get("/{letter_id}")
def read_letter(letter_id: Id, engine: EngineDep, actor: ActorDep) -> LetterDetail:
    """One dead letter with its payload; reading it is audited, since a payload can carry patient data."""
    with session_scope(engine) as session:
        row = _found(session, letter_id)
        detail = {"dead_letter": str(row.id), "topic": row.source_topic}
        audit_read(session, actor, hop=ADMIN_INSPECTION, correlation_id=row.correlation_id, detail=detail)
        return LetterDetail.model_validate(row, from_attributes=True)


@router.post("/replay")
def replay_letters(body: ReplayIn, engine: EngineDep, actor: ActorDep) -> list[LetterOut]:
    """Replay open letters, all or none (404 for an unknown id, 409 for one resolved already)."""
    answered = []
    with session_scope(engine) as session:
        for letter_id in dict.fromkeys(body.ids):
            row = _found(session, letter_id)
            before = _document(row)
            replay_letter(session, row=row, who=actor.subject)
            after = _document(row)
            audit_change(
                session,
                actor,
                hop=ADMIN_OPERATION,
                before=before,
                after=after,
                correlation_id=row.correlation_id,
                detail={"operation": "replay", "dead_letter": str(row.id), "topic": row.source_topic},
            )
            answered.append(LetterOut.model_validate(after))
    return answered


@router.post("/{letter_id}/discard")
def discard(letter_id: Id, body: DiscardIn, engine: EngineDep, actor: ActorDep) -> LetterOut:
    """Close an open letter without replaying it (409 when it is resolved already)."""
    with session_scope(engine) as session:
        row = _found(session, letter_id)
        before = _document(row)
        discard_letter(session, row=row, who=actor.subject, reason=body.reason)
        after = _document(row)
        audit_change(
            session,
            actor,
            hop=ADMIN_OPERATION,
            before=before,
            after=after,
            correlation_id=row.correlation_id,
            detail={"operation": "discard", "dead_letter": str(row.id), "reason": body.reason[:500]},
        )
    return LetterOut.model_validate(after)
