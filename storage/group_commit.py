"""Group commit: work submitted from several threads at the same time shares one transaction.

A listener answers its sender only once the work is committed (DESIGN.md 5.1), and one
transaction per piece of work makes concurrent senders queue for the database anyway: SQLite
has one writer at a time, and the audit chain serialises writers on PostgreSQL too (audit.log).
So whichever thread gets the commit lock writes every item pending in one transaction, and the
others find theirs committed when they get the lock, or commit the next batch. A lone sender
writes its own item in its own thread, handed over to nobody.

`write` gets the batch in one session and returns one outcome per item: its result, or the
exception that failed that item alone (it keeps items apart with savepoints). An exception out of
`write`, or the commit failing (StorageUnavailable when the database is down), fails every item.
"""

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from storage.db import session_scope

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Items submitted from any thread, written and committed in batches of whatever is pending."""

    def __init__(self, engine: Engine, write: Callable[[Session, Sequence[T]], Sequence[R | Exception]]) -> None:
        self._engine = engine
        self._write = write
        self._pending: list[tuple[T, Future[R]]] = []
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def commit(self, item: T) -> R:
        """Write `item` in some batch and return its result once committed; raises what failed it."""
        done: Future[R] = Future()
        with self._pending_lock:
            self._pending.append((item, done))
        with self._commit_lock:
            if not done.done():  # not committed by the batch that held the lock before
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit(batch)
        return done.result()

    def _commit(self, batch: list[tuple[T, "Future[R]"]]) -> None:
        try:
            with session_scope(self._engine) as session:
                outcomes = self._write(session, [item for item, _ in batch])
            if len(outcomes) != len(batch):
                raise ValueError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
        except BaseException as exc:  # the whole transaction failed: so did every item in it
            for _, done in batch:
                done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise  # KeyboardInterrupt and the like still stop the thread
            return
        for (_, done), outcome in zip(batch, outcomes):
            if isinstance(outcome, Exception):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)
