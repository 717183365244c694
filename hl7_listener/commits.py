"""Received HL7 v2 messages written a batch at a time (storage.group_commit): the listener's connections
hand their messages to one GroupCommit, and those waiting at the same time share one transaction.

One transaction per message made the listener's connections queue for the database anyway:
SQLite has one writer at a time, and on PostgreSQL the audit chain serialises writers
(audit.log). Worse, parallel SQLite writers wait in its busy handler, which sleeps between
retries, so the lock often stood free while every writer slept. Each message is written in a
savepoint of its own, so a message that fails undoes only itself. Each message's ACK waits for
the commit (DESIGN.md 5.1).
"""

from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from hl7_listener.config import MllpSettings
from hl7_listener.intake import Answer, Received, duplicate, record
from integration.logs import correlated


def write(session: Session, messages: Sequence[Received], *, settings: MllpSettings) -> list[Answer | Exception]:
    """Write messages in the caller's transaction, each in a savepoint; each one's answer, or the
    exception that failed it alone, in order. A database failure (OperationalError) fails them all.
    """
    outcomes: list[Answer | Exception] = []
    for message in messages:
        try:
            # Log lines of the message's own work carry its id (several messages share this thread).
            with correlated(message.message_id), session.begin_nested():
                outcomes.append(record(session, settings, message))
        except IntegrityError as exc:
            # Another transaction (another listener process) accepted the same message in between.
            again = duplicate(session, message)
            outcomes.append(exc if again is None else again)
        except OperationalError:
            raise  # the database failed, not the message: the whole transaction goes
        except Exception as exc:  # a bug met by one message: its sender gets AE, the others their ACKs
            outcomes.append(exc)
    return outcomes
