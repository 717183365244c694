"""The index rows and audit records of stored instances, written a batch at a time (storage.group_commit).

Each front door's thread (an association's, a STOW-RS request's) stores its instance's bytes,
then commits its Job through its process's GroupCommit and answers once that returns (DESIGN.md
5.1). A batch is one transaction: each job's rows in a savepoint of their own, so one the schema
refuses fails alone; then one append of every committed job's audit records (one audit chain lock
for the batch); then the studies whose announced count is now reached are declared ready. The
results consumer writes its SR and SEG jobs the same way, in its report's own transaction.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from audit.log import append_many
from audit.records import AuditRecord
from integration.studies import announce
from storage.instances import IndexedStudy, ReceivedInstance, count_instances, index_instance
from storage.tables.index import Study


@dataclass(frozen=True)
class Job:
    """One received instance's share of a transaction."""

    item: ReceivedInstance
    # False when the bytes were stored already (a duplicate): only the audit records are written.
    write: bool
    records: tuple[AuditRecord, ...]
    # A later version of an instance already indexed (keep-last), which may move it to another study.
    new_version: bool = False


def _index(session: Session, job: Job, now: datetime) -> IndexedStudy | None:
    if not job.write:
        return None
    for attempt in range(2):
        try:
            with session.begin_nested():
                return index_instance(session, item=job.item, now=now, new_version=job.new_version)
        except IntegrityError:
            # Another process numbered a version of the same SOP instance at the same moment:
            # once more sees its row.
            if attempt:
                raise
    return None


def write(session: Session, jobs: Sequence[Job], *, who: str) -> list[bool | Exception]:
    """Index a batch of jobs in the caller's transaction; each job's outcome, or what failed it alone.

    A job's outcome is True when this batch declared its study ready (its announced count reached),
    for the first job of that study in the batch only, so each front door counts each study once.
    """
    now = datetime.now(UTC)
    outcomes: list[None | Exception] = []
    counted: dict[str, int] = {}
    for job in jobs:
        try:
            indexed = _index(session, job, now)
        except OperationalError:
            raise  # the database failed, not this job: the whole batch goes
        except SQLAlchemyError as exc:  # this job's rows were refused (a value the schema will not take)
            outcomes.append(exc)
            continue
        outcomes.append(None)
        if indexed is not None and indexed.expected_instances:
            counted[indexed.study_uid] = indexed.expected_instances
    # One chain lock and one INSERT for the records of every job written, in arrival order.
    append_many(session, [record for job, outcome in zip(jobs, outcomes) if outcome is None for record in job.records])
    announced: set[str] = set()
    for study_uid, expected in counted.items():
        # Exactly the announced count: more means the count was wrong, and that revision waits
        # for the quiet period instead.
        if count_instances(session, study_uid=study_uid) != expected:
            continue
        study = session.get(Study, study_uid, with_for_update=True)
        if study is not None and study.status == "receiving":
            announce(session, study, reason="count-reached", who=who, now=now)
            announced.add(study_uid)
    results: list[bool | Exception] = []
    for job, outcome in zip(jobs, outcomes):
        if outcome is not None:
            results.append(outcome)
            continue
        results.append(job.item.study_uid in announced)
        announced.discard(job.item.study_uid)
    return results
