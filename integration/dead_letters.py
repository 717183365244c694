"""The `dlq` consumer: every dead letter is stored in the `dead_letters` table for the admin API.

A letter is stored once however often it is delivered (unique on its event id), with an audit
record under the failed message's correlation id, so the study's timeline shows the failure.
"""

import logging

from aiokafka import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy import Engine

from audit.log import append
from audit.records import DEAD_LETTERED, AuditRecord, Outcome
from integration import topics
from integration.config import IntegrationSettings
from integration.kafka import unqualified
from integration.messages import DeadLetter
from storage.db import session_scope
from storage.dead_letters import Letter, save_letter

log = logging.getLogger(__name__)

GROUP = "doctorai-dead-letters"
AGENT = "doctorai-integration"


def _letter(record: ConsumerRecord[bytes, bytes], settings: IntegrationSettings) -> Letter:
    raw = record.value or b""
    try:
        letter = DeadLetter.model_validate_json(raw)
    except ValidationError as exc:
        # Not a letter our consumers wrote: keep it as a letter of the dlq topic itself rather
        # than dead-lettering it again, which would loop.
        return Letter(
            event_id=f"dlq:{record.partition}:{record.offset}",
            source_topic=topics.DLQ,
            key=(record.key or b"").decode(errors="replace"),
            payload=raw.decode(errors="replace"),
            error=f"not a dead letter: {exc.error_count()} validation errors",
            correlation_id="unknown",
        )
    return Letter(
        event_id=letter.event_id,
        source_topic=unqualified(settings, letter.source_topic),
        key=letter.key,
        payload=letter.value,
        error=letter.error,
        correlation_id=letter.correlation_id,
    )


def store(engine: Engine, settings: IntegrationSettings, record: ConsumerRecord[bytes, bytes]) -> None:
    """Store one record of the `dlq` topic (and audit it), unless it is stored already."""
    letter = _letter(record, settings)
    with session_scope(engine) as session:
        row = save_letter(session, letter)
        if row is None:
            return
        append(
            session,
            AuditRecord(
                hop=DEAD_LETTERED,
                correlation_id=letter.correlation_id,
                agent_who=AGENT,
                entity_what=f"dead-letter/{row.id}",
                outcome=Outcome.SERIOUS_FAILURE,
                detail={"source_topic": letter.source_topic, "key": letter.key, "error": letter.error[:500]},
            ),
        )
    log.info("stored dead letter %d from %s", row.id, letter.source_topic)
