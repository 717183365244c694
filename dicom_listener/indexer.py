"""Group commit: the index rows and audit records of instances this process received, committed together.

Each association's thread stores its instance's bytes, then adds its index work to the pending
jobs and waits for the commit before it answers the C-STORE (DESIGN.md 5.1). Whichever thread
gets the commit lock commits every job pending in one transaction: one audit chain lock and one
commit for as many instances as arrived together, where one transaction each would make
concurrent associations queue for the database lock. The others find their job committed when
they get the lock, or commit the next batch. A lone association commits its own job in its own
thread, with no hand-over to another.
"""

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from audit.log import append_many
from audit.records import AuditRecord
from dicom_listener import metrics
from integration.studies import announce
from storage.db import session_scope
from storage.errors import StorageUnavailable
from storage.queries import ReceivedInstance, count_instances, index_instance
from storage.tables import Study

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One received instance's share of a transaction."""

    item: ReceivedInstance
    # False when the bytes were stored already (a duplicate): only the audit records are written.
    write: bool
    records: tuple[AuditRecord, ...]
    # A later version of an instance already indexed (keep-last), which may move it to another study.
    new_version: bool = False


class Indexer:
    """This process's pending index jobs, committed in batches of whatever is waiting."""

    def __init__(self, engine: Engine, *, ae_title: str) -> None:
        self._engine = engine
        self._who = f"ae:{ae_title}"
        self._pending: list[tuple[Job, Future[None]]] = []
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def commit(self, job: Job) -> None:
        """Commit `job` (in some batch) and return once it is committed; raises what its transaction raised."""
        done: Future[None] = Future()
        with self._pending_lock:
            self._pending.append((job, done))
        with self._commit_lock:
            if not done.done():  # not committed by the batch that held the lock before
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    self._commit_batch(batch)
                except BaseException as exc:
                    # A failure _commit_batch did not expect: nobody in the batch may wait for ever.
                    for _, waiting in batch:
                        if not waiting.done():
                            waiting.set_exception(exc)
                    raise
        done.result()

    def _commit_batch(self, batch: list[tuple[Job, "Future[None]"]]) -> None:
        try:
            self._transaction([job for job, _ in batch])
        except StorageUnavailable as exc:
            for _, done in batch:
                done.set_exception(exc)  # the database is down: every sender retries later
            return
        except SQLAlchemyError as exc:
            if len(batch) > 1:
                # One instance's rows failed (a value the schema refuses, a race on a version
                # number with another process): commit each alone, so only that one fails.
                for one in batch:
                    self._commit_batch([one])
                return
            if isinstance(exc, IntegrityError):
                # Another process indexed the same SOP instance at the same moment: once more sees it.
                try:
                    self._transaction([batch[0][0]])
                except (SQLAlchemyError, StorageUnavailable) as again:
                    batch[0][1].set_exception(again)
                    return
                batch[0][1].set_result(None)
                return
            batch[0][1].set_exception(exc)
            return
        for _, done in batch:
            done.set_result(None)

    def _transaction(self, jobs: list[Job]) -> None:
        """Index every job, append every audit record, and declare studies whose count is reached, in one transaction."""
        now = datetime.now(UTC)
        counted: dict[str, int] = {}
        announced = 0
        with session_scope(self._engine) as session:
            for job in jobs:
                if job.write:
                    indexed = index_instance(session, item=job.item, now=now, new_version=job.new_version)
                    if indexed.expected_instances:
                        counted[indexed.study_uid] = indexed.expected_instances
            # One chain lock and one INSERT for every record of the batch, in arrival order.
            append_many(session, [record for job in jobs for record in job.records])
            for study_uid, expected in counted.items():
                # Exactly the announced count: more means the count was wrong, and that revision
                # waits for the quiet period instead.
                if count_instances(session, study_uid=study_uid) != expected:
                    continue
                study = session.get(Study, study_uid, with_for_update=True)
                if study is not None and study.status == "receiving":
                    announce(session, study, reason="count-reached", who=self._who, now=now)
                    announced += 1
        metrics.STUDIES_READY.labels("count-reached").inc(announced)
