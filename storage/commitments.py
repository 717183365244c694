"""Storage commitment requests (PS3.4 Annex J) until their reports are sent: recorded, claimed by one
sender at a time, and closed once a report is accepted or the request is given up; and what the
index holds of the instances a request names."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from storage.tables.index import Instance, StorageCommitment

Reason = Literal["missing", "class-conflict"]


@dataclass(frozen=True)
class Commitment:
    """One request whose report is due."""

    transaction_uid: str
    calling_ae: str
    address: str
    instances: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID)
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class Outcome:
    """Which requested instances the index holds (committed) and which it does not, and why."""

    committed: tuple[tuple[str, str], ...]
    failed: tuple[tuple[str, str, Reason], ...]


def record(
    session: Session,
    *,
    transaction_uid: str,
    calling_ae: str,
    address: str,
    instances: Iterable[tuple[str, str]],
    hold_until: datetime,
    now: datetime,
) -> None:
    """Keep a request until its report is sent; no sender claims it before `hold_until`.

    A Transaction UID asked for again replaces the earlier request (the SCU repeats it, J.3.2).
    """
    row = session.get(StorageCommitment, transaction_uid) or StorageCommitment(transaction_uid=transaction_uid)
    row.calling_ae, row.address, row.instances = calling_ae, address, [list(i) for i in instances]
    row.status, row.attempts, row.last_error = "pending", 0, ""
    row.next_attempt_at, row.created_at, row.reported_at = hold_until, now, None
    session.add(row)


def claim(
    session: Session, *, now: datetime, lease: timedelta, transaction_uid: str | None = None, held: bool = False
) -> list[Commitment]:
    """Due requests (or the one named, if due), held back from every other sender for `lease`.

    `held`: the one named while it is still held for its own association (which sends its report
    on it): not yet due, and never claimed by another sender. Rows are claimed with FOR UPDATE SKIP LOCKED on
    PostgreSQL; SQLite transactions hold the write lock. The caller reports each, then calls
    `reported`, `retry_at` or `expire`.
    """
    if held:
        due = and_(StorageCommitment.next_attempt_at > now, StorageCommitment.attempts == 0)
    else:
        due = StorageCommitment.next_attempt_at <= now
    stmt = (
        select(StorageCommitment)
        .where(StorageCommitment.status == "pending", due)
        .order_by(StorageCommitment.next_attempt_at)
        .limit(20)
        .with_for_update(skip_locked=True)
    )
    if transaction_uid is not None:
        stmt = stmt.where(StorageCommitment.transaction_uid == transaction_uid)
    claimed = []
    for row in session.scalars(stmt):
        row.next_attempt_at, row.attempts = now + lease, row.attempts + 1
        instances = tuple((str(c), str(i)) for c, i in row.instances)
        claimed.append(Commitment(row.transaction_uid, row.calling_ae, row.address, instances, row.attempts, row.created_at))
    return claimed


def due_now(session: Session, *, transaction_uid: str, now: datetime) -> None:
    """A request still pending becomes due at once (its association ended before the report went)."""
    session.execute(
        update(StorageCommitment)
        .where(StorageCommitment.transaction_uid == transaction_uid, StorageCommitment.status == "pending")
        .values(next_attempt_at=now)
    )


def reported(session: Session, *, transaction_uid: str, now: datetime) -> None:
    """The requester accepted the report."""
    session.execute(
        update(StorageCommitment)
        .where(StorageCommitment.transaction_uid == transaction_uid)
        .values(status="reported", reported_at=now, last_error="")
    )


def retry_at(session: Session, *, transaction_uid: str, when: datetime, error: str) -> None:
    """A report that did not go: try again at `when`."""
    session.execute(
        update(StorageCommitment)
        .where(StorageCommitment.transaction_uid == transaction_uid)
        .values(next_attempt_at=when, last_error=error[:512])
    )


def expire(session: Session, *, transaction_uid: str, error: str) -> None:
    """Give up a report after its last attempt."""
    session.execute(
        update(StorageCommitment)
        .where(StorageCommitment.transaction_uid == transaction_uid)
        .values(status="expired", last_error=error[:512])
    )


def _reason(held: dict[str, str], sop_uid: str) -> Reason:
    return "missing" if sop_uid not in held else "class-conflict"


def outcome(session: Session, instances: Iterable[tuple[str, str]]) -> Outcome:
    """What the index holds of `instances`: an indexed instance's bytes are in object storage, as
    the index row is written only after them (dicom_listener/ingest.py), so it is committed."""
    wanted = list(dict.fromkeys(instances))
    held: dict[str, str] = {}
    uids = [uid for _, uid in wanted]
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        rows = session.execute(select(Instance.sop_uid, Instance.sop_class_uid).where(Instance.sop_uid.in_(chunk)))
        held.update({sop_uid: sop_class for sop_uid, sop_class in rows})
    committed = tuple((c, i) for c, i in wanted if held.get(i) == c)
    failed = tuple((c, i, _reason(held, i)) for c, i in wanted if held.get(i) != c)
    return Outcome(committed, failed)
