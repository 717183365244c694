"""Group commit of received HL7 v2 messages: those waiting at the same time share one transaction.

One transaction per message made the listener's connections queue for the database anyway:
SQLite has one writer at a time, and on PostgreSQL the audit chain serialises writers
(audit.log). Worse, parallel SQLite writers wait in its busy handler, which sleeps between
retries, so the lock often stood free while every writer slept. The listener has one writer
instead: whenever it is free it takes every message received in the meantime (one when the
line is quiet, more under load) and writes them in one transaction, each in a savepoint of its
own, so a message that fails undoes only itself. Each message's ACK waits for the commit
(DESIGN.md 5.1).
"""

import asyncio
from collections.abc import Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from fhir_api.config import MllpSettings
from fhir_api.hl7_intake import Answer, Received, duplicate, record
from storage.db import session_scope

# At most this many messages in one transaction, to bound how long it holds the write lock.
MAX_BATCH = 64


def commit(engine: Engine, settings: MllpSettings, messages: Sequence[Received]) -> list[Answer | Exception]:
    """Write messages in one transaction, each in a savepoint; each one's answer, or the exception
    that failed it alone, in order.

    Raises StorageUnavailable when the database cannot take the transaction (then none is written).
    """
    outcomes: list[Answer | Exception] = []
    with session_scope(engine) as session:
        for message in messages:
            try:
                with session.begin_nested():
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


class Committer:
    """The listener's one database writer: messages submitted from any connection, committed in batches."""

    def __init__(self, engine: Engine, settings: MllpSettings) -> None:
        self._engine = engine
        self._settings = settings
        self._waiting: asyncio.Queue[tuple[Received, asyncio.Future[Answer]]] = asyncio.Queue()

    async def submit(self, message: Received) -> Answer:
        """Wait for the commit of the transaction that holds `message`; raises what failed it."""
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.put_nowait((message, future))
        return await future

    async def run(self) -> None:
        """Commit whatever waits, batch after batch, until cancelled."""
        while True:
            batch = [await self._waiting.get()]
            while len(batch) < MAX_BATCH and not self._waiting.empty():
                batch.append(self._waiting.get_nowait())
            outcomes: Sequence[Answer | Exception]
            try:
                outcomes = await asyncio.to_thread(commit, self._engine, self._settings, [m for m, _ in batch])
            except Exception as exc:  # StorageUnavailable, or a bug outside any one message: all of them AE
                outcomes = [exc] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # its connection's handler was cancelled
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
